//! The sequence guarantees under faults, with real processes: 8 concurrent clients on
//! daily and conversation keys while Redis is killed, restarted empty, hung
//! with SIGSTOP, or set back in time (seqd's own `kill -9` under load is in
//! `durability.rs`). Every test asserts: no number
//! twice per key, strictly increasing numbers per connection and key, and
//! not one error reply.

use seqd_client::seqd_protocol::Source;
use seqd_tests::*;
use std::time::Duration;

/// The Redis operation timeout these tests run seqd with.
const TIMEOUT_MS: u64 = 200;

fn options(redis: &RedisServer) -> SeqdOptions {
    SeqdOptions {
        args: vec![
            "--redis-timeout-ms".into(),
            TIMEOUT_MS.to_string(),
            "--probe-base-ms".into(),
            "20".into(),
            "--probe-max-ms".into(),
            "200".into(),
        ],
        ..SeqdOptions::redis(redis)
    }
}

fn health_field(seqd: &Seqd, name: &str) -> String {
    field(&seqd.text().cmd("HEALTH"), name).to_string()
}

/// Waits until the breaker is closed and nothing is pending, then checks
/// that every Redis counter is at least the highest number issued, and that
/// the next numbers come from Redis, above everything issued.
fn assert_recovered(seqd: &Seqd, redis: &RedisServer, issued: &LoadResult) {
    wait_until(
        "the breaker to close with nothing pending",
        Duration::from_secs(20),
        || {
            let h = seqd.text().cmd("HEALTH");
            field(&h, "breaker") == "closed" && field(&h, "pending_reconciliation") == "0"
        },
    );
    let mut c = seqd.client();
    for key in LOAD_KEYS {
        let in_redis = redis.get_u64(&redis_key_of(key)).unwrap_or(0);
        assert!(
            in_redis >= issued.max(key),
            "{key}: Redis holds {in_redis}, seqd issued {}",
            issued.max(key)
        );
        let s = next_for(&mut c, key).unwrap();
        assert_eq!(s.source, Source::Redis, "{key} served from Redis again");
        assert!(
            s.seq > issued.max(key),
            "{key}: {} after {}",
            s.seq,
            issued.max(key)
        );
    }
}

#[test]
fn redis_kill_9_and_restart_without_persistence() {
    let mut redis = RedisServer::start();
    let seqd = Seqd::start(options(&redis));
    let load = Load::start(&seqd, 8, false);
    load.wait_for(300, "answers from Redis");
    redis.kill9();
    load.wait_for(300, "answers while Redis is dead");
    let health = seqd.text().cmd("HEALTH");
    assert_eq!(field(&health, "breaker"), "open");
    assert_eq!(field(&health, "redis"), "down");
    assert!(
        field(&health, "consecutive_failures")
            .parse::<u32>()
            .unwrap()
            >= 3,
        "{health}"
    );
    assert_ne!(field(&health, "last_error"), "none");
    assert!(
        field(&health, "pending_reconciliation")
            .parse::<u32>()
            .unwrap()
            > 0,
        "{health}"
    );
    assert!(field(&health, "last_transition").ends_with('Z'), "{health}");
    // Back, but empty: every counter was lost.
    redis.restart();
    wait_until("the breaker to close", Duration::from_secs(20), || {
        health_field(&seqd, "breaker") == "closed"
    });
    load.wait_for(300, "answers after Redis came back");
    let result = load.finish();
    assert!(
        result.by_source.get("local").copied().unwrap_or(0) > 0,
        "some answers came from the store"
    );
    assert!(result.by_source.get("redis").copied().unwrap_or(0) > 0);
    assert_recovered(&seqd, &redis, &result);
    let metrics = seqd.client().metrics().unwrap();
    assert!(
        metrics.contains(r#"seqd_breaker_transitions_total{to="open"}"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"seqd_fallback_answers_total{reason="breaker_open"}"#));
    // One outage, one transition each way, each logged once.
    let log = seqd.log_text();
    assert_eq!(log.matches("circuit breaker opened").count(), 1, "{log}");
    assert_eq!(log.matches("circuit breaker closed").count(), 1, "{log}");
}

#[test]
fn redis_hung_by_sigstop_then_resumed() {
    let redis = RedisServer::start();
    let seqd = Seqd::start(options(&redis));
    let load = Load::start(&seqd, 8, false);
    load.wait_for(300, "answers from Redis");
    redis.hang();
    load.wait_for(300, "answers while Redis hangs");
    assert_eq!(health_field(&seqd, "breaker"), "open");
    redis.resume();
    wait_until("the breaker to close", Duration::from_secs(20), || {
        health_field(&seqd, "breaker") == "closed"
    });
    load.wait_for(300, "answers after Redis resumed");
    let result = load.finish();
    assert!(result.by_source.get("local").copied().unwrap_or(0) > 0);
    assert_recovered(&seqd, &redis, &result);
}

#[test]
fn slowest_reply_during_a_redis_hang_stays_within_the_timeout() {
    let redis = RedisServer::start();
    let seqd = Seqd::start(options(&redis));
    let warm = Load::start(&seqd, 8, false);
    warm.wait_for(200, "answers from Redis");
    warm.finish();
    // Requests in flight when Redis stops wait for the timeout, then are
    // answered from the store; once the breaker is open, at once.
    let load = Load::start(&seqd, 8, false);
    load.wait_for(100, "answers before the hang");
    redis.hang();
    load.wait_for(500, "answers during the hang");
    let result = load.finish();
    redis.resume();
    // Margin for scheduling on a shared 2-core machine and the store's
    // fsync; the point is that nobody waits for Redis beyond the timeout.
    let bound = Duration::from_millis(TIMEOUT_MS + 400);
    assert!(
        result.slowest <= bound,
        "slowest reply {:?} > {:?}",
        result.slowest,
        bound
    );
    println!(
        "slowest reply during the hang: {:?} (timeout {TIMEOUT_MS} ms)",
        result.slowest
    );
}

#[test]
fn redis_restarted_empty_right_after_a_seqd_restart() {
    let mut redis = RedisServer::start();
    let mut seqd = Seqd::start(options(&redis));
    let load = Load::start(&seqd, 8, true);
    load.wait_for(400, "answers");
    seqd.kill9();
    let before = load.finish();
    // Both lose their memory; only seqd's store remembers the marks.
    redis.restart();
    seqd.restart();
    let load = Load::start(&seqd, 8, false);
    load.wait_for(400, "answers after both restarts");
    let after = load.finish();
    assert_continues(&before, &after);
    assert!(
        after.by_source.get("redis").copied().unwrap_or(0) > 0,
        "served from Redis, raised past the marks"
    );
    assert_recovered(&seqd, &redis, &after);
}

#[test]
fn redis_failover_to_a_lagging_replica_never_repeats() {
    // A replica that missed the last writes is a Redis whose counters went
    // back in time under live connections.
    let redis = RedisServer::start();
    let seqd = Seqd::start(options(&redis));
    let load = Load::start(&seqd, 8, false);
    load.wait_for(300, "answers");
    for key in LOAD_KEYS {
        let k = redis_key_of(key);
        let v = redis.get_u64(&k).unwrap_or(0);
        redis.cmd(&["SET", &k, &(v / 2).to_string()]);
    }
    load.wait_for(300, "answers after the counters went back");
    let result = load.finish();
    assert_recovered(&seqd, &redis, &result);
}

/// One connection that pipelines draws of one daily and one conversation
/// counter, `ROUNDS` writes of `PER_ROUND` requests, keeping about two
/// writes in flight; `fault(round)` runs after each write. Returns every
/// answer by request id: the draw's day (0 for the conversation), number
/// and source.
fn pipelined_draws(
    seqd: &Seqd,
    user: &str,
    at_ms: i64,
    mut fault: impl FnMut(usize),
) -> Vec<(u64, u32, u64, Source)> {
    use seqd_client::seqd_protocol::codec::{encode_frame, read_frame};
    use seqd_client::seqd_protocol::*;
    use std::io::Write;
    const ROUNDS: usize = 30;
    const PER_ROUND: usize = 100;
    const MAX: usize = DEFAULT_MAX_FRAME;
    let mut s = seqd.raw_binary(PROTOCOL_VERSION, "pipelined-draws");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut rd = s.try_clone().unwrap();
    let count = answered.clone();
    let reader = std::thread::spawn(move || {
        let mut got = Vec::new();
        while got.len() < ROUNDS * PER_ROUND {
            let (id, result) = match read_frame::<_, ServerMessage>(&mut rd, MAX).unwrap() {
                ServerMessage::Response { id, result } => (id, result),
                other => panic!("{other:?}"),
            };
            got.push(
                match result.unwrap_or_else(|e| panic!("request {id}: {e}")) {
                    Response::DailyNumber {
                        seq, day, source, ..
                    } => (id, day, seq, source),
                    Response::ConvNumber { seq, source, .. } => (id, 0, seq, source),
                    other => panic!("{other:?}"),
                },
            );
            count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        got
    });
    for round in 0..ROUNDS {
        let mut burst = Vec::new();
        for i in 0..PER_ROUND {
            let id = (round * PER_ROUND + i) as u64;
            let request = match i % 2 {
                0 => Request::DailyNext(DailyQuery {
                    user: user.into(),
                    tz: Some("UTC".into()),
                    at_ms: Some(at_ms),
                }),
                _ => Request::ConvNext(Conversation::Group { id: user.into() }),
            };
            burst.extend(encode_frame(&ClientMessage::Request { id, request }, MAX).unwrap());
        }
        s.write_all(&burst).unwrap();
        fault(round);
        let behind = round.saturating_sub(1) * PER_ROUND;
        wait_until(
            "the round before to be answered",
            Duration::from_secs(20),
            || answered.load(std::sync::atomic::Ordering::Relaxed) >= behind,
        );
    }
    let mut got = reader.join().unwrap();
    got.sort_unstable_by_key(|a| a.0);
    got
}

#[test]
fn pipelined_draws_on_one_connection_rise_in_the_order_sent_through_faults() {
    let mut redis = RedisServer::start();
    let seqd = Seqd::start(options(&redis));
    let at_ms = chrono::Utc::now().timestamp_millis();
    // A second connection draws the same counters meanwhile, as another
    // process of the host would.
    let other = {
        let socket = seqd.socket();
        std::thread::spawn(move || {
            let mut c = seqd_client::Client::connect(&socket).unwrap();
            (0..2000)
                .map(|_| c.daily_next("piped", Some("UTC"), Some(at_ms)).unwrap().seq)
                .collect::<Vec<u64>>()
        })
    };
    let got = pipelined_draws(&seqd, "piped", at_ms, |round| match round {
        6 => redis.hang(),
        12 => redis.resume(),
        18 => redis.kill9(),
        24 => redis.restart(),
        _ => {}
    });
    let others = other.join().unwrap();
    // By request id, each counter's numbers rise: the order sent.
    for kind in [0, 1] {
        let numbers: Vec<u64> = got
            .iter()
            .filter(|a| (a.1 == 0) == (kind == 1))
            .map(|a| a.2)
            .collect();
        assert_eq!(numbers.len(), got.len() / 2);
        assert_strictly_increasing("one connection's pipelined draws", &numbers);
        if kind == 0 {
            let mut all = numbers.clone();
            all.extend(&others);
            assert_unique("both connections' daily numbers", &all);
        }
    }
    // The faults were met: answers came from the store as well as Redis.
    for source in [Source::Redis, Source::Local] {
        assert!(
            got.iter().any(|a| a.3 == source),
            "no answer from {source:?}"
        );
    }
    let days: std::collections::HashSet<u32> =
        got.iter().filter(|a| a.1 != 0).map(|a| a.1).collect();
    assert_eq!(days.len(), 1, "one day: {days:?}");
    println!(
        "numbers drawn again: {}",
        seqd.metric("seqd_numbers_redrawn_total")
    );
}

/// One answer, with when its request left and its reply came back.
struct Timed {
    sent: std::time::Instant,
    answered: std::time::Instant,
    seq: u64,
}

/// Real-time order on one host: when an answer for a key came back
/// before another request for it was sent (from any connection), the
/// later request's number is higher.
fn assert_real_time_order(key: &str, answers: &mut [Timed]) {
    // By the time each request left: every answer that came back before
    // it must be lower. Answers sorted by arrival, swept once.
    let mut by_answer: Vec<(std::time::Instant, u64)> =
        answers.iter().map(|a| (a.answered, a.seq)).collect();
    by_answer.sort();
    answers.sort_by_key(|a| a.sent);
    let (mut i, mut highest) = (0, 0);
    for a in answers.iter() {
        while i < by_answer.len() && by_answer[i].0 < a.sent {
            highest = highest.max(by_answer[i].1);
            i += 1;
        }
        assert!(
            a.seq > highest,
            "{key}: {} was sent after {highest} had been answered",
            a.seq
        );
    }
}

/// Twelve connections draw numbers of three keys (a daily key, a group,
/// a private chat) while Redis hangs, is killed, comes back empty and
/// is restarted again: every number that was sent for after another one
/// was answered is higher than it, whichever connections they were on.
#[test]
fn numbers_keep_real_time_order_across_connections_through_faults() {
    let mut redis = RedisServer::start();
    let seqd = Seqd::start(options(&redis));
    let keys = [
        "DAILY NEXT rt1",
        "CONV NEXT group rt",
        "CONV NEXT private ra rb",
    ];
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients: Vec<_> = (0..12)
        .map(|c| {
            let (mut conn, stop) = (seqd.text(), stop.clone());
            let key = keys[c % keys.len()];
            std::thread::spawn(move || {
                let mut got = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let sent = std::time::Instant::now();
                    let reply = conn.cmd(key);
                    let answered = std::time::Instant::now();
                    assert!(reply.starts_with("OK seq="), "{key}: {reply}");
                    got.push(Timed {
                        sent,
                        answered,
                        seq: seq_of(&reply),
                    });
                }
                (key, got)
            })
        })
        .collect();
    let local =
        |s: &Seqd| s.metric("seqd_sequence_numbers_issued_total{kind=\"conv\",source=\"local\"} ");
    let closed = |s: &Seqd| health_field(s, "breaker") == "closed";
    // Each fault lasts until numbers came from the store, then Redis is
    // back and the breaker closed again; the three, twice.
    for name in ["hang", "kill", "restart empty"].repeat(2) {
        let before = local(&seqd);
        match name {
            "hang" => redis.hang(),
            "kill" => redis.kill9(),
            _ => redis.restart(),
        }
        if name != "restart empty" {
            wait_until(name, Duration::from_secs(20), || {
                local(&seqd) > before + 500
            });
        }
        match name {
            "hang" => redis.resume(),
            "kill" => redis.restart(),
            _ => {}
        }
        wait_until("the breaker closes again", Duration::from_secs(30), || {
            closed(&seqd)
        });
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut per_key: std::collections::HashMap<&str, Vec<Timed>> = Default::default();
    for c in clients {
        let (key, got) = c.join().unwrap();
        per_key.entry(key).or_default().extend(got);
    }
    for (key, answers) in &mut per_key {
        assert!(answers.len() > 100, "{key}: {} answers", answers.len());
        let numbers: Vec<u64> = answers.iter().map(|a| a.seq).collect();
        assert_unique(key, &numbers);
        assert_real_time_order(key, answers);
    }
}
