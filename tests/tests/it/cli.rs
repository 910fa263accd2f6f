//! The shell interfaces: `socat` on the text protocol and `seqctl`.

use seqd_tests::*;
use std::io::Write;
use std::process::{Command, Stdio};

fn socat(seqd: &Seqd, input: &str) -> String {
    let mut child = Command::new("socat")
        .arg("-")
        .arg(format!("UNIX-CONNECT:{}", seqd.socket().display()))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("socat must be installed (the test script installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

fn seqctl(seqd: &Seqd, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(workspace_bin("seqctl"))
        .arg("--socket")
        .arg(seqd.socket())
        .args(args)
        .output()
        .expect("running seqctl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn socat_gets_the_readme_reply_in_both_modes() {
    let today = today_in("Asia/Kolkata");
    let redis = RedisServer::start();
    let seqd = Seqd::start(SeqdOptions::redis(&redis));
    assert_eq!(
        socat(&seqd, "DAILY NEXT 123 tz=Asia/Kolkata\n"),
        format!("OK seq=1 day={today} source=redis\n")
    );
    let local = Seqd::start(SeqdOptions::local());
    assert_eq!(
        socat(&local, "DAILY NEXT 123 tz=Asia/Kolkata\n"),
        format!("OK seq=1 day={today} source=local\n")
    );
    assert_eq!(
        socat(&local, "PING\nCONV NEXT group g\n"),
        "OK pong\nOK seq=1 source=local\n"
    );
}

#[test]
fn seqctl_mirrors_the_text_commands() {
    let seqd = Seqd::start(SeqdOptions::local());
    let (at, day) = (
        rfc3339(test_instant_ms()),
        day_at(test_instant_ms(), "Asia/Kolkata"),
    );
    assert_eq!(
        seqctl(&seqd, &["ping"]),
        (0, "OK pong\n".into(), String::new())
    );
    let (code, out, _) = seqctl(
        &seqd,
        &["daily", "next", "123", "--tz", "Asia/Kolkata", "--at", &at],
    );
    assert_eq!(
        (code, out.as_str()),
        (0, format!("OK seq=1 day={day} source=local\n").as_str())
    );
    let (_, out, _) = seqctl(
        &seqd,
        &["daily", "get", "123", "--tz", "Asia/Kolkata", "--at", &at],
    );
    assert_eq!(out, format!("OK seq=1 day={day} source=local\n"));
    let (_, out, _) = seqctl(&seqd, &["conv", "next", "private", "bob", "alice"]);
    assert_eq!(out, "OK seq=1 source=local\n");
    let (_, out, _) = seqctl(&seqd, &["conv", "get", "private", "alice", "bob"]);
    assert_eq!(out, "OK seq=1 source=local\n");
    let (_, out, _) = seqctl(&seqd, &["conv", "next", "group", "g1"]);
    assert_eq!(out, "OK seq=1 source=local\n");
    let (code, out, _) = seqctl(&seqd, &["health"]);
    assert_eq!(code, 0);
    assert_eq!(field(out.trim_end(), "redis"), "disabled");
    let (code, out, _) = seqctl(&seqd, &["metrics"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("seqd_requests_total{op=\"conv_next\",outcome=\"ok\"} 2"),
        "{out}"
    );
    let (code, out, _) = seqctl(&seqd, &["info"]);
    assert_eq!(code, 0);
    assert_eq!(field(out.trim_end(), "mode"), "local");
    assert_eq!(field(out.trim_end(), "max_batch"), "10000");
}

#[test]
fn seqctl_cache_commands() {
    let seqd = Seqd::start(SeqdOptions::local());
    assert_eq!(
        seqctl(&seqd, &["cache", "set", "user:1:settings:all", "{\"a\":1}"]).1,
        "OK\n"
    );
    assert_eq!(
        seqctl(&seqd, &["cache", "get", "user:1:settings:all"]).1,
        "OK hit {\"a\":1}\n"
    );
    assert_eq!(
        seqctl(
            &seqd,
            &[
                "cache",
                "set-many",
                "user:1:a=x",
                "user:1:b=y z",
                "--ttl",
                "60"
            ]
        )
        .1,
        "OK\n"
    );
    let (code, out, _) = seqctl(
        &seqd,
        &["cache", "get-many", "user:1:a", "user:1:none", "user:1:b"],
    );
    assert_eq!((code, out.as_str()), (0, "OK hit x\nOK miss\nOK hit y z\n"));
    assert_eq!(
        seqctl(&seqd, &["cache", "del", "user:1:a", "user:1:none"]).1,
        "OK deleted=1\n"
    );
    assert_eq!(
        seqctl(&seqd, &["cache", "del-prefix", "user:1:"]).1,
        "OK deleted=2\n"
    );
    let (code, _, err) = seqctl(&seqd, &["cache", "set", "seq:group:g", "1"]);
    assert_eq!(code, 1);
    assert!(err.starts_with("ERR forbidden "), "{err}");
}

#[test]
fn seqctl_exit_status_tells_errors_from_unreachable() {
    let seqd = Seqd::start(SeqdOptions::local());
    let (code, out, err) = seqctl(&seqd, &["daily", "next", "a:b"]);
    assert_eq!(code, 1);
    assert!(out.is_empty());
    assert!(err.starts_with("ERR invalid_argument "), "{err}");
    let (code, _, err) = seqctl(&seqd, &["daily", "next", "u", "--at", "noon"]);
    assert_eq!(code, 1);
    assert!(err.starts_with("ERR invalid_argument "), "{err}");
    let out = Command::new(workspace_bin("seqctl"))
        .args(["--socket", "/nonexistent/seqd.sock", "ping"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn sighup_does_not_stop_seqd() {
    let seqd = Seqd::start(SeqdOptions::local());
    let mut t = seqd.text();
    // SAFETY: signalling a child we spawned.
    assert_eq!(unsafe { libc::kill(seqd.pid() as i32, libc::SIGHUP) }, 0);
    wait_until(
        "the SIGHUP to be logged",
        std::time::Duration::from_secs(5),
        || seqd.log_text().contains("SIGHUP"),
    );
    assert_eq!(t.cmd("PING"), "OK pong", "the connection survived");
}

#[test]
fn sighup_reloads_the_config_file_without_dropping_connections() {
    use seqd_client::gap_event;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("seqd.env");
    std::fs::write(&file, "# nothing yet\n").unwrap();
    let seqd = Seqd::start(SeqdOptions {
        args: vec!["--config".into(), file.display().to_string()],
        ..SeqdOptions::local()
    });
    let mut c = seqd.client();
    let batch = || {
        (1..=3)
            .map(|s| gap_event("hup", "A", s))
            .collect::<Vec<_>>()
    };
    assert_eq!(c.gap_batch(batch()).unwrap().len(), 3);
    std::fs::write(
        &file,
        "SEQD_MAX_BATCH=2\nSEQD_LOG=debug\nREDIS_URL=redis://127.0.0.1:1/0\n",
    )
    .unwrap();
    let hup = || {
        // SAFETY: signalling a child we spawned.
        assert_eq!(unsafe { libc::kill(seqd.pid() as i32, libc::SIGHUP) }, 0);
    };
    hup();
    wait_until("the reload", std::time::Duration::from_secs(5), || {
        seqd.log_text().contains("SIGHUP: reloaded")
    });
    let log = seqd.log_text();
    assert!(
        log.contains("SEQD_MAX_BATCH=2") && log.contains("SEQD_LOG="),
        "{log}"
    );
    // The same connection, the new limit.
    let e = c.gap_batch(batch()).unwrap_err();
    assert_eq!(
        e.code(),
        Some(seqd_client::seqd_protocol::ErrorCode::TooLarge)
    );
    // The new log level: debug lines appear.
    seqd.text().cmd("PING");
    wait_until("a debug line", std::time::Duration::from_secs(5), || {
        seqd.log_text().contains("DEBUG")
    });
    // Not reloadable: still local mode.
    assert_eq!(field(&seqd.text().cmd("HEALTH"), "mode"), "local");
    // An invalid value changes nothing.
    std::fs::write(&file, "SEQD_MAX_BATCH=0\n").unwrap();
    hup();
    wait_until("the refusal", std::time::Duration::from_secs(5), || {
        seqd.log_text().contains("invalid setting")
    });
    assert!(c.gap_batch(batch()).is_err(), "still 2");
}

#[test]
fn sigterm_exits_cleanly_and_removes_the_socket() {
    let mut seqd = Seqd::start(SeqdOptions::local());
    seqd.text().cmd("CONV NEXT group t");
    let status = seqd.terminate();
    assert_eq!(status.code(), Some(0), "log:\n{}", seqd.log_text());
    assert!(!seqd.socket().exists());
}

#[test]
fn a_second_seqd_refuses_a_live_socket_and_replaces_a_stale_one() {
    let mut seqd = Seqd::start(SeqdOptions::local());
    let out = seqd_command(&seqd.socket(), &seqd.dir.path().join("other"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("served by a running process"));
    assert_eq!(seqd.text().cmd("PING"), "OK pong");
    // After a kill -9 the socket file stays behind; a restart replaces it.
    seqd.kill9();
    assert!(seqd.socket().exists());
    seqd.restart();
    assert_eq!(seqd.text().cmd("PING"), "OK pong");
}

#[test]
fn seqctl_top_once_shows_live_rates() {
    let seqd = Seqd::start(SeqdOptions::local());
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (stop, mut c) = (stop.clone(), seqd.client());
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                c.group_next("top").unwrap();
                n += 1;
            }
            n
        })
    };
    let (code, out, err) = seqctl(&seqd, &["top", "--once", "--interval-ms", "500"]);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let issued = load.join().unwrap();
    assert_eq!(code, 0, "{err}");
    println!("{out}");
    assert!(
        out.starts_with("seqd 0.1.0  mode=local redis=disabled breaker=closed host=7"),
        "{out}"
    );
    assert!(out.contains("answered locally 100.0%"), "{out}");
    let rate: f64 = out
        .lines()
        .find(|l| l.starts_with("conv_next "))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|r| r.parse().ok())
        .unwrap_or_else(|| panic!("no conv_next line in {out}"));
    assert!(rate > 0.0 && issued > 0, "{out}");
}
