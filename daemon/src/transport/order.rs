//! Effect order on one binary connection.
//!
//! # What it guarantees
//!
//! Requests take effect in the order they were sent on their connection,
//! as on a Redis connection: a request starts only after every earlier
//! request of the connection that touches a key it touches (see
//! `dispatch::touches`) has finished. Requests on different keys still run
//! concurrently, and responses still leave as they complete, matched by
//! id. 2,000 pipelined checks of one stream are 2,000 `normal`s, in order.
//!
//! # What it costs
//!
//! Admitting a request costs in proportion to its own keys, whatever is
//! running: per key, only the last unfinished request that touches it is
//! kept, and a new request waits for that one alone. That suffices: it
//! started only after every earlier request on the key had finished.
//! Comparing each new request with every running one instead would cost a
//! client pipelining 32 gap batches of 10,000 events ~5 million key hashes
//! without yielding, while other clients' requests on that worker wait.
//!
//! The bookkeeping is bounded by the connection's in-flight limit: an
//! entry lives from a request's admission to its end.

use crate::dispatch::Touches;
use futures_util::future::{FutureExt, Shared};
use std::collections::HashMap;
use tokio::sync::oneshot;

/// Signals that a request ended (its sender dropped), shared by every
/// later request that waits for it.
pub type Done = Shared<oneshot::Receiver<()>>;

/// A running request's end signal, made shareable only when a later
/// request first waits for it: most requests are never waited for, and
/// sharing costs two allocations.
enum EndSignal {
    Unshared(oneshot::Receiver<()>),
    Shared(Done),
    /// Between the two (never seen outside `Order::admit`).
    Taken,
}

impl EndSignal {
    fn shared(&mut self) -> Done {
        if let EndSignal::Unshared(_) = self {
            let EndSignal::Unshared(rx) = std::mem::replace(self, EndSignal::Taken) else {
                unreachable!("matched above");
            };
            *self = EndSignal::Shared(rx.shared());
        }
        match self {
            EndSignal::Shared(done) => done.clone(),
            _ => unreachable!("made shared above"),
        }
    }
}

/// The requests of a connection that have been admitted and not finished.
#[derive(Default)]
pub struct Order {
    /// Every admitted request that touches state and has not finished:
    /// its keys (to clear `last` when it ends) and its end signal.
    running: HashMap<u64, (Touches, EndSignal)>,
    /// Per key: the last admitted request touching it, until it ends.
    last: HashMap<u64, u64>,
    /// The last admitted request that touches everything, until it ends:
    /// every request after it waits for it.
    barrier: Option<u64>,
    next_seq: u64,
}

/// An admitted request: what it waits for, and its own end signal (drop
/// `end` when it finishes, or when it is dropped unfinished).
pub struct Admitted {
    pub seq: u64,
    /// The earlier requests it waits for, by sequence number, each with
    /// its end signal.
    pub wait_for: Vec<(u64, Done)>,
    pub end: oneshot::Sender<()>,
}

impl Order {
    /// Admits a request that touches `touches`.
    pub fn admit(&mut self, touches: Touches) -> Admitted {
        let seq = self.next_seq;
        self.next_seq += 1;
        let (end, rx) = oneshot::channel();
        let earlier: Vec<u64> = match &touches {
            Touches::Nothing => Vec::new(),
            Touches::Everything => {
                self.barrier = Some(seq);
                self.running.keys().copied().collect()
            }
            Touches::Keys(keys) => {
                // The last request on each key (this one, for a key it
                // repeats), and the last barrier.
                let mut earlier: Vec<u64> = keys
                    .iter()
                    .filter_map(|k| self.last.insert(*k, seq))
                    .filter(|&s| s != seq)
                    .chain(self.barrier)
                    .collect();
                earlier.sort_unstable();
                earlier.dedup();
                earlier
            }
        };
        let wait_for = earlier
            .into_iter()
            .filter_map(|s| self.running.get_mut(&s).map(|(_, end)| (s, end.shared())))
            .collect();
        if touches != Touches::Nothing {
            self.running.insert(seq, (touches, EndSignal::Unshared(rx)));
        }
        Admitted { seq, wait_for, end }
    }

    /// The request `seq` finished.
    pub fn finished(&mut self, seq: u64) {
        let Some((touches, _)) = self.running.remove(&seq) else {
            return;
        };
        if self.barrier == Some(seq) {
            self.barrier = None;
        }
        if let Touches::Keys(keys) = touches {
            for k in keys {
                if self.last.get(&k) == Some(&seq) {
                    self.last.remove(&k);
                }
            }
        }
    }

    /// No request that touches state is admitted and unfinished (and so
    /// nothing is indexed).
    pub fn is_empty(&self) -> bool {
        self.running.is_empty() && self.last.is_empty() && self.barrier.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn keys(k: &[u64]) -> Touches {
        Touches::Keys(k.to_vec())
    }

    fn waits(a: &Admitted) -> Vec<u64> {
        let mut w: Vec<u64> = a.wait_for.iter().map(|(s, _)| *s).collect();
        w.sort_unstable();
        w
    }

    #[test]
    fn a_request_waits_for_the_earlier_ones_on_its_keys_only() {
        let mut o = Order::default();
        let a = o.admit(keys(&[1]));
        let b = o.admit(keys(&[2]));
        let c = o.admit(keys(&[1, 3]));
        let ping = o.admit(Touches::Nothing);
        assert_eq!((waits(&a), waits(&b), waits(&c)), (vec![], vec![], vec![0]));
        assert!(ping.wait_for.is_empty());
        let all = o.admit(Touches::Everything);
        assert_eq!(waits(&all), vec![0, 1, 2]);
        let d = o.admit(keys(&[9]));
        assert_eq!(waits(&d), vec![all.seq], "after a barrier");
        for s in [a.seq, b.seq, c.seq, all.seq, d.seq] {
            o.finished(s);
        }
        assert!(o.is_empty());
    }

    #[test]
    fn a_request_waits_for_the_last_one_on_each_key_once() {
        let mut o = Order::default();
        let a = o.admit(keys(&[1]));
        let b = o.admit(keys(&[1, 2]));
        // Ten thousand events of one stream: one key, one wait.
        let c = o.admit(keys(&[1; 10_000]));
        assert_eq!(waits(&b), vec![a.seq]);
        assert_eq!(waits(&c), vec![b.seq], "b started after a ended");
        let d = o.admit(keys(&[2, 3]));
        assert_eq!(waits(&d), vec![b.seq]);
        // A request that ended is no longer waited for.
        o.finished(a.seq);
        o.finished(b.seq);
        let e = o.admit(keys(&[1, 2]));
        assert_eq!(waits(&e), vec![c.seq, d.seq]);
        for s in [c.seq, d.seq, e.seq] {
            o.finished(s);
        }
        assert!(o.is_empty(), "nothing left indexed");
    }

    #[tokio::test]
    async fn the_wait_ends_when_the_earlier_request_ends_or_is_dropped() {
        let mut o = Order::default();
        let a = o.admit(keys(&[1]));
        let b = o.admit(keys(&[1]));
        let wait = futures_util::future::join_all(b.wait_for.into_iter().map(|(_, d)| d));
        drop(a.end);
        wait.await;
    }

    /// A step of the property test: admit a request touching these keys
    /// (`None`: everything; empty: nothing), or finish the `i`-th running
    /// request that may have started (its waits all finished).
    #[derive(Debug, Clone)]
    enum Step {
        Admit(Option<Vec<u64>>),
        Finish(usize),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            3 => proptest::option::weighted(0.9, proptest::collection::vec(0u64..6, 0..4))
                .prop_map(Step::Admit),
            2 => any::<usize>().prop_map(Step::Finish),
        ]
    }

    proptest! {
        /// Against the rule itself: whenever every request a request waits
        /// for has finished, so has every earlier one it shares a key with
        /// (or that touches everything, or that it must follow as a
        /// barrier); and it waits only for earlier requests it overlaps.
        #[test]
        fn waiting_for_the_last_per_key_orders_like_waiting_for_all(
            steps in proptest::collection::vec(step(), 1..80)
        ) {
            let overlaps = |a: &Option<Vec<u64>>, b: &Option<Vec<u64>>| match (a, b) {
                (Some(a), _) if a.is_empty() => false,
                (_, Some(b)) if b.is_empty() => false,
                (None, _) | (_, None) => true,
                (Some(a), Some(b)) => a.iter().any(|k| b.contains(k)),
            };
            let mut o = Order::default();
            // Every request admitted: its keys, its waits, whether it ended.
            let mut all: Vec<(Option<Vec<u64>>, Vec<u64>, bool)> = Vec::new();
            for step in steps {
                match step {
                    Step::Admit(touch) => {
                        let t = match &touch {
                            None => Touches::Everything,
                            Some(k) if k.is_empty() => Touches::Nothing,
                            Some(k) => Touches::Keys(k.clone()),
                        };
                        let a = o.admit(t);
                        prop_assert_eq!(a.seq as usize, all.len());
                        for w in waits(&a) {
                            prop_assert!(!all[w as usize].2, "waits for {} which ended", w);
                            prop_assert!(overlaps(&all[w as usize].0, &touch), "waits for {} without a common key", w);
                        }
                        all.push((touch, waits(&a), false));
                    }
                    Step::Finish(i) => {
                        let ready: Vec<usize> = (0..all.len())
                            .filter(|&s| !all[s].2 && all[s].1.iter().all(|&w| all[w as usize].2))
                            .collect();
                        if ready.is_empty() {
                            continue;
                        }
                        let s = ready[i % ready.len()];
                        for e in 0..s {
                            prop_assert!(
                                all[e].2 || !overlaps(&all[e].0, &all[s].0),
                                "{} may start while {} (earlier, overlapping) runs", s, e
                            );
                        }
                        all[s].2 = true;
                        o.finished(s as u64);
                    }
                }
            }
            for (s, req) in all.iter().enumerate() {
                if !req.2 {
                    o.finished(s as u64);
                }
            }
            prop_assert!(o.is_empty());
        }
    }
}
