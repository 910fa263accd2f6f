//! One circuit breaker per master, and which master an operation goes to.
//!
//! # What it owns
//!
//! - The breakers: one for a single server or a Sentinel-managed master;
//!   on a Cluster one per master, so that a failing master sends only its
//!   own slots to the local store while every other slot stays on Redis.
//! - The Cluster's slot map (slot → master), from `CLUSTER SLOTS`, and
//!   the key each master's write check uses (one of that master's slots).
//!
//! Until a Cluster's slot map is known (the cluster was unreachable at
//! start), one breaker named `cluster` stands for every master. A master
//! that appears in a new map starts closed: a key that fell back while
//! its master was unknown is pending reconciliation, and a pending key is
//! only ever served from Redis by the script that raises the counter past
//! its mark (see the sequences' Redis mode), so no number repeats.
//!
//! A plain data structure: no sockets, no tasks; tests drive it directly.

use super::breaker::{Breaker, BreakerConfig, BreakerState};
use super::conn::NodeAddr;
use std::sync::Arc;
use tokio::time::Instant;

/// The slots of a Redis Cluster.
pub const SLOTS: usize = 16384;

/// The name of the one breaker of a single server or Sentinel master.
pub const ONLY: &str = crate::metrics::DEFAULT_MASTER;

/// The name of the breaker that stands for a Cluster whose slot map is not
/// known yet.
const WHOLE_CLUSTER: &str = "cluster";

/// Where an operation goes, for choosing its breaker.
#[derive(Debug, Clone, Copy)]
pub enum Route<'a> {
    /// The master of this key's slot.
    Key(&'a str),
    /// This node (a `SCAN` step on one master).
    Node(&'a NodeAddr),
    /// Any node (`CLUSTER SLOTS`): allowed while any breaker is not open,
    /// and its outcome is recorded on none.
    Any,
}

/// The Redis Cluster hash slot of `key` (CRC16-XMODEM of the key, or of
/// its `{hash tag}`, modulo 16384), as `CLUSTER KEYSLOT` computes it.
pub fn slot_of(key: &str) -> u16 {
    let bytes = key.as_bytes();
    let tagged = bytes.iter().position(|b| *b == b'{').and_then(|open| {
        let rest = &bytes[open + 1..];
        let close = rest.iter().position(|b| *b == b'}')?;
        (close > 0).then(|| &rest[..close])
    });
    crc16::State::<crc16::XMODEM>::calculate(tagged.unwrap_or(bytes)) % SLOTS as u16
}

/// Prefix of the write check's key (see `RedisPool::write_check`).
pub const WRITE_CHECK_KEY: &str = "seq:seqd:write-check";

/// One master and its breaker.
#[derive(Debug, Clone)]
pub struct Master {
    /// `host:port`, [`ONLY`], or `cluster` before the slot map is known.
    pub name: Arc<str>,
    /// Where a command for this master alone is sent.
    pub node: NodeAddr,
    /// A key of one of this master's slots, for its write check.
    pub check_key: Arc<str>,
    pub breaker: Breaker,
}

/// The breakers, and the slot map that chooses among them on a Cluster.
#[derive(Debug)]
pub struct Breakers {
    config: BreakerConfig,
    seed: u64,
    cluster: bool,
    masters: Vec<Master>,
    /// Cluster: the index in `masters` of each slot's master, once known.
    slots: Option<Vec<u16>>,
}

impl Breakers {
    pub fn new(config: BreakerConfig, cluster: bool, now: Instant, seed: u64) -> Breakers {
        let name = if cluster { WHOLE_CLUSTER } else { ONLY };
        Breakers {
            config,
            seed,
            cluster,
            masters: vec![Master {
                name: name.into(),
                node: NodeAddr::Only,
                check_key: WRITE_CHECK_KEY.into(),
                breaker: Breaker::new(config, now, seed),
            }],
            slots: None,
        }
    }

    pub fn config(&self) -> BreakerConfig {
        self.config
    }

    /// New thresholds for every breaker (a reload); states are kept.
    pub fn set_config(&mut self, config: BreakerConfig) {
        self.config = config;
        for m in &mut self.masters {
            m.breaker.set_config(config);
        }
    }

    pub fn masters(&self) -> &[Master] {
        &self.masters
    }

    /// True once a Cluster's slot map is known (always false off a
    /// Cluster).
    pub fn has_slot_map(&self) -> bool {
        self.slots.is_some()
    }

    /// The index of the breaker `route` goes through; `None` for
    /// [`Route::Any`] or a node that is no master of the map.
    pub fn index(&self, route: Route<'_>) -> Option<usize> {
        match route {
            Route::Key(key) => Some(match &self.slots {
                Some(slots) => usize::from(slots[usize::from(slot_of(key))]),
                None => 0,
            }),
            Route::Node(NodeAddr::Only) => Some(0),
            Route::Node(node) => self.masters.iter().position(|m| m.node == *node),
            Route::Any => None,
        }
    }

    pub fn by_name(&self, name: &str) -> Option<&Master> {
        self.masters.iter().find(|m| &*m.name == name)
    }

    pub fn by_name_mut(&mut self, name: &str) -> Option<&mut Master> {
        self.masters.iter_mut().find(|m| &*m.name == name)
    }

    pub fn get_mut(&mut self, i: usize) -> &mut Master {
        &mut self.masters[i]
    }

    pub fn get(&self, i: usize) -> &Master {
        &self.masters[i]
    }

    /// Puts a Cluster's slot map in force: `ranges` are `(first slot, last
    /// slot, master)`. A master already known keeps its breaker; a new one
    /// starts closed; one no longer in the map is dropped. Returns whether
    /// the set of masters changed.
    pub fn apply_slot_map(&mut self, ranges: &[(u16, u16, NodeAddr)], now: Instant) -> bool {
        if !self.cluster || ranges.is_empty() {
            return false;
        }
        let mut masters: Vec<Master> = Vec::new();
        let mut slots = vec![0u16; SLOTS];
        for (lo, hi, node) in ranges {
            let NodeAddr::At { host, port } = node else {
                continue;
            };
            let name: Arc<str> = format!("{host}:{port}").into();
            let i = match masters.iter().position(|m| m.name == name) {
                Some(i) => i,
                None => {
                    let known = self.masters.iter().find(|m| m.name == name).cloned();
                    masters.push(known.unwrap_or_else(|| Master {
                        name: name.clone(),
                        node: node.clone(),
                        check_key: WRITE_CHECK_KEY.into(),
                        breaker: Breaker::new(self.config, now, self.seed ^ u64::from(*port)),
                    }));
                    masters.len() - 1
                }
            };
            for s in *lo..=(*hi).min(SLOTS as u16 - 1) {
                slots[usize::from(s)] = i as u16;
            }
        }
        if masters.is_empty() {
            return false;
        }
        // Each master's write check needs a key of one of its own slots.
        for (i, m) in masters.iter_mut().enumerate() {
            let owned = |k: &str| usize::from(slots[usize::from(slot_of(k))]) == i;
            if !owned(&m.check_key) {
                if let Some(key) = (0..100_000)
                    .map(|n| format!("{WRITE_CHECK_KEY}:{{{n}}}"))
                    .find(|k| owned(k))
                {
                    m.check_key = key.into();
                }
            }
        }
        let changed = masters.len() != self.masters.len()
            || masters
                .iter()
                .zip(&self.masters)
                .any(|(a, b)| a.name != b.name);
        self.masters = masters;
        self.slots = Some(slots);
        changed
    }

    /// The worst state of any breaker: open if any is open, half-open if
    /// any is, else closed. `HEALTH`'s `breaker` field.
    pub fn worst(&self) -> BreakerState {
        let states = self.masters.iter().map(|m| m.breaker.state());
        let mut worst = BreakerState::Closed;
        for s in states {
            match s {
                BreakerState::Open => return BreakerState::Open,
                BreakerState::HalfOpen => worst = BreakerState::HalfOpen,
                BreakerState::Closed => {}
            }
        }
        worst
    }

    /// True when any breaker lets requests go to Redis.
    pub fn any_not_open(&self) -> bool {
        self.masters
            .iter()
            .any(|m| m.breaker.state() != BreakerState::Open)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(port: u16) -> NodeAddr {
        NodeAddr::At {
            host: "127.0.0.1".into(),
            port,
        }
    }

    #[test]
    fn slots_are_computed_as_redis_does() {
        // CLUSTER KEYSLOT of each, from a real Redis.
        assert_eq!(slot_of("foo"), 12182);
        assert_eq!(slot_of("bar"), 5061);
        assert_eq!(slot_of("{user1000}.following"), 3443);
        assert_eq!(slot_of("{user1000}.followers"), 3443);
        assert_eq!(slot_of("foo{}{bar}"), 8363, "an empty tag is no tag");
        assert_eq!(slot_of("foo{{bar}}zap"), 4015);
        assert_eq!(slot_of("foo{bar}{zap}"), 5061, "the first tag");
        assert_eq!(slot_of("seq:group:x"), 13833);
    }

    #[tokio::test(start_paused = true)]
    async fn keys_go_to_their_masters_breaker_once_the_slot_map_is_known() {
        let now = Instant::now();
        let mut b = Breakers::new(BreakerConfig::default(), true, now, 1);
        assert_eq!(&*b.get(0).name, "cluster");
        assert_eq!(b.index(Route::Key("foo")), Some(0));
        let map = [
            (0, 5460, at(1)),
            (5461, 10922, at(2)),
            (10923, 16383, at(3)),
        ];
        assert!(b.apply_slot_map(&map, now));
        assert_eq!(b.masters().len(), 3);
        assert_eq!(b.index(Route::Key("bar")), Some(0), "slot 5061");
        assert_eq!(b.index(Route::Key("foo")), Some(2), "slot 12182");
        assert_eq!(b.index(Route::Node(&at(2))), Some(1));
        assert_eq!(b.index(Route::Any), None);
        // Each master's write check key is one of its own slots.
        for (i, m) in b.masters().iter().enumerate() {
            assert_eq!(b.index(Route::Key(&m.check_key)), Some(i), "{}", m.name);
        }
        // A master keeps its breaker across refreshes; a failover to
        // another node replaces it.
        for _ in 0..3 {
            b.get_mut(1).breaker.record_failure("io", "x", now);
        }
        assert_eq!(b.worst(), BreakerState::Open);
        assert!(!b.apply_slot_map(&map, now));
        assert_eq!(b.get(1).breaker.state(), BreakerState::Open);
        let failover = [
            (0, 5460, at(1)),
            (5461, 10922, at(4)),
            (10923, 16383, at(3)),
        ];
        assert!(b.apply_slot_map(&failover, now));
        assert_eq!(&*b.get(1).name, "127.0.0.1:4");
        assert_eq!(b.get(1).breaker.state(), BreakerState::Closed);
        assert_eq!(b.worst(), BreakerState::Closed);
    }

    #[test]
    fn one_server_has_one_breaker_whatever_the_key() {
        let mut b = Breakers::new(BreakerConfig::default(), false, Instant::now(), 1);
        assert_eq!(b.index(Route::Key("foo")), Some(0));
        assert_eq!(b.index(Route::Node(&NodeAddr::Only)), Some(0));
        assert!(!b.apply_slot_map(&[(0, 16383, at(1))], Instant::now()));
        assert_eq!(&*b.get(0).name, ONLY);
    }
}
