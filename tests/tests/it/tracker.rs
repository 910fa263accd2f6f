//! The gap tracker against a live seqd, with a real Redis and in
//! local mode: every row of the classification, batches equal to one-by-one
//! checks (property-tested against a plain model), racing consumers,
//! persistence, fallback and recovery.

use proptest::prelude::*;
use seqd_client::seqd_protocol::{GapKind, GapResult, Source};
use seqd_client::{gap_event, Client};
use seqd_tests::*;
use std::collections::HashMap;
use std::sync::{Arc, Barrier};
use std::time::Duration;

/// A plain model of the classification table, written independently of seqd's.
#[derive(Default)]
struct Model {
    last: HashMap<String, u64>,
}

impl Model {
    fn check(&mut self, stream: &str, seq: u64) -> (GapKind, Option<u64>, u64) {
        let Some(&last) = self.last.get(stream) else {
            self.last.insert(stream.to_string(), seq);
            return (GapKind::Normal, None, 0);
        };
        let e = Some(last + 1);
        if seq == last + 1 {
            self.last.insert(stream.to_string(), seq);
            (GapKind::Normal, e, 0)
        } else if seq > last + 1 {
            self.last.insert(stream.to_string(), seq);
            (GapKind::Gap, e, seq - last - 1)
        } else if seq == last {
            (GapKind::Duplicate, e, 0)
        } else if 2 * seq < last {
            self.last.insert(stream.to_string(), seq);
            (GapKind::Reset, e, 0)
        } else {
            (GapKind::OutOfOrder, e, 0)
        }
    }
}

fn kind_of(r: &GapResult) -> (GapKind, Option<u64>, u64) {
    (r.kind, r.expected, r.gap)
}

fn every_row_of_the_table(seqd: &Seqd, source: &str) {
    let mut t = seqd.text();
    let rows = [
        (
            "GAP CHECK asx BHP 100",
            format!("OK event=normal seq=100 expected=- gap=0 source={source}"),
        ),
        (
            "GAP CHECK asx BHP 101",
            format!("OK event=normal seq=101 expected=101 gap=0 source={source}"),
        ),
        (
            "GAP CHECK asx BHP 105",
            format!("OK event=gap seq=105 expected=102 gap=3 source={source}"),
        ),
        (
            "GAP CHECK asx BHP 105",
            format!("OK event=duplicate seq=105 expected=106 gap=0 source={source}"),
        ),
        (
            "GAP CHECK asx BHP 103",
            format!("OK event=out_of_order seq=103 expected=106 gap=0 source={source} filled=true"),
        ),
        (
            "GAP CHECK asx BHP 103",
            format!(
                "OK event=out_of_order seq=103 expected=106 gap=0 source={source} filled=false"
            ),
        ),
        // 2·53 = 106 is not below 105: out of order, not a reset.
        (
            "GAP CHECK asx BHP 53",
            format!("OK event=out_of_order seq=53 expected=106 gap=0 source={source} filled=false"),
        ),
        (
            "GAP CHECK asx BHP 52",
            format!("OK event=reset seq=52 expected=106 gap=0 source={source}"),
        ),
        (
            "GAP CHECK asx BHP 53",
            format!("OK event=normal seq=53 expected=53 gap=0 source={source}"),
        ),
    ];
    for (line, want) in &rows {
        assert_eq!(&t.cmd(line), want, "{line}");
    }
    let stats = t.cmd("GAP STATS asx BHP");
    assert_eq!(field(&stats, "exists"), "true");
    assert_eq!(field(&stats, "last"), "53");
    assert_eq!(field(&stats, "gaps"), "0", "a reset zeroes the gap count");
    assert_eq!(field(&stats, "resets"), "1");
    assert_eq!(field(&stats, "missing"), "-");
    assert_eq!(t.cmd("GAP STATS asx NOPE"), "OK exists=false");
}

#[test]
fn every_row_of_the_classification_in_redis() {
    let (redis, seqd) = redis_seqd(&[]);
    every_row_of_the_table(&seqd, "redis");
    let h = match redis.cmd(&["HGETALL", "k2:seq:asx:BHP"]) {
        Reply::Array(items) => items,
        other => panic!("{other:?}"),
    };
    let h: HashMap<String, String> = h
        .chunks(2)
        .map(|kv| match (&kv[0], &kv[1]) {
            (Reply::Bulk(k), Reply::Bulk(v)) => (
                String::from_utf8_lossy(k).into(),
                String::from_utf8_lossy(v).into(),
            ),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(h["last_seq"], "53");
    assert_eq!(h["gap_count"], "0");
    assert_eq!(h["reset_count"], "1");
    assert!(h.contains_key("last_ts"));
    let ttl = redis.cmd(&["TTL", "k2:seq:asx:BHP"]).as_int();
    assert!(
        (604_790..=604_800).contains(&ttl),
        "7-day TTL refreshed on update: {ttl}"
    );
}

#[test]
fn every_row_of_the_classification_in_local_mode() {
    every_row_of_the_table(&Seqd::start(SeqdOptions::local()), "local");
}

#[test]
fn stats_list_the_missing_ranges() {
    let (_redis, seqd) = redis_seqd(&[]);
    let mut c = seqd.client();
    for s in [10, 20, 30, 25] {
        c.gap_check("x", "S", s).unwrap();
    }
    let st = c.gap_stats("x", "S").unwrap().unwrap();
    assert_eq!(st.missing, vec![(11, 19), (21, 24), (26, 29)]);
    assert_eq!(
        (st.last_seq, st.gap_count, st.source),
        (30, 2, Source::Redis)
    );
    assert_eq!(
        field(&seqd.text().cmd("GAP STATS x S"), "missing"),
        "11-19,21-24,26-29"
    );
}

#[test]
fn invalid_streams_and_numbers_are_refused() {
    let (redis, seqd) = redis_seqd(&[]);
    let mut t = seqd.text();
    for line in [
        "GAP CHECK a:b S 1",
        "GAP CHECK a S:x 1",
        "GAP CHECK a S -1",
        "GAP CHECK a S 9007199254740992",
    ] {
        assert!(t.cmd(line).starts_with("ERR invalid_argument "), "{line}");
    }
    for line in [
        "GAP CHECK a S",
        "GAP STATS a",
        "GAP CLEAR",
        "GAP CLEARALL x",
    ] {
        assert!(t.cmd(line).starts_with("ERR bad_request "), "{line}");
    }
    assert!(t.cmd("GAP FROB a b").starts_with("ERR unknown_command "));
    // A batch with one bad event is refused whole: nothing was applied.
    let mut c = seqd.client();
    let e = c
        .gap_batch(vec![gap_event("ok", "S", 1), gap_event("bad:x", "S", 2)])
        .unwrap_err();
    assert_eq!(
        e.code(),
        Some(seqd_client::seqd_protocol::ErrorCode::InvalidArgument)
    );
    assert_eq!(redis.cmd(&["EXISTS", "k2:seq:ok:S"]).as_int(), 0);
}

/// Random batches over a few streams (so streams repeat) give exactly what
/// checking each event alone, in turn, gives — and what the model says.
fn batch_equals_sequential(seqd: &Seqd, cases: u32) {
    // The runner takes an `Fn`: state lives in cells.
    let c = std::cell::RefCell::new(seqd.client());
    let case = std::cell::Cell::new(0u32);
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(cases));
    let events = proptest::collection::vec((0usize..3, 0u64..60), 1..80);
    runner
        .run(&events, |events| {
            case.set(case.get() + 1);
            let (batch_ex, single_ex) = (format!("b{}", case.get()), format!("s{}", case.get()));
            let mut c = c.borrow_mut();
            let batch: Vec<_> = events
                .iter()
                .map(|(s, q)| gap_event(&batch_ex, &format!("S{s}"), *q))
                .collect();
            let batched = c.gap_batch(batch).unwrap();
            let mut model = Model::default();
            for ((s, q), b) in events.iter().zip(&batched) {
                let single = c.gap_check(&single_ex, &format!("S{s}"), *q).unwrap();
                prop_assert_eq!(kind_of(b), kind_of(&single));
                prop_assert_eq!(b.filled, single.filled);
                prop_assert_eq!(kind_of(b), model.check(&format!("S{s}"), *q));
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn a_batch_equals_sequential_single_checks_in_redis() {
    let (_redis, seqd) = redis_seqd(&[]);
    batch_equals_sequential(&seqd, 64);
}

#[test]
fn a_batch_equals_sequential_single_checks_in_local_mode() {
    batch_equals_sequential(&Seqd::start(SeqdOptions::local()), 64);
}

/// 8 clients send the same next number at the same moment, round after
/// round: exactly one of them sees `normal`, the others `duplicate`.
fn racing_consumers(seqd: &Seqd) {
    const CLIENTS: usize = 8;
    const ROUNDS: u64 = 100;
    let barrier = Arc::new(Barrier::new(CLIENTS));
    let handles: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let barrier = barrier.clone();
            let mut c: Client = seqd.client();
            std::thread::spawn(move || {
                (1..=ROUNDS)
                    .map(|round| {
                        barrier.wait();
                        c.gap_check("race", "BTC", round).unwrap().kind
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let per_client: Vec<Vec<GapKind>> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    for round in 0..ROUNDS as usize {
        let kinds: Vec<GapKind> = per_client.iter().map(|k| k[round]).collect();
        let normal = kinds.iter().filter(|k| **k == GapKind::Normal).count();
        assert_eq!(normal, 1, "round {}: {kinds:?}", round + 1);
        assert!(
            kinds
                .iter()
                .all(|k| matches!(k, GapKind::Normal | GapKind::Duplicate)),
            "round {}: {kinds:?}",
            round + 1
        );
    }
}

#[test]
fn racing_consumers_see_one_normal_per_number_in_redis() {
    let (_redis, seqd) = redis_seqd(&[]);
    racing_consumers(&seqd);
}

#[test]
fn racing_consumers_see_one_normal_per_number_in_local_mode() {
    racing_consumers(&Seqd::start(SeqdOptions::local()));
}

#[test]
fn local_state_survives_a_restart() {
    let mut seqd = Seqd::start(SeqdOptions::local());
    let mut c = seqd.client();
    c.gap_check("x", "P", 10).unwrap();
    c.gap_check("x", "P", 15).unwrap();
    // The tracker answers from memory and its state reaches the store
    // within a second (fsynced): after that a kill -9 loses nothing.
    let fsyncs = seqd.metric("seqd_store_fsyncs_total ");
    wait_until(
        "the state to be synced",
        std::time::Duration::from_secs(3),
        || seqd.metric("seqd_store_fsyncs_total ") > fsyncs,
    );
    seqd.kill9();
    seqd.restart();
    let mut c = seqd.client();
    let st = c.gap_stats("x", "P").unwrap().expect("state survived");
    assert_eq!(
        (st.last_seq, st.gap_count, st.missing.clone()),
        (15, 1, vec![(11, 14)])
    );
    assert_eq!(c.gap_check("x", "P", 16).unwrap().kind, GapKind::Normal);
    assert_eq!(c.gap_check("x", "P", 12).unwrap().filled, Some(true));
}

#[test]
fn a_gap_check_waits_for_no_commit_and_is_fsynced_within_a_second() {
    let mut seqd = Seqd::start(SeqdOptions::local());
    let mut c = seqd.client();
    let fsyncs = |s: &Seqd| s.metric("seqd_store_fsyncs_total ");
    let before = fsyncs(&seqd);
    let started = std::time::Instant::now();
    for n in 1..=300 {
        assert_eq!(c.gap_check("x", "F", n).unwrap().seq, n);
    }
    let took = started.elapsed();
    let during = fsyncs(&seqd) - before;
    println!("300 gap checks one by one: {during} fsyncs, {took:?}");
    // One per second at most (the sync task), not one per event.
    assert!(
        during <= 2 + took.as_secs(),
        "{during} fsyncs for 300 events"
    );
    // Within a second of the last write the state is fsynced, with no
    // further request.
    let after = fsyncs(&seqd);
    wait_until(
        "the tracker's state to be fsynced",
        std::time::Duration::from_secs(3),
        || fsyncs(&seqd) > after,
    );
    // Once synced, a kill -9 loses nothing.
    c.gap_check("x", "F", 302).unwrap();
    let synced = fsyncs(&seqd);
    wait_until(
        "the last state to be synced",
        std::time::Duration::from_secs(3),
        || fsyncs(&seqd) > synced,
    );
    seqd.kill9();
    seqd.restart();
    let st = seqd
        .client()
        .gap_stats("x", "F")
        .unwrap()
        .expect("state survived");
    assert_eq!((st.last_seq, st.missing.clone()), (302, vec![(301, 301)]));
}

#[test]
fn clear_and_clear_all_use_scan_never_keys() {
    let (redis, seqd) = redis_seqd(&[]);
    let mut c = seqd.client();
    let events: Vec<_> = (0..2500)
        .map(|i| gap_event("bulk", &format!("S{i}"), 1))
        .collect();
    c.gap_batch(events).unwrap();
    redis.cmd(&["SET", "unrelated", "1"]);
    c.gap_clear("bulk", "S0").unwrap();
    assert_eq!(redis.cmd(&["EXISTS", "k2:seq:bulk:S0"]).as_int(), 0);
    assert_eq!(c.gap_clear_all().unwrap(), 2499);
    assert_eq!(
        redis.cmd(&["DBSIZE"]).as_int(),
        1,
        "only the unrelated key is left"
    );
    let stats = match redis.cmd(&["INFO", "commandstats"]) {
        Reply::Bulk(b) => String::from_utf8(b).unwrap(),
        other => panic!("{other:?}"),
    };
    assert!(stats.contains("cmdstat_scan:"), "{stats}");
    assert!(!stats.contains("cmdstat_keys:"), "{stats}");
}

#[test]
fn gaps_are_logged_by_size_and_counted_per_exchange() {
    let (_redis, seqd) = redis_seqd(&[]);
    let mut c = seqd.client();
    // One stream per size: a stream's gaps after its first logged one in
    // an interval are only counted (see the flood test below).
    for (symbol, first, then) in [
        ("L3", 1, 5),
        ("L10", 5, 16),
        ("L100", 16, 117),
        ("L1000", 117, 1118),
    ] {
        c.gap_check("logx", symbol, first).unwrap();
        c.gap_check("logx", symbol, then).unwrap();
    }
    c.gap_check("logx", "L1000", 1118).unwrap();
    wait_until("the error-level gap log", Duration::from_secs(5), || {
        seqd.log_text().contains("critical sequence gap")
    });
    let log = seqd.log_text();
    // 3 numbers skipped: not logged; 10: info; 100: warn; 1000: error.
    let line_of = |gap: &str| {
        log.lines()
            .find(|l| l.contains(&format!("gap={gap}")))
            .map(str::to_string)
    };
    assert!(line_of("3").is_none(), "{log}");
    assert!(line_of("10").unwrap().contains(" INFO "), "{log}");
    assert!(line_of("100").unwrap().contains(" WARN "), "{log}");
    let critical = line_of("1000").unwrap();
    assert!(
        critical.contains(" ERROR ")
            && critical.contains("expected=118")
            && critical.contains("actual=1118")
    );
    let metrics = c.metrics().unwrap();
    assert!(
        metrics.contains(r#"seqd_gap_events_total{exchange="logx",event="gap"} 4"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"seqd_gap_events_total{exchange="logx",event="normal"} 4"#));
    assert!(metrics.contains(r#"seqd_gap_events_total{exchange="logx",event="duplicate"} 1"#));
}

#[test]
fn the_tracker_falls_back_while_redis_hangs_and_syncs_on_recovery() {
    let redis = RedisServer::start();
    let seqd = Seqd::start(SeqdOptions {
        args: vec![
            "--redis-timeout-ms".into(),
            "200".into(),
            "--probe-base-ms".into(),
            "20".into(),
        ],
        ..SeqdOptions::redis(&redis)
    });
    let mut c = seqd.client();
    for s in 1..=10 {
        assert_eq!(c.gap_check("fb", "A", s).unwrap().source, Source::Redis);
    }
    redis.hang();
    // The first check waits for the timeout, then every answer is local
    // and continues from what Redis last said (no spurious "normal" or
    // reset): 11 is the next number.
    let r = c.gap_check("fb", "A", 11).unwrap();
    assert_eq!((r.kind, r.source), (GapKind::Normal, Source::Local));
    let r = c.gap_check("fb", "A", 15).unwrap();
    assert_eq!((r.kind, r.gap, r.source), (GapKind::Gap, 3, Source::Local));
    assert_eq!(
        c.gap_stats("fb", "A").unwrap().unwrap().source,
        Source::Local
    );
    redis.resume();
    wait_until(
        "the stream synced to Redis",
        Duration::from_secs(20),
        || redis.cmd(&["HGET", "k2:seq:fb:A", "last_seq"]) == Reply::Bulk(b"15".to_vec()),
    );
    wait_until("the breaker to close", Duration::from_secs(20), || {
        field(&seqd.text().cmd("HEALTH"), "breaker") == "closed"
    });
    let r = c.gap_check("fb", "A", 16).unwrap();
    assert_eq!((r.kind, r.source), (GapKind::Normal, Source::Redis));
    let st = c.gap_stats("fb", "A").unwrap().unwrap();
    assert_eq!(
        (st.last_seq, st.gap_count, st.missing.clone()),
        (16, 1, vec![(12, 14)])
    );
}

#[test]
fn recovery_never_moves_a_stream_backwards() {
    let mut redis = RedisServer::start();
    // Slow probes leave time to change Redis before seqd is back on it.
    let seqd = Seqd::start(SeqdOptions {
        args: vec![
            // The first failure opens the breaker, so recovery waits for a
            // probe instead of running as soon as Redis is back.
            "--breaker-threshold".into(),
            "1".into(),
            "--probe-base-ms".into(),
            "3000".into(),
            "--probe-max-ms".into(),
            "3000".into(),
        ],
        ..SeqdOptions::redis(&redis)
    });
    let mut c = seqd.client();
    c.gap_check("nb", "A", 100).unwrap();
    c.gap_check("nb", "B", 100).unwrap();
    redis.kill9();
    // Local answers move both streams to 110 while Redis is gone.
    wait_until("local answers", Duration::from_secs(10), || {
        c.gap_check("nb", "A", 110).unwrap().source == Source::Local
    });
    c.gap_check("nb", "B", 110).unwrap();
    redis.restart();
    // Meanwhile another consumer moved B further in Redis.
    redis.cmd(&[
        "HSET",
        "k2:seq:nb:B",
        "last_seq",
        "500",
        "gap_count",
        "0",
        "reset_count",
        "0",
        "missing",
        "",
        "last_ts",
        "1",
    ]);
    wait_until("the breaker to close", Duration::from_secs(30), || {
        field(&seqd.text().cmd("HEALTH"), "breaker") == "closed"
    });
    assert_eq!(
        redis.cmd(&["HGET", "k2:seq:nb:A", "last_seq"]),
        Reply::Bulk(b"110".to_vec())
    );
    assert_eq!(
        redis.cmd(&["HGET", "k2:seq:nb:B", "last_seq"]),
        Reply::Bulk(b"500".to_vec()),
        "not moved back"
    );
    let log = seqd.log_text();
    assert!(log.contains("Redis moved past the local state"), "{log}");
}

#[test]
fn pipelined_checks_on_one_connection_take_effect_in_the_order_sent() {
    use seqd_client::seqd_protocol::{Request, Response};
    // Local mode commits every check to SQLite before its answer, so it
    // gets fewer (each fsyncs, and in order they cannot share a commit).
    for (redis, n) in [(Some(RedisServer::start()), 2000), (None, 300)] {
        let seqd = Seqd::start(
            redis
                .as_ref()
                .map_or_else(SeqdOptions::local, SeqdOptions::redis),
        );
        let mut c = seqd.client();
        let requests: Vec<Request> = (1..=n)
            .map(|n| Request::GapCheck(gap_event("pipe", "ONE", n)))
            .collect();
        let answers = c.pipeline(requests).unwrap();
        let kinds: Vec<GapKind> = answers
            .into_iter()
            .map(|a| match a.unwrap() {
                Response::Gap(r) => r.kind,
                other => panic!("{other:?}"),
            })
            .collect();
        let count = |kind| kinds.iter().filter(|k| **k == kind).count();
        let counts: Vec<(GapKind, usize)> = GapKind::ALL.iter().map(|k| (*k, count(*k))).collect();
        assert_eq!(
            count(GapKind::Normal),
            n as usize,
            "redis={}: {counts:?}",
            redis.is_some()
        );
        // Different streams on one connection still run side by side, and
        // a stream's batch waits for the single checks sent before it.
        let mut mixed = vec![Request::GapCheck(gap_event("pipe", "A", 1))];
        mixed.push(Request::GapCheck(gap_event("pipe", "B", 1)));
        mixed.push(Request::GapBatch(vec![
            gap_event("pipe", "A", 2),
            gap_event("pipe", "B", 2),
        ]));
        let kinds: Vec<Vec<GapKind>> = c
            .pipeline(mixed)
            .unwrap()
            .into_iter()
            .map(|a| match a.unwrap() {
                Response::Gap(r) => vec![r.kind],
                Response::GapBatch(rs) => rs.into_iter().map(|r| r.kind).collect(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(kinds.concat(), vec![GapKind::Normal; 4]);
    }
}

#[test]
fn a_batch_of_ten_thousand_gaps_makes_one_log_line_and_every_count() {
    let (_redis, seqd) = redis_seqd(&[]);
    let mut c = seqd.client();
    // A first number, then 9,999 gaps of 1,000 numbers each.
    let events: Vec<_> = (0..10_000u64)
        .map(|i| gap_event("flood", "F", 1 + i * 1001))
        .collect();
    let results = c.gap_batch(events).unwrap();
    let gaps = results.iter().filter(|r| r.kind == GapKind::Gap).count();
    assert_eq!(gaps, 9_999);
    let metrics = c.metrics().unwrap();
    assert!(
        metrics.contains(r#"seqd_gap_events_total{exchange="flood",event="gap"} 9999"#),
        "{metrics}"
    );
    wait_until("the gap line", Duration::from_secs(5), || {
        seqd.log_text().contains("critical sequence gap")
    });
    let lines = seqd
        .log_text()
        .lines()
        .filter(|l| l.contains("exchange=flood"))
        .count();
    println!("9,999 gaps in one batch: {lines} log line(s)");
    assert_eq!(lines, 1, "{}", seqd.log_text());
}

/// A lossy feed: mostly the next number, with gaps (often), late fills
/// of numbers skipped earlier, repeats and the odd reset.
fn lossy_feed() -> impl Strategy<Value = Vec<u16>> {
    proptest::collection::vec(0u16..400, 50..500)
}

/// Turns the feed's choices into numbers: `next` walks forward, gaps open
/// ranges, fills take a number back from inside one.
fn numbers_of(choices: &[u16]) -> Vec<u64> {
    let mut out = Vec::with_capacity(choices.len());
    let mut next = 1000u64;
    for &c in choices {
        let n = match c {
            0..=199 => next,
            200..=339 => {
                next += 1 + u64::from(c % 4);
                next
            }
            340..=379 => next.saturating_sub(1 + u64::from(c) * 7 % 200),
            380..=397 => next.saturating_sub(1),
            _ => {
                next = 10 + u64::from(c % 5);
                next
            }
        };
        out.push(n);
        if n >= next {
            next = n + 1;
        }
    }
    out
}

#[test]
fn the_redis_script_and_the_local_classification_agree_on_lossy_feeds() {
    // Every result (kind, expected, gap, filled) and the missing ranges
    // left (more than the 64 kept, so the oldest are dropped) are the
    // same from Redis's script, in batches of any size, and from local
    // mode's classification, one by one.
    let (_redis, in_redis) = redis_seqd(&[]);
    let local = Seqd::start(SeqdOptions::local());
    let (r, l) = (
        std::cell::RefCell::new(in_redis.client()),
        std::cell::RefCell::new(local.client()),
    );
    let case = std::cell::Cell::new(0u32);
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(24));
    let input = (lossy_feed(), proptest::collection::vec(1usize..40, 1..20));
    runner
        .run(&input, |(choices, cuts)| {
            case.set(case.get() + 1);
            let ex = format!("lossy{}", case.get());
            let numbers = numbers_of(&choices);
            let (mut r, mut l) = (r.borrow_mut(), l.borrow_mut());
            let mut from_redis = Vec::new();
            let mut rest = &numbers[..];
            let mut cut = cuts.iter().cycle();
            while !rest.is_empty() {
                let n = (*cut.next().unwrap()).min(rest.len());
                let batch = rest[..n].iter().map(|q| gap_event(&ex, "S", *q)).collect();
                from_redis.extend(r.gap_batch(batch).unwrap());
                rest = &rest[n..];
            }
            for (q, b) in numbers.iter().zip(&from_redis) {
                let one = l.gap_check(&ex, "S", *q).unwrap();
                prop_assert_eq!(b.source, Source::Redis);
                prop_assert_eq!((kind_of(b), b.filled), (kind_of(&one), one.filled), "{}", q);
            }
            let (sr, sl) = (
                r.gap_stats(&ex, "S").unwrap().unwrap(),
                l.gap_stats(&ex, "S").unwrap().unwrap(),
            );
            prop_assert_eq!(&sr.missing, &sl.missing);
            prop_assert_eq!(
                (sr.last_seq, sr.gap_count, sr.reset_count),
                (sl.last_seq, sl.gap_count, sl.reset_count)
            );
            Ok(())
        })
        .unwrap();
}
