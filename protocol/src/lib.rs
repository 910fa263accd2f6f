//! # seqd-protocol
//!
//! The contract between seqd and its clients, with no I/O beyond framing
//! helpers.
//!
//! # Layout
//!
//! - [`wire`]: the messages of the binary protocol (requests, responses,
//!   error codes). Their bincode encoding is the wire format.
//! - [`codec`]: length-prefixed frames and the bincode 1.3.3 options, with
//!   blocking helpers for clients and (feature `tokio`) the tokio-util codec
//!   the daemon uses.
//! - [`text`]: the line-oriented text protocol for `socat` and scripts.
//! - `lines` (feature `tokio`): line framing for the text protocol.
//!
//! One socket speaks both protocols: the first byte a client sends decides.
//! A byte below 0x20 starts a binary frame (the high byte of a length of at
//! most 256 MiB is at most 0x10); a printable byte starts a text command.
//! `PROTOCOL.md` describes every byte.

pub mod codec;
#[cfg(feature = "tokio")]
pub mod lines;
pub mod text;
pub mod wire;

pub use codec::{FrameError, DEFAULT_MAX_FRAME, MAX_FRAME_CEILING};
pub use wire::*;

/// The version a client announces in its hello. The daemon answers a
/// different version with `version_mismatch` and closes the connection.
pub const PROTOCOL_VERSION: u32 = 1;

/// True when a connection whose first byte is `b` speaks the binary protocol.
pub fn is_binary_first_byte(b: u8) -> bool {
    b < 0x20
}

/// The longest id (user, group) the daemon accepts; also bounds what any
/// parser copies out of a request.
pub const MAX_ID_LEN: usize = 64;
