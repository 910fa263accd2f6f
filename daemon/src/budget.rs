//! The daemon-wide memory budget for buffered client input
//! (`--max-buffered-bytes`): a semaphore whose permits are bytes, shared by
//! every connection (see `transport::frames`).

use std::sync::Arc;
use tokio::sync::Semaphore;

/// Bytes of buffered frames the whole daemon may hold.
pub struct Budget {
    bytes: Arc<Semaphore>,
    total: usize,
}

impl Budget {
    pub fn new(total: usize) -> Budget {
        let total = total.clamp(1, Semaphore::MAX_PERMITS);
        Budget {
            bytes: Arc::new(Semaphore::new(total)),
            total,
        }
    }

    /// The semaphore whose permits are bytes.
    pub fn semaphore(&self) -> Arc<Semaphore> {
        self.bytes.clone()
    }

    /// Bytes not taken now (for metrics and tests).
    pub fn available(&self) -> usize {
        self.bytes.available_permits()
    }

    pub fn total(&self) -> usize {
        self.total
    }
}
