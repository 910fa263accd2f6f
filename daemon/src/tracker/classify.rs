//! The gap classification as a pure function over a stream's
//! state, with the stream name rules and the Redis key schema.
//!
//! The classification is the market-data tracker's single-event `check_sequence`,
//! in this order:
//!
//! | condition | event | state change |
//! |---|---|---|
//! | no state yet | `normal` (expected `-`) | last = seq |
//! | seq = last + 1 | `normal` | last = seq |
//! | seq > last + 1 | `gap`, gap = seq − last − 1 | last = seq, gap_count + 1 |
//! | seq = last | `duplicate` | none |
//! | 2·seq < last | `reset` | last = seq, gap_count = 0, reset_count + 1 |
//! | otherwise | `out_of_order` | none |
//!
//! Beyond that tracker, a stream remembers the ranges its gaps left open (the
//! latest [`MAX_MISSING_RANGES`]): an out-of-order number inside one fills
//! it (`filled=true`); a reset forgets them. The Redis script in
//! [`super::redis`] implements exactly this function; the tests hold the
//! two to the same table.

use crate::error::Error;
use seqd_protocol::{GapKind, Stream};

/// Redis TTL of a stream's hash, refreshed on every update.
pub const STREAM_TTL_SECS: u64 = 7 * 24 * 3600;
/// Missing ranges remembered per stream; older ones are forgotten.
pub const MAX_MISSING_RANGES: usize = 64;
/// Redis scripts compute in doubles, exact up to 2^53 - 1; larger sequence
/// numbers are refused rather than silently rounded.
pub const MAX_SEQ: u64 = (1 << 53) - 1;
/// Longest exchange or symbol name.
pub const MAX_NAME_LEN: usize = 64;
/// Gaps at least this large are logged at info, warn, error.
pub const GAP_LOG_INFO: u64 = 10;
pub const GAP_LOG_WARN: u64 = 100;
pub const GAP_LOG_ERROR: u64 = 1000;

/// What is known about a stream.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StreamState {
    pub last_seq: u64,
    pub last_ts_ms: i64,
    pub gap_count: u64,
    pub reset_count: u64,
    /// Missing ranges `(first, last)`, ascending, disjoint, at most
    /// [`MAX_MISSING_RANGES`].
    pub missing: Vec<(u64, u64)>,
}

/// The classification of one number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub kind: GapKind,
    pub expected: Option<u64>,
    pub gap: u64,
    pub filled: Option<bool>,
}

/// Checks an exchange or symbol name: 1–64 printable ASCII characters
/// without `:` or spaces (a `:` would let a caller reach another stream's
/// key).
pub fn validate_name(what: &str, name: &str) -> Result<(), Error> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(Error::invalid(format!(
            "{what} must be 1 to {MAX_NAME_LEN} characters"
        )));
    }
    if let Some(bad) = name.chars().find(|c| !c.is_ascii_graphic() || *c == ':') {
        return Err(Error::invalid(format!(
            "{what} contains {bad:?}; use printable ASCII without ':' or spaces"
        )));
    }
    Ok(())
}

/// Validates a stream and builds its key `k2:seq:{exchange}:{symbol}`.
pub fn stream_key(s: &Stream) -> Result<String, Error> {
    validate_name("exchange", &s.exchange)?;
    validate_name("symbol", &s.symbol)?;
    Ok(format!("k2:seq:{}:{}", s.exchange, s.symbol))
}

/// Checks a sequence number's range.
pub fn validate_seq(seq: u64) -> Result<(), Error> {
    if seq > MAX_SEQ {
        return Err(Error::invalid(format!(
            "seq {seq} is above the largest supported, {MAX_SEQ}"
        )));
    }
    Ok(())
}

/// Classifies `seq` against `state` and applies the state change.
pub fn check(state: &mut Option<StreamState>, seq: u64, now_ms: i64) -> Outcome {
    let Some(st) = state else {
        *state = Some(StreamState {
            last_seq: seq,
            last_ts_ms: now_ms,
            ..StreamState::default()
        });
        return Outcome {
            kind: GapKind::Normal,
            expected: None,
            gap: 0,
            filled: None,
        };
    };
    let last = st.last_seq;
    let expected = last + 1;
    let outcome = |kind, gap, filled| Outcome {
        kind,
        expected: Some(expected),
        gap,
        filled,
    };
    if seq == expected {
        st.last_seq = seq;
        st.last_ts_ms = now_ms;
        outcome(GapKind::Normal, 0, None)
    } else if seq > expected {
        st.last_seq = seq;
        st.last_ts_ms = now_ms;
        st.gap_count += 1;
        st.missing.push((expected, seq - 1));
        if st.missing.len() > MAX_MISSING_RANGES {
            st.missing.remove(0);
        }
        outcome(GapKind::Gap, seq - expected, None)
    } else if seq == last {
        outcome(GapKind::Duplicate, 0, None)
    } else if 2 * seq < last {
        st.last_seq = seq;
        st.last_ts_ms = now_ms;
        st.gap_count = 0;
        st.reset_count += 1;
        st.missing.clear();
        outcome(GapKind::Reset, 0, None)
    } else {
        let filled = fill(&mut st.missing, seq);
        if filled {
            st.last_ts_ms = now_ms;
        }
        outcome(GapKind::OutOfOrder, 0, Some(filled))
    }
}

/// Removes `seq` from the missing ranges; true when it was missing.
fn fill(missing: &mut Vec<(u64, u64)>, seq: u64) -> bool {
    let Some(i) = missing.iter().position(|(a, b)| *a <= seq && seq <= *b) else {
        return false;
    };
    let (a, b) = missing[i];
    match (seq == a, seq == b) {
        (true, true) => {
            missing.remove(i);
        }
        (true, false) => missing[i].0 = seq + 1,
        (false, true) => missing[i].1 = seq - 1,
        (false, false) => {
            missing[i].1 = seq - 1;
            missing.insert(i + 1, (seq + 1, b));
            // Splitting can exceed the bound: forget the oldest.
            if missing.len() > MAX_MISSING_RANGES {
                missing.remove(0);
            }
        }
    }
    true
}

/// Encodes missing ranges as the hash field `missing`: `a-b,c-d`.
pub fn encode_missing(missing: &[(u64, u64)]) -> String {
    missing
        .iter()
        .map(|(a, b)| format!("{a}-{b}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Decodes the hash field `missing`; malformed parts are skipped.
pub fn decode_missing(s: &str) -> Vec<(u64, u64)> {
    s.split(',')
        .filter_map(|r| {
            let (a, b) = r.split_once('-')?;
            Some((a.parse().ok()?, b.parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn state(last: u64) -> Option<StreamState> {
        Some(StreamState {
            last_seq: last,
            ..StreamState::default()
        })
    }

    /// Every row of the classification table: (last or none, seq) -> (event,
    /// expected, gap, last after, gap_count after, reset_count after).
    #[test]
    fn classification_follows_the_table_row_by_row() {
        type Row = (Option<u64>, u64, GapKind, Option<u64>, u64, u64, u64, u64);
        let rows: &[Row] = &[
            (None, 1000, GapKind::Normal, None, 0, 1000, 0, 0),
            (None, 0, GapKind::Normal, None, 0, 0, 0, 0),
            (Some(100), 101, GapKind::Normal, Some(101), 0, 101, 0, 0),
            (Some(100), 105, GapKind::Gap, Some(101), 4, 105, 1, 0),
            (Some(100), 102, GapKind::Gap, Some(101), 1, 102, 1, 0),
            (Some(100), 100, GapKind::Duplicate, Some(101), 0, 100, 0, 0),
            (Some(100), 49, GapKind::Reset, Some(101), 0, 49, 0, 1),
            (Some(100), 1, GapKind::Reset, Some(101), 0, 1, 0, 1),
            // 2·50 = 100 is not below 100: out of order, not a reset.
            (Some(100), 50, GapKind::OutOfOrder, Some(101), 0, 100, 0, 0),
            (Some(100), 99, GapKind::OutOfOrder, Some(101), 0, 100, 0, 0),
            (Some(1), 0, GapKind::Reset, Some(2), 0, 0, 0, 1),
            (Some(0), 0, GapKind::Duplicate, Some(1), 0, 0, 0, 0),
        ];
        for &(last, seq, kind, expected, gap, last_after, gaps, resets) in rows {
            let mut st = last.and_then(state);
            if let Some(s) = st.as_mut() {
                s.gap_count = 0;
            }
            let o = check(&mut st, seq, 7);
            let st = st.unwrap();
            let row = format!("last={last:?} seq={seq}");
            assert_eq!(o.kind, kind, "{row}");
            assert_eq!(o.expected, expected, "{row}");
            assert_eq!(o.gap, gap, "{row}");
            assert_eq!(st.last_seq, last_after, "{row}");
            assert_eq!(st.gap_count, gaps, "{row}");
            assert_eq!(st.reset_count, resets, "{row}");
        }
    }

    #[test]
    fn a_reset_zeroes_the_gap_count_and_forgets_missing_ranges() {
        let mut st = state(100);
        check(&mut st, 110, 1);
        check(&mut st, 120, 2);
        assert_eq!(st.as_ref().unwrap().gap_count, 2);
        assert_eq!(st.as_ref().unwrap().missing, vec![(101, 109), (111, 119)]);
        assert_eq!(check(&mut st, 3, 3).kind, GapKind::Reset);
        let s = st.unwrap();
        assert_eq!(
            (s.last_seq, s.gap_count, s.reset_count, s.missing.len()),
            (3, 0, 1, 0)
        );
    }

    #[test]
    fn out_of_order_numbers_fill_holes_once() {
        let mut st = state(100);
        check(&mut st, 105, 1); // missing 101-104
        assert_eq!(check(&mut st, 102, 2).filled, Some(true));
        assert_eq!(st.as_ref().unwrap().missing, vec![(101, 101), (103, 104)]);
        assert_eq!(check(&mut st, 102, 3).filled, Some(false), "already seen");
        assert_eq!(check(&mut st, 101, 4).filled, Some(true));
        assert_eq!(check(&mut st, 104, 5).filled, Some(true));
        assert_eq!(check(&mut st, 103, 6).filled, Some(true));
        assert!(st.as_ref().unwrap().missing.is_empty());
        assert_eq!(
            check(&mut st, 99, 7).filled,
            Some(false),
            "before any tracked gap"
        );
        assert_eq!(
            st.unwrap().gap_count,
            1,
            "filling does not change the counters"
        );
    }

    #[test]
    fn only_the_latest_64_missing_ranges_are_kept() {
        let mut st = state(0);
        for i in 1..=70u64 {
            check(&mut st, i * 10, i as i64);
        }
        let s = st.unwrap();
        assert_eq!(s.missing.len(), MAX_MISSING_RANGES);
        assert_eq!(s.missing[0], (61, 69));
        assert_eq!(*s.missing.last().unwrap(), (691, 699));
        assert_eq!(s.gap_count, 70);
    }

    #[test]
    fn names_without_colons_or_spaces() {
        validate_name("exchange", "binance").unwrap();
        validate_name("symbol", "BTC-USDT").unwrap();
        validate_name("symbol", "BTC/USDT").unwrap();
        for bad in ["", "a:b", "a b", "é", "a\tb"] {
            assert!(validate_name("symbol", bad).is_err(), "{bad:?}");
        }
        let key = stream_key(&Stream {
            exchange: "asx".into(),
            symbol: "BHP".into(),
        })
        .unwrap();
        assert_eq!(key, "k2:seq:asx:BHP");
        assert!(validate_seq(MAX_SEQ).is_ok() && validate_seq(MAX_SEQ + 1).is_err());
    }

    proptest! {
        #[test]
        fn missing_ranges_stay_sorted_disjoint_and_bounded(seqs in proptest::collection::vec(0u64..400, 1..200)) {
            let mut st = None;
            for (i, s) in seqs.iter().enumerate() {
                check(&mut st, *s, i as i64);
                let m = &st.as_ref().unwrap().missing;
                prop_assert!(m.len() <= MAX_MISSING_RANGES);
                for r in m {
                    prop_assert!(r.0 <= r.1);
                    prop_assert!(r.1 < st.as_ref().unwrap().last_seq);
                }
                for w in m.windows(2) {
                    prop_assert!(w[0].1 < w[1].0);
                }
            }
        }

        #[test]
        fn missing_ranges_round_trip(m in proptest::collection::vec((0u64..1000, 0u64..1000), 0..10)) {
            prop_assert_eq!(decode_missing(&encode_missing(&m)), m);
        }
    }
}
