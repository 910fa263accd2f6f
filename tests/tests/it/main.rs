//! The integration tests, one binary so the suite links once: real
//! `redis-server` and `seqd` processes driven through the harness in
//! `tests/src` (`seqd_tests`). One module per area of seqd.

mod abuse;
mod bench;
mod cache;
mod cli;
mod clients;
mod cluster;
mod config;
mod datadir;
mod disk;
mod durability;
mod faults;
mod fencing;
mod fleet;
mod logs;
mod monitoring;
mod ops;
mod protocol;
mod redis_errors;
mod sentinel;
mod sequences;
mod tls;
mod tracker;
