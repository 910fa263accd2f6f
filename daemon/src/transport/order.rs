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
//! The bookkeeping is bounded by the connection's in-flight limit: an
//! entry lives from a request's admission to its end.

use crate::dispatch::Touches;
use futures_util::future::{FutureExt, Shared};
use tokio::sync::oneshot;

/// Signals that a request ended (its sender dropped), shared by every
/// later request that waits for it.
pub type Done = Shared<oneshot::Receiver<()>>;

/// The requests of a connection that have been admitted and not finished.
#[derive(Default)]
pub struct Order {
    running: Vec<(u64, Touches, Done)>,
    next_seq: u64,
}

/// An admitted request: what it waits for, and its own end signal (drop
/// `end` when it finishes, or when it is dropped unfinished).
pub struct Admitted {
    pub seq: u64,
    pub wait_for: Vec<Done>,
    pub end: oneshot::Sender<()>,
}

impl Order {
    /// Admits a request that touches `touches`.
    pub fn admit(&mut self, touches: Touches) -> Admitted {
        let seq = self.next_seq;
        self.next_seq += 1;
        let wait_for = self
            .running
            .iter()
            .filter(|(_, t, _)| t.overlaps(&touches))
            .map(|(_, _, done)| done.clone())
            .collect();
        let (end, rx) = oneshot::channel();
        if touches != Touches::Nothing {
            self.running.push((seq, touches, rx.shared()));
        }
        Admitted { seq, wait_for, end }
    }

    /// The request `seq` finished.
    pub fn finished(&mut self, seq: u64) {
        if let Some(i) = self.running.iter().position(|(s, _, _)| *s == seq) {
            drop(self.running.swap_remove(i));
        }
    }

    /// Requests admitted and not finished that touch state.
    pub fn len(&self) -> usize {
        self.running.len()
    }

    pub fn is_empty(&self) -> bool {
        self.running.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(k: &[u64]) -> Touches {
        Touches::Keys(k.to_vec())
    }

    #[test]
    fn a_request_waits_for_the_earlier_ones_on_its_keys_only() {
        let mut o = Order::default();
        let a = o.admit(keys(&[1]));
        let b = o.admit(keys(&[2]));
        let c = o.admit(keys(&[1, 3]));
        let ping = o.admit(Touches::Nothing);
        assert_eq!(
            (a.wait_for.len(), b.wait_for.len(), c.wait_for.len()),
            (0, 0, 1)
        );
        assert!(ping.wait_for.is_empty());
        let all = o.admit(Touches::Everything);
        assert_eq!(all.wait_for.len(), 3);
        let d = o.admit(keys(&[9]));
        assert_eq!(d.wait_for.len(), 1, "after a barrier");
        for s in [a.seq, b.seq, c.seq, all.seq, d.seq] {
            o.finished(s);
        }
        assert!(o.is_empty());
    }

    #[tokio::test]
    async fn the_wait_ends_when_the_earlier_request_ends_or_is_dropped() {
        let mut o = Order::default();
        let a = o.admit(keys(&[1]));
        let b = o.admit(keys(&[1]));
        let wait = futures_util::future::join_all(b.wait_for);
        drop(a.end);
        wait.await;
        let large: Vec<u64> = (0..100).collect();
        assert!(keys(&large).overlaps(&keys(&[99])));
        assert!(!keys(&large).overlaps(&keys(&[100])));
    }
}
