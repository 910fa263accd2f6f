//! Redis behind Sentinel: a master, a replica and three
//! sentinels of our own; two seqds (host ids 7 and 8) with 4 clients each
//! draw numbers through a failover. seqd follows the new master without an
//! operator, drops its connections to the old one, and recovers against
//! the new one before it serves from it again.
//!
//! What is asserted for every failover: no error reply; no number twice
//! per key from either seqd (each strictly increasing per connection);
//! after recovery the new master's counters are at or above every number
//! either seqd issued. Across the two seqds, numbers that came from Redis
//! never repeat **when `--redis-wait-replicas 1` fences them**; without it
//! a failover can lose the last increments (asynchronous replication), and
//! the count of such repeats is printed, not asserted (docs/deployments.md: "What a
//! failover can repeat").

use seqd_tests::*;
use std::collections::HashMap;
use std::time::{Duration, Instant};

fn sentinel_seqd(group: &SentinelGroup, host: u16, extra: &[&str]) -> Seqd {
    let (sentinels, host) = (group.sentinel_list(), host.to_string());
    let args = [
        "--redis-sentinels",
        &sentinels,
        "--host-id",
        &host,
        "--probe-base-ms",
        "50",
        "--probe-max-ms",
        "500",
        "--health-interval-ms",
        "200",
    ];
    Seqd::start(SeqdOptions::local().with_args(&args).with_args(extra))
}

fn health(seqd: &Seqd) -> String {
    seqd.text().cmd("HEALTH")
}

/// Waits until `seqd` writes to the master on `port` with its breaker
/// closed and nothing left to reconcile.
fn wait_serving_from(seqd: &Seqd, port: u16, what: &str) {
    let want = format!("127.0.0.1:{port}");
    let start = Instant::now();
    loop {
        let h = health(seqd);
        if field(&h, "master") == want
            && field(&h, "breaker") == "closed"
            && field(&h, "pending_reconciliation") == "0"
        {
            return;
        }
        // A timeout says what seqd reported last.
        assert!(
            start.elapsed() < FAILOVER_DEADLINE,
            "timed out waiting for {what} (master {want}); HEALTH said: {h}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// seqd connections open on a Redis (`CLIENT LIST`, by the name seqd
/// gives them).
fn seqd_connections(r: &RedisServer) -> usize {
    match r.try_cmd(&["CLIENT", "LIST"]) {
        Ok(Reply::Bulk(b)) => String::from_utf8_lossy(&b)
            .lines()
            .filter(|l| l.contains(" name=seqd "))
            .count(),
        _ => 0,
    }
}

/// Numbers from Redis that both seqds got, per key.
fn repeats_across(a: &LoadResult, b: &LoadResult) -> HashMap<&'static str, usize> {
    LOAD_KEYS
        .iter()
        .map(|k| {
            let theirs: std::collections::HashSet<u64> =
                b.from_redis.get(k).into_iter().flatten().copied().collect();
            let n = a
                .from_redis
                .get(k)
                .into_iter()
                .flatten()
                .filter(|n| theirs.contains(n))
                .count();
            (*k, n)
        })
        .collect()
}

enum How {
    /// `SENTINEL FAILOVER`: the old master is demoted to a replica.
    Command,
    /// `kill -9` of the master; it comes back later as a replica.
    Kill,
    /// The master hangs (SIGSTOP): every call to it times out until
    /// Sentinel promotes the replica; it resumes only after seqd follows.
    Hang,
}

/// Runs 8 clients on two seqds through a failover; returns the two loads'
/// results and the time from the new master's election to both seqds
/// serving from it.
fn through_failover(how: How, extra: &[&str]) -> (LoadResult, LoadResult, Duration) {
    let mut group = SentinelGroup::start();
    let a = sentinel_seqd(&group, 7, extra);
    let b = sentinel_seqd(&group, 8, extra);
    let old = group.master_port();
    for s in [&a, &b] {
        assert_eq!(field(&health(s), "topology"), "sentinel");
        wait_serving_from(s, old, "seqd to serve from the first master");
    }
    assert!(
        a.log_text().contains("(topology=sentinel)"),
        "{}",
        a.log_text()
    );
    let (la, lb) = (Load::start(&a, 4, false), Load::start(&b, 4, false));
    la.wait_for(200, "numbers before the failover");
    lb.wait_for(200, "numbers before the failover");
    let old_index = group.master_index();
    // A cached setting the replica holds too.
    a.client().cache_set("cfg:failover", b"v1", None).unwrap();
    let replica = 1 - old_index;
    wait_until("the replica to hold the setting", FAILOVER_DEADLINE, || {
        group.nodes[replica].get_bytes("cfg:failover").is_some()
    });
    match how {
        How::Command => {
            group.failover();
        }
        How::Kill => {
            group.nodes[old_index].kill9();
            // Invalidated while Redis is out of reach: deferred to the
            // outbox, replayed against the new master before it serves.
            wait_until("the breaker to open", FAILOVER_DEADLINE, || {
                field(&health(&a), "breaker") != "closed"
            });
            let (_, deferred) = a.client().cache_del(&["cfg:failover"]).unwrap();
            assert!(deferred, "the delete waits for Redis");
        }
        How::Hang => group.nodes[old_index].hang(),
    }
    let new = group.wait_for_new_master(old);
    let elected = Instant::now();
    if matches!(how, How::Kill) {
        // The old master comes back empty-handed; Sentinel makes it a
        // replica of the new one (with fencing, the new master needs it).
        group.nodes[old_index].restart();
        group.nodes[old_index].cmd(&["REPLICAOF", "127.0.0.1", &new.to_string()]);
    }
    for s in [&a, &b] {
        wait_serving_from(s, new, "seqd to follow the new master");
    }
    let followed = elected.elapsed();
    if matches!(how, How::Hang) {
        // Followed while the old master was still hung; it comes back
        // and Sentinel makes it a replica of the new one.
        group.nodes[old_index].resume();
    }
    if matches!(how, How::Kill) {
        assert_eq!(field(&health(&a), "outbox"), "0");
        assert_eq!(group.nodes[replica].get_bytes("cfg:failover"), None);
        assert_eq!(b.client().cache_get("cfg:failover").unwrap(), None);
    }
    // Numbers keep coming, now from the new master.
    la.wait_for(200, "numbers after the failover");
    lb.wait_for(200, "numbers after the failover");
    let (ra, rb) = (la.finish(), lb.finish());
    if matches!(how, How::Command) {
        // Every connection to the demoted master was dropped.
        wait_until(
            "seqd's connections to the old master to close",
            FAILOVER_DEADLINE,
            || seqd_connections(&group.nodes[old_index]) == 0,
        );
    }
    // Recovery is done (checked above); one more number per key and seqd
    // raises any counter the failover set back below its marks.
    let master = &group.nodes[group.master_index()];
    for s in [&a, &b] {
        let mut c = s.client();
        for key in LOAD_KEYS {
            next_for(&mut c, key).expect("a number after the failover");
        }
        wait_serving_from(s, new, "seqd to stay on the new master");
    }
    for key in LOAD_KEYS {
        let counter = master.get_u64(&redis_key_of(key)).unwrap_or(0);
        let top = ra.max(key).max(rb.max(key));
        assert!(
            counter >= top,
            "{key}: the new master's counter {counter} is below {top}, a number already issued"
        );
    }
    (ra, rb, followed)
}

fn report(what: &str, a: &LoadResult, b: &LoadResult, followed: Duration) {
    let total: usize = a.by_source.values().chain(b.by_source.values()).sum();
    let local: usize = [a, b]
        .iter()
        .map(|r| r.by_source.get("local").copied().unwrap_or(0))
        .sum();
    println!(
        "{what}: {total} numbers ({local} from the local stores), both seqds served from the new \
         master {followed:?} after its election; slowest reply {:?}; Redis numbers both seqds got: {:?}",
        a.slowest.max(b.slowest),
        repeats_across(a, b)
    );
}

#[test]
fn seqd_follows_sentinel_failover_command() {
    let (a, b, followed) = through_failover(How::Command, &[]);
    report("SENTINEL FAILOVER", &a, &b, followed);
}

#[test]
fn seqd_follows_a_killed_master() {
    let (a, b, followed) = through_failover(How::Kill, &[]);
    report("kill -9 of the master", &a, &b, followed);
}

#[test]
fn seqd_follows_a_hung_master_replaced_by_sentinel_while_it_still_hangs() {
    let (a, b, followed) = through_failover(How::Hang, &[]);
    report("SIGSTOP of the master", &a, &b, followed);
    assert!(
        followed < Duration::from_secs(10),
        "both seqds served from the new master {followed:?} after its election"
    );
}

#[test]
fn with_wait_replicas_no_redis_number_repeats_across_hosts_after_a_killed_master() {
    let (a, b, followed) = through_failover(How::Kill, &["--redis-wait-replicas", "1"]);
    report("kill -9 with --redis-wait-replicas 1", &a, &b, followed);
    for (key, n) in repeats_across(&a, &b) {
        assert_eq!(n, 0, "{key}: {n} Redis numbers reached both seqds");
    }
    assert!(
        a.by_source.get("redis").copied().unwrap_or(0) > 0,
        "numbers came from Redis"
    );
}
