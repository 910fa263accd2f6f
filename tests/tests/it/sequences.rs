//! Daily and conversation sequences against a real seqd,
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
        // Kolkata midnight at the end of today's UTC date D (18:30Z is
        // 00:00 IST): D and D+1 are both within a day of today in Kolkata.
        let d = chrono::DateTime::from_timestamp_millis(test_instant_ms())
            .unwrap()
            .date_naive();
        let next = d.succ_opt().unwrap();
        let (day1, day2) = (d.format("%Y%m%d"), next.format("%Y%m%d"));
        let before = format!("DAILY NEXT 123 tz=Asia/Kolkata at={d}T18:29:59Z");
        let after = format!("DAILY NEXT 123 tz=Asia/Kolkata at={d}T18:30:00Z");
        let source = if options.is_some() { "redis" } else { "local" };
        assert_eq!(
            t.cmd(&before),
            format!("OK seq=1 day={day1} source={source}")
        );
        assert_eq!(
            t.cmd(&before),
            format!("OK seq=2 day={day1} source={source}")
        );
        assert_eq!(
            t.cmd(&after),
            format!("OK seq=1 day={day2} source={source}")
        );
        // The same instant as a local time with an offset.
        assert_eq!(
            t.cmd(&format!(
                "DAILY NEXT 123 tz=Asia/Kolkata at={next}T00:00:01+05:30"
            )),
            format!("OK seq=2 day={day2} source={source}")
        );
        if let Some(redis) = &options {
            assert_eq!(redis.get_u64(&format!("user:123:sequence:{day1}")), Some(2));
            assert_eq!(redis.get_u64(&format!("user:123:sequence:{day2}")), Some(2));
        }
    }
}

#[test]
fn daily_sequence_crosses_the_year_boundary_in_local_time() {
    // New Year is further from today than the default window of one day.
    let (redis, seqd) = redis_seqd(&["--daily-window-days", "366"]);
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
    // 20:00Z is already the next day in Tokyo.
    let d = chrono::DateTime::from_timestamp_millis(test_instant_ms())
        .unwrap()
        .date_naive();
    assert_eq!(
        field(&t.cmd(&format!("DAILY NEXT u at={d}T20:00:00Z")), "day"),
        d.succ_opt().unwrap().format("%Y%m%d").to_string()
    );
}

#[test]
fn first_increment_sets_a_48_hour_ttl() {
    let (redis, seqd) = redis_seqd(&[]);
    let mut t = seqd.text();
    let at = test_instant_ms();
    let (cmd, key) = (
        format!("DAILY NEXT ttl1 tz=UTC at={}", rfc3339(at)),
        format!("user:ttl1:sequence:{}", day_at(at, "UTC")),
    );
    t.cmd(&cmd);
    let ttl = redis.cmd(&["TTL", &key]).as_int();
    assert!((172_790..=172_800).contains(&ttl), "TTL {ttl}");
    // Later increments keep the key's TTL (they do not reset or remove it).
    redis.cmd(&["EXPIRE", &key, "1000"]);
    t.cmd(&cmd);
    let ttl = redis.cmd(&["TTL", &key]).as_int();
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
        let at = format!("tz=UTC at={}", rfc3339(test_instant_ms()));
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
            let key = format!("user:g:sequence:{}", day_at(test_instant_ms(), "UTC"));
            assert_eq!(r.get_u64(&key), Some(3));
        }
    }
}

#[test]
fn past_99999_the_counter_keeps_counting_without_wrapping() {
    let (redis, seqd) = redis_seqd(&[]);
    let key = &format!("user:big:sequence:{}", day_at(test_instant_ms(), "UTC"));
    redis.cmd(&["SET", key, "99998", "EX", "172800"]);
    let mut t = seqd.text();
    let at = format!("tz=UTC at={}", rfc3339(test_instant_ms()));
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
    let at = Some(test_instant_ms());
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
fn e_mail_like_ids_are_users_and_key_characters_are_refused() {
    let (redis, seqd) = redis_seqd(&[]);
    let local = Seqd::start(SeqdOptions::local());
    let day = today_in("UTC");
    for (s, source) in [(&seqd, "redis"), (&local, "local")] {
        let mut t = s.text();
        for n in 1..=2 {
            let reply = t.cmd("DAILY NEXT alice+orders@example.com tz=UTC");
            assert_eq!(seq_of(&reply), n, "{reply}");
            assert_eq!(field(&reply, "source"), source, "{reply}");
        }
        let reply = t.cmd("CONV NEXT private bob@example.com alice+orders@example.com");
        assert_eq!(seq_of(&reply), 1, "{reply}");
        let mut c = s.client();
        assert_eq!(c.group_next("team+ops@example.com").unwrap().seq, 1);
        // What could reach another key or command stays out, in both
        // protocols: a key separator, glob characters, a hash tag,
        // whitespace, anything outside ASCII.
        for bad in ["a:b", "a*", "a?", "a[1]", "{a}", "a\tb", "é@x.com"] {
            let e = c.daily_next(bad, Some("UTC"), None).unwrap_err();
            assert_eq!(
                e.code(),
                Some(seqd_client::seqd_protocol::ErrorCode::InvalidArgument),
                "{bad:?}"
            );
        }
    }
    assert_eq!(
        redis.get_u64(&format!("user:alice+orders@example.com:sequence:{day}")),
        Some(2)
    );
    assert_eq!(
        redis.get_u64("seq:private:alice+orders@example.com:bob@example.com"),
        Some(1)
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
                            c.daily_next("hot", Some("UTC"), Some(test_instant_ms()))
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
    let key = format!("user:hot:sequence:{}", day_at(test_instant_ms(), "UTC"));
    assert_eq!(redis.get_u64(&key), Some(640));
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

#[test]
fn daily_next_outside_the_window_of_days_is_refused_and_inside_lives_until_it_closes() {
    let day_ms = 24 * 3600 * 1000;
    let now = test_instant_ms();
    for (window, offset_days, accepted) in [(1, 4, false), (1, -4, false), (7, 4, true)] {
        let (redis, seqd) = redis_seqd(&["--daily-window-days", &window.to_string()]);
        let at = now + offset_days * day_ms;
        let reply = seqd
            .text()
            .cmd(&format!("DAILY NEXT far tz=UTC at={}", rfc3339(at)));
        let key = format!("user:far:sequence:{}", day_at(at, "UTC"));
        if !accepted {
            assert!(
                reply.starts_with("ERR invalid_argument ") && reply.contains("--daily-window-days"),
                "{offset_days} days: {reply}"
            );
            assert_eq!(redis.cmd(&["DBSIZE"]).as_int(), 0, "nothing written");
            continue;
        }
        assert_eq!(seq_of(&reply), 1);
        // The day's window closes at the start of day + 8 (UTC).
        let day_start = at - at.rem_euclid(day_ms);
        let closes_in = (day_start + 8 * day_ms - now) / 1000;
        let ttl = redis.cmd(&["TTL", &key]).as_int();
        assert!(
            (closes_in - 10..=closes_in).contains(&ttl) && ttl > 172_800,
            "TTL {ttl}, window closes in {closes_in} s"
        );
    }
}

#[test]
fn a_local_date_outside_years_1_to_9999_is_invalid() {
    let (redis, seqd) = redis_seqd(&["--daily-window-days", "366"]);
    let reply = seqd
        .text()
        .cmd("DAILY NEXT u at=9999-12-31T23:59:59Z tz=Pacific/Kiritimati");
    assert!(
        reply.starts_with("ERR invalid_argument ") && reply.contains("0001-9999"),
        "{reply}"
    );
    let reply = seqd
        .text()
        .cmd("DAILY GET u at=9999-12-31T23:59:59Z tz=Pacific/Kiritimati");
    assert!(reply.starts_with("ERR invalid_argument "), "{reply}");
    assert_eq!(redis.cmd(&["DBSIZE"]).as_int(), 0);
}
