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

    pub(crate) fn is_broken_connection(&self) -> bool {
        matches!(self, ClientError::Io(_))
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
    #[error("database: {0}")]
    Load(E),
    #[error(transparent)]
    Cache(ClientError),
}
