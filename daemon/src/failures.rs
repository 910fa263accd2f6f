//! Failure logs that cannot flood: a class of failure (an operation and
//! why it failed) is logged when it starts, summarised with a count at
//! most every [`SUMMARY_EVERY`] while it lasts, and logged once more when
//! it ends (no failure of it for [`QUIET`]). An outage answered a million
//! times is a handful of lines; the metrics carry the per-request counts
//! (`seqd_requests_total{outcome}`).
//!
//! Classes are few by construction (static operation names and kinds), so
//! the table stays small however many requests fail.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// The longest a class goes without a line while it lasts.
pub const SUMMARY_EVERY: Duration = Duration::from_secs(5);
/// A class with no failure for this long has ended.
pub const QUIET: Duration = Duration::from_secs(2);

/// How loudly a class is logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Something on seqd's side or its backends' (`unavailable`,
    /// `internal`).
    Warn,
    /// A client held off by the operator's rules (the allow-list, the
    /// connection caps).
    Info,
    /// A client's request refused for what it asked (bad input, a limit).
    Debug,
}

/// One class of failure: what failed, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Class {
    pub what: &'static str,
    pub why: &'static str,
}

#[derive(Debug)]
struct Ongoing {
    level: Level,
    began: Instant,
    last_seen: Instant,
    last_line: Instant,
    /// Failures since the last line.
    unlogged: u64,
    total: u64,
    /// Lines written for it so far.
    lines: u64,
    last_error: String,
}

/// The failure classes going on now.
#[derive(Debug, Default)]
pub struct FailureLog {
    ongoing: Mutex<HashMap<Class, Ongoing>>,
}

impl FailureLog {
    /// Counts one failure of `class`; logs it when the class starts, and a
    /// summary when the last line is [`SUMMARY_EVERY`] old.
    pub fn failed(&self, class: Class, level: Level, error: &dyn std::fmt::Display) {
        self.failed_at(class, level, error, Instant::now());
    }

    fn failed_at(&self, class: Class, level: Level, error: &dyn std::fmt::Display, now: Instant) {
        let mut ongoing = self.ongoing.lock().unwrap_or_else(|p| p.into_inner());
        match ongoing.get_mut(&class) {
            None => {
                let error = error.to_string();
                log(level, class, |c| {
                    format!("{} failed ({}): {error}", c.what, c.why)
                });
                ongoing.insert(
                    class,
                    Ongoing {
                        level,
                        began: now,
                        last_seen: now,
                        last_line: now,
                        unlogged: 0,
                        total: 1,
                        lines: 1,
                        last_error: error,
                    },
                );
            }
            Some(o) => {
                o.last_seen = now;
                o.unlogged += 1;
                o.total += 1;
                if now.duration_since(o.last_line) >= SUMMARY_EVERY {
                    let error = error.to_string();
                    let (n, secs) = (o.unlogged, now.duration_since(o.last_line).as_secs());
                    log(o.level, class, |c| {
                        format!(
                            "{} failed ({}) {n} more times in the last {secs} s, still going on: {error}",
                            c.what, c.why
                        )
                    });
                    o.unlogged = 0;
                    o.lines += 1;
                    o.last_line = now;
                    o.last_error = error;
                }
            }
        }
    }

    /// Ends the classes with no failure for [`QUIET`], each with one line.
    pub fn sweep(&self) {
        self.sweep_at(Instant::now());
    }

    fn sweep_at(&self, now: Instant) {
        let mut ongoing = self.ongoing.lock().unwrap_or_else(|p| p.into_inner());
        ongoing.retain(|class, o| {
            if now.duration_since(o.last_seen) < QUIET {
                return true;
            }
            let (n, total, secs) = (o.unlogged, o.total, o.last_seen.duration_since(o.began).as_secs());
            let last = &o.last_error;
            log(o.level, *class, |c| {
                format!(
                    "{} failures ({}) stopped, none for {} s: {total} in {secs} s ({n} since the last line); the last: {last}",
                    c.what,
                    c.why,
                    QUIET.as_secs()
                )
            });
            false
        });
    }

    /// How many classes are going on.
    pub fn ongoing(&self) -> usize {
        self.ongoing.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Sweeps every second until `stop`.
    pub async fn sweep_every_second(self: std::sync::Arc<Self>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = tick.tick() => self.sweep(),
                _ = stop.cancelled() => return,
            }
        }
    }
}

/// One line at `level`; the message is built only when it is written.
fn log(level: Level, class: Class, message: impl FnOnce(Class) -> String) {
    match level {
        Level::Warn => tracing::warn!(op = class.what, kind = class.why, "{}", message(class)),
        Level::Info => tracing::info!(op = class.what, kind = class.why, "{}", message(class)),
        Level::Debug => tracing::debug!(op = class.what, kind = class.why, "{}", message(class)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOWN: Class = Class {
        what: "cache_get",
        why: "breaker_open",
    };

    #[test]
    fn a_class_is_one_line_at_its_start_one_per_summary_and_one_at_its_end() {
        let log = FailureLog::default();
        let t0 = Instant::now();
        // A million failures over 12 s: a line at the start, then one
        // every 5 s.
        for i in 0..1_000_000u64 {
            let at = t0 + Duration::from_micros(i * 12);
            log.failed_at(DOWN, Level::Warn, &"Redis circuit breaker is open", at);
        }
        let o = log.ongoing.lock().unwrap();
        let o = &o[&DOWN];
        assert_eq!(o.total, 1_000_000);
        // Lines at 0, 5 and 10 s: the failures since 10 s are unlogged.
        assert_eq!(o.lines, 3);
        let last = o.last_line.duration_since(t0);
        assert!(last >= Duration::from_secs(10) && last < Duration::from_millis(10_001));
        assert!(o.unlogged > 0 && o.unlogged < 200_000, "{}", o.unlogged);
    }

    #[test]
    fn a_class_ends_after_a_quiet_spell_and_starts_again_with_a_line() {
        let log = FailureLog::default();
        let t0 = Instant::now();
        log.failed_at(DOWN, Level::Warn, &"x", t0);
        log.sweep_at(t0 + QUIET - Duration::from_millis(1));
        assert_eq!(log.ongoing(), 1, "not quiet long enough");
        log.sweep_at(t0 + QUIET);
        assert_eq!(log.ongoing(), 0);
        log.failed_at(DOWN, Level::Warn, &"x", t0 + QUIET * 2);
        assert_eq!(log.ongoing(), 1);
    }

    #[test]
    fn classes_are_kept_apart() {
        let log = FailureLog::default();
        let now = Instant::now();
        log.failed_at(DOWN, Level::Warn, &"x", now);
        let other = Class {
            what: "daily_next",
            why: "store",
        };
        log.failed_at(other, Level::Warn, &"y", now);
        log.failed_at(DOWN, Level::Warn, &"x", now);
        assert_eq!(log.ongoing(), 2);
    }
}
