//! Line framing for the text protocol, with a limit that never ends the
//! connection: a line longer than the limit is discarded up to its `\n` and
//! reported as [`Line::TooLong`], so the daemon answers `ERR too_large` and
//! reads the next line.

use bytes::{Buf, BytesMut};
use tokio_util::codec::Decoder;

/// One item of the text stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// A complete line without its `\n`.
    Line(BytesMut),
    /// A line longer than the limit; its bytes were dropped.
    TooLong,
}

/// Splits a byte stream on `\n` with a maximum line length.
#[derive(Debug)]
pub struct LineDecoder {
    max: usize,
    /// How far the buffer has been searched for `\n`, so a slow sender does
    /// not make every read rescan the whole buffer.
    scanned: usize,
    /// True while dropping the rest of an over-long line.
    discarding: bool,
}

impl LineDecoder {
    pub fn new(max: usize) -> Self {
        LineDecoder {
            max,
            scanned: 0,
            discarding: false,
        }
    }
}

impl Decoder for LineDecoder {
    type Item = Line;
    type Error = std::io::Error;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Line>, std::io::Error> {
        loop {
            let newline = buf[self.scanned..].iter().position(|b| *b == b'\n');
            match (self.discarding, newline) {
                (true, Some(i)) => {
                    buf.advance(self.scanned + i + 1);
                    self.scanned = 0;
                    self.discarding = false;
                    return Ok(Some(Line::TooLong));
                }
                (true, None) => {
                    buf.clear();
                    self.scanned = 0;
                    return Ok(None);
                }
                (false, Some(i)) => {
                    let end = self.scanned + i;
                    self.scanned = 0;
                    if end > self.max {
                        buf.advance(end + 1);
                        return Ok(Some(Line::TooLong));
                    }
                    let mut line = buf.split_to(end + 1);
                    line.truncate(end);
                    return Ok(Some(Line::Line(line)));
                }
                (false, None) if buf.len() > self.max => {
                    // Drop what we have and keep dropping until the newline.
                    self.discarding = true;
                    self.scanned = 0;
                    buf.clear();
                    continue;
                }
                (false, None) => {
                    self.scanned = buf.len();
                    return Ok(None);
                }
            }
        }
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Line>, std::io::Error> {
        match self.decode(buf)? {
            Some(line) => Ok(Some(line)),
            None if self.discarding => {
                self.discarding = false;
                Ok(Some(Line::TooLong))
            }
            // A last line without its newline still counts (like `printf`).
            None if !buf.is_empty() => {
                self.scanned = 0;
                let line = buf.split();
                Ok(Some(Line::Line(line)))
            }
            None => Ok(None),
        }
    }
}
