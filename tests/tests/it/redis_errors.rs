//! Redis errors sorted the way the breaker and the fallback need them: a
//! Redis that refuses writes or the password cannot give numbers (fall
//! back, open the breaker, say so in HEALTH), also when the refusal comes
//! inside a transaction or a script; the breaker closes only on real work,
//! never on a PING that a refusing Redis still answers; one key with a bad
//! value fails that key only.

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

fn out_of_memory(redis: &RedisServer) {
    redis.cmd(&["CONFIG", "SET", "maxmemory-policy", "noeviction"]);
    redis.cmd(&["CONFIG", "SET", "maxmemory", "1"]);
}

/// Every breaker transition counted so far (`seqd_breaker_transitions_total`).
fn transitions(t: &mut TextConn) -> u64 {
    let text = t.cmd_multiline("METRICS");
    text.lines()
        .filter(|l| l.starts_with("seqd_breaker_transitions_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[test]
fn every_write_refused_for_memory_answers_per_its_fallback_never_internal() {
    // A threshold no test reaches: every request below meets the refusal
    // itself, not an open breaker.
    let (redis, seqd) = redis_seqd(&["--breaker-threshold", "1000"]);
    let mut t = seqd.text();
    assert_eq!(t.cmd("CONV NEXT group known"), "OK seq=1 source=redis");
    assert_eq!(field(&t.cmd("DAILY NEXT known"), "source"), "redis");
    assert_eq!(t.cmd("CACHE SET settings:all old"), "OK");
    out_of_memory(&redis);
    // A user's first number of the day is a MULTI with EXPIRE NX: the
    // refusal comes inside the transaction (EXECABORT).
    for (cmd, seq) in [
        ("DAILY NEXT newcomer", 1),
        ("DAILY NEXT known", 2),
        ("CONV NEXT group fresh", 1),
        ("CONV NEXT group known", 2),
    ] {
        let reply = t.cmd(cmd);
        assert!(reply.starts_with("OK "), "{cmd}: {reply}");
        assert_eq!(field(&reply, "source"), "local", "{cmd}: {reply}");
        assert_eq!(seq_of(&reply), seq, "{cmd}: {reply}");
    }
    // The gap script is refused: the tracker answers from memory.
    let reply = t.cmd("GAP CHECK oomx oomy 1");
    assert!(reply.starts_with("OK event=normal"), "{reply}");
    assert_eq!(field(&reply, "source"), "local", "{reply}");
    // The SET is refused: the key is invalidated (or deferred), never left
    // holding the superseded value.
    let reply = t.cmd("CACHE SET settings:all new");
    assert!(
        reply == "OK invalidated=true" || reply == "OK deferred=true",
        "{reply}"
    );
    assert_eq!(redis.get_bytes("settings:all"), None);
    assert_eq!(health(&seqd, "last_error_class"), "oom");

    // With --fallback-daily refuse the same request is refused as
    // unavailable, and nothing is issued.
    let refusing = Seqd::start(SeqdOptions::redis(&redis).with_args(&[
        "--breaker-threshold",
        "1000",
        "--fallback-daily",
        "refuse",
    ]));
    let reply = refusing.text().cmd("DAILY NEXT another");
    assert!(reply.starts_with("ERR unavailable "), "{reply}");
}

/// Sends `request` every 100 ms for `hold`, reading HEALTH after each:
/// never `redis=up breaker=closed` while Redis refuses, every answer as
/// `want` says. Returns the numbers answered.
fn hold_refusal(
    seqd: &Seqd,
    request: &str,
    hold: std::time::Duration,
    mut want: impl FnMut(&str),
) -> Vec<u64> {
    let mut t = seqd.text();
    let mut got = Vec::new();
    let until = std::time::Instant::now() + hold;
    while std::time::Instant::now() < until {
        let reply = t.cmd(request);
        want(&reply);
        if let Some(Ok(n)) = seqd_protocol::text::parse_ok_fields(&reply)
            .and_then(|f| f.into_iter().find(|(k, _)| *k == "seq"))
            .map(|(_, v)| v.parse::<u64>())
        {
            got.push(n);
        }
        let h = t.cmd("HEALTH");
        assert!(
            !(field(&h, "redis") == "up" && field(&h, "breaker") == "closed"),
            "HEALTH says healthy while Redis refuses: {h}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    got
}

/// Requests `request` until the breaker is closed again (it closes only
/// on real requests that Redis served), within `deadline`.
fn serve_until_closed(seqd: &Seqd, request: &str, deadline: std::time::Duration) -> Vec<u64> {
    let mut t = seqd.text();
    let mut got = Vec::new();
    wait_until("breaker closed", deadline, || {
        let reply = t.cmd(request);
        if let Some(Ok(n)) = seqd_protocol::text::parse_ok_fields(&reply)
            .and_then(|f| f.into_iter().find(|(k, _)| *k == "seq"))
            .map(|(_, v)| v.parse::<u64>())
        {
            got.push(n);
        }
        health(seqd, "breaker") == "closed"
    });
    got
}

const REFUSAL_FLAGS: &[&str] = &[
    "--redis-timeout-ms",
    "500",
    "--probe-base-ms",
    "50",
    "--probe-max-ms",
    "200",
];

#[test]
fn a_redis_out_of_memory_keeps_the_breaker_open_until_memory_is_back() {
    let (redis, seqd) = redis_seqd(REFUSAL_FLAGS);
    let mut t = seqd.text();
    assert_eq!(t.cmd("CONV NEXT group held"), "OK seq=1 source=redis");
    let before = transitions(&mut t);
    out_of_memory(&redis);
    let mut got = vec![1];
    got.extend(hold_refusal(
        &seqd,
        "CONV NEXT group held",
        std::time::Duration::from_secs(5),
        |reply| assert_eq!(field(reply, "source"), "local", "{reply}"),
    ));
    let h = t.cmd("HEALTH");
    assert_eq!(field(&h, "breaker"), "open", "{h}");
    assert_eq!(field(&h, "redis"), "down", "{h}");
    assert_eq!(field(&h, "last_error_class"), "oom", "{h}");
    let during = transitions(&mut t) - before;
    assert_eq!(during, 1, "the breaker opened once and stayed open");

    redis.cmd(&["CONFIG", "SET", "maxmemory", "0"]);
    got.extend(serve_until_closed(
        &seqd,
        "CONV NEXT group held",
        std::time::Duration::from_secs(5),
    ));
    let reply = t.cmd("CONV NEXT group held");
    assert_eq!(field(&reply, "source"), "redis", "{reply}");
    got.push(seq_of(&reply));
    assert_strictly_increasing("held", &got);
    assert_eq!(redis.get_u64("seq:group:held"), Some(*got.last().unwrap()));
}

#[test]
fn a_demoted_master_answering_readonly_keeps_the_breaker_open() {
    let (redis, seqd) = redis_seqd(REFUSAL_FLAGS);
    let other = RedisServer::start();
    let mut t = seqd.text();
    assert_eq!(t.cmd("CONV NEXT group demoted"), "OK seq=1 source=redis");
    let before = transitions(&mut t);
    let port = other.port.to_string();
    redis.cmd(&["REPLICAOF", "127.0.0.1", &port]);
    let mut got = vec![1];
    got.extend(hold_refusal(
        &seqd,
        "CONV NEXT group demoted",
        std::time::Duration::from_secs(3),
        |reply| assert_eq!(field(reply, "source"), "local", "{reply}"),
    ));
    let h = t.cmd("HEALTH");
    assert_eq!(field(&h, "breaker"), "open", "{h}");
    assert_eq!(field(&h, "last_error_class"), "readonly", "{h}");
    assert_eq!(transitions(&mut t) - before, 1, "opened once, stayed open");

    redis.cmd(&["REPLICAOF", "NO", "ONE"]);
    got.extend(serve_until_closed(
        &seqd,
        "CONV NEXT group demoted",
        std::time::Duration::from_secs(5),
    ));
    let reply = t.cmd("CONV NEXT group demoted");
    assert_eq!(field(&reply, "source"), "redis", "{reply}");
    got.push(seq_of(&reply));
    assert_strictly_increasing("demoted", &got);
}

#[test]
fn scripts_denied_by_acl_keep_the_breaker_open_until_allowed() {
    let redis = RedisServer::start();
    redis.cmd(&["ACL", "SETUSER", "seqd", "on", ">pw", "~*", "&*", "+@all"]);
    let seqd = Seqd::start(
        SeqdOptions {
            redis_url: Some(format!("redis://seqd:pw@127.0.0.1:{}/0", redis.port)),
            ..SeqdOptions::local()
        }
        .with_args(REFUSAL_FLAGS),
    );
    let mut t = seqd.text();
    let reply = t.cmd("GAP CHECK acl s 1");
    assert_eq!(field(&reply, "source"), "redis", "{reply}");
    let before = transitions(&mut t);
    redis.cmd(&["ACL", "SETUSER", "seqd", "-evalsha"]);
    let mut seq = 1;
    hold_refusal(
        &seqd,
        "GAP CHECK acl s 0",
        std::time::Duration::from_secs(3),
        |reply| {
            assert!(reply.starts_with("OK "), "{reply}");
        },
    );
    let h = t.cmd("HEALTH");
    assert_eq!(field(&h, "breaker"), "open", "{h}");
    assert_eq!(field(&h, "last_error_class"), "noperm", "{h}");
    assert_eq!(transitions(&mut t) - before, 1, "opened once, stayed open");

    redis.cmd(&["ACL", "SETUSER", "seqd", "+evalsha"]);
    wait_until("breaker closed", std::time::Duration::from_secs(5), || {
        seq += 1;
        let reply = t.cmd(&format!("GAP CHECK acl s {seq}"));
        assert!(reply.starts_with("OK "), "{reply}");
        health(&seqd, "breaker") == "closed"
    });
    seq += 1;
    let reply = t.cmd(&format!("GAP CHECK acl s {seq}"));
    assert_eq!(field(&reply, "source"), "redis", "{reply}");
    assert_eq!(field(&reply, "event"), "normal", "{reply}");
}
