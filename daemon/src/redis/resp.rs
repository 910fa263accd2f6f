//! RESP2 replies: where one ends, and what it says.
//!
//! # What it owns
//!
//! [`frame_len`] finds the end of the first whole reply in what was read
//! from Redis, so that the pipe hands each request exactly its replies.
//! [`parse`] turns one whole reply into the redis crate's [`Value`].
//!
//! # Why a parser of our own
//!
//! `redis::parse_redis_value` builds a fresh `combine` decoder for every
//! call: an 8 KiB buffer and boxed parser state per reply. Through the
//! pipe that is every reply, and a heap profile (`valgrind --tool=dhat`) of
//! a cold-key run had those buffers at three quarters of all bytes seqd
//! allocated, 2.5 per number, with glibc's `malloc_consolidate` and
//! `_int_malloc` at 8% of seqd's CPU samples. [`parse`] reads the shapes a
//! sequence, tracker or cache reply has (simple strings, integers, bulk
//! strings, arrays of them) directly; a reply holding an error anywhere,
//! or anything else, goes to the redis crate's parser, so errors keep the
//! crate's exact conversion.
//!
//! # What it guarantees
//!
//! [`parse`] returns what `redis::parse_redis_value` returns for the same
//! bytes (a property test compares the two on random replies, errors
//! nested anywhere included).

use redis::{RedisResult, Value};

/// A bulk string longer than this from Redis is treated as a broken stream.
const MAX_BULK: i64 = 512 * 1024 * 1024;
/// Arrays nested deeper than this go to the redis crate's parser (which
/// refuses past its own limit).
const MAX_DEPTH: usize = 32;

/// One whole reply (as [`frame_len`] measured it), parsed.
pub fn parse(frame: &[u8]) -> RedisResult<Value> {
    let mut pos = 0;
    match value(frame, &mut pos, 0) {
        Some(v) if pos == frame.len() => Ok(v),
        _ => redis::parse_redis_value(frame),
    }
}

/// The value at `pos` (moved past it), or `None` for anything the fast
/// path leaves to the redis crate: an error reply, a malformed line.
fn value(buf: &[u8], pos: &mut usize, depth: usize) -> Option<Value> {
    if depth > MAX_DEPTH {
        return None;
    }
    let (kind, line, next) = line_at(buf, *pos)?;
    let line = std::str::from_utf8(line).ok()?;
    *pos = next;
    match kind {
        b'+' if line == "OK" => Some(Value::Okay),
        b'+' => Some(Value::SimpleString(line.to_owned())),
        b':' => line.trim().parse().ok().map(Value::Int),
        b'$' => {
            let n: i64 = line.trim().parse().ok()?;
            let Ok(n) = usize::try_from(n) else {
                return Some(Value::Nil);
            };
            let body = buf.get(*pos..pos.checked_add(n)?)?;
            if buf.get(*pos + n..*pos + n + 2)? != b"\r\n" {
                return None;
            }
            *pos += n + 2;
            Some(Value::BulkString(body.to_vec()))
        }
        b'*' => {
            let n: i64 = line.trim().parse().ok()?;
            let Ok(n) = usize::try_from(n) else {
                return Some(Value::Nil);
            };
            // Each element takes at least 3 bytes: a length beyond what
            // is left is malformed, and must not size the allocation.
            if n > buf.len() - *pos {
                return None;
            }
            let mut items = Vec::with_capacity(n);
            for _ in 0..n {
                items.push(value(buf, pos, depth + 1)?);
            }
            Some(Value::Array(items))
        }
        _ => None,
    }
}

/// The length of the first whole RESP2 reply in `buf`, `None` while it is
/// incomplete.
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, String> {
    let mut pos = 0usize;
    // Values still to read: the reply itself, then array elements.
    let mut remaining: u64 = 1;
    while remaining > 0 {
        remaining -= 1;
        let Some((kind, line, next)) = line_at(buf, pos) else {
            return Ok(None);
        };
        pos = next;
        match kind {
            b'+' | b'-' | b':' => {}
            b'$' => {
                let n = int(line)?;
                if n > MAX_BULK {
                    return Err(format!("bulk string of {n} bytes"));
                }
                if n >= 0 {
                    let end = pos + n as usize + 2;
                    if buf.len() < end {
                        return Ok(None);
                    }
                    if &buf[end - 2..end] != b"\r\n" {
                        return Err("bulk string not followed by CRLF".into());
                    }
                    pos = end;
                }
            }
            b'*' => {
                let n = int(line)?;
                if n > 0 {
                    remaining += n as u64;
                }
            }
            other => return Err(format!("reply type byte {other:#04x}")),
        }
    }
    Ok(Some(pos))
}

/// The reply line starting at `pos`: its type byte, the text up to its
/// CRLF, and where the next line starts; `None` while it is incomplete.
fn line_at(buf: &[u8], pos: usize) -> Option<(u8, &[u8], usize)> {
    let kind = *buf.get(pos)?;
    let rest = &buf[pos + 1..];
    let end = rest.windows(2).position(|w| w == b"\r\n")?;
    Some((kind, &rest[..end], pos + 1 + end + 2))
}

fn int(line: &[u8]) -> Result<i64, String> {
    std::str::from_utf8(line)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad length {:?}", String::from_utf8_lossy(line)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A RESP2 reply as Redis writes it.
    #[derive(Debug, Clone)]
    enum Reply {
        Simple(String),
        Error(String),
        Int(i64),
        Bulk(Option<Vec<u8>>),
        Array(Option<Vec<Reply>>),
    }

    impl Reply {
        fn encode(&self, out: &mut Vec<u8>) {
            match self {
                Reply::Simple(s) => out.extend(format!("+{s}\r\n").bytes()),
                Reply::Error(s) => out.extend(format!("-{s}\r\n").bytes()),
                Reply::Int(n) => out.extend(format!(":{n}\r\n").bytes()),
                Reply::Bulk(None) => out.extend(b"$-1\r\n"),
                Reply::Bulk(Some(b)) => {
                    out.extend(format!("${}\r\n", b.len()).bytes());
                    out.extend(b);
                    out.extend(b"\r\n");
                }
                Reply::Array(None) => out.extend(b"*-1\r\n"),
                Reply::Array(Some(items)) => {
                    out.extend(format!("*{}\r\n", items.len()).bytes());
                    for i in items {
                        i.encode(out);
                    }
                }
            }
        }
    }

    fn reply() -> impl Strategy<Value = Reply> {
        let line = "[a-zA-Z0-9 ]{0,20}";
        let leaf = prop_oneof![
            line.prop_map(Reply::Simple),
            line.prop_map(|s| Reply::Error(format!("ERR {s}"))),
            any::<i64>().prop_map(Reply::Int),
            // Bulk strings may hold CRLF and any byte.
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40))
                .prop_map(Reply::Bulk),
        ];
        leaf.prop_recursive(3, 32, 6, |inner| {
            proptest::option::of(proptest::collection::vec(inner, 0..6)).prop_map(Reply::Array)
        })
    }

    proptest! {
        #[test]
        fn a_whole_reply_is_found_and_no_prefix_is_taken_for_one(
            r in reply(),
            next in proptest::collection::vec(any::<u8>(), 0..10),
        ) {
            let mut bytes = Vec::new();
            r.encode(&mut bytes);
            let len = bytes.len();
            for cut in 0..len {
                prop_assert_eq!(frame_len(&bytes[..cut]), Ok(None), "prefix of {}", cut);
            }
            // Whatever follows (the next reply, partly read) is not counted.
            bytes.extend(&next);
            prop_assert_eq!(frame_len(&bytes), Ok(Some(len)));
            // And what the redis crate parses from exactly those bytes is
            // one value, consumed whole.
            prop_assert!(redis::parse_redis_value(&bytes[..len]).is_ok());
        }

        /// The fast path answers exactly what the redis crate answers:
        /// the same value, or (an error nested anywhere, anything odd)
        /// the crate's own answer.
        #[test]
        fn parse_agrees_with_the_redis_crate(r in reply()) {
            let mut bytes = Vec::new();
            r.encode(&mut bytes);
            same_as_the_crate(&bytes)?;
        }

        /// Any bytes one whole reply long, however damaged.
        #[test]
        fn parse_agrees_on_damaged_replies(
            r in reply(),
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4),
        ) {
            let mut bytes = Vec::new();
            r.encode(&mut bytes);
            if bytes.is_empty() {
                return Ok(());
            }
            for (at, b) in flips {
                let i = at % bytes.len();
                bytes[i] = b;
            }
            same_as_the_crate(&bytes)?;
            if let Ok(Some(len)) = frame_len(&bytes) {
                same_as_the_crate(&bytes[..len])?;
            }
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = frame_len(&bytes);
        }
    }

    fn same_as_the_crate(bytes: &[u8]) -> Result<(), TestCaseError> {
        match (parse(bytes), redis::parse_redis_value(bytes)) {
            (Ok(a), Ok(b)) => prop_assert_eq!(a, b),
            (Err(a), Err(b)) => prop_assert_eq!(a.to_string(), b.to_string()),
            (a, b) => prop_assert!(false, "{:?} vs the crate's {:?}", a, b),
        }
        Ok(())
    }

    #[test]
    fn the_common_shapes_parse_without_the_crate() {
        let mut pos = 0;
        let bytes = b"*5\r\n+OK\r\n:-42\r\n$3\r\na\r\n\r\n$-1\r\n*1\r\n+QUEUED\r\n";
        let v = value(bytes, &mut pos, 0).expect("the fast path takes it");
        assert_eq!(pos, bytes.len());
        assert_eq!(
            v,
            Value::Array(vec![
                Value::Okay,
                Value::Int(-42),
                Value::BulkString(b"a\r\n".to_vec()),
                Value::Nil,
                Value::Array(vec![Value::SimpleString("QUEUED".into())]),
            ])
        );
        // An error anywhere is left to the crate, which makes it a
        // server error value.
        let mut pos = 0;
        assert!(value(b"*1\r\n-ERR no\r\n", &mut pos, 0).is_none());
        assert!(matches!(
            parse(b"*1\r\n-ERR no\r\n"),
            Ok(Value::Array(v)) if matches!(v[0], Value::ServerError(_))
        ));
        // A length larger than the bytes left does not size an allocation.
        let mut pos = 0;
        assert!(value(b"*999999999999\r\n", &mut pos, 0).is_none());
    }

    #[test]
    fn unknown_type_bytes_and_bad_lengths_are_errors() {
        assert!(frame_len(b"?what\r\n").is_err());
        assert!(frame_len(b"$abc\r\n").is_err());
        assert!(frame_len(b"$3\r\nabcXY").is_err());
        assert!(frame_len(b"$999999999999\r\n").is_err());
        assert_eq!(frame_len(b"*2\r\n:1\r\n:2\r\n"), Ok(Some(12)));
        assert_eq!(frame_len(b"*2\r\n:1\r\n"), Ok(None));
    }
}
