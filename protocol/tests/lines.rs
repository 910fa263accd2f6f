//! Property tests of the text protocol's line framing: however the bytes
//! arrive, the same lines come out, and over-long lines are reported once
//! each without ending the stream.

#![cfg(feature = "tokio")]

use bytes::BytesMut;
use proptest::prelude::*;
use seqd_protocol::lines::{Line, LineDecoder};
use tokio_util::codec::Decoder;

/// What splitting the whole input at once should give.
fn expected(input: &[u8], max: usize) -> Vec<Line> {
    let mut out = Vec::new();
    let mut parts: Vec<&[u8]> = input.split(|b| *b == b'\n').collect();
    let last = parts.pop().unwrap_or(&[]);
    for p in parts {
        out.push(if p.len() > max {
            Line::TooLong
        } else {
            Line::Line(BytesMut::from(p))
        });
    }
    if !last.is_empty() {
        out.push(if last.len() > max {
            Line::TooLong
        } else {
            Line::Line(BytesMut::from(last))
        });
    }
    out
}

fn decode_in_chunks(input: &[u8], cuts: &[usize], max: usize) -> Vec<Line> {
    let mut dec = LineDecoder::new(max);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut start = 0;
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
    points.push(input.len());
    points.sort_unstable();
    for end in points {
        buf.extend_from_slice(&input[start..end.max(start)]);
        start = end.max(start);
        while let Some(line) = dec.decode(&mut buf).unwrap() {
            out.push(line);
        }
    }
    while let Some(line) = dec.decode_eof(&mut buf).unwrap() {
        out.push(line);
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn chunking_does_not_change_the_lines(
        input in proptest::collection::vec(prop_oneof![Just(b'\n'), Just(b'a'), Just(b'\r'), any::<u8>()], 0..200),
        cuts in proptest::collection::vec(any::<usize>(), 0..10),
        max in 1usize..40,
    ) {
        prop_assert_eq!(decode_in_chunks(&input, &cuts, max), expected(&input, max));
    }
}

#[test]
fn an_over_long_line_is_reported_and_the_next_line_still_parses() {
    let mut input = vec![b'x'; 100];
    input.extend_from_slice(b"\nPING\n");
    let got = decode_in_chunks(&input, &[3, 50, 99, 101], 10);
    assert_eq!(
        got,
        vec![Line::TooLong, Line::Line(BytesMut::from(&b"PING"[..]))]
    );
}
