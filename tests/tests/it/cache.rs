//! The settings cache against a live seqd: operations, namespace
//! protection, sizes, zero staleness through Redis hangs and a `kill -9` of
//! seqd, request coalescing, local mode, and the client's helpers.

use seqd_client::seqd_protocol::{CacheItem, ErrorCode, WriteOutcome};
use seqd_client::{keys, CacheAsideError, Client};
use seqd_tests::*;
use std::cell::Cell;
use std::time::Duration;

fn health(seqd: &Seqd, name: &str) -> String {
    field(&seqd.text().cmd("HEALTH"), name).to_string()
}

fn metric(c: &mut Client, line_start: &str) -> u64 {
    let text = c.metrics().unwrap();
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .map_or(0, |v| v.parse().unwrap())
}

#[test]
fn get_set_many_and_ttl_in_redis() {
    let (redis, seqd) = redis_seqd(&[]);
    let mut c = seqd.client();
    let k = keys::settings_all(1);
    assert_eq!(c.cache_get(&k).unwrap(), None);
    assert_eq!(
        c.cache_set(&k, b"{\"risk\":1}", None).unwrap(),
        WriteOutcome::Stored
    );
    assert_eq!(
        c.cache_get(&k).unwrap().as_deref(),
        Some(&b"{\"risk\":1}"[..])
    );
    assert_eq!(redis.cmd(&["TTL", &k]).as_int(), -1);
    let pos = keys::binance_positions(1);
    c.cache_set(&pos, b"[]", Some(keys::BINANCE_TTL)).unwrap();
    let pttl = redis.cmd(&["PTTL", &pos]).as_int();
    assert!((4_000..=5_000).contains(&pttl), "{pttl}");
    let items = vec![
        CacheItem {
            key: keys::mode(1, keys::Mode::Scalp),
            value: b"s".to_vec(),
            ttl_ms: None,
        },
        CacheItem {
            key: keys::circuit_breaker(1),
            value: b"c".to_vec(),
            ttl_ms: None,
        },
    ];
    assert_eq!(c.cache_set_many(items).unwrap(), WriteOutcome::Stored);
    let got = c
        .cache_get_many(&[
            &keys::mode(1, keys::Mode::Scalp),
            "user:1:none",
            &keys::circuit_breaker(1),
        ])
        .unwrap();
    assert_eq!(got, vec![Some(b"s".to_vec()), None, Some(b"c".to_vec())]);
    assert_eq!(c.cache_del(&[&k, "user:1:none"]).unwrap(), (1, false));
    assert_eq!(c.cache_get(&k).unwrap(), None);
}

#[test]
fn delete_by_prefix_spares_other_users_and_the_counters() {
    let (redis, seqd) = redis_seqd(&[]);
    let mut c = seqd.client();
    for k in [
        keys::settings_all(1),
        keys::mode(1, keys::Mode::Swing),
        keys::settings_all(2),
    ] {
        c.cache_set(&k, b"v", None).unwrap();
    }
    c.cache_set(keys::admin_defaults_all(), b"d", None).unwrap();
    c.cache_set(keys::admin_defaults_hash(), b"h", None)
        .unwrap();
    // Counters that a careless prefix would match.
    c.daily_next("1", None, None).unwrap();
    c.group_next("g").unwrap();
    assert_eq!(
        c.cache_del_prefix(&keys::user_prefix(1)).unwrap(),
        (2, false)
    );
    assert_eq!(
        c.cache_get(&keys::settings_all(2)).unwrap().as_deref(),
        Some(&b"v"[..])
    );
    assert_eq!(
        c.cache_del_prefix(keys::ADMIN_DEFAULTS_PREFIX).unwrap(),
        (2, false)
    );
    // "u" and "s" cover user:1:sequence:* and seq:group:g: those stay.
    c.cache_del_prefix("u").unwrap();
    c.cache_del_prefix("s").unwrap();
    assert_eq!(redis.cmd(&["EXISTS", "seq:group:g"]).as_int(), 1);
    let day_keys = match redis.cmd(&["KEYS", "user:1:sequence:*"]) {
        Reply::Array(a) => a.len(),
        other => panic!("{other:?}"),
    };
    assert_eq!(day_keys, 1, "the daily counter survived");
    assert_eq!(redis.cmd(&["EXISTS", &keys::settings_all(2)]).as_int(), 0);
}

#[test]
fn counter_keys_are_forbidden_and_bad_keys_invalid() {
    let (redis, seqd) = redis_seqd(&[]);
    let mut t = seqd.text();
    for line in [
        "CACHE SET seq:group:g 999",
        "CACHE SET user:1:sequence:20260101 1",
        "CACHE SET k2:seq:asx:BHP x",
        "CACHE GET seq:group:g",
        "CACHE DEL seq:private:a:b",
        "CACHE DELPREFIX seq:",
        "CACHE DELPREFIX k2:seq",
    ] {
        assert!(t.cmd(line).starts_with("ERR forbidden "), "{line}");
    }
    assert_eq!(redis.cmd(&["DBSIZE"]).as_int(), 0);
    let long = format!("CACHE GET {}", "k".repeat(513));
    assert!(t.cmd(&long).starts_with("ERR invalid_argument "));
    assert!(t
        .cmd(&format!("CACHE GET {}", "k".repeat(512)))
        .starts_with("OK miss"));
    let mut c = seqd.client();
    assert_eq!(
        c.cache_get("has space").unwrap_err().code(),
        Some(ErrorCode::InvalidArgument)
    );
    assert_eq!(
        c.cache_set("", b"x", None).unwrap_err().code(),
        Some(ErrorCode::InvalidArgument)
    );
}

#[test]
fn values_over_a_mebibyte_work_and_over_the_limit_are_too_large() {
    let (_redis, seqd) = redis_seqd(&["--max-value", "3145728"]);
    let mut c = seqd.client();
    let big: Vec<u8> = (0..2 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    assert_eq!(
        c.cache_set("user:1:big", &big, None).unwrap(),
        WriteOutcome::Stored
    );
    assert_eq!(c.cache_get("user:1:big").unwrap().unwrap(), big);
    let too_big = vec![7u8; 3 * 1024 * 1024 + 1];
    assert_eq!(
        c.cache_set("user:1:bigger", &too_big, None)
            .unwrap_err()
            .code(),
        Some(ErrorCode::TooLarge)
    );
    // The connection is still usable, and nothing was written.
    assert_eq!(c.cache_get("user:1:bigger").unwrap(), None);
}

#[test]
fn text_mode_escapes_values_that_are_not_one_line_of_utf8() {
    let (_redis, seqd) = redis_seqd(&[]);
    let mut c = seqd.client();
    c.cache_set("user:1:bin", b"a\nb\\c\x00\xff", None).unwrap();
    c.cache_set("user:1:text", "héllo wörld".as_bytes(), None)
        .unwrap();
    let mut t = seqd.text();
    assert_eq!(t.cmd("CACHE GET user:1:bin"), "OK hit a\\nb\\\\c\\x00\\xff");
    assert_eq!(t.cmd("CACHE GET user:1:text"), "OK hit héllo wörld");
    assert_eq!(t.cmd("CACHE SET user:1:line  two  spaces "), "OK");
    assert_eq!(
        c.cache_get("user:1:line").unwrap().unwrap(),
        b" two  spaces "
    );
    assert_eq!(
        t.cmd("CACHE DEL user:1:line user:1:text user:1:gone"),
        "OK deleted=2"
    );
}

/// The staleness scenario: no reader ever sees v1 after v2
/// was acknowledged, whatever Redis does meanwhile.
#[test]
fn a_value_superseded_during_an_outage_is_never_read_again() {
    let (redis, seqd) = redis_seqd(&["--redis-timeout-ms", "200", "--probe-base-ms", "50"]);
    let mut c = seqd.client();
    let k = keys::settings_trading(7);
    c.cache_set(&k, b"v1", None).unwrap();
    redis.hang();
    // The database now holds v2; the cache update cannot reach Redis.
    assert_eq!(
        c.cache_set(&k, b"v2", None).unwrap(),
        WriteOutcome::Deferred
    );
    assert_eq!(health(&seqd, "outbox"), "1");
    wait_until("the breaker to open", Duration::from_secs(10), || {
        health(&seqd, "breaker") == "open"
    });
    assert_eq!(
        c.cache_get(&k).unwrap_err().code(),
        Some(ErrorCode::Unavailable)
    );
    assert_eq!(
        c.cache_get("user:7:other").unwrap_err().code(),
        Some(ErrorCode::Unavailable),
        "breaker open"
    );
    redis.resume();
    wait_until("the breaker to close", Duration::from_secs(20), || {
        health(&seqd, "breaker") == "closed"
    });
    assert_eq!(health(&seqd, "outbox"), "0");
    assert_eq!(c.cache_get(&k).unwrap(), None, "never v1");
    assert_eq!(redis.cmd(&["EXISTS", &k]).as_int(), 0);
    assert!(metric(&mut c, "seqd_cache_outbox_replayed_total") >= 1);
    assert!(metric(&mut c, r#"seqd_cache_writes_total{result="deferred"}"#) >= 1);
    assert!(metric(&mut c, r#"seqd_cache_reads_total{result="unavailable"}"#) >= 2);
}

#[test]
fn the_outbox_survives_a_kill_9_of_seqd() {
    let (redis, mut seqd) = redis_seqd(&["--redis-timeout-ms", "200", "--probe-base-ms", "50"]);
    let mut c = seqd.client();
    let (k1, k2) = (keys::settings_all(8), keys::mode(8, keys::Mode::Ultra));
    c.cache_set(&k1, b"v1", None).unwrap();
    c.cache_set(&k2, b"v1", None).unwrap();
    redis.hang();
    assert_eq!(
        c.cache_set(&k1, b"v2", None).unwrap(),
        WriteOutcome::Deferred
    );
    let (removed, deferred) = c.cache_del(&[&k2]).unwrap();
    assert_eq!((removed, deferred), (0, true));
    seqd.kill9();
    redis.resume();
    seqd.restart();
    // From the first request on, v1 is never served: the key is either
    // pending (unavailable) or gone (miss).
    let mut c = seqd.client();
    wait_until(
        "both invalidations replayed",
        Duration::from_secs(20),
        || {
            for k in [&k1, &k2] {
                match c.cache_get(k) {
                    Ok(Some(v)) => panic!(
                        "{k} served {:?} after the restart",
                        String::from_utf8_lossy(&v)
                    ),
                    Ok(None) => {}
                    Err(e) => assert_eq!(e.code(), Some(ErrorCode::Unavailable)),
                }
            }
            health(&seqd, "outbox") == "0"
        },
    );
    assert_eq!(c.cache_get(&k1).unwrap(), None);
    assert_eq!(c.cache_get(&k2).unwrap(), None);
    assert!(seqd
        .log_text()
        .contains("cache invalidations left from an earlier run"));
}

#[test]
fn concurrent_gets_of_a_cold_key_share_one_redis_get() {
    // Four shards: each connection is served by the least loaded one, so
    // the readers below are spread over all four, and one GET for all of
    // them shows that a read is shared across shards, not only within one.
    let (redis, seqd) = redis_seqd(&["--redis-timeout-ms", "5000", "--shards", "4"]);
    let mut c = seqd.client();
    c.cache_set("user:9:cold", b"value", None).unwrap();
    let mut watcher = seqd.client();
    let gets_before = metric(&mut watcher, "seqd_cache_redis_gets_total");
    let stats_before = get_calls(&redis);
    // Hold Redis still so every read arrives while the first is in flight.
    redis.hang();
    const READERS: usize = 40;
    let handles: Vec<_> = (0..READERS)
        .map(|_| {
            let mut c = seqd.client();
            std::thread::spawn(move || c.cache_get("user:9:cold"))
        })
        .collect();
    wait_until(
        "39 readers to join the first",
        Duration::from_secs(10),
        || metric(&mut watcher, "seqd_cache_coalesced_total") >= (READERS - 1) as u64,
    );
    redis.resume();
    for h in handles {
        assert_eq!(
            h.join().unwrap().unwrap().as_deref(),
            Some(&b"value"[..]),
            "every waiter gets the value"
        );
    }
    assert_eq!(
        metric(&mut watcher, "seqd_cache_redis_gets_total") - gets_before,
        1
    );
    assert_eq!(get_calls(&redis) - stats_before, 1, "Redis saw one GET");
}

fn get_calls(redis: &RedisServer) -> u64 {
    let stats = match redis.cmd(&["INFO", "commandstats"]) {
        Reply::Bulk(b) => String::from_utf8(b).unwrap(),
        other => panic!("{other:?}"),
    };
    stats
        .lines()
        .find(|l| l.starts_with("cmdstat_get:"))
        .and_then(|l| l.split(['=', ',']).nth(1))
        .map_or(0, |n| n.parse().unwrap())
}

#[test]
fn local_mode_cache_is_bounded_and_shared() {
    let seqd = Seqd::start(SeqdOptions {
        args: vec!["--local-cache-bytes".into(), "20000".into()],
        ..SeqdOptions::local()
    });
    let (mut a, mut b) = (seqd.client(), seqd.client());
    a.cache_set("user:1:settings:all", b"shared", None).unwrap();
    assert_eq!(
        b.cache_get("user:1:settings:all").unwrap().as_deref(),
        Some(&b"shared"[..]),
        "shared by clients"
    );
    for i in 0..100 {
        a.cache_set(&format!("user:2:k{i}"), &[b'x'; 1000], None)
            .unwrap();
    }
    let bytes: usize = health(&seqd, "cache_bytes").parse().unwrap();
    assert!(bytes <= 20_000, "{bytes}");
    assert_eq!(
        a.cache_get("user:2:k0").unwrap(),
        None,
        "least recently used evicted"
    );
    assert!(a.cache_get("user:2:k99").unwrap().is_some(), "recent kept");
    a.cache_set("user:3:ttl", b"t", Some(Duration::from_millis(50)))
        .unwrap();
    wait_until("the TTL to expire", Duration::from_secs(5), || {
        a.cache_get("user:3:ttl").unwrap().is_none()
    });
    let (removed, deferred) = a.cache_del_prefix("user:2:").unwrap();
    assert!(removed > 0 && !deferred, "{removed} {deferred}");
    assert_eq!(a.cache_get("user:2:k99").unwrap(), None);
}

#[test]
fn get_or_load_and_write_through() {
    let (redis, seqd) = redis_seqd(&[
        "--redis-timeout-ms",
        "200",
        "--breaker-threshold",
        "1",
        "--probe-base-ms",
        "60000",
    ]);
    let mut c = seqd.client();
    let k = keys::settings_notifications(5);
    let loads = Cell::new(0);
    let load = || {
        loads.set(loads.get() + 1);
        Ok::<_, String>(b"from-db".to_vec())
    };
    assert_eq!(c.get_or_load(&k, None, load).unwrap(), b"from-db");
    assert_eq!(c.get_or_load(&k, None, load).unwrap(), b"from-db");
    assert_eq!(loads.get(), 1, "the second read was a hit");
    // Write-through: the database first, then the cache.
    let (_, outcome) = c
        .write_through(&k, Some(b"new"), None, || Ok::<_, String>(()))
        .unwrap();
    assert_eq!(outcome, WriteOutcome::Stored);
    assert_eq!(redis.get_bytes(&k).as_deref(), Some(&b"new"[..]));
    let (_, outcome) = c
        .write_through(&k, None, None, || Ok::<_, String>(()))
        .unwrap();
    assert_eq!(outcome, WriteOutcome::Invalidated);
    // A failed database write touches nothing.
    c.cache_set(&k, b"kept", None).unwrap();
    let err = c
        .write_through(&k, Some(b"lost"), None, || {
            Err::<(), _>("db down".to_string())
        })
        .unwrap_err();
    assert!(matches!(err, CacheAsideError::Load(ref e) if e == "db down"));
    assert_eq!(c.cache_get(&k).unwrap().as_deref(), Some(&b"kept"[..]));
    // Unavailable: the loader answers, nothing is cached.
    redis.hang();
    c.group_next("open-the-breaker").unwrap();
    wait_until("the breaker to open", Duration::from_secs(5), || {
        health(&seqd, "breaker") == "open"
    });
    assert_eq!(c.get_or_load(&k, None, load).unwrap(), b"from-db");
    assert_eq!(loads.get(), 2);
    redis.resume();
}

#[test]
fn write_through_while_seqd_restarts_leaves_no_stale_value() {
    let (redis, mut seqd) = redis_seqd(&[]);
    let mut c = seqd.client();
    let k = keys::settings_all(9);
    c.cache_set(&k, b"old", None).unwrap();
    seqd.kill9();
    // seqd comes back a moment later, as systemd restarts it; the
    // database write and the first cache tries happen while it is away.
    let restarter = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        seqd.start_again();
        seqd
    });
    let (_, outcome) = c
        .write_through(&k, Some(b"new"), None, || Ok::<_, String>("row"))
        .unwrap();
    let seqd = restarter.join().unwrap();
    // A retry invalidates (a late SET could overwrite a newer writer's).
    assert_eq!(outcome, WriteOutcome::Invalidated);
    assert_eq!(redis.get_bytes(&k), None);
    let got = c
        .get_or_load(&k, None, || Ok::<_, String>(b"new".to_vec()))
        .unwrap();
    assert_eq!(got, b"new");
    assert_eq!(c.cache_get(&k).unwrap().as_deref(), Some(&b"new"[..]));
    drop(seqd);
}

#[test]
fn write_through_says_when_the_database_was_written_but_the_cache_was_not_invalidated() {
    let (redis, mut seqd) = redis_seqd(&[]);
    let mut c = Client::connect_with_timeout(seqd.socket(), Duration::from_millis(300)).unwrap();
    let k = keys::settings_all(10);
    c.cache_set(&k, b"old", None).unwrap();
    seqd.kill9();
    let mut written = false;
    let err = c
        .write_through(&k, None, None, || {
            written = true;
            Ok::<_, String>(())
        })
        .unwrap_err();
    assert!(written);
    assert!(
        matches!(err, CacheAsideError::NotInvalidated(ref e) if e.is_unavailable()),
        "{err:?}"
    );
    // What the caller is told is true: the old value is still there.
    assert_eq!(redis.get_bytes(&k).as_deref(), Some(&b"old"[..]));
    // With seqd away, cache-aside reads the database.
    let got = c
        .get_or_load(&k, None, || Ok::<_, String>(b"db".to_vec()))
        .unwrap();
    assert_eq!(got, b"db");
}

#[test]
fn a_reader_that_vanishes_mid_read_never_freezes_the_key() {
    use seqd_client::seqd_protocol::{codec, ClientMessage, Request};
    use std::io::Write;
    let (redis, seqd) = redis_seqd(&["--redis-timeout-ms", "5000"]);
    let mut c = seqd.client();
    c.cache_set("frozen", b"v1", None).unwrap();
    let open = |c: &mut Client| metric(c, "seqd_connections_open ");
    // The harness's readiness probe may still be closing on seqd's side.
    wait_until(
        "only this client's connection is open",
        Duration::from_secs(5),
        || open(&mut c) == 1,
    );
    redis.hang();
    // A CacheGet stuck behind the hung Redis, then a Ping whose answer
    // cannot be delivered (the read side is shut): seqd drops the
    // connection with the read still in flight.
    let mut s = seqd.raw_binary(seqd_client::seqd_protocol::PROTOCOL_VERSION, "vanishing");
    let mut frames = Vec::new();
    for (id, request) in [
        (
            1,
            Request::CacheGet {
                key: "frozen".into(),
            },
        ),
        (2, Request::Ping),
    ] {
        frames
            .extend(codec::encode_frame(&ClientMessage::Request { id, request }, 1 << 20).unwrap());
    }
    s.shutdown(std::net::Shutdown::Read).unwrap();
    s.write_all(&frames).unwrap();
    wait_until(
        "the vanished reader's connection is dropped",
        Duration::from_secs(5),
        || open(&mut c) == 1,
    );
    redis.resume();
    assert_eq!(
        c.cache_set("frozen", b"v2", None).unwrap(),
        WriteOutcome::Stored
    );
    for _ in 0..3 {
        assert_eq!(c.cache_get("frozen").unwrap().as_deref(), Some(&b"v2"[..]));
    }
    assert_eq!(c.cache_del(&["frozen"]).unwrap(), (1, false));
    assert_eq!(c.cache_get("frozen").unwrap(), None);
    drop(s);
}

#[test]
fn a_read_after_an_acknowledged_write_never_shares_an_older_round_trip() {
    let (_redis, seqd) = redis_seqd(&["--redis-timeout-ms", "5000"]);
    let mut w = seqd.client();
    let mut b = seqd.client();
    let big = vec![b'o'; 2 * 1024 * 1024];
    let mut stale = 0;
    for round in 0..10 {
        w.cache_set("k", &big, None).unwrap();
        let gets = metric(&mut w, "seqd_cache_redis_gets_total ");
        // A: a read of the old, large value, whose reply takes a while to
        // arrive and parse.
        let mut a = seqd.client();
        let reader = std::thread::spawn(move || a.cache_get("k").unwrap());
        wait_until("A's GET sent", Duration::from_secs(5), || {
            metric(&mut w, "seqd_cache_redis_gets_total ") > gets
        });
        // The write is acknowledged; B reads after it and must see it.
        w.cache_set("k", format!("new{round}").as_bytes(), None)
            .unwrap();
        let seen = b.cache_get("k").unwrap();
        if seen.as_deref() != Some(format!("new{round}").as_bytes()) {
            stale += 1;
        }
        let a_saw = reader.join().unwrap().unwrap();
        assert!(a_saw == big || a_saw == format!("new{round}").as_bytes());
    }
    assert_eq!(
        stale, 0,
        "reads after an acknowledged write saw the old value"
    );
}
