//! Gap logs that cannot flood the journal.
//!
//! One batch can hold 10,000 gaps; a line each would push everything else
//! seqd logs past journald's rate limit. So per stream, the first gap of an
//! interval is logged in full (at info / warn / error by size) and the
//! rest of that interval only counted; the next gap after the interval
//! first says how many were held back and the largest of them. The
//! metrics (`seqd_gap_events_total`) count every event regardless.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long one full line per stream stands for the gaps after it.
pub const INTERVAL: Duration = Duration::from_secs(10);
/// Streams remembered; past it, the oldest windows are forgotten (which
/// only means a stream may get a full line sooner).
const MAX_STREAMS: usize = 10_000;

struct Window {
    since: Instant,
    held_back: u64,
    largest: u64,
}

/// What to log for one gap.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Log it in full; first say how many gaps of the stream were held
    /// back before it, and the largest, if any.
    Log { held_back: Option<(u64, u64)> },
    /// Count it only.
    Hold,
}

/// See the module docs.
#[derive(Default)]
pub struct GapLog {
    /// A `std::sync::Mutex`: held for one map update, never across an await.
    streams: Mutex<HashMap<String, Window>>,
}

impl GapLog {
    /// Decides about a gap of `gap` numbers on stream `key` at `now`.
    pub fn verdict(&self, key: &str, gap: u64, now: Instant) -> Verdict {
        let mut streams = self.streams.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(w) = streams.get_mut(key) {
            if now.duration_since(w.since) < INTERVAL {
                w.held_back += 1;
                w.largest = w.largest.max(gap);
                return Verdict::Hold;
            }
            let held_back = (w.held_back > 0).then_some((w.held_back, w.largest));
            *w = Window {
                since: now,
                held_back: 0,
                largest: 0,
            };
            return Verdict::Log { held_back };
        }
        if streams.len() >= MAX_STREAMS {
            streams.retain(|_, w| now.duration_since(w.since) < INTERVAL);
            if streams.len() >= MAX_STREAMS {
                streams.clear();
            }
        }
        streams.insert(
            key.to_string(),
            Window {
                since: now,
                held_back: 0,
                largest: 0,
            },
        );
        Verdict::Log { held_back: None }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_stream_and_interval_then_a_count() {
        let log = GapLog::default();
        let t0 = Instant::now();
        assert_eq!(log.verdict("a", 10, t0), Verdict::Log { held_back: None });
        for gap in [20, 5000, 30] {
            assert_eq!(
                log.verdict("a", gap, t0 + Duration::from_secs(1)),
                Verdict::Hold
            );
        }
        assert_eq!(
            log.verdict("b", 10, t0),
            Verdict::Log { held_back: None },
            "per stream"
        );
        assert_eq!(
            log.verdict("a", 7, t0 + INTERVAL),
            Verdict::Log {
                held_back: Some((3, 5000))
            }
        );
        assert_eq!(
            log.verdict("a", 7, t0 + INTERVAL * 3),
            Verdict::Log { held_back: None }
        );
    }
}
