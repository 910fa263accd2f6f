//! The Redis backend: how seqd reaches Redis, and when it stops trying.
//!
//! One file per Redis concept:
//!
//! - [`conn`]: the connection an operation runs on ([`Conn`]): seqd's pipe
//!   on one server, the redis crate's cluster connection on a Cluster; what
//!   a capability must know about a cluster (scan every master, group a
//!   script's keys by slot).
//! - [`pipe`]: one auto-pipelined connection.
//! - [`resp`]: where a RESP2 reply ends, and its value (the common shapes
//!   parsed here, the rest by the redis crate).
//! - [`target`]: where Redis is ([`RedisTarget`]): the topology (single,
//!   Sentinel, Cluster), credentials, TLS.
//! - [`pool`]: a fixed set of pipes to the master (found through Sentinel
//!   when there is one), every operation under a deadline; it notices a
//!   new master.
//! - [`scan`]: `SCAN` over every node that holds keys ([`Scan`]).
//! - [`breaker`]: the circuit breaker, a plain state machine over `now`.
//! - [`breakers`]: one breaker per master (one server, or each Cluster
//!   master), the Cluster's slot map, and which breaker an operation's
//!   [`Route`] goes through.
//! - [`link`]: the pool behind the breaker ([`RedisLink`]), and the
//!   [`Recovery`] interface of work due before it closes.
//! - [`supervisor`]: the task that pings, probes and recovers.
//! - [`error`]: failures sorted for the breaker ([`RedisFailure`],
//!   [`LinkError`]).
//!
//! This backend knows no capability: it runs the operations it is given
//! and never decides what a key means.

pub mod breaker;
pub mod breakers;
pub mod conn;
pub mod error;
pub mod link;
pub mod pipe;
pub mod pool;
pub mod resp;
pub mod scan;
pub mod supervisor;
pub mod target;

pub use breaker::{BreakerConfig, BreakerState};
pub use breakers::Route;
pub use conn::{slot_groups, Conn, NodeAddr};
pub use error::{LinkError, RedisFailure};
pub use link::{BreakerSnapshot, Recovery, RedisLink};
pub use pipe::Pipe;
pub use pool::RedisPool;
pub use scan::{unlink, Scan};
pub use supervisor::supervise;
pub use target::RedisTarget;
