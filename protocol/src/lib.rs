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
//! A binary connection always opens with a hello frame, whose big-endian
//! length is far below 16 MiB, so its first byte is `0x00`; any other first
//! byte starts a text command (blank lines, tabs and CRs included).
//! `PROTOCOL.md` describes every byte.

pub mod codec;
#[cfg(feature = "tokio")]
pub mod lines;
pub mod text;
pub mod wire;

pub use codec::{FrameError, DEFAULT_MAX_FRAME, MAX_FRAME_CEILING};
pub use wire::*;

/// The version a client announces in its hello. The daemon speaks every
/// version from [`MIN_PROTOCOL_VERSION`] up to this one, answers the hello
/// with the version it will speak on the connection (the lower of the
/// two), and refuses any other with `version_mismatch`.
///
/// Version 2 adds the `host` of numbers issued from a host's local store
/// ([`Response::DailyNumber`], [`Response::ConvNumber`]); a version-1
/// connection gets [`Response::Daily`] and [`Response::Conv`] instead.
pub const PROTOCOL_VERSION: u32 = 2;

/// The oldest protocol version the daemon still speaks.
pub const MIN_PROTOCOL_VERSION: u32 = 1;

/// A program's `--version` text: its version and the binary protocol
/// versions it speaks, e.g. `0.1.0 (protocol versions 1 to 2)`.
pub fn version_text(program_version: &str) -> String {
    format!("{program_version} (protocol versions {MIN_PROTOCOL_VERSION} to {PROTOCOL_VERSION})")
}

/// True when a connection whose first byte is `b` speaks the binary
/// protocol: only `0x00`, the high byte of the hello's length (a hello is a
/// few dozen bytes, and every frame is far below the 16 MiB that would
/// make that byte nonzero).
pub fn is_binary_first_byte(b: u8) -> bool {
    b == 0x00
}

/// The longest id (user, group) the daemon accepts; also bounds what any
/// parser copies out of a request.
pub const MAX_ID_LEN: usize = 64;
