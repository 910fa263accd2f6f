//! Daily (SPEC §4.1) and conversation (§4.2) sequences against a real seqd,
//! in Redis mode with a real redis-server and in local mode.

use seqd_tests::*;
use std::collections::HashMap;
use std::sync::{Arc, Barrier};

#[test]
fn daily_next_answers_with_todays_kolkata_date_from_redis() {
    let (redis, seqd) = redis_seqd(&[]);
    let mut t = seqd.text();
    let today = today_in("Asia/Kolkata");
    assert_eq!(
        t.cmd("DAILY NEXT 123 tz=Asia/Kolkata"),
        format!("OK seq=1 day={today} source=redis")
    );
    assert_eq!(
        t.cmd("DAILY NEXT 123 tz=Asia/Kolkata"),
        format!("OK seq=2 day={today} source=redis")
    );
    assert_eq!(
        redis.get_u64(&format!("user:123:sequence:{today}")),
        Some(2)
    );
}

#[test]
fn daily_next_answers_from_the_store_in_local_mode() {
    let seqd = Seqd::start(SeqdOptions::local());
    let mut t = seqd.text();
    let today = today_in("Asia/Kolkata");
    assert_eq!(
        t.cmd("DAILY NEXT 123 tz=Asia/Kolkata"),
        format!("OK seq=1 day={today} source=local")
    );
    assert_eq!(
        t.cmd("DAILY NEXT 123 tz=Asia/Kolkata"),
        format!("OK seq=2 day={today} source=local")
    );
}

#[test]
fn daily_sequence_resets_at_kolkata_midnight() {
    for options in [None, Some(RedisServer::start())] {
        let seqd = Seqd::start(match &options {
            Some(r) => SeqdOptions::redis(r),
            None => SeqdOptions::local(),
        });
        let mut t = seqd.text();
        let before = "DAILY NEXT 123 tz=Asia/Kolkata at=2026-01-06T18:29:59Z";
        let after = "DAILY NEXT 123 tz=Asia/Kolkata at=2026-01-06T18:30:00Z";
        let source = if options.is_some() { "redis" } else { "local" };
        assert_eq!(
            t.cmd(before),
            format!("OK seq=1 day=20260106 source={source}")
        );
        assert_eq!(
            t.cmd(before),
            format!("OK seq=2 day=20260106 source={source}")
        );
        assert_eq!(
            t.cmd(after),
            format!("OK seq=1 day=20260107 source={source}")
        );
        // The same instant as a local time with an offset.
        assert_eq!(
            t.cmd("DAILY NEXT 123 tz=Asia/Kolkata at=2026-01-07T00:00:01+05:30"),
            format!("OK seq=2 day=20260107 source={source}")
        );
        if let Some(redis) = &options {
            assert_eq!(redis.get_u64("user:123:sequence:20260106"), Some(2));
            assert_eq!(redis.get_u64("user:123:sequence:20260107"), Some(2));
        }
    }
}

#[test]
fn daily_sequence_crosses_the_year_boundary_in_local_time() {
    let (redis, seqd) = redis_seqd(&[]);
    let mut t = seqd.text();
    // 23:59:59 on 31 Dec in New York is 04:59:59 UTC on 1 Jan.
    assert_eq!(
        field(
            &t.cmd("DAILY NEXT u1 tz=America/New_York at=2027-01-01T04:59:59Z"),
            "day"
        ),
        "20261231"
    );
    assert_eq!(
        field(
            &t.cmd("DAILY NEXT u1 tz=America/New_York at=2027-01-01T05:00:00Z"),
            "day"
        ),
        "20270101"
    );
    assert_eq!(
        seq_of(&t.cmd("DAILY NEXT u1 tz=America/New_York at=2027-01-01T05:00:01Z")),
        2
    );
    assert_eq!(redis.get_u64("user:u1:sequence:20261231"), Some(1));
    assert_eq!(redis.get_u64("user:u1:sequence:20270101"), Some(2));
}

#[test]
fn default_zone_is_the_daemons() {
    let seqd = Seqd::start(SeqdOptions {
        args: vec!["--default-tz".into(), "Asia/Tokyo".into()],
        ..SeqdOptions::local()
    });
    let mut t = seqd.text();
    // 2026-03-01T20:00Z is already 2 March in Tokyo.
    assert_eq!(
        field(&t.cmd("DAILY NEXT u at=2026-03-01T20:00:00Z"), "day"),
        "20260302"
    );
}

#[test]
fn first_increment_sets_a_48_hour_ttl() {
    let (redis, seqd) = redis_seqd(&[]);
    let mut t = seqd.text();
    t.cmd("DAILY NEXT ttl1 at=2026-05-05T10:00:00Z");
    let ttl = redis.cmd(&["TTL", "user:ttl1:sequence:20260505"]).as_int();
    assert!((172_790..=172_800).contains(&ttl), "TTL {ttl}");
    // Later increments keep the key's TTL (they do not reset or remove it).
    redis.cmd(&["EXPIRE", "user:ttl1:sequence:20260505", "1000"]);
    t.cmd("DAILY NEXT ttl1 at=2026-05-05T10:00:00Z");
    let ttl = redis.cmd(&["TTL", "user:ttl1:sequence:20260505"]).as_int();
    assert!((990..=1000).contains(&ttl), "TTL {ttl}");
    // Conversation keys have none.
    t.cmd("CONV NEXT group g-ttl");
    assert_eq!(redis.cmd(&["TTL", "seq:group:g-ttl"]).as_int(), -1);
}

#[test]
fn get_returns_the_current_value_without_incrementing() {
    for redis in [None, Some(RedisServer::start())] {
        let seqd = Seqd::start(
            redis
                .as_ref()
                .map_or_else(SeqdOptions::local, SeqdOptions::redis),
        );
        let mut t = seqd.text();
        let at = "at=2026-02-02T12:00:00Z";
        assert_eq!(seq_of(&t.cmd(&format!("DAILY GET g {at}"))), 0);
        t.cmd(&format!("DAILY NEXT g {at}"));
        t.cmd(&format!("DAILY NEXT g {at}"));
        assert_eq!(seq_of(&t.cmd(&format!("DAILY GET g {at}"))), 2);
        assert_eq!(seq_of(&t.cmd(&format!("DAILY GET g {at}"))), 2);
        assert_eq!(seq_of(&t.cmd(&format!("DAILY NEXT g {at}"))), 3);
        assert_eq!(seq_of(&t.cmd("CONV GET group gg")), 0);
        t.cmd("CONV NEXT group gg");
        assert_eq!(seq_of(&t.cmd("CONV GET group gg")), 1);
        if let Some(r) = &redis {
            assert_eq!(r.get_u64("user:g:sequence:20260202"), Some(3));
        }
    }
}

#[test]
fn past_99999_the_counter_keeps_counting_without_wrapping() {
    let (redis, seqd) = redis_seqd(&[]);
    let key = "user:big:sequence:20260303";
    redis.cmd(&["SET", key, "99998", "EX", "172800"]);
    let mut t = seqd.text();
    let at = "at=2026-03-03T01:00:00Z";
    assert_eq!(seq_of(&t.cmd(&format!("DAILY NEXT big {at}"))), 99_999);
    assert_eq!(seq_of(&t.cmd(&format!("DAILY NEXT big {at}"))), 100_000);
    assert_eq!(seq_of(&t.cmd(&format!("DAILY NEXT big {at}"))), 100_001);
    assert_eq!(seqd_client::format_daily_seq(100_001), "100001");
    wait_until(
        "the 6-digit warning in the log",
        std::time::Duration::from_secs(5),
        || seqd.log_text().contains("passed 99999"),
    );
    assert_eq!(
        seqd.log_text().matches("passed 99999").count(),
        1,
        "warned once per key"
    );
}

#[test]
fn users_have_independent_sequences() {
    let (_redis, seqd) = redis_seqd(&[]);
    let mut c = seqd.client();
    let at = Some(1_767_724_199_000);
    assert_eq!(c.daily_next("a", None, at).unwrap().seq, 1);
    assert_eq!(c.daily_next("a", None, at).unwrap().seq, 2);
    assert_eq!(c.daily_next("b", None, at).unwrap().seq, 1);
    assert_eq!(c.daily_get("a", None, at).unwrap().seq, 2);
}

#[test]
fn invalid_ids_zones_and_instants_are_invalid_argument() {
    let (redis, seqd) = redis_seqd(&[]);
    let mut t = seqd.text();
    let long = "x".repeat(65);
    for line in [
        "DAILY NEXT a:b".to_string(),
        "DAILY NEXT 1:sequence:20260101".to_string(),
        format!("DAILY NEXT {long}"),
        "DAILY NEXT ü".to_string(),
        "DAILY NEXT u tz=Mars/Olympus".to_string(),
        "DAILY NEXT u tz=".to_string(),
        "DAILY NEXT u at=2026-13-01T00:00:00Z".to_string(),
        "DAILY NEXT u at=yesterday".to_string(),
        "DAILY NEXT u at=2026-01-06".to_string(),
        "CONV NEXT private a b:c".to_string(),
        "CONV NEXT group a*b".to_string(),
    ] {
        let reply = t.cmd(&line);
        assert!(
            reply.starts_with("ERR invalid_argument "),
            "{line} -> {reply}"
        );
    }
    // Nothing was written to Redis by the refused requests.
    assert_eq!(redis.cmd(&["DBSIZE"]).as_int(), 0);
    let mut c = seqd.client();
    let e = c.daily_next("a:b", None, None).unwrap_err();
    assert_eq!(
        e.code(),
        Some(seqd_client::seqd_protocol::ErrorCode::InvalidArgument)
    );
    let e = c.daily_next("u", Some("Nowhere/Town"), None).unwrap_err();
    assert_eq!(
        e.code(),
        Some(seqd_client::seqd_protocol::ErrorCode::InvalidArgument)
    );
    // An instant beyond chrono's range is refused, not wrapped.
    let e = c.daily_next("u", None, Some(i64::MAX)).unwrap_err();
    assert_eq!(
        e.code(),
        Some(seqd_client::seqd_protocol::ErrorCode::InvalidArgument)
    );
}

#[test]
fn private_chat_key_sorts_the_two_ids() {
    let (redis, seqd) = redis_seqd(&[]);
    let mut t = seqd.text();
    assert_eq!(
        t.cmd("CONV NEXT private user002 user001"),
        "OK seq=1 source=redis"
    );
    assert_eq!(
        t.cmd("CONV NEXT private user001 user002"),
        "OK seq=2 source=redis"
    );
    assert_eq!(
        t.cmd("CONV GET private user002 user001"),
        "OK seq=2 source=redis"
    );
    assert_eq!(redis.get_u64("seq:private:user001:user002"), Some(2));
    assert_eq!(redis.get_u64("seq:private:user002:user001"), None);
    // Byte order, not case-insensitive order: "B" (0x42) sorts before "a".
    t.cmd("CONV NEXT private a B");
    assert_eq!(redis.get_u64("seq:private:B:a"), Some(1));
    assert_eq!(t.cmd("CONV NEXT group group001"), "OK seq=1 source=redis");
    assert_eq!(redis.get_u64("seq:group:group001"), Some(1));
}

/// 128 clients, each on its own connection, increment one key at once.
fn parallel_increments(seqd: &Seqd, daily: bool) -> Vec<u64> {
    const CLIENTS: usize = 128;
    const EACH: usize = 5;
    let barrier = Arc::new(Barrier::new(CLIENTS));
    let handles: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let barrier = barrier.clone();
            let mut c = seqd.client();
            std::thread::spawn(move || {
                barrier.wait();
                let got: Vec<u64> = (0..EACH)
                    .map(|_| {
                        if daily {
                            c.daily_next("hot", Some("UTC"), Some(1_767_724_199_000))
                                .unwrap()
                                .seq
                        } else {
                            c.group_next("hot").unwrap().seq
                        }
                    })
                    .collect();
                assert_strictly_increasing("one connection", &got);
                got
            })
        })
        .collect();
    let all: Vec<u64> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    let sorted = assert_unique("parallel increments", &all);
    assert_eq!(sorted, (1..=(CLIENTS * EACH) as u64).collect::<Vec<_>>());
    sorted
}

#[test]
fn parallel_increments_of_one_key_never_repeat_in_redis_mode() {
    let (redis, seqd) = redis_seqd(&[]);
    parallel_increments(&seqd, true);
    parallel_increments(&seqd, false);
    assert_eq!(redis.get_u64("user:hot:sequence:20260106"), Some(640));
    assert_eq!(redis.get_u64("seq:group:hot"), Some(640));
}

#[test]
fn parallel_increments_of_one_key_never_repeat_in_local_mode() {
    let seqd = Seqd::start(SeqdOptions::local());
    parallel_increments(&seqd, true);
    parallel_increments(&seqd, false);
}

#[test]
fn two_seqds_on_one_redis_share_the_counter() {
    let redis = RedisServer::start();
    let a = Seqd::start(SeqdOptions::redis(&redis));
    let b = Seqd::start(SeqdOptions::redis(&redis));
    let (mut ca, mut cb) = (a.client(), b.client());
    let mut seen = HashMap::new();
    for i in 0..50 {
        let (c, who) = if i % 2 == 0 {
            (&mut ca, "a")
        } else {
            (&mut cb, "b")
        };
        let n = c.group_next("shared").unwrap().seq;
        assert!(seen.insert(n, who).is_none(), "{n} issued twice");
    }
    assert_eq!(redis.get_u64("seq:group:shared"), Some(50));
}
