//! # seqd-client
//!
//! A small blocking client for seqd's binary protocol, an async one
//! ([`AsyncClient`], feature `tokio`), and (feature `cli`) the `seqctl`
//! tool.
//!
//! ```no_run
//! use seqd_client::{Client, format_daily_seq};
//!
//! let mut seqd = Client::connect("/run/seqd/seqd.sock")?;
//! let daily = seqd.daily_next("123", Some("Asia/Kolkata"), None)?;
//! let order_id = format!("ORD-{}-{}", daily.day, format_daily_seq(daily.seq));
//! let msg_no = seqd.private_next("alice", "bob")?.seq;
//! # Ok::<(), seqd_client::ClientError>(())
//! ```
//!
//! A `Client` holds one connection. After the connection breaks, the next
//! call reconnects, and a call that failed because the connection broke is
//! retried once on a new one. For a `*_next` call that means the daemon may
//! have issued a number whose reply was lost: that number is skipped, never
//! handed out twice.
//!
//! # Layout
//!
//! - `session`: the exchange without I/O (hello, ids, encoding a batch
//!   into one buffer, routing replies by id), which both clients drive.
//! - `blocking` ([`Client`]) and `asynchronous` ([`AsyncClient`]): the
//!   same calls over a std or a Tokio socket.
//! - `requests` and `answers`: building requests and reading their typed
//!   answers ([`types`]), shared by both clients.
//! - `cache_aside`: [`Client::get_or_load`] and [`Client::write_through`].
//! - [`keys`]: typed key builders for the settings cache.
//! - [`ClientError`], [`CacheAsideError`]: what a call fails with.

mod answers;
mod blocking;
mod cache_aside;
mod error;
pub mod keys;
mod requests;
mod session;
pub mod types;

#[cfg(feature = "tokio")]
mod asynchronous;

pub use blocking::Client;
pub use error::{CacheAsideError, ClientError};
pub use requests::{gap_event, stream};
pub use seqd_protocol;
pub use types::{format_daily_seq, format_order_id, ConvSeq, DailySeq};

#[cfg(feature = "tokio")]
pub use asynchronous::AsyncClient;

use std::time::Duration;

/// The default socket path of a seqd installed as a service.
pub const DEFAULT_SOCKET: &str = "/run/seqd/seqd.sock";
/// Default time limit for connecting and for each reply.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
