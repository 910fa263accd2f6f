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
//! One kind of request is ordered without being serialized: a *draw* (a
//! `NEXT`, whose effect is the number it takes). A draw that follows
//! another draw of its key starts as soon as that one may start, so that
//! both go to Redis in one pipelined write rather than one round trip
//! after the other; it is answered only after the earlier one ended, and
//! only with a number above the earlier one's — a later draw that came
//! out lower (the earlier one was answered from the store, or was asked
//! again) draws once more (`Admitted::follow`). The numbers of one
//! counter on one connection thus still rise in the order sent, and a
//! request of any other kind still waits for every earlier draw to end.
//!
//! # What it costs
//!
//! Admitting a request costs in proportion to its own keys, whatever is
//! running: per key, only the last unfinished request that touches it is
//! kept, and a new request waits for that one alone. That suffices: it
//! started only after every earlier request on the key had finished (or,
//! for a draw after a draw, it inherits what the earlier draw waits for,
//! and ends only after it). Comparing each new request with every running
//! one instead would cost a client pipelining 32 gap batches of 10,000
//! events ~5 million key hashes without yielding, while other clients'
//! requests on that shard wait.
//!
//! The bookkeeping is bounded by the connection's in-flight limit: an
//! entry lives from a request's admission to its end.

use crate::dispatch::{Drawn, Touches};
use foldhash::HashMap;
use futures_util::future::{FutureExt, Shared};
use tokio::sync::oneshot;

/// Signals that a request ended (its sender sent or dropped), shared by
/// every later request that waits for it; a draw's carries its number.
pub type Done = Shared<oneshot::Receiver<Option<Drawn>>>;

/// A running request's end signal, made shareable only when a later
/// request first waits for it: most requests are never waited for, and
/// sharing costs two allocations.
enum EndSignal {
    Unshared(oneshot::Receiver<Option<Drawn>>),
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

/// A request admitted and not finished.
struct Running {
    touches: Touches,
    end: EndSignal,
    /// For a draw: the requests it waits for before it starts, which a
    /// draw that follows it waits for too (those still running).
    draw: Option<Vec<u64>>,
}

/// The requests of a connection that have been admitted and not finished.
#[derive(Default)]
pub struct Order {
    /// Every admitted request that touches state and has not finished.
    running: HashMap<u64, Running>,
    /// Per key: the last admitted request touching it, until it ends.
    last: HashMap<u64, u64>,
    /// The last admitted request that touches everything, until it ends:
    /// every request after it waits for it.
    barrier: Option<u64>,
    next_seq: u64,
}

/// An admitted request: what it waits for, and its own end signal (send
/// on `end` when it finishes — a draw its number — or drop it, also when
/// the request is dropped unfinished).
pub struct Admitted {
    pub seq: u64,
    /// The earlier requests it waits for before it starts, by sequence
    /// number, each with its end signal.
    pub wait_for: Vec<(u64, Done)>,
    /// For a draw that follows an earlier draw of its key, running
    /// meanwhile: that draw's end. The request is answered only after it,
    /// and draws again if its number is not above the earlier one's.
    pub follow: Option<(u64, Done)>,
    pub end: oneshot::Sender<Option<Drawn>>,
}

impl Order {
    /// Admits a request that touches `touches`; `draw` when it is a draw
    /// (see the module's docs), which it is only on a single key.
    pub fn admit(&mut self, touches: Touches, draw: bool) -> Admitted {
        let seq = self.next_seq;
        self.next_seq += 1;
        let (end, rx) = oneshot::channel();
        let draw = draw && matches!(&touches, Touches::Keys(k) if k.len() == 1);
        let mut follow = None;
        let mut earlier: Vec<u64> = match &touches {
            Touches::Nothing => Vec::new(),
            Touches::Everything => {
                self.barrier = Some(seq);
                self.running.keys().copied().collect()
            }
            Touches::Keys(keys) if draw => {
                let before = self.last.insert(keys[0], seq);
                match before.and_then(|s| self.running.get(&s).map(|r| (s, r))) {
                    // After a draw: start when it may, end after it.
                    Some((
                        s,
                        Running {
                            draw: Some(waits), ..
                        },
                    )) => {
                        follow = Some(s);
                        waits.clone()
                    }
                    Some((s, _)) => vec![s],
                    None => Vec::new(),
                }
                .into_iter()
                .chain(self.barrier)
                .collect()
            }
            // The last request on each key (this one, for a key it
            // repeats), and the last barrier.
            Touches::Keys(keys) => keys
                .iter()
                .filter_map(|k| self.last.insert(*k, seq))
                .filter(|&s| s != seq)
                .chain(self.barrier)
                .collect(),
        };
        earlier.sort_unstable();
        earlier.dedup();
        let wait_for: Vec<(u64, Done)> = earlier
            .into_iter()
            .filter_map(|s| self.running.get_mut(&s).map(|r| (s, r.end.shared())))
            .collect();
        let follow = follow.and_then(|s| self.running.get_mut(&s).map(|r| (s, r.end.shared())));
        if touches != Touches::Nothing {
            let draw = draw.then(|| wait_for.iter().map(|(s, _)| *s).collect());
            self.running.insert(
                seq,
                Running {
                    touches,
                    end: EndSignal::Unshared(rx),
                    draw,
                },
            );
        }
        Admitted {
            seq,
            wait_for,
            follow,
            end,
        }
    }

    /// The request `seq` finished.
    pub fn finished(&mut self, seq: u64) {
        let Some(Running { touches, .. }) = self.running.remove(&seq) else {
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
        let a = o.admit(keys(&[1]), false);
        let b = o.admit(keys(&[2]), false);
        let c = o.admit(keys(&[1, 3]), false);
        let ping = o.admit(Touches::Nothing, false);
        assert_eq!((waits(&a), waits(&b), waits(&c)), (vec![], vec![], vec![0]));
        assert!(ping.wait_for.is_empty());
        let all = o.admit(Touches::Everything, false);
        assert_eq!(waits(&all), vec![0, 1, 2]);
        let d = o.admit(keys(&[9]), false);
        assert_eq!(waits(&d), vec![all.seq], "after a barrier");
        for s in [a.seq, b.seq, c.seq, all.seq, d.seq] {
            o.finished(s);
        }
        assert!(o.is_empty());
    }

    #[test]
    fn a_request_waits_for_the_last_one_on_each_key_once() {
        let mut o = Order::default();
        let a = o.admit(keys(&[1]), false);
        let b = o.admit(keys(&[1, 2]), false);
        // Ten thousand events of one stream: one key, one wait.
        let c = o.admit(keys(&[1; 10_000]), false);
        assert_eq!(waits(&b), vec![a.seq]);
        assert_eq!(waits(&c), vec![b.seq], "b started after a ended");
        let d = o.admit(keys(&[2, 3]), false);
        assert_eq!(waits(&d), vec![b.seq]);
        // A request that ended is no longer waited for.
        o.finished(a.seq);
        o.finished(b.seq);
        let e = o.admit(keys(&[1, 2]), false);
        assert_eq!(waits(&e), vec![c.seq, d.seq]);
        for s in [c.seq, d.seq, e.seq] {
            o.finished(s);
        }
        assert!(o.is_empty(), "nothing left indexed");
    }

    #[tokio::test]
    async fn the_wait_ends_when_the_earlier_request_ends_or_is_dropped() {
        let mut o = Order::default();
        let a = o.admit(keys(&[1]), false);
        let b = o.admit(keys(&[1]), false);
        let wait = futures_util::future::join_all(b.wait_for.into_iter().map(|(_, d)| d));
        drop(a.end);
        wait.await;
    }

    #[test]
    fn a_draw_after_a_draw_starts_with_it_and_follows_it() {
        let mut o = Order::default();
        let get = o.admit(keys(&[1]), false);
        let a = o.admit(keys(&[1]), true);
        let b = o.admit(keys(&[1]), true);
        let c = o.admit(keys(&[1]), true);
        // Each draw waits for what the first waits for (the read), not for
        // the draw before it, and follows that one.
        assert_eq!(
            (waits(&a), waits(&b), waits(&c)),
            (vec![0], vec![0], vec![0])
        );
        assert_eq!(a.follow.as_ref().map(|f| f.0), None);
        assert_eq!(b.follow.as_ref().map(|f| f.0), Some(a.seq));
        assert_eq!(c.follow.as_ref().map(|f| f.0), Some(b.seq));
        // Anything else on the key waits for the last draw to end.
        let read = o.admit(keys(&[1]), false);
        assert_eq!(waits(&read), vec![c.seq]);
        assert!(read.follow.is_none());
        // A draw on another key, or on several, is not affected.
        let other = o.admit(keys(&[2]), true);
        assert!(waits(&other).is_empty() && other.follow.is_none());
        let wide = o.admit(keys(&[1, 2]), true);
        assert_eq!(waits(&wide), vec![read.seq, other.seq]);
        assert!(wide.follow.is_none(), "a draw is on a single key");
        for s in [get.seq, a.seq, b.seq, c.seq, read.seq, other.seq, wide.seq] {
            o.finished(s);
        }
        assert!(o.is_empty());
    }

    #[tokio::test]
    async fn a_followed_draw_hands_its_number_on() {
        let mut o = Order::default();
        let a = o.admit(keys(&[1]), true);
        let b = o.admit(keys(&[1]), true);
        a.end.send(Some((20261204, 7))).unwrap();
        assert_eq!(b.follow.unwrap().1.await, Ok(Some((20261204, 7))));
        // Dropped unfinished: nothing to compare with.
        let c = o.admit(keys(&[1]), true);
        drop(b.end);
        let _ = c;
    }

    /// A step of the property test: admit a request touching these keys
    /// (`None`: everything; empty: nothing), a draw or not; start the
    /// `i`-th admitted request whose waits all ended; or finish the `i`-th
    /// started request whose followed draw (if any) ended.
    #[derive(Debug, Clone)]
    enum Step {
        Admit(Option<Vec<u64>>, bool),
        Start(usize),
        Finish(usize),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            3 => (proptest::option::weighted(0.9, proptest::collection::vec(0u64..6, 0..4)), any::<bool>())
                .prop_map(|(k, d)| Step::Admit(k, d)),
            2 => any::<usize>().prop_map(Step::Start),
            2 => any::<usize>().prop_map(Step::Finish),
        ]
    }

    /// A request of the property test's model.
    struct Model {
        touch: Option<Vec<u64>>,
        draw: bool,
        waits: Vec<u64>,
        follow: Option<u64>,
        started: bool,
        ended: bool,
    }

    proptest! {
        /// Against the rule itself: a request starts only when every
        /// earlier request it shares a key with (or that touches
        /// everything, or that it must follow as a barrier) has ended —
        /// or, for a draw after a draw, may start; and it ends only after
        /// every one of them ended. It waits only for earlier requests it
        /// overlaps.
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
            let mut all: Vec<Model> = Vec::new();
            for step in steps {
                match step {
                    Step::Admit(touch, draw) => {
                        let t = match &touch {
                            None => Touches::Everything,
                            Some(k) if k.is_empty() => Touches::Nothing,
                            Some(k) => Touches::Keys(k.clone()),
                        };
                        let draw = draw && touch.as_ref().is_some_and(|k| k.len() == 1);
                        let a = o.admit(t, draw);
                        prop_assert_eq!(a.seq as usize, all.len());
                        let follow = a.follow.as_ref().map(|f| f.0);
                        for w in waits(&a).into_iter().chain(follow) {
                            prop_assert!(!all[w as usize].ended, "waits for {} which ended", w);
                            prop_assert!(overlaps(&all[w as usize].touch, &touch), "waits for {} without a common key", w);
                        }
                        if let Some(f) = follow {
                            prop_assert!(draw && all[f as usize].draw, "only a draw follows a draw");
                        }
                        all.push(Model { touch, draw, waits: waits(&a), follow, started: false, ended: false });
                    }
                    Step::Start(i) => {
                        let may_start = |m: &Model, all: &[Model]| m.waits.iter().all(|&w| all[w as usize].ended);
                        let ready: Vec<usize> = (0..all.len())
                            .filter(|&s| !all[s].started && may_start(&all[s], &all))
                            .collect();
                        if ready.is_empty() {
                            continue;
                        }
                        let s = ready[i % ready.len()];
                        for e in 0..s {
                            let (e, m) = (&all[e], &all[s]);
                            prop_assert!(
                                e.ended || !overlaps(&e.touch, &m.touch)
                                    || (e.draw && m.draw && may_start(e, &all)),
                                "{} may start while an earlier overlapping request runs", s
                            );
                        }
                        all[s].started = true;
                    }
                    Step::Finish(i) => {
                        let ready: Vec<usize> = (0..all.len())
                            .filter(|&s| all[s].started && !all[s].ended
                                && all[s].follow.is_none_or(|f| all[f as usize].ended))
                            .collect();
                        if ready.is_empty() {
                            continue;
                        }
                        let s = ready[i % ready.len()];
                        for e in 0..s {
                            prop_assert!(
                                all[e].ended || !overlaps(&all[e].touch, &all[s].touch),
                                "{} may end while {} (earlier, overlapping) runs", s, e
                            );
                        }
                        all[s].ended = true;
                        o.finished(s as u64);
                    }
                }
            }
            for (s, m) in all.iter().enumerate() {
                if !m.ended {
                    o.finished(s as u64);
                }
            }
            prop_assert!(o.is_empty());
        }
    }
}
