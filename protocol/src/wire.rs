//! The messages of the binary protocol.
//!
//! Every type here is encoded with bincode 1.3.3 (see [`crate::codec`]); the
//! order of enum variants and struct fields *is* the wire format, so new
//! variants are only ever appended and existing ones never reordered.
//! `PROTOCOL.md` documents the bytes.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A frame sent by a client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientMessage {
    /// Must be the first frame on a connection, and only the first.
    Hello {
        /// The protocol version the client speaks ([`crate::PROTOCOL_VERSION`]).
        version: u32,
        /// Free-form name for the daemon's logs (`"seqd-client/0.1"`).
        client: String,
    },
    /// A request; its response repeats `id`, so a client may keep many in flight.
    Request { id: u64, request: Request },
}

/// A frame sent by the daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServerMessage {
    /// The answer to a [`ClientMessage::Hello`] the daemon accepted.
    Hello { version: u32, server: String },
    /// The outcome of the request with this `id`. Responses may arrive in
    /// any order.
    Response {
        id: u64,
        result: Result<Response, WireError>,
    },
    /// A connection-level failure (bad framing, version mismatch, a request
    /// before the hello). The daemon closes the connection after sending it.
    Error { error: WireError },
}

/// What a client can ask.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    Ping,
    /// Issue the next daily sequence number of a user.
    DailyNext(DailyQuery),
    /// Read the current daily sequence number of a user (0 when none issued).
    DailyGet(DailyQuery),
    /// Issue the next message number of a conversation.
    ConvNext(Conversation),
    /// Read the current message number of a conversation (0 when none).
    ConvGet(Conversation),
    Health,
    Metrics,
    /// Classify one market-data sequence number of a stream.
    GapCheck(GapEvent),
    /// Classify many, in order, atomically; results in the same order.
    GapBatch(Vec<GapEvent>),
    /// The state of one stream.
    GapStats(Stream),
    /// Forget one stream.
    GapClear(Stream),
    /// Forget every stream.
    GapClearAll,
    /// Read a cached value.
    CacheGet {
        key: String,
    },
    /// Read several cached values; one answer per key, in order.
    CacheGetMany {
        keys: Vec<String>,
    },
    /// Store a value (write-through after the database write).
    CacheSet(CacheItem),
    /// Store several values.
    CacheSetMany(Vec<CacheItem>),
    /// Invalidate keys.
    CacheDel {
        keys: Vec<String>,
    },
    /// Invalidate every key that starts with `prefix`.
    CacheDelPrefix {
        prefix: String,
    },
    /// What this daemon is and accepts: its limits, host id, mode and the
    /// requests it knows (answered with [`Response::Info`]).
    Info,
}

/// A value to cache.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheItem {
    pub key: String,
    pub value: Vec<u8>,
    /// Time to live in milliseconds; `None` = until invalidated.
    pub ttl_ms: Option<u64>,
}

/// What became of a cache write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum WriteOutcome {
    /// Written to the cache.
    Stored,
    /// Not written, but the old value was removed: readers miss and load
    /// from the database.
    Invalidated,
    /// Redis could not be reached: the invalidation is queued durably and
    /// runs before anyone reads from Redis again.
    Deferred,
}

impl WriteOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            WriteOutcome::Stored => "stored",
            WriteOutcome::Invalidated => "invalidated",
            WriteOutcome::Deferred => "deferred",
        }
    }
}

impl Request {
    /// A short, stable name for logs and metric labels.
    pub fn op_name(&self) -> &'static str {
        match self {
            Request::Ping => "ping",
            Request::DailyNext(_) => "daily_next",
            Request::DailyGet(_) => "daily_get",
            Request::ConvNext(_) => "conv_next",
            Request::ConvGet(_) => "conv_get",
            Request::Health => "health",
            Request::Metrics => "metrics",
            Request::GapCheck(_) => "gap_check",
            Request::GapBatch(_) => "gap_batch",
            Request::GapStats(_) => "gap_stats",
            Request::GapClear(_) => "gap_clear",
            Request::GapClearAll => "gap_clear_all",
            Request::CacheGet { .. } => "cache_get",
            Request::CacheGetMany { .. } => "cache_get_many",
            Request::CacheSet(_) => "cache_set",
            Request::CacheSetMany(_) => "cache_set_many",
            Request::CacheDel { .. } => "cache_del",
            Request::CacheDelPrefix { .. } => "cache_del_prefix",
            Request::Info => "info",
        }
    }

    /// The [`Request::op_name`] of every variant, in variant-index order:
    /// what `Info`'s `requests` field lists.
    pub const NAMES: &'static [&'static str] = &[
        "ping",
        "daily_next",
        "daily_get",
        "conv_next",
        "conv_get",
        "health",
        "metrics",
        "gap_check",
        "gap_batch",
        "gap_stats",
        "gap_clear",
        "gap_clear_all",
        "cache_get",
        "cache_get_many",
        "cache_set",
        "cache_set_many",
        "cache_del",
        "cache_del_prefix",
        "info",
    ];
}

/// Which daily counter a request means.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DailyQuery {
    pub user: String,
    /// IANA zone name; `None` means the daemon's default zone.
    pub tz: Option<String>,
    /// The instant whose local date picks the day, in milliseconds since the
    /// Unix epoch; `None` means now.
    pub at_ms: Option<i64>,
}

/// A chat conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Conversation {
    /// A private chat between two users; the order of `a` and `b` does not
    /// matter.
    Private {
        a: String,
        b: String,
    },
    Group {
        id: String,
    },
}

/// A market-data stream: an exchange and a symbol.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Stream {
    pub exchange: String,
    pub symbol: String,
}

/// One message's sequence number on a stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GapEvent {
    pub stream: Stream,
    pub seq: u64,
}

/// How a sequence number relates to its stream's state (the tracker
/// tracker's event kinds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum GapKind {
    Normal,
    Gap,
    Duplicate,
    OutOfOrder,
    Reset,
}

impl GapKind {
    pub const ALL: [GapKind; 5] = [
        GapKind::Normal,
        GapKind::Gap,
        GapKind::Duplicate,
        GapKind::OutOfOrder,
        GapKind::Reset,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            GapKind::Normal => "normal",
            GapKind::Gap => "gap",
            GapKind::Duplicate => "duplicate",
            GapKind::OutOfOrder => "out_of_order",
            GapKind::Reset => "reset",
        }
    }
}

/// The classification of one [`GapEvent`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GapResult {
    pub kind: GapKind,
    pub seq: u64,
    /// `last + 1`; `None` for the first event of a stream.
    pub expected: Option<u64>,
    /// Numbers skipped (`seq - last - 1`) for a gap, 0 otherwise.
    pub gap: u64,
    /// For `OutOfOrder`: whether the number filled a hole a gap left open
    /// (`Some(true)`) or had been seen or was older than what is tracked
    /// (`Some(false)`). `None` for the other kinds.
    pub filled: Option<bool>,
    pub source: Source,
}

/// What is known about a stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamStats {
    pub last_seq: u64,
    /// When the stream's state last changed, as milliseconds since the epoch.
    pub last_ts_ms: i64,
    pub gap_count: u64,
    pub reset_count: u64,
    /// Ranges `(first, last)` still missing, oldest first (bounded: the
    /// latest ones are kept).
    pub missing: Vec<(u64, u64)>,
    pub source: Source,
}

/// A successful answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    Pong,
    /// `day` is the local date as the number YYYYMMDD.
    Daily {
        seq: u64,
        day: u32,
        source: Source,
    },
    Conv {
        seq: u64,
        source: Source,
    },
    /// Ordered `name=value` pairs, the same ones the text `HEALTH` prints.
    Health {
        fields: Vec<(String, String)>,
    },
    /// Prometheus text exposition.
    Metrics {
        text: String,
    },
    Gap(GapResult),
    GapBatch(Vec<GapResult>),
    /// `None` when the stream has no state.
    GapStats(Option<StreamStats>),
    /// Done; nothing to report (`OK`).
    Done,
    /// How many items a bulk clear removed.
    Cleared {
        count: u64,
    },
    /// A cached value, or `None` on a miss.
    CacheValue(Option<Vec<u8>>),
    /// One answer per key asked, in order.
    CacheValues(Vec<Option<Vec<u8>>>),
    CacheWritten(WriteOutcome),
    /// Keys removed now (not counting deferred ones); `deferred` when the
    /// invalidation was queued because Redis could not be reached.
    CacheDeleted {
        count: u64,
        deferred: bool,
    },
    /// Protocol 2's answer to `DailyNext`/`DailyGet`: [`Response::Daily`]
    /// plus `host`, the id of the host that issued the number from its
    /// local store in Redis mode (`None`: from Redis, a read, or local
    /// mode). `(host, seq)` never repeats across a fleet.
    DailyNumber {
        seq: u64,
        day: u32,
        source: Source,
        host: Option<u16>,
    },
    /// Protocol 2's answer to `ConvNext`/`ConvGet`: [`Response::Conv`]
    /// plus `host` (as in [`Response::DailyNumber`]).
    ConvNumber {
        seq: u64,
        source: Source,
        host: Option<u16>,
    },
    /// The answer to [`Request::Info`]: ordered `name=value` pairs (the
    /// text `INFO` prints the same). Pairs, not a struct, so that a later
    /// daemon can add one without changing the encoding; a client reads
    /// the names it knows and ignores the others.
    Info {
        fields: Vec<(String, String)>,
    },
}

impl Response {
    /// This response as a client speaking protocol `version` can decode
    /// it: version 1 has no `host`, so the numbered answers fall back to
    /// [`Response::Daily`] and [`Response::Conv`].
    pub fn for_version(self, version: u32) -> Response {
        match self {
            Response::DailyNumber {
                seq, day, source, ..
            } if version < 2 => Response::Daily { seq, day, source },
            Response::ConvNumber { seq, source, .. } if version < 2 => {
                Response::Conv { seq, source }
            }
            other => other,
        }
    }
}

/// Where a sequence number came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Source {
    /// The shared Redis counter.
    Redis,
    /// This host's SQLite store (local mode, or Redis unavailable).
    Local,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Redis => "redis",
            Source::Local => "local",
        }
    }
}

/// The error codes of both protocols. The text protocol prints
/// [`ErrorCode::as_str`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ErrorCode {
    /// The request is malformed: wrong number of words, bad framing, bad
    /// encoding.
    BadRequest,
    /// The request is well-formed but a value is not acceptable (an id with
    /// a forbidden character, an unknown time zone, ...).
    InvalidArgument,
    UnknownCommand,
    Forbidden,
    TooLarge,
    /// The answer depends on a backend that cannot be reached now.
    Unavailable,
    Internal,
    /// The hello named a protocol version the daemon does not speak.
    VersionMismatch,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 8] = [
        ErrorCode::BadRequest,
        ErrorCode::InvalidArgument,
        ErrorCode::UnknownCommand,
        ErrorCode::Forbidden,
        ErrorCode::TooLarge,
        ErrorCode::Unavailable,
        ErrorCode::Internal,
        ErrorCode::VersionMismatch,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::InvalidArgument => "invalid_argument",
            ErrorCode::UnknownCommand => "unknown_command",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
            ErrorCode::VersionMismatch => "version_mismatch",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error as it travels on the wire: a code a program can act on and a
/// message a person can read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code}: {message}")]
pub struct WireError {
    pub code: ErrorCode,
    pub message: String,
}

impl WireError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        WireError {
            code,
            message: message.into(),
        }
    }
}
