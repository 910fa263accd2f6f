//! Framing and payload encoding of the binary protocol.
//!
//! A frame is a 4-byte big-endian length `N` and then `N` bytes of payload.
//! The payload is one [`ClientMessage`](crate::ClientMessage) or
//! [`ServerMessage`](crate::ServerMessage) in bincode 1.3.3 with fixed-width
//! little-endian integers, trailing bytes rejected, and a size limit equal to
//! the frame limit (so a length prefix inside the payload can never make the
//! decoder allocate more than the frame itself).
//!
//! The length is checked against the limit *before* any buffer for the
//! payload is allocated.

use bincode::Options;
use serde::{de::DeserializeOwned, Serialize};
use std::io::{self, Read, Write};

/// Size of the length prefix in bytes.
pub const LENGTH_PREFIX: usize = 4;
/// Default maximum payload size of a frame: 8 MiB.
pub const DEFAULT_MAX_FRAME: usize = 8 * 1024 * 1024;
/// No configuration may raise the frame limit above 256 MiB.
pub const MAX_FRAME_CEILING: usize = 256 * 1024 * 1024;

/// Why a frame could not be read or decoded.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error("malformed payload: {0}")]
    Malformed(String),
    #[error(transparent)]
    Io(#[from] io::Error),
}

fn options(limit: usize) -> impl Options {
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .with_little_endian()
        .reject_trailing_bytes()
        .with_limit(limit as u64)
}

/// Encodes a message as a payload (without the length prefix).
pub fn encode_payload<T: Serialize>(msg: &T, max: usize) -> Result<Vec<u8>, FrameError> {
    let bytes = options(max)
        .serialize(msg)
        .map_err(|e| FrameError::Malformed(e.to_string()))?;
    if bytes.len() > max {
        return Err(FrameError::TooLarge {
            len: bytes.len(),
            max,
        });
    }
    Ok(bytes)
}

/// Decodes a payload (without the length prefix) into a message. Trailing
/// bytes, unknown variants and lengths beyond the limit are errors.
pub fn decode_payload<T: DeserializeOwned>(payload: &[u8], max: usize) -> Result<T, FrameError> {
    if payload.len() > max {
        return Err(FrameError::TooLarge {
            len: payload.len(),
            max,
        });
    }
    options(max)
        .deserialize(payload)
        .map_err(|e| FrameError::Malformed(describe(&e, payload.len(), max)))
}

/// What was wrong with a payload, in words: bincode's own message for a
/// length that runs past the payload is an empty I/O error.
fn describe(e: &bincode::Error, len: usize, max: usize) -> String {
    match &**e {
        bincode::ErrorKind::Io(io) if io.kind() == io::ErrorKind::UnexpectedEof => {
            format!("a declared length or value runs past the end of the {len}-byte payload")
        }
        bincode::ErrorKind::SizeLimit => {
            format!("a declared length exceeds the frame limit of {max} bytes")
        }
        other => other.to_string(),
    }
}

/// Encodes a message as a whole frame: the length prefix and the payload.
pub fn encode_frame<T: Serialize>(msg: &T, max: usize) -> Result<Vec<u8>, FrameError> {
    let payload = encode_payload(msg, max)?;
    let mut frame = Vec::with_capacity(LENGTH_PREFIX + payload.len());
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    frame.extend_from_slice(&payload);
    Ok(frame)
}

/// Appends a message as a whole frame to `buf`, without a buffer of its
/// own. On an error `buf` is left as it was.
pub fn encode_frame_into<T: Serialize>(
    buf: &mut Vec<u8>,
    msg: &T,
    max: usize,
) -> Result<(), FrameError> {
    let start = buf.len();
    buf.extend_from_slice(&[0; LENGTH_PREFIX]);
    if let Err(e) = options(max).serialize_into(&mut *buf, msg) {
        buf.truncate(start);
        return Err(FrameError::Malformed(e.to_string()));
    }
    let len = buf.len() - start - LENGTH_PREFIX;
    if len > max {
        buf.truncate(start);
        return Err(FrameError::TooLarge { len, max });
    }
    buf[start..start + LENGTH_PREFIX].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(())
}

/// Writes one frame to a blocking writer.
pub fn write_frame<W: Write, T: Serialize>(
    w: &mut W,
    msg: &T,
    max: usize,
) -> Result<(), FrameError> {
    let frame = encode_frame(msg, max)?;
    w.write_all(&frame)?;
    w.flush()?;
    Ok(())
}

/// Reads one frame from a blocking reader and decodes it. The length is
/// checked before the payload buffer is allocated.
pub fn read_frame<R: Read, T: DeserializeOwned>(r: &mut R, max: usize) -> Result<T, FrameError> {
    let mut len = [0u8; LENGTH_PREFIX];
    r.read_exact(&mut len)?;
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload)?;
    decode_payload(&payload, max)
}

/// tokio-util's length-delimited codec set up for seqd frames: a u32
/// big-endian length that counts only the payload, and `max` enforced on
/// the length before the payload is buffered.
#[cfg(feature = "tokio")]
pub fn length_delimited(max: usize) -> tokio_util::codec::LengthDelimitedCodec {
    tokio_util::codec::LengthDelimitedCodec::builder()
        .length_field_length(LENGTH_PREFIX)
        .big_endian()
        .max_frame_length(max.min(MAX_FRAME_CEILING))
        .new_codec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ClientMessage;

    /// A request frame whose key declares `len` bytes but carries none.
    fn cache_get_declaring(len: u64) -> Vec<u8> {
        let mut p = Vec::new();
        p.extend_from_slice(&1u32.to_le_bytes()); // ClientMessage::Request
        p.extend_from_slice(&7u64.to_le_bytes()); // id
        p.extend_from_slice(&12u32.to_le_bytes()); // Request::CacheGet
        p.extend_from_slice(&len.to_le_bytes()); // key length
        p
    }

    #[test]
    fn a_length_past_the_payload_or_the_limit_is_named_in_the_error() {
        // bincode checks what is left of the payload before its limit, so
        // both a small and a huge declared length end up here.
        for (len, want) in [
            (10, "runs past the end of the 24-byte payload"),
            (u64::MAX, "runs past the end of the 24-byte payload"),
        ] {
            let e = decode_payload::<ClientMessage>(&cache_get_declaring(len), 1024).unwrap_err();
            let text = e.to_string();
            assert!(text.contains(want), "{len}: {text}");
        }
    }
}
