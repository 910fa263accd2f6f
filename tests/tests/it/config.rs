//! Configuration: the mode chosen from the environment, the classic
//! `REDIS_*` variables, the startup log, and the client's reconnect.

use seqd_tests::*;

fn info_commandstats(redis: &RedisServer) -> String {
    match redis.cmd(&["INFO", "commandstats"]) {
        Reply::Bulk(b) => String::from_utf8(b).unwrap(),
        other => panic!("{other:?}"),
    }
}

/// `calls=` of one command in `INFO commandstats` (0 when never called).
fn calls(stats: &str, cmd: &str) -> u64 {
    stats
        .lines()
        .find(|l| l.starts_with(&format!("cmdstat_{cmd}:")))
        .and_then(|l| l.split(['=', ',']).nth(1))
        .map_or(0, |n| n.parse().unwrap())
}

#[test]
fn startup_log_names_the_mode() {
    let local = Seqd::start(SeqdOptions::local());
    assert!(
        local.log_text().contains("mode: local"),
        "{}",
        local.log_text()
    );
    let redis = RedisServer::start();
    let seqd = Seqd::start(SeqdOptions::redis(&redis));
    let want = format!(
        "mode: Redis at 127.0.0.1:{}/0 (topology=single)",
        redis.port
    );
    assert!(seqd.log_text().contains(&want), "{}", seqd.log_text());
    let health = seqd.text().cmd("HEALTH");
    assert!(health.contains(" topology=single"), "{health}");
    assert!(!health.contains(" master="), "{health}");
}

#[test]
fn the_seeds_redis_host_variables_select_redis_mode() {
    let redis = RedisServer::start();
    redis.cmd(&["CONFIG", "SET", "requirepass", "s3cret"]);
    let seqd = Seqd::start(SeqdOptions {
        env: vec![
            ("REDIS_HOST".into(), "127.0.0.1".into()),
            ("REDIS_PORT".into(), redis.port.to_string()),
            ("REDIS_PASSWORD".into(), "s3cret".into()),
            ("REDIS_DB".into(), "3".into()),
            ("REDIS_POOL_SIZE".into(), "2".into()),
        ],
        ..SeqdOptions::local()
    });
    assert_eq!(
        seqd.text().cmd("CONV NEXT group cfg"),
        "OK seq=1 source=redis"
    );
    let mut s = std::net::TcpStream::connect(("127.0.0.1", redis.port)).unwrap();
    assert_eq!(
        resp(&mut s, &["AUTH", "s3cret"]).unwrap(),
        Reply::Status("OK".into())
    );
    assert_eq!(
        resp(&mut s, &["SELECT", "3"]).unwrap(),
        Reply::Status("OK".into())
    );
    assert_eq!(
        resp(&mut s, &["GET", "seq:group:cfg"]).unwrap(),
        Reply::Bulk(b"1".to_vec())
    );
}

#[test]
fn seqd_starts_and_answers_when_redis_is_unreachable() {
    let port = free_port();
    let seqd = Seqd::start(SeqdOptions {
        redis_url: Some(format!("redis://127.0.0.1:{port}/0")),
        ..SeqdOptions::default()
    });
    let mut t = seqd.text();
    assert_eq!(t.cmd("PING"), "OK pong");
    // Numbers keep coming, from the local store.
    assert_eq!(t.cmd("CONV NEXT group g"), "OK seq=1 source=local host=7");
    assert_eq!(t.cmd("CONV NEXT group g"), "OK seq=2 source=local host=7");
    wait_until(
        "HEALTH to show Redis down",
        std::time::Duration::from_secs(10),
        || field(&t.cmd("HEALTH"), "redis") == "down",
    );
}

#[test]
fn an_increment_costs_redis_an_incr_and_the_script_runs_only_when_redis_lost_data() {
    let redis = RedisServer::start();
    // The health check (a write check by script) runs once at start and
    // then not again during the test: the counts below are the requests'.
    // (A timeout long enough that a busy machine cannot fail that check,
    // which would make the breaker probe again during the test.)
    let seqd = Seqd::start(SeqdOptions::redis(&redis).with_args(&[
        "--health-interval-ms",
        "600000",
        "--redis-timeout-ms",
        "5000",
    ]));
    // Checked, and closed: a breaker still proving Redis (half-open) would
    // run write checks of its own during the test. The check is done when
    // its script's `SET … XX` ran: its first `EVALSHA` may find no script
    // and be followed by `SCRIPT LOAD` and a second one.
    wait_until(
        "the first health check, and the breaker closed",
        std::time::Duration::from_secs(10),
        || {
            let health = seqd.text().cmd("HEALTH");
            calls(&info_commandstats(&redis), "set") >= 1
                && health.contains("redis=up")
                && health.contains("breaker=closed")
        },
    );
    redis.cmd(&["CONFIG", "RESETSTAT"]);
    let mut c = seqd.client();
    for _ in 0..50 {
        c.group_next("sha").unwrap();
    }
    let at = Some(test_instant_ms());
    for _ in 0..50 {
        c.daily_next("sha", Some("UTC"), at).unwrap();
    }
    let stats = info_commandstats(&redis);
    // Conversation: INCR; daily: INCR, with EXPIRE NX in one MULTI/EXEC
    // only for the first number this seqd draws of the key.
    assert_eq!(calls(&stats, "incr"), 100, "{stats}");
    assert_eq!(calls(&stats, "expire"), 1, "{stats}");
    assert_eq!(
        (calls(&stats, "multi"), calls(&stats, "exec")),
        (1, 1),
        "{stats}"
    );
    assert_eq!(
        calls(&stats, "evalsha") + calls(&stats, "eval"),
        0,
        "{stats}\n{}",
        seqd.log_text()
    );
    let day_key = format!("user:sha:sequence:{}", day_at(test_instant_ms(), "UTC"));
    assert!(redis.cmd(&["TTL", &day_key]).as_int() > 0);
    // Redis loses the counter: the INCR answers 1, below this seqd's mark,
    // and the script (by its SHA, loaded once) raises it past the mark.
    redis.cmd(&["DEL", "seq:group:sha"]);
    assert_eq!(c.group_next("sha").unwrap().seq, 51);
    let stats = info_commandstats(&redis);
    assert_eq!(calls(&stats, "eval"), 0, "{stats}");
    // The first EVALSHA finds no script (NOSCRIPT), which is loaded once.
    assert!(calls(&stats, "evalsha") <= 2, "{stats}");
    assert_eq!(calls(&stats, "script|load"), 1, "{stats}");
    assert_eq!(redis.get_u64("seq:group:sha"), Some(51));
}

#[test]
fn an_acl_user_without_admin_or_dangerous_commands_is_served() {
    let redis = RedisServer::start();
    // The kind of user a managed Redis hands out: no CLIENT, ROLE, INFO.
    let acl = [
        "ACL",
        "SETUSER",
        "app",
        "on",
        ">s3cret",
        "~*",
        "&*",
        "+@all",
        "-@admin",
        "-@dangerous",
    ];
    assert!(matches!(redis.cmd(&acl), Reply::Status(s) if s == "OK"));
    let port = redis.port.to_string();
    let as_app = |password: &str| {
        Seqd::start(SeqdOptions::local().with_args(&[
            "--redis-host",
            "127.0.0.1",
            "--redis-port",
            &port,
            "--redis-username",
            "app",
            "--redis-password",
            password,
        ]))
    };
    let seqd = as_app("s3cret");
    let mut t = seqd.text();
    assert_eq!(t.cmd("CONV NEXT group acl"), "OK seq=1 source=redis");
    let daily = t.cmd("DAILY NEXT acl");
    assert!(
        daily.starts_with("OK seq=1 ") && daily.ends_with("source=redis"),
        "{daily}"
    );
    assert_eq!(field(&t.cmd("HEALTH"), "breaker"), "closed");
    // A wrong password is a Redis that cannot serve: answers come from
    // the store, and HEALTH says why.
    let wrong = as_app("nope");
    let reply = wrong.text().cmd("CONV NEXT group acl");
    assert!(reply.contains("source=local"), "{reply}");
    assert!(wrong.text().cmd("HEALTH").contains("WRONGPASS"));
}

#[test]
fn the_client_reconnects_after_seqd_restarts() {
    let mut seqd = Seqd::start(SeqdOptions::local());
    let mut c = seqd.client();
    assert_eq!(c.group_next("rc").unwrap().seq, 1);
    seqd.restart();
    // The old connection is dead; the same Client carries on.
    assert_eq!(c.group_next("rc").unwrap().seq, 2);
    assert_eq!(c.group_next("rc").unwrap().seq, 3);
}

#[test]
fn an_unknown_default_zone_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let out = seqd_command(&dir.path().join("s.sock"), &dir.path().join("d"))
        .args(["--default-tz", "Mars/Olympus"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown time zone"));
}
