//! Binary frames read under a memory budget shared by every connection.
//!
//! # What it guarantees
//!
//! A frame's payload is only buffered once its length is checked against
//! the frame limit *and* that many bytes are taken from the daemon-wide
//! [`Budget`] (`--max-buffered-bytes`). A connection whose frame does not
//! fit the budget now stops reading (its bytes wait in the kernel) until
//! others give bytes back; a frame larger than the whole budget is
//! refused. So 64 clients each half-way into a 4 MiB frame hold at most
//! the budget, not 256 MiB. The bytes stay taken until the request the
//! frame carries has finished (its decoded values live that long).
//!
//! [`FrameReader::next`] is cancel safe: everything read so far lives in
//! the reader, so a `select!` may drop the call and call again.

use crate::budget::Budget;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Why a frame could not be read.
#[derive(Debug)]
pub enum FrameError {
    /// The length is above the frame limit, or above the whole budget.
    TooLarge {
        len: usize,
        limit: usize,
        budget: bool,
    },
    /// The connection ended inside a frame, or failed.
    Broken(std::io::Error),
}

/// Frames up to this size are not counted against the budget: a hello or
/// an ordinary request never waits behind others' large frames (they are
/// bounded by the connection limit instead).
pub const SMALL_FRAME: usize = 64 * 1024;

/// A payload and the budget bytes it holds (none for a small frame).
pub struct Frame {
    pub payload: Vec<u8>,
    pub held: Option<OwnedSemaphorePermit>,
}

/// Reads length-prefixed frames (4-byte big-endian length, then payload).
pub struct FrameReader<R> {
    rd: R,
    max: usize,
    budget: Arc<Semaphore>,
    budget_total: usize,
    header: [u8; 4],
    have: usize,
    /// The current frame's payload buffer is allocated (its length read
    /// and its budget taken).
    sized: bool,
    payload: Vec<u8>,
    filled: usize,
    held: Option<OwnedSemaphorePermit>,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(rd: R, max: usize, budget: &Budget) -> FrameReader<R> {
        FrameReader {
            rd,
            max,
            budget: budget.semaphore(),
            budget_total: budget.total(),
            header: [0; 4],
            have: 0,
            sized: false,
            payload: Vec::new(),
            filled: 0,
            held: None,
        }
    }

    /// The next frame; `None` when the connection ended between frames.
    pub async fn next(&mut self) -> Option<Result<Frame, FrameError>> {
        while self.have < 4 {
            match self.rd.read(&mut self.header[self.have..]).await {
                Ok(0) if self.have == 0 => return None,
                Ok(0) => return Some(Err(broken("the connection ended inside a frame length"))),
                Ok(n) => self.have += n,
                Err(e) => return Some(Err(FrameError::Broken(e))),
            }
        }
        let len = u32::from_be_bytes(self.header) as usize;
        if len > self.max {
            return Some(Err(FrameError::TooLarge {
                len,
                limit: self.max,
                budget: false,
            }));
        }
        if len > self.budget_total {
            return Some(Err(FrameError::TooLarge {
                len,
                limit: self.budget_total,
                budget: true,
            }));
        }
        if !self.sized {
            if len > SMALL_FRAME {
                // Waits while other connections hold the budget; cancel
                // safe (nothing is read before the permit is stored).
                let permit = self
                    .budget
                    .clone()
                    .acquire_many_owned(len as u32)
                    .await
                    .expect("the budget is never closed");
                self.held = Some(permit);
            }
            self.payload = vec![0; len];
            self.filled = 0;
            self.sized = true;
        }
        while self.filled < len {
            match self.rd.read(&mut self.payload[self.filled..]).await {
                Ok(0) => return Some(Err(broken("the connection ended inside a frame"))),
                Ok(n) => self.filled += n,
                Err(e) => return Some(Err(FrameError::Broken(e))),
            }
        }
        self.have = 0;
        self.filled = 0;
        self.sized = false;
        let held = self.held.take();
        Some(Ok(Frame {
            payload: std::mem::take(&mut self.payload),
            held,
        }))
    }
}

fn broken(why: &str) -> FrameError {
    FrameError::Broken(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, why))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn frames_wait_for_the_budget_and_give_it_back() {
        let budget = Budget::new(SMALL_FRAME + 100_000);
        let (a_tx, a_rx) = tokio::io::duplex(1024);
        let (b_tx, b_rx) = tokio::io::duplex(1024);
        let mut a = FrameReader::new(a_rx, 1_000_000, &budget);
        let mut b = FrameReader::new(b_rx, 1_000_000, &budget);
        let big = SMALL_FRAME + 60_000;
        let writer = |mut tx: tokio::io::DuplexStream, byte: u8| {
            tokio::spawn(async move {
                tx.write_all(&(big as u32).to_be_bytes()).await.unwrap();
                tx.write_all(&vec![byte; big]).await.unwrap();
                tx
            })
        };
        let (wa, wb) = (writer(a_tx, 1), writer(b_tx, 2));
        let fa = a.next().await.unwrap().unwrap();
        assert_eq!(fa.payload.len(), big);
        assert_eq!(budget.available(), SMALL_FRAME + 100_000 - big);
        // b's frame does not fit while a's is held.
        let waiting = tokio::time::timeout(std::time::Duration::from_millis(50), b.next()).await;
        assert!(waiting.is_err(), "b waits for the budget");
        drop(fa);
        let fb = b.next().await.unwrap().unwrap();
        assert_eq!(fb.payload, vec![2; big]);
        let (mut a_tx, _b_tx) = (wa.await.unwrap(), wb.await.unwrap());
        // A small frame never waits.
        let hold = b
            .budget
            .clone()
            .try_acquire_many_owned(budget.available() as u32)
            .unwrap();
        a_tx.write_all(&3u32.to_be_bytes()).await.unwrap();
        a_tx.write_all(b"abc").await.unwrap();
        assert_eq!(a.next().await.unwrap().unwrap().payload, b"abc");
        drop((hold, fb));
        // Larger than the limit, or than the whole budget: refused.
        a_tx.write_all(&2_000_000u32.to_be_bytes()).await.unwrap();
        assert!(matches!(
            a.next().await,
            Some(Err(FrameError::TooLarge { budget: false, .. }))
        ));
        let mut c = FrameReader::new(&[0u8, 0x10, 0, 0][..], 10_000_000, &budget);
        assert!(matches!(
            c.next().await,
            Some(Err(FrameError::TooLarge { budget: true, .. }))
        ));
    }
}
