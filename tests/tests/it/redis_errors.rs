//! Redis errors sorted the way the breaker and the fallback need them
//! (issue 12 E): a Redis that refuses writes or the password cannot give
//! numbers (fall back, open the breaker, say so in HEALTH); one key with a
//! bad value fails that key only.

use seqd_tests::*;

fn health(seqd: &Seqd, name: &str) -> String {
    field(&seqd.text().cmd("HEALTH"), name).to_string()
}

#[test]
fn a_redis_out_of_memory_gets_fallback_answers_and_opens_the_breaker() {
    let (redis, seqd) = redis_seqd(&["--redis-timeout-ms", "500", "--probe-base-ms", "50"]);
    let mut t = seqd.text();
    assert_eq!(t.cmd("CONV NEXT group oom"), "OK seq=1 source=redis");
    redis.cmd(&["CONFIG", "SET", "maxmemory-policy", "noeviction"]);
    redis.cmd(&["CONFIG", "SET", "maxmemory", "1"]);
    let mut got = vec![1];
    for _ in 0..5 {
        let reply = t.cmd("CONV NEXT group oom");
        assert!(
            reply.starts_with("OK ") && field(&reply, "source") == "local",
            "{reply}"
        );
        got.push(seq_of(&reply));
    }
    // Open, or half-open between a probe PING (which an out-of-memory
    // Redis answers) and the reconciliation that fails again.
    assert_ne!(health(&seqd, "breaker"), "closed");
    assert_eq!(health(&seqd, "redis"), "down");
    assert!(
        health(&seqd, "last_error").contains("OOM"),
        "{}",
        t.cmd("HEALTH")
    );
    // Memory back: the breaker closes after reconciling, numbers go on.
    redis.cmd(&["CONFIG", "SET", "maxmemory", "0"]);
    wait_until("breaker closed", std::time::Duration::from_secs(10), || {
        health(&seqd, "breaker") == "closed" && health(&seqd, "pending_reconciliation") == "0"
    });
    let reply = t.cmd("CONV NEXT group oom");
    assert_eq!(field(&reply, "source"), "redis", "{reply}");
    got.push(seq_of(&reply));
    assert_strictly_increasing("oom", &got);
    assert_eq!(redis.get_u64("seq:group:oom"), Some(*got.last().unwrap()));
}

#[test]
fn one_key_holding_a_non_number_fails_that_key_only() {
    let (redis, seqd) = redis_seqd(&[]);
    redis.cmd(&["SET", "seq:group:x", "abc"]);
    let mut t = seqd.text();
    for _ in 0..4 {
        let reply = t.cmd("CONV GET group x");
        assert!(reply.starts_with("ERR internal "), "{reply}");
        let reply = t.cmd("CONV NEXT group x");
        assert!(reply.starts_with("ERR internal "), "{reply}");
    }
    assert_eq!(health(&seqd, "breaker"), "closed");
    assert_eq!(health(&seqd, "redis"), "up");
    assert_eq!(health(&seqd, "consecutive_failures"), "0");
    assert_eq!(t.cmd("CONV NEXT group fine"), "OK seq=1 source=redis");
    assert_eq!(redis.get_bytes("seq:group:x"), Some(b"abc".to_vec()));
}

#[test]
fn a_wrong_password_shows_in_health_and_numbers_come_from_the_store() {
    let redis = RedisServer::start();
    redis.cmd(&["CONFIG", "SET", "requirepass", "right"]);
    let seqd = Seqd::start(SeqdOptions {
        redis_url: Some(format!("redis://:wrong@127.0.0.1:{}/0", redis.port)),
        ..SeqdOptions::local()
    });
    let mut t = seqd.text();
    for n in 1..=3 {
        let reply = t.cmd("CONV NEXT group pw");
        assert_eq!(seq_of(&reply), n, "{reply}");
        assert_eq!(field(&reply, "source"), "local", "{reply}");
    }
    assert_eq!(health(&seqd, "redis"), "down");
    let last = health(&seqd, "last_error");
    assert!(last.contains("WRONGPASS"), "{last}");
}
