//! Binary frames read under a memory budget shared by every connection.
//!
//! # What it guarantees
//!
//! A connection reads ahead at most [`READ_AHEAD`] bytes (8 KiB, so that
//! one read takes a small frame whole, and a pipelined burst of them).
//! A frame larger than that is only buffered once its length is checked
//! against the frame limit *and*, past [`SMALL_FRAME`], that many bytes are
//! taken from the daemon-wide [`Budget`] (`--max-buffered-bytes`). A
//! connection whose frame does not fit the budget now stops reading (its
//! bytes wait in the kernel) until others give bytes back; a frame larger
//! than the whole budget is refused. So 64 clients each half-way into a
//! 4 MiB frame hold at most the budget, not 256 MiB. The bytes stay taken
//! until the request the frame carries has finished (its decoded values
//! live that long).
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

/// Bytes read ahead of the current frame. A request frame is tens of
/// bytes: one read takes a frame with its length (and any pipelined after
/// it), where reading the length and then the payload cost two reads and,
/// the length having filled its 4 bytes exactly, a third that found the
/// socket empty. A frame that does not fit is read straight into its own
/// payload (below).
pub const READ_AHEAD: usize = 8 * 1024;

/// Reads length-prefixed frames (4-byte big-endian length, then payload).
pub struct FrameReader<R> {
    rd: R,
    max: usize,
    budget: Arc<Semaphore>,
    budget_total: usize,
    /// Read ahead: the unconsumed bytes are `buf[start..end]`. Allocated
    /// on the first read.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// A frame larger than the read-ahead, its length consumed, being read
    /// straight into its payload.
    direct: Option<Direct>,
}

/// A frame read into its own buffer.
struct Direct {
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
            buf: Vec::new(),
            start: 0,
            end: 0,
            direct: None,
        }
    }

    /// The next frame; `None` when the connection ended between frames.
    pub async fn next(&mut self) -> Option<Result<Frame, FrameError>> {
        loop {
            if let Some(d) = &mut self.direct {
                while d.filled < d.payload.len() {
                    match self.rd.read(&mut d.payload[d.filled..]).await {
                        Ok(0) => return Some(Err(broken("the connection ended inside a frame"))),
                        Ok(n) => d.filled += n,
                        Err(e) => return Some(Err(FrameError::Broken(e))),
                    }
                }
                let d = self.direct.take().expect("checked above");
                return Some(Ok(Frame {
                    payload: d.payload,
                    held: d.held,
                }));
            }
            let have = self.end - self.start;
            if have >= 4 {
                let len_bytes: [u8; 4] = self.buf[self.start..self.start + 4]
                    .try_into()
                    .expect("four bytes");
                let len = u32::from_be_bytes(len_bytes) as usize;
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
                if 4 + len <= have {
                    // The whole frame is read ahead.
                    let at = self.start + 4;
                    let payload = self.buf[at..at + len].to_vec();
                    self.consume(4 + len);
                    return Some(Ok(Frame {
                        payload,
                        held: None,
                    }));
                }
                if 4 + len > READ_AHEAD {
                    let held = if len > SMALL_FRAME {
                        // Waits while other connections hold the budget;
                        // cancel safe (the length stays unconsumed until
                        // the permit is taken).
                        let permit = self
                            .budget
                            .clone()
                            .acquire_many_owned(len as u32)
                            .await
                            .expect("the budget is never closed");
                        Some(permit)
                    } else {
                        None
                    };
                    let mut payload = vec![0; len];
                    // Less than the frame is read ahead (checked above).
                    let part = have - 4;
                    payload[..part].copy_from_slice(&self.buf[self.start + 4..self.end]);
                    self.consume(have);
                    self.direct = Some(Direct {
                        payload,
                        filled: part,
                        held,
                    });
                    continue;
                }
            }
            // More bytes are needed, and they fit the read-ahead.
            if self.buf.is_empty() {
                self.buf = vec![0; READ_AHEAD];
            }
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            match self.rd.read(&mut self.buf[self.end..]).await {
                Ok(0) if self.end == 0 => return None,
                Ok(0) if self.end < 4 => {
                    return Some(Err(broken("the connection ended inside a frame length")))
                }
                Ok(0) => return Some(Err(broken("the connection ended inside a frame"))),
                Ok(n) => self.end += n,
                Err(e) => return Some(Err(FrameError::Broken(e))),
            }
        }
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
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

    /// Frames of `sizes`, each filled with its index.
    fn stream_of(sizes: &[usize]) -> Vec<u8> {
        let mut bytes = Vec::new();
        for (i, &n) in sizes.iter().enumerate() {
            bytes.extend_from_slice(&(n as u32).to_be_bytes());
            bytes.extend(std::iter::repeat_n(i as u8, n));
        }
        bytes
    }

    /// Delivers `bytes` in reads of the given sizes (cycled), as a socket
    /// may.
    struct Chunked {
        bytes: Vec<u8>,
        at: usize,
        chunks: Vec<usize>,
        turn: usize,
    }

    impl AsyncRead for Chunked {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            let me = &mut *self;
            let chunk = me.chunks[me.turn % me.chunks.len()].max(1);
            me.turn += 1;
            let n = chunk.min(buf.remaining()).min(me.bytes.len() - me.at);
            buf.put_slice(&me.bytes[me.at..me.at + n]);
            me.at += n;
            std::task::Poll::Ready(Ok(()))
        }
    }

    async fn read_all(
        sizes: &[usize],
        chunks: Vec<usize>,
        cut: usize,
    ) -> Vec<Result<Vec<u8>, String>> {
        let budget = Budget::new(10_000_000);
        let mut bytes = stream_of(sizes);
        bytes.truncate(bytes.len() - cut.min(bytes.len()));
        let rd = Chunked {
            bytes,
            at: 0,
            chunks,
            turn: 0,
        };
        let mut frames = FrameReader::new(rd, 1_000_000, &budget);
        let mut out = Vec::new();
        while let Some(f) = frames.next().await {
            match f {
                Ok(f) => out.push(Ok(f.payload)),
                Err(e) => {
                    out.push(Err(format!("{e:?}")));
                    break;
                }
            }
        }
        // Every budget byte a frame took is back once the frames are gone.
        assert_eq!(budget.available(), 10_000_000);
        out
    }

    #[tokio::test]
    async fn pipelined_frames_come_out_whole_and_in_order() {
        // Small ones many to a read, one straddling the read-ahead's end,
        // one larger than the read-ahead, one past the small-frame size.
        let mut sizes = vec![0, 1, 20, 300];
        sizes.extend(std::iter::repeat_n(37, 400));
        sizes.extend([
            READ_AHEAD - 4,
            READ_AHEAD - 3,
            READ_AHEAD + 5,
            SMALL_FRAME + 7,
            12,
        ]);
        let got = read_all(&sizes, vec![usize::MAX], 0).await;
        assert_eq!(got.len(), sizes.len());
        for (i, (f, &n)) in got.iter().zip(&sizes).enumerate() {
            assert_eq!(f.as_ref().unwrap(), &vec![i as u8; n], "frame {i}");
        }
    }

    #[tokio::test]
    async fn a_connection_ending_inside_a_frame_is_broken() {
        let got = read_all(&[5, 9], vec![3], 2).await;
        assert_eq!(got[0].as_ref().unwrap(), &vec![0u8; 5]);
        assert!(
            got[1].as_ref().unwrap_err().contains("inside a frame"),
            "{got:?}"
        );
        let got = read_all(&[5], vec![1], 7).await;
        assert!(
            got[0].as_ref().unwrap_err().contains("frame length"),
            "{got:?}"
        );
        let got = read_all(&[READ_AHEAD * 2], vec![1000], 1).await;
        assert!(
            got[0].as_ref().unwrap_err().contains("inside a frame"),
            "{got:?}"
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        /// However a socket splits the bytes, the same frames come out.
        #[test]
        fn frames_survive_any_split(
            sizes in proptest::collection::vec(
                proptest::prop_oneof![0usize..64, 8180usize..8200, 20_000usize..70_000],
                1..12,
            ),
            chunks in proptest::collection::vec(1usize..9000, 1..6),
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let got = rt.block_on(read_all(&sizes, chunks, 0));
            proptest::prop_assert_eq!(got.len(), sizes.len());
            for (i, (f, &n)) in got.iter().zip(&sizes).enumerate() {
                proptest::prop_assert_eq!(f.as_ref().unwrap(), &vec![i as u8; n]);
            }
        }
    }
}
