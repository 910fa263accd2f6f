//! Bounded under abuse: what one careless or hostile client
//! can make seqd hold. Memory figures are printed; the assertions are
//! bounds on RSS growth with generous margins, not timings.

use seqd_client::seqd_protocol::{codec, ClientMessage, ErrorCode, Request, ServerMessage};
use seqd_tests::*;
use std::io::Write;
use std::time::{Duration, Instant};

const MIB: u64 = 1024 * 1024;

/// Resident memory of a process, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .expect("VmRSS");
    kib * 1024
}

/// A counter of seqd's metrics (0 when absent).
fn counter(seqd: &Seqd, line_start: &str) -> u64 {
    seqd.metric(line_start)
}

/// Waits up to `limit` for `cond`; true when it held. For effects that
/// happen at once without a bound and never with one.
fn within(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[test]
fn a_client_that_never_reads_holds_at_most_the_output_limit() {
    let (redis, seqd) = redis_seqd(&["--redis-timeout-ms", "5000"]);
    let mut c = seqd.client();
    // 64 keys of 1 MiB each, written straight into Redis.
    let value = "v".repeat(MIB as usize);
    for k in 0..64 {
        redis.cmd(&["SET", &format!("big{k}"), &value]);
    }
    assert_eq!(
        c.cache_get("big0").unwrap().map(|v| v.len()),
        Some(value.len())
    );
    let ok = r#"seqd_requests_total{op="cache_get",outcome="ok"} "#;
    let answered = counter(&seqd, ok);
    let gets = "seqd_cache_redis_gets_total ";
    let gets_before = counter(&seqd, gets);
    let before = rss(seqd.pid());
    // 256 requests of those values (7 KB sent), and never a read. Redis
    // is held still while the reads start, so that none of them is turned
    // away by the read-side limit alone (without a bound on running
    // reads, one per key starts at once).
    redis.hang();
    let mut s = seqd.raw_binary(1, "abuser");
    let mut burst = Vec::new();
    for id in 0..256u64 {
        let request = Request::CacheGet {
            key: format!("big{}", id % 64),
        };
        burst
            .extend(codec::encode_frame(&ClientMessage::Request { id, request }, 1 << 20).unwrap());
    }
    s.write_all(&burst).unwrap();
    wait_until("reads in flight", Duration::from_secs(10), || {
        counter(&seqd, gets) >= gets_before + 4
    });
    redis.resume();
    // Without a bound all 256 replies are made within a moment.
    let all = within(Duration::from_secs(5), || {
        counter(&seqd, ok) >= answered + 256
    });
    let after = rss(seqd.pid());
    let grew = after.saturating_sub(before);
    println!(
        "256 unread 1 MiB replies: RSS {} MiB -> {} MiB (+{} MiB); all answered: {all}",
        before / MIB,
        after / MIB,
        grew / MIB
    );
    assert!(grew < 64 * MIB, "grew {} MiB", grew / MIB);
    assert!(
        !all,
        "requests kept running for a client that does not read"
    );
    // Everyone else is served meanwhile.
    assert_eq!(
        c.cache_get("big1").unwrap().map(|v| v.len()),
        Some(value.len())
    );
    drop(s);
}

#[test]
fn a_fan_out_request_is_refused_before_it_costs_memory() {
    let (_redis, seqd) = redis_seqd(&["--redis-timeout-ms", "5000"]);
    let mut c = seqd.client();
    c.cache_set("big", &vec![b'v'; MIB as usize], None).unwrap();
    c.cache_set("small", b"s", None).unwrap();
    let before = rss(seqd.pid());
    // One 1 MiB key named 200 times: a 12 KB request for a 200 MiB reply.
    let err = c.cache_get_many(&["big"; 200]).unwrap_err();
    let after = rss(seqd.pid());
    println!(
        "get-many of one 1 MiB key x200: RSS {} MiB -> {} MiB; answer: {err}",
        before / MIB,
        after / MIB
    );
    assert_eq!(err.code(), Some(ErrorCode::TooLarge), "{err}");
    assert!(err.to_string().contains("above the reply limit"), "{err}");
    assert!(after.saturating_sub(before) < 64 * MIB);
    // Too many keys at all.
    let keys: Vec<String> = (0..1001).map(|i| format!("k{i}")).collect();
    let names: Vec<&str> = keys.iter().map(String::as_str).collect();
    let err = c.cache_get_many(&names).unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::TooLarge), "{err}");
    assert!(err.to_string().contains("--max-keys"), "{err}");
    // A key asked twice among others is answered twice, in order.
    let got = c.cache_get_many(&["small", "nope", "small"]).unwrap();
    assert_eq!(got, vec![Some(b"s".to_vec()), None, Some(b"s".to_vec())]);
}

/// `echo PING | socat` as a child with `gid` (and `uid` if given): a peer
/// with other credentials than this test's.
fn ping_as(socket: &std::path::Path, uid: Option<u32>, gid: u32) -> (String, Duration) {
    use std::os::unix::process::CommandExt;
    let mut cmd = std::process::Command::new("sh");
    cmd.arg("-c")
        .arg(format!(
            "echo PING | socat - UNIX-CONNECT:{}",
            socket.display()
        ))
        .gid(gid);
    if let Some(uid) = uid {
        cmd.uid(uid);
    }
    let started = Instant::now();
    let out = output_within_deadline(&mut cmd);
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        started.elapsed(),
    )
}

#[test]
fn refused_peers_take_no_slot_from_allowed_ones() {
    let seqd = Seqd::start_unchecked(SeqdOptions {
        args: ["--allow-gids", "4242", "--max-connections", "4"]
            .map(String::from)
            .to_vec(),
        ..SeqdOptions::local()
    });
    // This test's process (gid 0) is not allowed: 20 connections that
    // say nothing.
    let idle: Vec<_> = (0..20)
        .map(|_| std::os::unix::net::UnixStream::connect(seqd.socket()).unwrap())
        .collect();
    let (reply, took) = ping_as(&seqd.socket(), None, 4242);
    println!("an allowed PING behind 20 refused idle peers took {took:?}");
    assert_eq!(reply, "OK pong\n");
    // A refused peer that speaks is still told why.
    let mut t = TextConn::connect(&seqd.socket());
    assert!(t.cmd("PING").starts_with("ERR forbidden "));
    drop(idle);
}

#[test]
fn one_uid_holds_at_most_its_share_of_connections() {
    use std::os::unix::fs::PermissionsExt;
    let seqd = Seqd::start(SeqdOptions {
        args: ["--max-connections-per-uid", "3", "--socket-group", "4242"]
            .map(String::from)
            .to_vec(),
        ..SeqdOptions::local()
    });
    // Let another uid reach the socket (group 4242, mode 0660).
    std::fs::set_permissions(seqd.dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    // The harness's own readiness check may still hold a slot for a
    // moment after it closed: take each slot once it is free.
    let mut held: Vec<TextConn> = (0..3)
        .map(|_| {
            let mut t = seqd.text();
            wait_until("a free slot", Duration::from_secs(5), || {
                if t.cmd("PING") == "OK pong" {
                    return true;
                }
                t = seqd.text();
                false
            });
            t
        })
        .collect();
    let reply = seqd.text().cmd("PING");
    assert!(
        reply.starts_with("ERR unavailable ") && reply.contains("--max-connections-per-uid"),
        "{reply}"
    );
    // Another uid is not affected.
    let (reply, _) = ping_as(&seqd.socket(), Some(65534), 4242);
    assert_eq!(reply, "OK pong\n");
    // A slot given back is a slot again.
    held.pop();
    wait_until("the slot given back", Duration::from_secs(5), || {
        seqd.text().cmd("PING") == "OK pong"
    });
}

#[test]
fn one_process_holds_at_most_its_share_and_the_other_processes_of_its_uid_are_served() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let seqd = Seqd::start(SeqdOptions::local().with_args(&["--max-connections-per-pid", "3"]));
    // A runaway child process of this uid opens 5 connections and keeps
    // them until its stdin closes.
    let runaway = r#"
import socket, sys
held = []
for _ in range(5):
    s = socket.socket(socket.AF_UNIX)
    s.connect(sys.argv[1])
    s.sendall(b"PING\n")
    print(s.makefile().readline().strip(), flush=True)
    held.append(s)
sys.stdin.read()
"#;
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(runaway)
        .arg(seqd.socket())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let replies: Vec<String> = (0..5).map(|_| lines.next().unwrap().unwrap()).collect();
    assert_eq!(
        &replies[..3],
        ["OK pong", "OK pong", "OK pong"],
        "{replies:?}"
    );
    for r in &replies[3..] {
        assert!(
            r.starts_with("ERR unavailable ") && r.contains("--max-connections-per-pid"),
            "{r}"
        );
    }
    // This test's process: the same uid, another pid, served while the
    // runaway holds its share.
    let mut mine: Vec<TextConn> = (0..2).map(|_| seqd.text()).collect();
    for t in &mut mine {
        assert_eq!(
            t.cmd("CONV NEXT group neighbours").split(' ').next(),
            Some("OK")
        );
    }
    assert_eq!(field(&seqd.text().cmd("HEALTH"), "mode"), "local");
    // The runaway gone, its slots are given back.
    drop(child.stdin.take());
    child.wait().unwrap();
    drop(mine);
    wait_until("the slots given back", Duration::from_secs(5), || {
        let out = Command::new("python3")
            .arg("-c")
            .arg(
                runaway
                    .replace("range(5)", "range(3)")
                    .replace("sys.stdin.read()", ""),
            )
            .arg(seqd.socket())
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout) == "OK pong\nOK pong\nOK pong\n"
    });
}

#[test]
fn a_low_open_files_limit_lowers_the_connection_limit_instead_of_failing_accepts() {
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    let (socket, log) = (dir.path().join("s.sock"), dir.path().join("log"));
    let mut cmd = seqd_command(&socket, &dir.path().join("data"));
    // SAFETY: setrlimit(2) between fork and exec touches no memory.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: 256,
                rlim_max: 256,
            };
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
            Ok(())
        });
    }
    let mut child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    wait_until("the socket", STARTUP_DEADLINE, || {
        std::os::unix::net::UnixStream::connect(&socket).is_ok()
    });
    let text = || std::fs::read_to_string(&log).unwrap();
    wait_until("the limit in the log", Duration::from_secs(5), || {
        text().contains("serving at most 160")
    });
    // Twice what the descriptors allow.
    let held: Vec<_> = (0..320)
        .map(|_| std::os::unix::net::UnixStream::connect(&socket).unwrap())
        .collect();
    let flooded = within(Duration::from_secs(2), || {
        text().matches("accept failed").count() > 1
    });
    println!(
        "320 connections at an open-files limit of 256: {} 'accept failed' lines",
        text().matches("accept failed").count()
    );
    assert!(!flooded, "{}", text());
    drop(held);
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn a_thousand_deferred_prefix_deletes_are_replayed_in_one_pass() {
    let (redis, seqd) = redis_seqd(&["--redis-timeout-ms", "200", "--probe-base-ms", "50"]);
    // 20,000 settings keys of 1,000 users, and two keys that must stay.
    redis.cmd(&[
        "EVAL",
        "for u=1,1000 do for i=1,20 do redis.call('SET','user:'..u..':k'..i,'x') end end return 1",
        "0",
    ]);
    redis.cmd(&["SET", "admin:defaults:all", "keep"]);
    redis.cmd(&["SET", "seq:group:g", "5"]);
    let mut c = seqd.client();
    redis.hang();
    for u in 1..=1000 {
        let (_, deferred) = c.cache_del_prefix(&format!("user:{u}:")).unwrap();
        assert!(deferred);
    }
    let health = |name: &str| field(&seqd.text().cmd("HEALTH"), name).to_string();
    assert_eq!(health("outbox"), "1000");
    redis.resume();
    let started = Instant::now();
    wait_until(
        "the outbox replayed and the breaker closed",
        Duration::from_secs(15),
        || health("breaker") == "closed" && health("outbox") == "0",
    );
    let took = started.elapsed();
    println!(
        "1,000 deferred prefixes over 20,000 keys: breaker closed {took:?} after Redis returned"
    );
    assert!(took < Duration::from_secs(8), "{took:?}");
    assert_eq!(
        redis.cmd(&["DBSIZE"]).as_int(),
        2,
        "every user key gone, the others kept"
    );
    assert_eq!(
        redis.get_bytes("admin:defaults:all"),
        Some(b"keep".to_vec())
    );
}

#[test]
fn bulk_gap_batches_do_not_push_other_requests_off_redis() {
    use seqd_client::seqd_protocol::Source;
    // A 1 s operation timeout: on these two shared cores the debug build's
    // own work on 320,000 results can hold a reply for ~250 ms, which is
    // not what this test is about (Redis queueing and the breaker).
    let (_redis, seqd) = redis_seqd(&["--redis-timeout-ms", "1000"]);
    // One client pipelines 32 batches of 10,000 events (a stream each).
    let mut bulk =
        seqd_client::Client::connect_with_timeout(seqd.socket(), Duration::from_secs(120)).unwrap();
    let requests: Vec<Request> = (0..32)
        .map(|b| {
            let stream = format!("S{b}");
            Request::GapBatch(
                (1..=10_000)
                    .map(|n| seqd_client::gap_event("bulk", &stream, n))
                    .collect(),
            )
        })
        .collect();
    let worker = std::thread::spawn(move || {
        bulk.pipeline(requests)
            .unwrap()
            .into_iter()
            .filter(|r| r.is_ok())
            .count()
    });
    let events = r#"seqd_gap_events_total{exchange="bulk",event="normal"} "#;
    wait_until("the bulk work under way", Duration::from_secs(60), || {
        counter(&seqd, events) > 0
    });
    // Meanwhile another client's numbers keep coming from Redis.
    let mut c = seqd.client();
    let (mut asked, mut local, mut slowest) = (0, 0, Duration::ZERO);
    while !worker.is_finished() || asked < 101 {
        let started = Instant::now();
        if c.group_next("small").unwrap().source == Source::Local {
            local += 1;
        }
        slowest = slowest.max(started.elapsed());
        asked += 1;
    }
    let answered = worker.join().unwrap();
    let opened = counter(&seqd, r#"seqd_breaker_transitions_total{to="open"} "#);
    println!(
        "during 32 batches of 10,000 events: {local} of {asked} NEXTs answered locally, slowest {slowest:?}, breaker opened {opened} times"
    );
    assert_eq!(answered, 32);
    assert_eq!(counter(&seqd, events), 320_000);
    assert_eq!((local, opened), (0, 0));
}

#[test]
fn partial_frames_of_many_connections_stay_within_the_buffer_budget() {
    let seqd = Seqd::start(SeqdOptions {
        args: [
            "--max-buffered-bytes",
            &(32 * MIB).to_string(),
            "--max-frame",
            &(64 * MIB).to_string(),
        ]
        .map(String::from)
        .to_vec(),
        ..SeqdOptions::local()
    });
    let before = rss(seqd.pid());
    // 64 connections, each half-way (2 MiB) into a 4 MiB frame.
    let mut conns = Vec::new();
    let mut writers = Vec::new();
    for _ in 0..64 {
        let s = seqd.raw_binary(1, "abuser");
        let mut w = s.try_clone().unwrap();
        // Blocks once seqd stops reading this connection (its bytes then
        // wait in the kernel); ends when the test closes the connection.
        writers.push(std::thread::spawn(move || {
            let mut frame = (4 * MIB as u32).to_be_bytes().to_vec();
            frame.extend_from_slice(&vec![0u8; 2 * MIB as usize]);
            let _ = w.write_all(&frame);
        }));
        conns.push(s);
    }
    // Without a budget every connection's 2 MiB is taken in (and its
    // 4 MiB reserved): wait up to 5 s for that to show.
    let ballooned = within(Duration::from_secs(5), || {
        rss(seqd.pid()) > before + 96 * MIB
    });
    let after = rss(seqd.pid());
    println!(
        "64 connections half-way into 4 MiB frames: RSS {} MiB -> {} MiB (budget 32 MiB)",
        before / MIB,
        after / MIB
    );
    assert!(
        !ballooned && after.saturating_sub(before) < 64 * MIB,
        "grew {} MiB",
        (after - before) / MIB
    );
    // The metrics show the budget in use.
    let held = counter(&seqd, "seqd_buffered_bytes ");
    assert_eq!(counter(&seqd, "seqd_buffer_budget_bytes "), 32 * MIB);
    assert!((4 * MIB..=32 * MIB).contains(&held), "{held} bytes held");
    // Others are still served.
    assert_eq!(seqd.text().cmd("PING"), "OK pong");
    // A frame larger than the whole budget is refused at once.
    let mut s = seqd.raw_binary(1, "abuser");
    std::io::Write::write_all(&mut s, &(33 * MIB as u32).to_be_bytes()).unwrap();
    match codec::read_frame::<_, ServerMessage>(&mut s, 1 << 20).unwrap() {
        ServerMessage::Error { error } => {
            assert_eq!(error.code, ErrorCode::TooLarge);
            assert!(error.message.contains("--max-buffered-bytes"), "{error}");
        }
        other => panic!("{other:?}"),
    }
    for s in &conns {
        let _ = s.shutdown(std::net::Shutdown::Both);
    }
    for w in writers {
        w.join().unwrap();
    }
}
