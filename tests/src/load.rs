//! Concurrent `NEXT` load over a few daily and conversation keys, as the
//! fault tests drive it, and the check that a load continued where an
//! earlier one stopped.

use crate::assert::{assert_strictly_increasing, assert_unique};
use crate::process::wait_until;
use crate::seqd::Seqd;
use crate::text::{day_at, test_instant_ms};
use std::time::{Duration, Instant};

/// The keys a [`Load`] spreads over: daily and conversation counters.
pub const LOAD_KEYS: [&str; 4] = ["daily:alice", "daily:bob", "group:g1", "private:x:y"];

/// One `NEXT` for a [`LOAD_KEYS`] key.
pub fn next_for(
    c: &mut seqd_client::Client,
    key: &str,
) -> Result<seqd_client::ConvSeq, seqd_client::ClientError> {
    // A fixed instant keeps daily keys on one day for the whole test.
    let at = Some(test_instant_ms());
    let daily = |d: seqd_client::DailySeq| seqd_client::ConvSeq {
        seq: d.seq,
        source: d.source,
        host: d.host,
    };
    match key {
        "daily:alice" => c.daily_next("alice", Some("UTC"), at).map(daily),
        "daily:bob" => c.daily_next("bob", Some("Asia/Kolkata"), at).map(daily),
        "group:g1" => c.group_next("g1"),
        "private:x:y" => c.private_next("y", "x"),
        other => panic!("unknown load key {other}"),
    }
}

/// The Redis key behind a [`LOAD_KEYS`] key.
pub fn redis_key_of(key: &str) -> String {
    let at = test_instant_ms();
    match key {
        "daily:alice" => format!("user:alice:sequence:{}", day_at(at, "UTC")),
        "daily:bob" => format!("user:bob:sequence:{}", day_at(at, "Asia/Kolkata")),
        "group:g1" => "seq:group:g1".into(),
        "private:x:y" => "seq:private:x:y".into(),
        other => panic!("unknown load key {other}"),
    }
}

/// What a load run saw.
#[derive(Debug, Default)]
pub struct LoadResult {
    /// Every number that got a reply, per key.
    pub issued: std::collections::HashMap<&'static str, Vec<u64>>,
    /// The numbers that came from Redis (`source=redis`), per key: across
    /// seqds sharing one Redis these never repeat.
    pub from_redis: std::collections::HashMap<&'static str, Vec<u64>>,
    /// Replies per source (`redis`, `local`).
    pub by_source: std::collections::HashMap<&'static str, usize>,
    /// The slowest reply.
    pub slowest: Duration,
}

impl LoadResult {
    pub fn max(&self, key: &str) -> u64 {
        self.issued
            .get(key)
            .and_then(|v| v.iter().copied().max())
            .unwrap_or(0)
    }

    pub fn min(&self, key: &str) -> u64 {
        self.issued
            .get(key)
            .and_then(|v| v.iter().copied().min())
            .unwrap_or(0)
    }
}

/// `clients` connections issuing `NEXT` back to back over [`LOAD_KEYS`].
/// Any error reply fails the test. A broken connection ends that client
/// only when `until_disconnect` (the test kills seqd); otherwise it fails
/// the test too. Each connection's numbers per key must be strictly
/// increasing.
pub struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    answered: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    threads: Vec<std::thread::JoinHandle<LoadResult>>,
}

impl Load {
    pub fn start(seqd: &Seqd, clients: usize, until_disconnect: bool) -> Load {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        use std::sync::Arc;
        let stop = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(AtomicUsize::new(0));
        let threads = (0..clients)
            .map(|i| {
                let mut c = seqd.client();
                let (stop, answered) = (stop.clone(), answered.clone());
                std::thread::spawn(move || {
                    let mut r = LoadResult::default();
                    'outer: while !stop.load(Ordering::Relaxed) {
                        for k in 0..LOAD_KEYS.len() {
                            let key = LOAD_KEYS[(i + k) % LOAD_KEYS.len()];
                            let started = Instant::now();
                            match next_for(&mut c, key) {
                                Ok(s) => {
                                    r.slowest = r.slowest.max(started.elapsed());
                                    r.issued.entry(key).or_default().push(s.seq);
                                    if s.source.as_str() == "redis" {
                                        r.from_redis.entry(key).or_default().push(s.seq);
                                    }
                                    *r.by_source.entry(s.source.as_str()).or_default() += 1;
                                    answered.fetch_add(1, Ordering::Relaxed);
                                }
                                Err(seqd_client::ClientError::Server(e)) => {
                                    panic!("client {i}: error reply {e}")
                                }
                                Err(e) if until_disconnect => {
                                    let _ = e;
                                    break 'outer;
                                }
                                Err(e) => panic!("client {i}: {e}"),
                            }
                        }
                    }
                    for (key, nums) in &r.issued {
                        assert_strictly_increasing(&format!("{key} on connection {i}"), nums);
                    }
                    r
                })
            })
            .collect();
        Load {
            stop,
            answered,
            threads,
        }
    }

    pub fn answered(&self) -> usize {
        self.answered.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Waits until `more` further replies arrived (from now).
    pub fn wait_for(&self, more: usize, what: &str) {
        let target = self.answered() + more;
        wait_until(what, Duration::from_secs(60), || self.answered() >= target);
    }

    /// Stops the clients and merges what they saw; asserts that no number
    /// was issued twice for any key.
    pub fn finish(self) -> LoadResult {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut all = LoadResult::default();
        for t in self.threads {
            let r = t.join().expect("load client");
            for (k, v) in r.issued {
                all.issued.entry(k).or_default().extend(v);
            }
            for (k, v) in r.from_redis {
                all.from_redis.entry(k).or_default().extend(v);
            }
            for (s, n) in r.by_source {
                *all.by_source.entry(s).or_default() += n;
            }
            all.slowest = all.slowest.max(r.slowest);
        }
        for (key, nums) in &all.issued {
            assert_unique(key, nums);
        }
        all
    }
}

/// Asserts no number of `before` reappears in `after`, per key, and that
/// every number after is above every number before.
pub fn assert_continues(before: &LoadResult, after: &LoadResult) {
    for key in LOAD_KEYS {
        let (b, a) = (before.max(key), after.min(key));
        assert!(
            after.issued.contains_key(key),
            "{key}: nothing issued in the second phase"
        );
        assert!(a > b, "{key}: {a} issued after {b}");
        let mut all = before.issued.get(key).cloned().unwrap_or_default();
        all.extend(after.issued.get(key).cloned().unwrap_or_default());
        assert_unique(key, &all);
    }
}
