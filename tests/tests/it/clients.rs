//! The Rust clients against a live seqd: the async client has every call
//! of the blocking one, reconnects like it, and keeps a time limit; `INFO`
//! tells a client the daemon's limits in both protocols.

use seqd_client::seqd_protocol::{CacheItem, GapKind, Request, WriteOutcome};
use seqd_client::{AsyncClient, Client};
use seqd_tests::*;
use std::time::Duration;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn field<'a>(fields: &'a [(String, String)], name: &str) -> &'a str {
    &fields
        .iter()
        .find(|(k, _)| k == name)
        .unwrap_or_else(|| panic!("no {name} in {fields:?}"))
        .1
}

#[test]
fn the_async_client_has_every_call_of_the_blocking_one() {
    let seqd = Seqd::start(SeqdOptions::local());
    let mut blocking = seqd.client();
    runtime().block_on(async {
        let mut c = AsyncClient::connect(seqd.socket()).await.unwrap();
        c.ping().await.unwrap();
        assert_eq!(c.daily_next("u1", Some("UTC"), None).await.unwrap().seq, 1);
        assert_eq!(c.daily_get("u1", Some("UTC"), None).await.unwrap().seq, 1);
        assert_eq!(c.private_next("a", "b").await.unwrap().seq, 1);
        assert_eq!(c.private_next("b", "a").await.unwrap().seq, 2);
        assert_eq!(c.group_next("g").await.unwrap().seq, 1);
        // The blocking client sees the same counters.
        assert_eq!(blocking.private_next("a", "b").unwrap().seq, 3);

        assert_eq!(
            c.gap_check("X", "S", 1).await.unwrap().kind,
            GapKind::Normal
        );
        assert_eq!(c.gap_check("X", "S", 5).await.unwrap().kind, GapKind::Gap);
        let stats = c.gap_stats("X", "S").await.unwrap().expect("state");
        assert_eq!((stats.last_seq, stats.missing), (5, vec![(2, 4)]));
        c.gap_clear("X", "S").await.unwrap();
        assert!(c.gap_stats("X", "S").await.unwrap().is_none());
        c.gap_check("X", "T", 1).await.unwrap();
        assert_eq!(c.gap_clear_all().await.unwrap(), 1);

        let binary = vec![0u8, 255, 10, 13];
        assert_eq!(
            c.cache_set("cfg:1", &binary, None).await.unwrap(),
            WriteOutcome::Stored
        );
        let item = |k: &str, v: &[u8]| CacheItem {
            key: k.into(),
            value: v.to_vec(),
            ttl_ms: None,
        };
        c.cache_set_many(vec![item("cfg:2", b"two"), item("other:1", b"x")])
            .await
            .unwrap();
        assert_eq!(
            c.cache_get_many(&["cfg:1", "cfg:2", "cfg:3"])
                .await
                .unwrap(),
            vec![Some(binary.clone()), Some(b"two".to_vec()), None]
        );
        assert_eq!(c.cache_del_prefix("cfg:").await.unwrap(), (2, false));
        assert_eq!(c.cache_get("other:1").await.unwrap(), Some(b"x".to_vec()));

        // Cache-aside: a miss loads and fills, a hit does not load.
        let loaded = c
            .get_or_load::<(), _>("cfg:9", None, || async { Ok(b"db".to_vec()) })
            .await
            .unwrap();
        assert_eq!(loaded, b"db");
        let hit = c
            .get_or_load::<(), _>("cfg:9", None, || async { panic!("a hit must not load") })
            .await
            .unwrap();
        assert_eq!(hit, b"db");
        let (written, outcome) = c
            .write_through::<_, (), _>("cfg:9", None, None, || async { Ok(7) })
            .await
            .unwrap();
        assert_eq!((written, outcome), (7, WriteOutcome::Invalidated));
        assert_eq!(c.cache_get("cfg:9").await.unwrap(), None);

        assert!(c.metrics().await.unwrap().contains("seqd_requests_total"));
        assert_eq!(field(&c.health().await.unwrap(), "mode"), "local");
        assert_eq!(field(&c.info().await.unwrap(), "mode"), "local");
    });
}

#[test]
fn the_async_client_reconnects_after_seqd_restarts() {
    let mut seqd = Seqd::start(SeqdOptions::local());
    runtime().block_on(async {
        let mut c = AsyncClient::connect(seqd.socket()).await.unwrap();
        assert_eq!(c.group_next("r").await.unwrap().seq, 1);
        seqd.kill9();
        seqd.restart();
        // The old connection is dead: the call reconnects and is retried.
        assert_eq!(c.group_next("r").await.unwrap().seq, 2);
    });
}

#[test]
fn connecting_waits_for_a_seqd_that_is_not_up_yet() {
    let mut seqd = Seqd::start(SeqdOptions::local());
    for round in 0..2 {
        seqd.kill9();
        let _ = std::fs::remove_file(seqd.socket());
        let socket = seqd.socket();
        // seqd comes up a moment after the client starts connecting.
        let starter = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            seqd.start_again();
            seqd
        });
        let seq = if round == 0 {
            let mut c = Client::connect(&socket).unwrap();
            c.group_next("late").unwrap().seq
        } else {
            runtime().block_on(async {
                let mut c = AsyncClient::connect(&socket).await.unwrap();
                c.group_next("late").await.unwrap().seq
            })
        };
        seqd = starter.join().unwrap();
        assert_eq!(seq, round + 1);
    }
    // Nothing comes up: the client gives up after its timeout, with the
    // error that says seqd is not there.
    let dir = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let err =
        Client::connect_with_timeout(dir.path().join("none.sock"), Duration::from_millis(300))
            .err()
            .expect("nothing to connect to");
    assert!(err.is_unavailable(), "{err:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn the_async_client_gives_up_after_its_time_limit() {
    // A socket that accepts and never answers (a hung daemon).
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hung.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    runtime().block_on(async {
        let started = std::time::Instant::now();
        let err = AsyncClient::connect_with_timeout(&path, Duration::from_millis(200))
            .await
            .err()
            .expect("no hello answer within the limit");
        assert!(
            matches!(&err, seqd_client::ClientError::Io(e) if e.kind() == std::io::ErrorKind::TimedOut),
            "{err:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
    });
    drop(listener);

    // A live daemon answers within the limit.
    let seqd = Seqd::start(SeqdOptions::local());
    runtime().block_on(async {
        let mut c = AsyncClient::connect_with_timeout(seqd.socket(), Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(c.group_next("t").await.unwrap().seq, 1);
    });
}

#[test]
fn info_names_the_limits_in_force_in_both_protocols() {
    let seqd = Seqd::start(SeqdOptions::local().with_args(&[
        "--max-batch",
        "77",
        "--max-keys",
        "33",
        "--max-value",
        "4096",
    ]));
    let info = seqd.client().info().unwrap();
    assert_eq!(field(&info, "max_batch"), "77");
    assert_eq!(field(&info, "max_keys"), "33");
    assert_eq!(field(&info, "max_value"), "4096");
    assert_eq!(field(&info, "max_frame"), (8 * 1024 * 1024).to_string());
    assert_eq!(field(&info, "protocols"), "1,2");
    assert_eq!(field(&info, "mode"), "local");
    assert_eq!(field(&info, "max_key_bytes"), "512");
    assert_eq!(field(&info, "max_id_chars"), "64");
    assert_eq!(field(&info, "requests"), Request::NAMES.join(","));
    assert!(field(&info, "requests").ends_with(",info"));
    // The text protocol prints the same pairs.
    let line = seqd.text().cmd("INFO");
    assert!(line.starts_with("OK version="), "{line}");
    assert!(line.contains(" max_batch=77 "), "{line}");
    assert!(
        line.contains(&format!(" host={} ", field(&info, "host"))),
        "{line}"
    );
}
