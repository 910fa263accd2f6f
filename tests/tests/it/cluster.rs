//! Redis Cluster: a three-master cluster of our own, made with
//! `redis-cli --cluster create`. Every capability works on it, spread over
//! the three masters; gap batches over many slots give exactly the results
//! of one-by-one checks; clear-all and prefix deletes reach every master;
//! scripts come back after `SCRIPT FLUSH`; a slot holding live counters
//! migrates between masters under load from two seqds with no duplicate
//! and no error reply; and each master has a breaker of its own, so a
//! dead master (or one without the replica fencing needs) sends only its
//! own slots to the local store.

use seqd_client::seqd_protocol::{CacheItem, GapEvent, GapKind, Stream};
use seqd_tests::*;
use std::collections::{HashMap, HashSet};
use std::time::Duration;

fn cluster_seqd(cluster: &RedisCluster, host: u16) -> Seqd {
    Seqd::start(SeqdOptions {
        args: vec![
            "--redis-cluster".into(),
            cluster.seeds(),
            "--host-id".into(),
            host.to_string(),
            // A slot migration makes some requests take a few redirects.
            "--redis-timeout-ms".into(),
            "1000".into(),
        ],
        ..SeqdOptions::local()
    })
}

fn event(exchange: &str, symbol: &str, seq: u64) -> GapEvent {
    GapEvent {
        stream: Stream {
            exchange: exchange.into(),
            symbol: symbol.into(),
        },
        seq,
    }
}

/// Which masters hold keys matching `pattern`.
fn masters_holding(cluster: &RedisCluster, pattern: &str) -> usize {
    cluster
        .nodes
        .iter()
        .filter(|n| matches!(n.cmd(&["KEYS", pattern]), Reply::Array(a) if !a.is_empty()))
        .count()
}

#[test]
fn every_capability_works_on_a_three_master_cluster() {
    let cluster = RedisCluster::start();
    let seqd = cluster_seqd(&cluster, 7);
    let health = seqd.text().cmd("HEALTH");
    assert!(health.contains(" topology=cluster"), "{health}");
    assert!(
        seqd.log_text().contains("(topology=cluster)"),
        "{}",
        seqd.log_text()
    );
    let mut c = seqd.client();

    // Counters: one slot per key, spread over the masters.
    for g in 0..30 {
        let group = format!("g{g}");
        assert_eq!(c.group_next(&group).unwrap().seq, 1);
        let s = c.group_next(&group).unwrap();
        assert_eq!((s.seq, s.source.as_str()), (2, "redis"));
    }
    assert_eq!(masters_holding(&cluster, "seq:group:*"), 3);
    assert_eq!(cluster.get_u64("seq:group:g7"), Some(2));
    let at = Some(test_instant_ms());
    assert_eq!(c.daily_next("alice", Some("UTC"), at).unwrap().seq, 1);
    assert_eq!(c.daily_next("alice", Some("UTC"), at).unwrap().seq, 2);
    assert_eq!(c.daily_get("alice", Some("UTC"), at).unwrap().seq, 2);
    assert_eq!(c.private_next("b", "a").unwrap().seq, 1);

    // Scripts are loaded again after Redis forgot them.
    for n in &cluster.nodes {
        n.cmd(&["SCRIPT", "FLUSH"]);
    }
    assert_eq!(c.group_next("g1").unwrap().seq, 3);

    // A gap batch over 40 streams (every master), 4 events each in an
    // interleaved order: the same results as one event at a time on a
    // single Redis.
    let mut events = Vec::new();
    for round in [1u64, 2, 5, 3] {
        for s in 0..40 {
            events.push(event("nyse", &format!("S{s}"), round * 10 + s));
        }
    }
    let batch = c.gap_batch(events.clone()).unwrap();
    let (_single, reference) = redis_seqd(&[]);
    let mut r = reference.client();
    let one_by_one: Vec<_> = events
        .iter()
        .map(|e| {
            r.gap_check(&e.stream.exchange, &e.stream.symbol, e.seq)
                .unwrap()
        })
        .collect();
    assert_eq!(batch.len(), events.len());
    for (i, (b, o)) in batch.iter().zip(&one_by_one).enumerate() {
        assert_eq!(
            (b.kind, b.seq, b.expected, b.gap, b.filled),
            (o.kind, o.seq, o.expected, o.gap, o.filled),
            "event {i}: {:?}",
            events[i]
        );
        assert_eq!(b.source.as_str(), "redis");
    }
    assert!(batch.iter().any(|b| b.kind == GapKind::Gap));
    assert!(batch.iter().any(|b| b.kind == GapKind::OutOfOrder));
    assert_eq!(masters_holding(&cluster, "k2:seq:*"), 3);
    let stats = c.gap_stats("nyse", "S3").unwrap().expect("stats");
    assert_eq!(stats.last_seq, 53);
    c.gap_clear("nyse", "S3").unwrap();
    assert!(c.gap_stats("nyse", "S3").unwrap().is_none());
    // Clear-all scans every master.
    assert_eq!(c.gap_clear_all().unwrap(), 39);
    assert!(cluster.keys("k2:seq:*").is_empty());
    // Counters are never touched by it.
    assert_eq!(cluster.get_u64("seq:group:g7"), Some(2));

    // Cache: get-many and set-many across slots, prefix deletes on every
    // master, counters never touched.
    let items: Vec<CacheItem> = (0..30)
        .map(|i| CacheItem {
            key: format!("user:{i}:risk"),
            value: vec![i as u8, 0xff],
            ttl_ms: None,
        })
        .collect();
    c.cache_set_many(items).unwrap();
    assert_eq!(masters_holding(&cluster, "user:*"), 3);
    let keys: Vec<String> = (0..30).map(|i| format!("user:{i}:risk")).collect();
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let got = c.cache_get_many(&refs).unwrap();
    for (i, v) in got.iter().enumerate() {
        assert_eq!(v.as_deref(), Some(&[i as u8, 0xff][..]), "{}", keys[i]);
    }
    assert_eq!(
        c.cache_del(&["user:0:risk", "user:1:risk"]).unwrap(),
        (2, false)
    );
    assert_eq!(c.cache_get("user:0:risk").unwrap(), None);
    let (removed, deferred) = c.cache_del_prefix("user:").unwrap();
    assert_eq!((removed, deferred), (28, false));
    // Only the daily counter is left: the counter families are never
    // touched by cache deletes.
    let day = day_at(test_instant_ms(), "UTC");
    assert_eq!(
        cluster.keys("user:*"),
        vec![format!("user:alice:sequence:{day}")]
    );
    assert_eq!(cluster.get_u64("seq:group:g7"), Some(2));
}

#[test]
fn a_slot_with_live_counters_migrates_under_load_without_a_duplicate() {
    let cluster = RedisCluster::start();
    let a = cluster_seqd(&cluster, 7);
    let b = cluster_seqd(&cluster, 8);
    let (la, lb) = (Load::start(&a, 4, false), Load::start(&b, 4, false));
    la.wait_for(100, "numbers before the migration");
    // Move the slot of every load key to another master and back, while
    // the clients keep drawing: they meet MIGRATING/IMPORTING (ASK) and
    // then MOVED.
    let mut moved = 0;
    for key in LOAD_KEYS {
        let slot = cluster.slot_of(&redis_key_of(key));
        let from = cluster.owner(slot);
        let to = (from + 1) % 3;
        cluster.migrate(slot, to, || la.wait_for(5, "numbers during the migration"));
        cluster.migrate(slot, from, || {
            lb.wait_for(5, "numbers during the migration")
        });
        moved += 2;
    }
    la.wait_for(100, "numbers after the migrations");
    lb.wait_for(100, "numbers after the migrations");
    let (ra, rb) = (la.finish(), lb.finish());
    let mut redis_numbers = 0;
    for key in LOAD_KEYS {
        let mut seen = HashSet::new();
        for n in ra
            .from_redis
            .get(key)
            .into_iter()
            .chain(rb.from_redis.get(key))
            .flatten()
        {
            assert!(seen.insert(*n), "{key}: {n} from Redis reached both seqds");
            redis_numbers += 1;
        }
        let counter = cluster.get_u64(&redis_key_of(key)).unwrap();
        assert!(
            counter >= ra.max(key).max(rb.max(key)),
            "{key}: counter {counter}"
        );
    }
    // The migrations did redirect the clients' requests.
    let redirects = |kind: &str| -> u64 {
        cluster
            .nodes
            .iter()
            .map(|n| match n.cmd(&["INFO", "errorstats"]) {
                Reply::Bulk(b) => String::from_utf8_lossy(&b)
                    .lines()
                    .find_map(|l| l.strip_prefix(&format!("errorstat_{kind}:count=")))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0),
                _ => 0,
            })
            .sum()
    };
    let (asks, moves) = (redirects("ASK"), redirects("MOVED"));
    assert!(asks + moves > 0, "no request met a redirect");
    // A redirect is followed to where the slot is now, not answered from
    // the local store as if Redis had failed.
    for r in [&ra, &rb] {
        assert_eq!(r.by_source.get("local"), None, "answers from the store");
    }
    println!(
        "{moved} slot migrations under load ({asks} ASK and {moves} MOVED replies): \
         {redis_numbers} numbers from Redis, {} from the local stores, slowest reply {:?}",
        ra.by_source.get("local").copied().unwrap_or(0)
            + rb.by_source.get("local").copied().unwrap_or(0),
        ra.slowest.max(rb.slowest)
    );
}

#[test]
fn fencing_on_a_cluster_answers_only_what_every_masters_replica_holds() {
    let cluster = RedisCluster::start_with_replicas(1);
    let seqd = Seqd::start(SeqdOptions {
        args: vec![
            "--redis-cluster".into(),
            cluster.seeds(),
            "--redis-wait-replicas".into(),
            "1".into(),
            // A loaded test machine can keep a replica from acknowledging
            // within the default 125 ms; give it a second.
            "--redis-timeout-ms".into(),
            "2000".into(),
            "--probe-base-ms".into(),
            "50".into(),
            "--probe-max-ms".into(),
            "200".into(),
        ],
        ..SeqdOptions::local()
    });
    let mut t = seqd.text();
    // Keys on every master: each increment and its WAIT go to its slot's
    // master in one pipeline.
    for g in 0..12 {
        assert_eq!(
            t.cmd(&format!("CONV NEXT group w{g}")),
            "OK seq=1 source=redis"
        );
    }
    // One master loses its replica: a NEXT on that master's slots is not
    // answered from Redis, and its breaker stays open (its probe sends
    // WAIT to it) until the replica is back.
    let key = "seq:group:w0";
    let master = cluster.owner(cluster.slot_of(key));
    let master_port = cluster.nodes[master].port.to_string();
    let replica = (3..6)
        .find(|&r| {
            info_field(&cluster.nodes[r], "replication", "master_port").as_deref()
                == Some(master_port.as_str())
        })
        .expect("the master's replica");
    cluster.nodes[replica].hang();
    let reply = t.cmd("CONV NEXT group w0");
    assert_eq!(reply, format!("OK seq=2 source=local host={TEST_HOST_ID}"));
    wait_until(
        "the breaker to open",
        std::time::Duration::from_secs(10),
        || field(&t.cmd("HEALTH"), "breaker") == "open",
    );
    cluster.nodes[replica].resume();
    wait_until(
        "the breaker to close",
        std::time::Duration::from_secs(20),
        || field(&t.cmd("HEALTH"), "breaker") == "closed",
    );
    let after = t.cmd("CONV NEXT group w0");
    assert!(
        after.ends_with("source=redis") && seq_of(&after) > 2,
        "{after}"
    );
}

/// A seqd on `cluster` with quick probes and health checks, and Redis
/// operations timed out after `timeout_ms`.
fn quick_cluster_seqd(cluster: &RedisCluster, timeout_ms: &str, extra: &[&str]) -> Seqd {
    let seeds = cluster.seeds();
    Seqd::start(
        SeqdOptions::local()
            .with_args(&[
                "--redis-cluster",
                &seeds,
                "--redis-timeout-ms",
                timeout_ms,
                "--probe-base-ms",
                "50",
                "--probe-max-ms",
                "200",
                "--health-interval-ms",
                "200",
            ])
            .with_args(extra),
    )
}

/// A cluster that serves the slots of the masters that answer
/// (`cluster-require-full-coverage no`), and a seqd with a breaker for
/// each of its three masters.
fn cluster_serving_without_full_coverage() -> (RedisCluster, Seqd, TextConn) {
    let cluster = RedisCluster::start();
    for n in &cluster.nodes {
        n.cmd(&["CONFIG", "SET", "cluster-require-full-coverage", "no"]);
    }
    let seqd = quick_cluster_seqd(&cluster, "250", &[]);
    let mut t = seqd.text();
    wait_until("a breaker per master", Duration::from_secs(10), || {
        breakers(&mut t).len() == 3
    });
    (cluster, seqd, t)
}

/// Group names with the cluster node that holds each one's counter.
fn groups_by_owner(cluster: &RedisCluster, n: usize) -> Vec<(String, usize)> {
    (0..n)
        .map(|i| {
            let g = format!("pm{i}");
            let owner = cluster.owner(cluster.slot_of(&format!("seq:group:{g}")));
            (g, owner)
        })
        .collect()
}

/// `breakers=` of HEALTH: each master's `host:port` and state.
fn breakers(t: &mut TextConn) -> HashMap<String, String> {
    let h = t.cmd("HEALTH");
    field(&h, "breakers")
        .split(',')
        .filter_map(|e| e.split_once('/'))
        .map(|(m, s)| (m.to_string(), s.to_string()))
        .collect()
}

/// One `CONV NEXT` per group; the numbers go to `got`, and the answers
/// from Redis for groups on `down` and on the others are counted.
fn round(
    t: &mut TextConn,
    groups: &[(String, usize)],
    down: usize,
    got: &mut HashMap<String, Vec<u64>>,
) -> ((usize, usize), (usize, usize)) {
    let (mut healthy, mut dead) = ((0, 0), (0, 0));
    for (g, owner) in groups {
        let reply = t.cmd(&format!("CONV NEXT group {g}"));
        assert!(reply.starts_with("OK "), "{g}: {reply}");
        got.entry(g.clone()).or_default().push(seq_of(&reply));
        let redis = field(&reply, "source") == "redis";
        let tally = if *owner == down {
            &mut dead
        } else {
            &mut healthy
        };
        tally.0 += usize::from(redis);
        tally.1 += 1;
    }
    (healthy, dead)
}

#[test]
fn a_dead_master_sends_only_its_own_slots_to_the_local_store() {
    let (mut cluster, seqd, mut t) = cluster_serving_without_full_coverage();
    let groups = groups_by_owner(&cluster, 30);
    let down = 2;
    assert!(groups.iter().any(|(_, o)| *o == down) && groups.iter().any(|(_, o)| *o != down));
    let mut got: HashMap<String, Vec<u64>> = HashMap::new();
    let (healthy, dead) = round(&mut t, &groups, down, &mut got);
    assert_eq!(
        (healthy.0, dead.0),
        (healthy.1, dead.1),
        "all from Redis first"
    );

    // The master of a third of the slots dies (no replica to take over).
    let dead_name = format!("127.0.0.1:{}", cluster.nodes[down].port);
    cluster.nodes[down].kill9();
    let killed = std::time::Instant::now();
    let mut after = ((0, 0), (0, 0));
    wait_until(
        "the dead master's breaker to open",
        Duration::from_secs(10),
        || {
            let (h, d) = round(&mut t, &groups, down, &mut got);
            after = (
                (after.0 .0 + h.0, after.0 .1 + h.1),
                (after.1 .0 + d.0, after.1 .1 + d.1),
            );
            breakers(&mut t).get(&dead_name).map(String::as_str) == Some("open")
        },
    );
    // From now on: the dead master's slots from the store, every other
    // slot from Redis.
    let until = std::time::Instant::now() + Duration::from_secs(2);
    let mut open_rounds = ((0, 0), (0, 0));
    while std::time::Instant::now() < until {
        let (h, d) = round(&mut t, &groups, down, &mut got);
        assert_eq!(h.0, h.1, "every healthy master's group from Redis");
        assert_eq!(d.0, 0, "no dead master's group from Redis");
        open_rounds = (
            (open_rounds.0 .0 + h.0, open_rounds.0 .1 + h.1),
            (0, open_rounds.1 .1 + d.1),
        );
    }
    let h = t.cmd("HEALTH");
    assert_eq!(field(&h, "breaker"), "open", "{h}");
    assert_eq!(field(&h, "masters_not_closed"), "1", "{h}");
    assert!(field(&h, "last_error").starts_with(&dead_name), "{h}");
    let states = breakers(&mut t);
    assert_eq!(
        states.values().filter(|s| *s == "closed").count(),
        2,
        "{states:?}"
    );
    assert_eq!(
        seqd.metric(&format!("seqd_breaker_state{{master=\"{dead_name}\"}}")),
        1
    );
    println!(
        "one of three masters dead: from the kill on, {} of {} answers for groups on the healthy \
         masters came from Redis ({} of {} once its breaker was open), {} of {} on the dead one",
        after.0 .0 + open_rounds.0 .0,
        after.0 .1 + open_rounds.0 .1,
        open_rounds.0 .0,
        open_rounds.0 .1,
        after.1 .0,
        after.1 .1 + open_rounds.1 .1,
    );
    let _ = killed;

    // It comes back empty: reconciled before its slots are served from
    // Redis again, no number twice.
    cluster.nodes[down].restart();
    wait_until(
        "every breaker closed, nothing pending",
        Duration::from_secs(30),
        || {
            round(&mut t, &groups, down, &mut got);
            let h = t.cmd("HEALTH");
            field(&h, "breaker") == "closed" && field(&h, "pending_reconciliation") == "0"
        },
    );
    let (healthy, dead) = round(&mut t, &groups, down, &mut got);
    assert_eq!(
        (healthy.0, dead.0),
        (healthy.1, dead.1),
        "all from Redis again"
    );
    for (g, numbers) in &got {
        assert_strictly_increasing(g, numbers);
        let counter = cluster.get_u64(&format!("seq:group:{g}")).unwrap_or(0);
        assert_eq!(
            counter,
            *numbers.last().unwrap(),
            "{g}: Redis holds the last number"
        );
    }
}

#[test]
fn a_master_without_its_fencing_replica_sends_only_its_own_slots_to_the_local_store() {
    let cluster = RedisCluster::start_with_replicas(1);
    // A loaded machine can keep a replica from acknowledging within a
    // short timeout: the fenced WAIT gets half of it.
    let seqd = quick_cluster_seqd(&cluster, "2000", &["--redis-wait-replicas", "1"]);
    let mut t = seqd.text();
    wait_until("a breaker per master", Duration::from_secs(10), || {
        breakers(&mut t).len() == 3
    });
    let groups = groups_by_owner(&cluster, 24);
    let unfenced = groups[0].1;
    let master_port = cluster.nodes[unfenced].port.to_string();
    let replica = (3..6)
        .find(|&r| {
            info_field(&cluster.nodes[r], "replication", "master_port").as_deref()
                == Some(master_port.as_str())
        })
        .expect("the master's replica");
    let mut got: HashMap<String, Vec<u64>> = HashMap::new();
    round(&mut t, &groups, unfenced, &mut got);
    cluster.nodes[replica].hang();
    let name = format!("127.0.0.1:{master_port}");
    wait_until("its breaker to open", Duration::from_secs(20), || {
        round(&mut t, &groups, unfenced, &mut got);
        breakers(&mut t).get(&name).map(String::as_str) == Some("open")
    });
    let (healthy, dead) = round(&mut t, &groups, unfenced, &mut got);
    assert_eq!(
        healthy.0, healthy.1,
        "the fenced masters' groups from Redis"
    );
    assert_eq!(dead.0, 0, "none of the unfenced master's from Redis");
    cluster.nodes[replica].resume();
    wait_until(
        "every breaker closed, nothing pending",
        Duration::from_secs(30),
        || {
            round(&mut t, &groups, unfenced, &mut got);
            let h = t.cmd("HEALTH");
            field(&h, "breaker") == "closed" && field(&h, "pending_reconciliation") == "0"
        },
    );
    let (healthy, dead) = round(&mut t, &groups, unfenced, &mut got);
    assert_eq!(
        (healthy.0, dead.0),
        (healthy.1, dead.1),
        "all from Redis again"
    );
    for (g, numbers) in &got {
        assert_strictly_increasing(g, numbers);
    }
}

/// Answers for groups on the healthy masters and on the hung one: from
/// Redis, and in all.
#[derive(Default, Clone, Copy)]
struct Tally {
    healthy_redis: usize,
    healthy: usize,
    hung_redis: usize,
    hung: usize,
}

#[test]
fn a_hung_master_sends_only_its_own_slots_to_the_local_store() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    let (cluster, seqd, mut t) = cluster_serving_without_full_coverage();
    let groups = Arc::new(groups_by_owner(&cluster, 60));
    let hung = 1;
    let hung_name = format!("127.0.0.1:{}", cluster.nodes[hung].port);
    // Three connections draw for every group, round after round; while
    // `counting`, their answers are tallied.
    let (stop, counting) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let tally = Arc::new(Mutex::new(Tally::default()));
    let clients: Vec<_> = (0..3)
        .map(|_| {
            let (mut c, groups) = (seqd.text(), groups.clone());
            let (stop, counting, tally) = (stop.clone(), counting.clone(), tally.clone());
            std::thread::spawn(move || {
                let mut got: HashMap<String, Vec<u64>> = HashMap::new();
                while !stop.load(Ordering::Relaxed) {
                    for (g, owner) in groups.iter() {
                        let reply = c.cmd(&format!("CONV NEXT group {g}"));
                        assert!(reply.starts_with("OK "), "{g}: {reply}");
                        got.entry(g.clone()).or_default().push(seq_of(&reply));
                        if counting.load(Ordering::Relaxed) {
                            let redis = usize::from(field(&reply, "source") == "redis");
                            let mut t = tally.lock().unwrap();
                            if *owner == hung {
                                (t.hung_redis, t.hung) = (t.hung_redis + redis, t.hung + 1);
                            } else {
                                (t.healthy_redis, t.healthy) =
                                    (t.healthy_redis + redis, t.healthy + 1);
                            }
                        }
                    }
                }
                got
            })
        })
        .collect();
    wait_until("numbers for every group", Duration::from_secs(10), || {
        seqd.metric("seqd_sequence_numbers_issued_total{kind=\"conv\",source=\"redis\"} ") > 360
    });

    // One master hangs for 6 s (stalled by a fork, swapping, a slow
    // command): every call to it times out.
    cluster.nodes[hung].hang();
    let hung_at = std::time::Instant::now();
    counting.store(true, Ordering::Relaxed);
    wait_until(
        "the hung master's breaker opens",
        Duration::from_secs(5),
        || breakers(&mut t).get(&hung_name).map(String::as_str) == Some("open"),
    );
    let mut worst_open = 0;
    while hung_at.elapsed() < Duration::from_secs(6) {
        let h = t.cmd("HEALTH");
        worst_open = worst_open.max(field(&h, "masters_not_closed").parse::<usize>().unwrap());
    }
    counting.store(false, Ordering::Relaxed);
    let during = *tally.lock().unwrap();
    let states = breakers(&mut t);
    cluster.nodes[hung].resume();
    wait_until(
        "every breaker closed, nothing pending",
        Duration::from_secs(30),
        || {
            let h = t.cmd("HEALTH");
            field(&h, "breaker") == "closed" && field(&h, "pending_reconciliation") == "0"
        },
    );
    // Back on Redis, every group.
    *tally.lock().unwrap() = Tally::default();
    counting.store(true, Ordering::Relaxed);
    let before = seqd.metric("seqd_sequence_numbers_issued_total{kind=\"conv\",source=\"redis\"} ");
    wait_until(
        "a few rounds after the return",
        Duration::from_secs(10),
        || {
            seqd.metric("seqd_sequence_numbers_issued_total{kind=\"conv\",source=\"redis\"} ")
                > before + 360
        },
    );
    counting.store(false, Ordering::Relaxed);
    let after = *tally.lock().unwrap();
    stop.store(true, Ordering::Relaxed);
    let mut all: HashMap<String, Vec<u64>> = HashMap::new();
    for c in clients {
        for (g, numbers) in c.join().unwrap() {
            all.entry(g).or_default().extend(numbers);
        }
    }
    println!(
        "one of three masters hung for 6 s: {} of {} answers for groups on the healthy masters \
         came from Redis, {} of {} on the hung one; at most {worst_open} breakers not closed",
        during.healthy_redis, during.healthy, during.hung_redis, during.hung
    );
    for (g, numbers) in &all {
        assert_unique(g, numbers);
    }
    assert!(
        during.healthy_redis * 10 >= during.healthy * 9,
        "{} of {} healthy answers from Redis while one master hung",
        during.healthy_redis,
        during.healthy
    );
    assert_eq!(
        worst_open, 1,
        "only the hung master's breaker opens: {states:?}"
    );
    assert_eq!(
        states.values().filter(|s| *s == "closed").count(),
        2,
        "{states:?}"
    );
    assert_eq!(
        (after.healthy_redis + after.hung_redis),
        (after.healthy + after.hung),
        "all from Redis after the hung master resumed"
    );
}
