//! Failover fencing and master changes: with
//! `--redis-wait-replicas N` a number is answered from Redis only once N
//! replicas acknowledged it (`WAIT` after the write batch); without them it
//! falls back (or is refused) per the fallback policy, and the breaker
//! stays open until the master has its replicas again. A new master — a
//! restarted Redis has another run id — is noticed, logged and counted,
//! and recovery runs against it before requests do.

use seqd_tests::*;
use std::time::Duration;

/// A master and a replica in sync.
fn master_and_replica() -> (RedisServer, RedisServer) {
    let master = RedisServer::start();
    let replica = RedisServer::start();
    replica.cmd(&["REPLICAOF", "127.0.0.1", &master.port.to_string()]);
    wait_until("the replica to sync", STARTUP_DEADLINE, || {
        info_field(&replica, "replication", "master_link_status").as_deref() == Some("up")
    });
    (master, replica)
}

fn fenced_seqd(master: &RedisServer, extra: &[&str]) -> Seqd {
    // A loaded test machine can keep a replica from acknowledging within
    // the default 125 ms (half the operation timeout); give it a second.
    let fenced = [
        "--redis-timeout-ms",
        "2000",
        "--redis-wait-replicas",
        "1",
        "--probe-base-ms",
        "50",
        "--probe-max-ms",
        "200",
    ];
    Seqd::start(
        SeqdOptions::redis(master)
            .with_args(&fenced)
            .with_args(extra),
    )
}

#[test]
fn a_fenced_number_is_answered_from_redis_only_with_a_replica_holding_it() {
    let (master, mut replica) = master_and_replica();
    let seqd = fenced_seqd(&master, &[]);
    let mut t = seqd.text();
    assert_eq!(t.cmd("CONV NEXT group f"), "OK seq=1 source=redis");
    assert_eq!(t.cmd("CONV NEXT group f"), "OK seq=2 source=redis");
    // The replica holds what was answered.
    wait_until("the replica to hold 2", Duration::from_secs(5), || {
        replica.get_u64("seq:group:f") == Some(2)
    });
    // No replica: the increment happens on the master, but the number is
    // not answered from it (a failover could lose it).
    replica.kill9();
    let reply = t.cmd("CONV NEXT group f");
    assert_eq!(reply, format!("OK seq=3 source=local host={TEST_HOST_ID}"));
    let health = t.cmd("HEALTH");
    assert!(health.contains("NOREPLICAS"), "{health}");
    // The probe asks for the replicas too: the breaker stays open (every
    // answer local) until one is back.
    wait_until("the breaker to open", Duration::from_secs(10), || {
        field(&t.cmd("HEALTH"), "breaker") == "open"
    });
    assert!(t.cmd("CONV NEXT group f").contains("source=local"));
    replica.restart();
    replica.cmd(&["REPLICAOF", "127.0.0.1", &master.port.to_string()]);
    wait_until("the breaker to close", Duration::from_secs(20), || {
        field(&t.cmd("HEALTH"), "breaker") == "closed"
    });
    let after = t.cmd("CONV NEXT group f");
    assert!(after.ends_with("source=redis"), "{after}");
    assert!(seq_of(&after) > 4, "{after}");
}

#[test]
fn with_fencing_refuse_issues_nothing_the_replicas_do_not_hold() {
    let master = RedisServer::start();
    let seqd = fenced_seqd(&master, &["--fallback-conv", "refuse"]);
    let reply = seqd.text().cmd("CONV NEXT group r");
    assert!(
        reply.starts_with("ERR unavailable") && reply.contains("refuse"),
        "{reply}"
    );
}

#[test]
fn a_restarted_redis_is_a_new_master_and_recovery_runs_against_it() {
    let (mut redis, seqd) = redis_seqd(&["--probe-base-ms", "50"]);
    let mut t = seqd.text();
    for n in 1..=3 {
        assert_eq!(
            t.cmd("CONV NEXT group m"),
            format!("OK seq={n} source=redis")
        );
    }
    assert_eq!(seqd.metric("seqd_redis_master_changes_total "), 0);
    // Redis comes back empty, with another run id.
    redis.restart();
    wait_until(
        "seqd to notice the new master",
        Duration::from_secs(10),
        || seqd.metric("seqd_redis_master_changes_total ") == 1,
    );
    assert!(
        seqd.log_text().contains("Redis master changed from"),
        "{}",
        seqd.log_text()
    );
    wait_until("the breaker to close", Duration::from_secs(10), || {
        field(&t.cmd("HEALTH"), "breaker") == "closed"
    });
    // The lost counter is raised past what this seqd issued.
    let next = t.cmd("CONV NEXT group m");
    assert!(seq_of(&next) > 3, "{next}");
    assert!(redis.get_u64("seq:group:m").unwrap() >= seq_of(&next));
}
