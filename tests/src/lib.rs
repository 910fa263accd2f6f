//! Test harness: real `redis-server` and real `seqd` processes.
//!
//! - [`RedisServer`] runs `redis-server` on a free loopback port in a temp
//!   dir (never 6379), and can kill, hang (SIGSTOP), resume and restart it.
//! - [`Seqd`] runs the `seqd` binary on a socket in a temp dir, and can kill
//!   it with SIGKILL and restart it on the same store; [`redis_seqd`] starts
//!   both.
//! - [`SmallDisk`] is a tmpfs of a few MiB, to fill and free.
//! - [`RedisCluster`] runs a three-master cluster and migrates slots.
//! - [`SentinelGroup`] runs a master, a replica and three sentinels.
//! - [`resp()`] is a minimal RESP client, so tests inspect Redis directly.
//! - [`TextConn`] speaks the text protocol; [`Load`] drives concurrent
//!   `NEXT`s; `assert_*` check the guarantees.
//!
//! Every wait polls a condition with a deadline; nothing sleeps in place of
//! a condition. Processes are killed when their handle drops.

mod assert;
mod cluster;
mod disk;
mod load;
mod process;
mod proxy;
mod redis_server;
mod resp;
mod sentinel;
mod seqd;
mod text;

pub use assert::*;
pub use cluster::RedisCluster;
pub use disk::SmallDisk;
pub use load::*;
pub use process::{free_port, output_within_deadline, wait_until, workspace_bin, STARTUP_DEADLINE};
pub use proxy::Proxy;
pub use redis_server::*;
pub use resp::*;
pub use sentinel::*;
pub use seqd::*;
pub use text::*;
