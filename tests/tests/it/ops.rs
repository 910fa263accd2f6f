//! Operations: readiness, watchdog and status notifications to a
//! simulated systemd notify socket.

use seqd_tests::*;
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

fn recv(sock: &UnixDatagram) -> String {
    let mut buf = [0u8; 4096];
    let n = sock
        .recv(&mut buf)
        .expect("a notification within the timeout");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn ready_watchdog_status_and_stopping_reach_the_notify_socket() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut seqd = Seqd::start(SeqdOptions {
        env: vec![
            ("NOTIFY_SOCKET".into(), path.display().to_string()),
            // 200 ms: keep-alives every 100 ms.
            ("WATCHDOG_USEC".into(), "200000".into()),
        ],
        ..SeqdOptions::local()
    });
    let ready = recv(&sock);
    assert!(ready.starts_with("READY=1\n"), "{ready}");
    assert!(
        ready.contains("STATUS=serving, mode local, redis disabled, breaker closed"),
        "{ready}"
    );
    // Keep-alives keep coming, about every 100 ms.
    let start = Instant::now();
    let mut pings = 0;
    while pings < 5 {
        if recv(&sock).contains("WATCHDOG=1") {
            pings += 1;
        }
    }
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "5 keep-alives took {:?}",
        start.elapsed()
    );
    assert_eq!(seqd.terminate().code(), Some(0));
    // Whatever keep-alives were queued, STOPPING=1 arrives before the end.
    let mut stopping = false;
    while let Ok(msg) = {
        sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut buf = [0u8; 4096];
        sock.recv(&mut buf)
            .map(|n| String::from_utf8_lossy(&buf[..n]).into_owned())
    } {
        stopping |= msg.starts_with("STOPPING=1");
    }
    assert!(stopping, "STOPPING=1 was sent");
}

#[test]
fn a_watchdog_meant_for_another_process_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(600)))
        .unwrap();
    let _seqd = Seqd::start(SeqdOptions {
        env: vec![
            ("NOTIFY_SOCKET".into(), path.display().to_string()),
            ("WATCHDOG_USEC".into(), "100000".into()),
            ("WATCHDOG_PID".into(), "1".into()),
        ],
        ..SeqdOptions::local()
    });
    assert!(recv(&sock).starts_with("READY=1"));
    let mut buf = [0u8; 4096];
    assert!(
        sock.recv(&mut buf).is_err(),
        "no keep-alives for another process's watchdog"
    );
}

#[test]
fn serves_on_a_socket_passed_by_systemd_and_leaves_it_in_place() {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("activated.sock");
    let own = dir.path().join("own.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let fd = listener.as_raw_fd();
    let mut cmd = std::process::Command::new("sh");
    cmd.arg("-c")
        .arg(format!(
            "export LISTEN_PID=$$ LISTEN_FDS=1; exec '{}' --socket '{}' --data-dir '{}'",
            workspace_bin("seqd").display(),
            own.display(),
            dir.path().join("data").display()
        ))
        .env_remove("REDIS_URL")
        .env_remove("REDIS_HOST")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("log")).unwrap());
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            // The socket goes to fd 3, without close-on-exec.
            if fd != 3 && libc::dup2(fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::fcntl(3, libc::F_SETFD, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    drop(listener);
    let mut t = None;
    wait_until(
        "seqd to answer on the passed socket",
        STARTUP_DEADLINE,
        || {
            if let Ok(None) = child.try_wait() {
            } else {
                panic!(
                    "seqd exited: {}",
                    std::fs::read_to_string(dir.path().join("log")).unwrap_or_default()
                );
            }
            let Ok(s) = std::os::unix::net::UnixStream::connect(&path) else {
                return false;
            };
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            t = Some(s);
            true
        },
    );
    let s = t.unwrap();
    let mut conn = TextConn {
        reader: std::io::BufReader::new(s.try_clone().unwrap()),
        writer: s,
    };
    assert_eq!(conn.cmd("CONV NEXT group act"), "OK seq=1 source=local");
    assert!(!own.exists(), "seqd bound no socket of its own");
    let log = std::fs::read_to_string(dir.path().join("log")).unwrap();
    assert!(log.contains("socket activation"), "{log}");
    // SAFETY: signalling the child we spawned.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    assert_eq!(child.wait().unwrap().code(), Some(0));
    assert!(path.exists(), "a socket systemd owns is not removed");
}

fn repo_file(rel: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(rel)
}

#[test]
fn systemd_analyze_verifies_both_units() {
    let dir = tempfile::tempdir().unwrap();
    // verify checks that ExecStart exists: point it at the built binary.
    let service = std::fs::read_to_string(repo_file("systemd/seqd.service")).unwrap();
    assert!(service.contains("Type=notify") && service.contains("WatchdogSec="));
    // The shipped unit names seqd bare (systemd looks in /usr/local/bin,
    // then /usr/bin), which this machine may not have installed.
    assert!(service.contains("\nExecStart=seqd\n"), "{service}");
    let service = service.replace(
        "\nExecStart=seqd\n",
        &format!("\nExecStart={}\n", workspace_bin("seqd").display()),
    );
    std::fs::write(dir.path().join("seqd.service"), service).unwrap();
    std::fs::copy(
        repo_file("systemd/seqd.socket"),
        dir.path().join("seqd.socket"),
    )
    .unwrap();
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(dir.path().join("seqd.service"))
        .arg(dir.path().join("seqd.socket"))
        .output()
        .expect("systemd-analyze must be installed (the test script installs systemd)");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{said}");
    assert!(
        !said.contains("seqd.service:") && !said.contains("seqd.socket:"),
        "warnings about our units: {said}"
    );
}

#[test]
fn the_shipped_redis_config_is_valid_and_says_what_it_should() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let conf = dir.path().join("redis.conf");
    std::fs::write(
        &conf,
        format!(
            "port {port}\nbind 127.0.0.1\ndir {}\ninclude {}\n",
            dir.path().display(),
            repo_file("systemd/redis-seqd.conf").display()
        ),
    )
    .unwrap();
    let mut child = std::process::Command::new("redis-server")
        .arg(&conf)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let get = |name: &str| -> Option<String> {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
        match resp(&mut s, &["CONFIG", "GET", name]).ok()? {
            Reply::Array(v) => match v.get(1) {
                Some(Reply::Bulk(b)) => Some(String::from_utf8_lossy(b).into_owned()),
                _ => None,
            },
            _ => None,
        }
    };
    wait_until("redis with the shipped config", STARTUP_DEADLINE, || {
        get("appendonly").is_some()
    });
    assert_eq!(get("appendonly").as_deref(), Some("yes"));
    assert_eq!(get("appendfsync").as_deref(), Some("everysec"));
    assert_eq!(get("maxmemory-policy").as_deref(), Some("noeviction"));
    let _ = child.kill();
    let _ = child.wait();
}

/// Starts seqd in local mode with stderr to `log` and `JOURNAL_STREAM` set
/// to `stream`, waits until it answers, and stops it.
fn run_with_journal_stream(dir: &std::path::Path, log: &std::path::Path, stream: &str) {
    let sock = dir.join("j.sock");
    let mut child = seqd_command(&sock, &dir.join("data"))
        .env("JOURNAL_STREAM", stream)
        .stderr(std::fs::OpenOptions::new().append(true).open(log).unwrap())
        .spawn()
        .unwrap();
    wait_until("seqd to answer", STARTUP_DEADLINE, || {
        std::os::unix::net::UnixStream::connect(&sock).is_ok()
    });
    // SAFETY: signalling the child we spawned.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

#[test]
fn logs_go_to_journald_only_when_stderr_is_the_journal_stream() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("stderr.log");
    std::fs::write(&log, "").unwrap();
    // A JOURNAL_STREAM inherited from elsewhere (not our stderr): stderr.
    run_with_journal_stream(dir.path(), &log, "1:1");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("mode: local"), "{text}");
    std::fs::write(&log, "").unwrap();
    // Our stderr is the journal stream: seqd talks to journald, or says why
    // it cannot and keeps logging to stderr.
    let meta = std::fs::metadata(&log).unwrap();
    run_with_journal_stream(dir.path(), &log, &format!("{}:{}", meta.dev(), meta.ino()));
    let text = std::fs::read_to_string(&log).unwrap();
    if std::path::Path::new("/run/systemd/journal/socket").exists() {
        assert!(
            !text.contains("mode: local"),
            "logs went to journald, not stderr: {text}"
        );
    } else {
        assert!(text.contains("journald not reachable"), "{text}");
        assert!(text.contains("mode: local"), "{text}");
    }
}

#[test]
fn the_allow_list_refuses_other_users_with_forbidden() {
    // These tests run as some uid; a list without it refuses us.
    let me = unsafe { libc::getuid() };
    let my_gid = unsafe { libc::getgid() };
    let other = (me + 4242).to_string();
    let refusing = Seqd::start_unchecked(SeqdOptions {
        args: vec!["--allow-uids".into(), other.clone()],
        ..SeqdOptions::local()
    });
    let mut t = TextConn::connect(&refusing.socket());
    assert!(t.cmd("PING").starts_with("ERR forbidden "));
    let err = seqd_client::Client::connect(refusing.socket())
        .err()
        .expect("binary refused too");
    assert_eq!(
        err.code(),
        Some(seqd_client::seqd_protocol::ErrorCode::Forbidden)
    );
    let by_uid = Seqd::start(SeqdOptions {
        args: vec!["--allow-uids".into(), format!("{other},{me}")],
        ..SeqdOptions::local()
    });
    assert_eq!(by_uid.text().cmd("PING"), "OK pong");
    let by_gid = Seqd::start(SeqdOptions {
        args: vec![
            "--allow-uids".into(),
            other,
            "--allow-gids".into(),
            my_gid.to_string(),
        ],
        ..SeqdOptions::local()
    });
    assert_eq!(by_gid.text().cmd("PING"), "OK pong");
}

#[test]
fn idle_connections_are_closed_and_busy_ones_kept() {
    let seqd = Seqd::start(SeqdOptions {
        args: vec!["--idle-timeout-ms".into(), "300".into()],
        ..SeqdOptions::local()
    });
    let mut busy = seqd.text();
    let mut idle = seqd.text();
    assert_eq!(idle.cmd("PING"), "OK pong");
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_millis(900) {
        assert_eq!(busy.cmd("PING"), "OK pong");
        std::thread::sleep(Duration::from_millis(50));
    }
    let notice = idle.read_line();
    assert!(
        notice.starts_with("ERR unavailable idle for 300 ms"),
        "{notice}"
    );
    let mut rest = String::new();
    assert_eq!(
        std::io::Read::read_to_string(&mut idle.reader, &mut rest).unwrap(),
        0,
        "closed"
    );
    // The client crate reconnects by itself after an idle close.
    let mut c = seqd.client();
    assert_eq!(c.group_next("idle").unwrap().seq, 1);
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(c.group_next("idle").unwrap().seq, 2);
}

#[test]
fn a_thousand_idle_connections_do_not_stop_another_client() {
    // The thousand come from this one process: lift its own cap.
    let seqd = Seqd::start(SeqdOptions::local().with_args(&["--max-connections-per-pid", "2000"]));
    let idle: Vec<_> = (0..1000)
        .map(|_| std::os::unix::net::UnixStream::connect(seqd.socket()).unwrap())
        .collect();
    let mut c = seqd.client();
    for want in 1..=100 {
        assert_eq!(c.group_next("served").unwrap().seq, want);
    }
    let open = c
        .metrics()
        .unwrap()
        .lines()
        .find(|l| l.starts_with("seqd_connections_open "))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .unwrap();
    assert!(open >= 1001, "{open} connections open");
    drop(idle);
}

#[test]
fn connections_beyond_the_limit_wait_until_one_closes() {
    let seqd = Seqd::start(SeqdOptions {
        args: vec!["--max-connections".into(), "3".into()],
        ..SeqdOptions::local()
    });
    let held: Vec<_> = (0..3).map(|_| seqd.text()).collect();
    // The fourth is accepted by the kernel but not served yet.
    let mut fourth = seqd.text();
    fourth
        .writer
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    fourth
        .reader
        .get_ref()
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    fourth.send_raw(b"PING\n");
    let mut line = String::new();
    assert!(
        std::io::BufRead::read_line(&mut fourth.reader, &mut line).is_err(),
        "served beyond the limit: {line}"
    );
    drop(held);
    fourth
        .reader
        .get_ref()
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    assert_eq!(fourth.read_line(), "OK pong");
}

#[test]
fn a_connection_has_at_most_max_inflight_requests_in_progress() {
    use seqd_client::seqd_protocol::{Conversation, Request};
    let redis = RedisServer::start();
    let seqd = Seqd::start(SeqdOptions {
        args: vec![
            "--max-inflight".into(),
            "1".into(),
            "--redis-timeout-ms".into(),
            "500".into(),
            // Keep the breaker closed so every request waits for Redis.
            "--breaker-threshold".into(),
            "1000".into(),
        ],
        ..SeqdOptions::redis(&redis)
    });
    let mut c = seqd.client();
    c.group_next("warm").unwrap();
    redis.hang();
    let started = std::time::Instant::now();
    let results = c
        .pipeline(
            (0..4)
                .map(|_| Request::ConvNext(Conversation::Group { id: "slow".into() }))
                .collect(),
        )
        .unwrap();
    let elapsed = started.elapsed();
    redis.resume();
    assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
    // One at a time, each waiting out the 500 ms timeout: at least 2 s. (Four
    // in parallel would all be answered after about 500 ms.)
    assert!(elapsed >= Duration::from_millis(1900), "{elapsed:?}");
}

fn http_get(port: u16, path: &str) -> (String, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    (head.to_string(), body.to_string())
}

/// Checks the Prometheus text format line by line: comments are `# HELP`,
/// `# TYPE` or `# EOF`; samples are `name{labels} value` with a numeric
/// value.
fn parse_exposition(text: &str) -> Vec<(String, f64)> {
    let mut samples = Vec::new();
    for line in text.lines() {
        if let Some(c) = line.strip_prefix("# ") {
            assert!(
                c.starts_with("HELP ") || c.starts_with("TYPE ") || c == "EOF",
                "{line}"
            );
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value: {line}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value: {line}"));
        let name = series.split('{').next().unwrap();
        assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "{line}"
        );
        if let Some(labels) = series.strip_prefix(name) {
            assert!(
                labels.is_empty() || (labels.starts_with('{') && labels.ends_with('}')),
                "{line}"
            );
        }
        samples.push((series.to_string(), value));
    }
    samples
}

#[test]
fn prometheus_can_scrape_metrics_over_loopback_http() {
    let port = free_port();
    let seqd = Seqd::start(SeqdOptions {
        args: vec!["--metrics-listen".into(), format!("127.0.0.1:{port}")],
        ..SeqdOptions::local()
    });
    seqd.client().group_next("scraped").unwrap();
    let (head, body) = http_get(port, "/metrics");
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4"),
        "{head}"
    );
    let samples = parse_exposition(&body);
    let get = |s: &str| samples.iter().find(|(k, _)| k == s).map(|(_, v)| *v);
    assert_eq!(
        get(r#"seqd_requests_total{op="conv_next",outcome="ok"}"#),
        Some(1.0)
    );
    assert_eq!(
        get(r#"seqd_sequence_numbers_issued_total{kind="conv",source="local"}"#),
        Some(1.0)
    );
    assert_eq!(get(r#"seqd_breaker_state{master="default"}"#), Some(0.0));
    assert!(get("seqd_connections_open").is_some());
    // The first number of a key reserved its ceiling with an fsync; the
    // next ones, within the reserve, commit without one.
    let fsyncs = get("seqd_store_fsyncs_total").expect("fsync counter");
    let commits = get("seqd_store_commits_total").expect("commit counter");
    assert!(fsyncs >= 1.0 && commits >= fsyncs, "{fsyncs} {commits}");
    for _ in 0..5 {
        seqd.client().group_next("scraped").unwrap();
    }
    // Answered from the journal, they reach SQLite together shortly after:
    // a commit more, and no fsync more.
    let scrape = |s: &str| {
        let samples = parse_exposition(&http_get(port, "/metrics").1);
        samples.iter().find(|(k, _)| k == s).map(|(_, v)| *v)
    };
    wait_until("the five numbers committed", Duration::from_secs(5), || {
        scrape("seqd_store_commits_total").unwrap() > commits
    });
    assert_eq!(scrape("seqd_store_fsyncs_total"), Some(fsyncs));
    // The same exposition over the socket parses too.
    parse_exposition(&seqd.client().metrics().unwrap());
    let (head, _) = http_get(port, "/other");
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
}

#[test]
fn metrics_over_http_refuse_non_loopback_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let out = seqd_command(&dir.path().join("s.sock"), &dir.path().join("d"))
        .args(["--metrics-listen", "0.0.0.0:9187"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("only loopback addresses"));
    assert!(
        !dir.path().join("s.sock").exists(),
        "the socket is removed on a failed start"
    );
}

#[test]
fn the_socket_seqd_binds_is_0660_with_the_configured_group() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let seqd = Seqd::start(SeqdOptions::local());
    let meta = std::fs::metadata(seqd.socket()).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    // Root may hand the socket to any group; others only to their own.
    let gid = if unsafe { libc::getuid() } == 0 {
        4242
    } else {
        unsafe { libc::getgid() }
    };
    let grouped = Seqd::start(SeqdOptions {
        args: vec!["--socket-group".into(), gid.to_string()],
        ..SeqdOptions::local()
    });
    let meta = std::fs::metadata(grouped.socket()).unwrap();
    assert_eq!(meta.gid(), gid);
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
}

#[test]
fn a_socket_directory_seqd_creates_is_not_world_writable() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let sock_dir = dir.path().join("run").join("seqd");
    let sock = sock_dir.join("seqd.sock");
    let mut child = seqd_command(&sock, &dir.path().join("data"))
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_until("the socket", STARTUP_DEADLINE, || {
        std::os::unix::net::UnixStream::connect(&sock).is_ok()
    });
    let mode = std::fs::metadata(&sock_dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o755);
    // SAFETY: signalling the child we spawned.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

/// The Debian package: built by `scripts/package.sh` (from the tests'
/// debug build), it holds what an operator needs where Debian expects it,
/// and the binaries unpacked from it run: `--version` names the protocol
/// versions, and seqd answers a `PING` on its socket. `lintian` (which the
/// test script installs) finds no error in it.
#[test]
fn the_debian_package_holds_the_service_and_runs_from_its_files() {
    let built = std::process::Command::new(repo_file("scripts/package.sh"))
        .arg("--dev")
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let deb = String::from_utf8(built.stdout).unwrap().trim().to_string();
    assert!(deb.ends_with("_amd64.deb"), "{deb}");
    let dpkg = |args: &[&str]| {
        let out = std::process::Command::new("dpkg-deb")
            .args(args)
            .arg(&deb)
            .output()
            .unwrap();
        assert!(out.status.success(), "dpkg-deb {args:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let contents = dpkg(&["--contents"]);
    for path in [
        "./usr/bin/seqd",
        "./usr/bin/seqctl",
        "/systemd/system/seqd.service",
        "/systemd/system/seqd.socket",
        "./etc/seqd/seqd.env",
        "./usr/lib/sysusers.d/seqd.conf",
        "./usr/share/doc/seqd/redis-seqd.conf",
        "./usr/share/doc/seqd/copyright",
    ] {
        assert!(contents.contains(path), "{path} missing:\n{contents}");
    }
    assert!(
        contents.contains("./lib/systemd/system/seqd.service")
            || contents.contains("./usr/lib/systemd/system/seqd.service"),
        "units where Debian expects them:\n{contents}"
    );
    // `program option deb dir`: dpkg-deb --control, then dpkg -x.
    let extract = |program: &str, option: &str, dir: &std::path::Path| {
        let status = std::process::Command::new(program)
            .arg(option)
            .arg(&deb)
            .arg(dir)
            .status()
            .unwrap();
        assert!(status.success(), "{program} {option}");
    };
    let scratch = tempfile::tempdir().unwrap();
    let control = scratch.path().join("control");
    extract("dpkg-deb", "--control", &control);
    let conffiles = std::fs::read_to_string(control.join("conffiles")).unwrap();
    assert_eq!(conffiles.trim(), "/etc/seqd/seqd.env");
    let postinst = std::fs::read_to_string(control.join("postinst")).unwrap();
    assert!(postinst.contains("systemd-sysusers"), "{postinst}");
    // Unpacked as dpkg would, and run from there.
    let root = scratch.path().join("root");
    extract("dpkg", "-x", &root);
    for bin in ["seqd", "seqctl"] {
        let out = std::process::Command::new(root.join("usr/bin").join(bin))
            .arg("--version")
            .output()
            .unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        assert_eq!(
            text.trim(),
            format!(
                "{bin} {} (protocol versions {} to {})",
                env!("CARGO_PKG_VERSION"),
                seqd_client::seqd_protocol::MIN_PROTOCOL_VERSION,
                seqd_client::seqd_protocol::PROTOCOL_VERSION
            )
        );
    }
    let socket = scratch.path().join("seqd.sock");
    let mut seqd = std::process::Command::new(root.join("usr/bin/seqd"))
        .arg("--socket")
        .arg(&socket)
        .arg("--data-dir")
        .arg(scratch.path().join("data"))
        .env_remove("REDIS_URL")
        .env_remove("REDIS_HOST")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_until(
        "the packaged seqd's socket",
        Duration::from_secs(20),
        || std::os::unix::net::UnixStream::connect(&socket).is_ok(),
    );
    let pong = std::process::Command::new(root.join("usr/bin/seqctl"))
        .arg("--socket")
        .arg(&socket)
        .arg("ping")
        .output()
        .unwrap();
    let _ = seqd.kill();
    let _ = seqd.wait();
    assert_eq!(String::from_utf8_lossy(&pong.stdout).trim(), "OK pong");
    // lintian, where it is installed (scripts/test.sh installs it).
    if let Ok(out) = std::process::Command::new("lintian")
        .args(["--fail-on", "error"])
        .arg(&deb)
        .output()
    {
        assert!(
            out.status.success(),
            "lintian: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    } else {
        println!("lintian is not installed: not run");
    }
}

/// A restart loses no request: a client that connected before SIGTERM and
/// sends its request just after it is answered (its request was on the
/// way), not cut off; seqd then stops by itself.
#[test]
fn requests_that_arrive_just_after_sigterm_on_open_connections_are_answered() {
    use std::io::{BufRead, BufReader, Write};
    let mut seqd = Seqd::start(SeqdOptions::local());
    let mut talked = seqd.text();
    assert_eq!(talked.cmd("CONV NEXT group g"), "OK seq=1 source=local");
    // Connected, nothing sent yet (a one-shot client between its connect
    // and its request).
    let silent = std::os::unix::net::UnixStream::connect(seqd.socket()).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // Both accepted, and the scrape's own connection.
    wait_until("both connections accepted", Duration::from_secs(10), || {
        seqd.metric("seqd_connections_open ") == 3
    });
    // SAFETY: kill has no memory preconditions.
    unsafe { libc::kill(seqd.pid() as i32, libc::SIGTERM) };
    wait_until("seqd drains", Duration::from_secs(10), || {
        seqd.log_text().contains("SIGTERM: draining")
    });
    assert_eq!(talked.cmd("CONV NEXT group g"), "OK seq=2 source=local");
    (&silent).write_all(b"PING\n").unwrap();
    let mut line = String::new();
    BufReader::new(&silent).read_line(&mut line).unwrap();
    assert_eq!(line, "OK pong\n");
    let status = seqd.wait();
    assert!(status.success(), "{status}");
}
