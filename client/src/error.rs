//! What a call can fail with.

use seqd_protocol::codec::FrameError;
use seqd_protocol::WireError;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The daemon answered with an error code and message.
    #[error("seqd: {0}")]
    Server(WireError),
    #[error("seqd connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("seqd protocol: {0}")]
    Protocol(String),
}

impl ClientError {
    /// The daemon's error code, when the daemon answered with one.
    pub fn code(&self) -> Option<seqd_protocol::ErrorCode> {
        match self {
            ClientError::Server(e) => Some(e.code),
            _ => None,
        }
    }

    /// True when seqd's socket is missing or refuses connections: seqd is
    /// not up yet (a sidecar starting beside its application) or
    /// restarting; connecting tries again for a while.
    pub(crate) fn is_not_up_yet(&self) -> bool {
        matches!(self, ClientError::Io(e) if matches!(
            e.kind(),
            std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
        ))
    }

    pub(crate) fn is_broken_connection(&self) -> bool {
        matches!(self, ClientError::Io(_))
    }

    /// True when the cache could not be reached or could not answer now:
    /// seqd is not running or not reachable (an I/O error), or it answered
    /// `unavailable`. Cache-aside then reads the database, and
    /// write-through tries the invalidation again.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, ClientError::Io(_))
            || self.code() == Some(seqd_protocol::ErrorCode::Unavailable)
    }
}

impl From<FrameError> for ClientError {
    fn from(e: FrameError) -> Self {
        match e {
            FrameError::Io(e) => ClientError::Io(e),
            other => ClientError::Protocol(other.to_string()),
        }
    }
}

/// What [`Client::get_or_load`](crate::Client::get_or_load) and
/// [`Client::write_through`](crate::Client::write_through) fail with:
/// your database step's error, or the cache's.
#[derive(Debug, thiserror::Error)]
pub enum CacheAsideError<E> {
    /// The database step failed; the cache was not touched.
    #[error("database: {0}")]
    Load(E),
    /// The cache refused the request for a reason retrying cannot change
    /// (a forbidden or malformed key: such a key holds no cached value).
    #[error(transparent)]
    Cache(ClientError),
    /// Write-through only: the database **was written**, but the cache
    /// could be neither updated nor invalidated before the call's
    /// deadline (seqd stayed unreachable). Readers may get the old value
    /// from the cache until the key is invalidated: call `cache_del` for
    /// it once seqd is back, or let its TTL run out.
    #[error("database written, but the cache was not invalidated: {0}")]
    NotInvalidated(ClientError),
}
