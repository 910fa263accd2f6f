//! Both wire protocols against a live seqd: the handshake, ids and
//! out-of-order responses, and bad input — which gets a clear error, loses
//! nothing and never affects another client.

use seqd_protocol::codec::{encode_frame, read_frame};
use seqd_protocol::*;
use seqd_tests::*;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

const MAX: usize = DEFAULT_MAX_FRAME;

fn raw(seqd: &Seqd) -> UnixStream {
    let s = UnixStream::connect(seqd.socket()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

fn hello(s: &mut UnixStream) {
    let frame = encode_frame(
        &ClientMessage::Hello {
            version: PROTOCOL_VERSION,
            client: "test".into(),
        },
        MAX,
    )
    .unwrap();
    s.write_all(&frame).unwrap();
    match read_frame::<_, ServerMessage>(s, MAX).unwrap() {
        ServerMessage::Hello { version, server } => {
            assert_eq!(version, PROTOCOL_VERSION);
            assert!(server.starts_with("seqd/"));
        }
        other => panic!("expected hello, got {other:?}"),
    }
}

fn send(s: &mut UnixStream, id: u64, request: Request) {
    s.write_all(&encode_frame(&ClientMessage::Request { id, request }, MAX).unwrap())
        .unwrap();
}

fn recv(s: &mut UnixStream) -> ServerMessage {
    read_frame::<_, ServerMessage>(s, MAX).unwrap()
}

/// Expects a connection-level error with `code`, then the close.
fn expect_fatal(s: &mut UnixStream, code: ErrorCode) {
    match recv(s) {
        ServerMessage::Error { error } => assert_eq!(error.code, code, "{error}"),
        other => panic!("expected a fatal error, got {other:?}"),
    }
    let mut rest = Vec::new();
    assert_eq!(
        s.read_to_end(&mut rest).unwrap(),
        0,
        "connection closed after the error"
    );
}

/// A well-behaved client that keeps issuing numbers on its own key while a
/// test misbehaves; returns its numbers when stopped.
struct Bystander {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<Vec<u64>>,
}

impl Bystander {
    fn start(seqd: &Seqd) -> Bystander {
        let stop = Arc::new(AtomicBool::new(false));
        let mut c = seqd.client();
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut got = Vec::new();
            while !flag.load(Ordering::Relaxed) || got.len() < 20 {
                got.push(c.group_next("bystander").expect("bystander unaffected").seq);
            }
            got
        });
        Bystander { stop, handle }
    }

    /// Stops and asserts the bystander got 1, 2, 3, ... with no error.
    fn finish(self) {
        self.stop.store(true, Ordering::Relaxed);
        let got = self.handle.join().expect("bystander thread");
        assert_eq!(got, (1..=got.len() as u64).collect::<Vec<_>>());
    }
}

#[test]
fn binary_ping_matches_the_documented_bytes() {
    let seqd = Seqd::start(SeqdOptions::local());
    let mut s = raw(&seqd);
    hello(&mut s);
    s.write_all(&[0, 0, 0, 16, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])
        .unwrap();
    let mut reply = [0u8; 24];
    s.read_exact(&mut reply).unwrap();
    assert_eq!(
        reply,
        [0, 0, 0, 20, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    );
}

#[test]
fn version_mismatch_is_refused_with_its_code() {
    let seqd = Seqd::start(SeqdOptions::local());
    let mut s = raw(&seqd);
    s.write_all(
        &encode_frame(
            &ClientMessage::Hello {
                version: 99,
                client: "future".into(),
            },
            MAX,
        )
        .unwrap(),
    )
    .unwrap();
    expect_fatal(&mut s, ErrorCode::VersionMismatch);
}

#[test]
fn a_request_before_the_hello_is_refused() {
    let seqd = Seqd::start(SeqdOptions::local());
    let mut s = raw(&seqd);
    send(&mut s, 1, Request::Ping);
    expect_fatal(&mut s, ErrorCode::BadRequest);
}

#[test]
fn responses_repeat_ids_and_may_be_pipelined() {
    let redis = RedisServer::start();
    let seqd = Seqd::start(SeqdOptions::redis(&redis));
    let mut s = raw(&seqd);
    hello(&mut s);
    // 300 requests in flight at once, with ids the client chose.
    let ids: Vec<u64> = (0..300).map(|i| 1_000_000 + i * 7).collect();
    let mut burst = Vec::new();
    for id in &ids {
        let request = if id % 2 == 0 {
            Request::ConvNext(Conversation::Group { id: "p".into() })
        } else {
            Request::Ping
        };
        burst.extend(encode_frame(&ClientMessage::Request { id: *id, request }, MAX).unwrap());
    }
    s.write_all(&burst).unwrap();
    let mut seen = std::collections::HashMap::new();
    for _ in &ids {
        match recv(&mut s) {
            ServerMessage::Response { id, result } => assert!(
                seen.insert(id, result.unwrap()).is_none(),
                "id {id} answered twice"
            ),
            other => panic!("{other:?}"),
        }
    }
    let mut seqs = Vec::new();
    for id in &ids {
        match &seen[id] {
            Response::ConvNumber {
                seq,
                source: Source::Redis,
                host: None,
            } => {
                assert_eq!(id % 2, 0);
                seqs.push(*seq);
            }
            Response::Pong => assert_eq!(id % 2, 1),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        assert_unique("pipelined", &seqs),
        (1..=150).collect::<Vec<_>>()
    );
    // One key on one connection takes effect in the order sent.
    assert_strictly_increasing("in id order", &seqs);
}

#[test]
fn an_oversized_frame_is_refused_without_harming_others() {
    let seqd = Seqd::start(SeqdOptions::local());
    let bystander = Bystander::start(&seqd);
    let mut s = raw(&seqd);
    hello(&mut s);
    // 9 MiB announced, above the 8 MiB default: refused on the length alone.
    s.write_all(&(9u32 * 1024 * 1024).to_be_bytes()).unwrap();
    expect_fatal(&mut s, ErrorCode::TooLarge);
    // Also as the very first frame (before any hello): a binary
    // connection starts with 0x00, the high byte of the hello's length.
    let mut s = raw(&seqd);
    s.write_all(&[0x00, 0xff, 0xff, 0xff]).unwrap();
    expect_fatal(&mut s, ErrorCode::TooLarge);
    bystander.finish();
}

#[test]
fn garbage_frames_get_an_error_frame_and_a_close() {
    let seqd = Seqd::start(SeqdOptions::local());
    let bystander = Bystander::start(&seqd);
    for junk in [&[0xde, 0xad, 0xbe, 0xef, 0x00][..], &[7, 7, 7], &[0; 3]] {
        let mut s = raw(&seqd);
        hello(&mut s);
        let mut frame = (junk.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(junk);
        s.write_all(&frame).unwrap();
        expect_fatal(&mut s, ErrorCode::BadRequest);
    }
    // Garbage instead of a hello.
    let mut s = raw(&seqd);
    s.write_all(&[0, 0, 0, 2, 0xff, 0xff]).unwrap();
    expect_fatal(&mut s, ErrorCode::BadRequest);
    bystander.finish();
}

#[test]
fn an_undecodable_request_with_an_intact_id_gets_an_error_and_the_connection_lives() {
    let seqd = Seqd::start(SeqdOptions::local());
    let mut s = raw(&seqd);
    hello(&mut s);
    // Request tag, id 42, then an unknown request variant 999.
    let mut payload = vec![1, 0, 0, 0];
    payload.extend_from_slice(&42u64.to_le_bytes());
    payload.extend_from_slice(&999u32.to_le_bytes());
    let mut frame = (payload.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&payload);
    s.write_all(&frame).unwrap();
    match recv(&mut s) {
        ServerMessage::Response {
            id: 42,
            result: Err(e),
        } => assert_eq!(e.code, ErrorCode::BadRequest),
        other => panic!("{other:?}"),
    }
    // A string that is not UTF-8 inside an otherwise valid request.
    let mut payload = vec![1, 0, 0, 0];
    payload.extend_from_slice(&43u64.to_le_bytes());
    payload.extend_from_slice(&4u32.to_le_bytes()); // ConvGet
    payload.extend_from_slice(&1u32.to_le_bytes()); // Group
    payload.extend_from_slice(&2u64.to_le_bytes());
    payload.extend_from_slice(&[0xc3, 0x28]);
    let mut frame = (payload.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&payload);
    s.write_all(&frame).unwrap();
    match recv(&mut s) {
        ServerMessage::Response {
            id: 43,
            result: Err(e),
        } => assert_eq!(e.code, ErrorCode::BadRequest),
        other => panic!("{other:?}"),
    }
    send(&mut s, 44, Request::Ping);
    assert_eq!(
        recv(&mut s),
        ServerMessage::Response {
            id: 44,
            result: Ok(Response::Pong)
        }
    );
}

#[test]
fn a_declared_length_past_the_payload_is_named_in_the_error() {
    let seqd = Seqd::start(SeqdOptions::local());
    let mut s = raw(&seqd);
    hello(&mut s);
    // CacheGet whose key declares 1 GiB and carries 3 bytes.
    let mut payload = vec![1, 0, 0, 0];
    payload.extend_from_slice(&45u64.to_le_bytes());
    payload.extend_from_slice(&12u32.to_le_bytes()); // CacheGet
    payload.extend_from_slice(&(1u64 << 30).to_le_bytes());
    payload.extend_from_slice(b"abc");
    let mut frame = (payload.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&payload);
    s.write_all(&frame).unwrap();
    match recv(&mut s) {
        ServerMessage::Response {
            id: 45,
            result: Err(e),
        } => {
            assert_eq!(e.code, ErrorCode::BadRequest);
            assert!(
                e.message.contains(
                    "a declared length or value runs past the end of the 27-byte payload"
                ),
                "{}",
                e.message
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn text_connections_may_open_with_blank_lines_tabs_or_cr() {
    let seqd = Seqd::start(SeqdOptions::local());
    for opening in [
        "\n",
        "\r\n",
        "\n\n\t\n",
        "\tPING\n",
        " PING\n",
        "\r\nPING\r\n",
    ] {
        let mut t = seqd.text();
        t.send_raw(opening.as_bytes());
        let reply = if opening.contains("PING") {
            t.read_line()
        } else {
            t.cmd("PING")
        };
        assert_eq!(
            reply.trim_end_matches('\r'),
            "OK pong",
            "opening {opening:?}"
        );
    }
}

#[test]
fn a_truncated_frame_and_a_stalled_sender_do_not_delay_others() {
    let seqd = Seqd::start(SeqdOptions::local());
    // Half a frame, then nothing: this connection waits, nobody else does.
    let mut stalled = raw(&seqd);
    hello(&mut stalled);
    let ping = encode_frame(
        &ClientMessage::Request {
            id: 5,
            request: Request::Ping,
        },
        MAX,
    )
    .unwrap();
    stalled.write_all(&ping[..7]).unwrap();
    let bystander = Bystander::start(&seqd);
    bystander.finish();
    // The stalled one is served once it completes its frame.
    stalled.write_all(&ping[7..]).unwrap();
    assert_eq!(
        recv(&mut stalled),
        ServerMessage::Response {
            id: 5,
            result: Ok(Response::Pong)
        }
    );
    // Half a frame, then the client closes its side: an error frame, a close.
    let mut s = raw(&seqd);
    hello(&mut s);
    s.write_all(&ping[..7]).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    expect_fatal(&mut s, ErrorCode::BadRequest);
}

#[test]
fn errors_are_answered_per_request_in_binary() {
    let seqd = Seqd::start(SeqdOptions::local());
    let mut c = seqd.client();
    let results = c
        .pipeline(vec![
            Request::DailyNext(DailyQuery {
                user: "bad:user".into(),
                tz: None,
                at_ms: None,
            }),
            Request::ConvNext(Conversation::Group { id: "ok".into() }),
            Request::DailyGet(DailyQuery {
                user: "u".into(),
                tz: Some("No/Where".into()),
                at_ms: None,
            }),
        ])
        .unwrap();
    assert_eq!(
        results[0].as_ref().unwrap_err().code(),
        Some(ErrorCode::InvalidArgument)
    );
    assert_eq!(
        results[1].as_ref().unwrap(),
        &Response::ConvNumber {
            seq: 1,
            source: Source::Local,
            host: None
        }
    );
    assert_eq!(
        results[2].as_ref().unwrap_err().code(),
        Some(ErrorCode::InvalidArgument)
    );
    c.ping().unwrap();
}

#[test]
fn malformed_text_lines_get_errors_and_the_connection_stays_open() {
    let seqd = Seqd::start(SeqdOptions::local());
    let bystander = Bystander::start(&seqd);
    let mut t = seqd.text();
    let cases: &[(&[u8], &str)] = &[
        (b"FROB\n", "ERR unknown_command "),
        (b"DAILY FROB u\n", "ERR unknown_command "),
        (b"DAILY NEXT\n", "ERR bad_request "),
        (b"DAILY NEXT u v\n", "ERR bad_request "),
        (b"DAILY NEXT u tz=UTC tz=UTC\n", "ERR bad_request "),
        (b"DAILY NEXT u color=red\n", "ERR bad_request "),
        (b"CONV NEXT private a\n", "ERR bad_request "),
        (b"CONV NEXT group a b\n", "ERR bad_request "),
        (b"CONV NEXT channel a\n", "ERR bad_request "),
        (b"PING extra\n", "ERR bad_request "),
        (b"\xff\xfe PING\n", "ERR bad_request "),
        (b"DAILY NEXT \xc3\x28\n", "ERR bad_request "),
    ];
    for (line, want) in cases {
        t.send_raw(line);
        let reply = t.read_line();
        assert!(
            reply.starts_with(want),
            "{:?} -> {reply}",
            String::from_utf8_lossy(line)
        );
        assert_eq!(t.cmd("PING"), "OK pong");
    }
    // A line over the 64 KiB limit is discarded with too_large.
    let mut long = vec![b'A'; 70 * 1024];
    long.push(b'\n');
    t.send_raw(&long);
    assert!(t.read_line().starts_with("ERR too_large "));
    // Blank lines are ignored; CRLF and lower case work.
    t.send_raw(b"\n   \r\nping\r\n");
    assert_eq!(t.read_line(), "OK pong");
    // Several commands in one write are answered in order.
    t.send_raw(b"CONV NEXT group t\nCONV NEXT group t\nCONV GET group t\n");
    assert_eq!(t.read_line(), "OK seq=1 source=local");
    assert_eq!(t.read_line(), "OK seq=2 source=local");
    assert_eq!(t.read_line(), "OK seq=2 source=local");
    bystander.finish();
}

#[test]
fn text_help_health_metrics_and_quit() {
    let seqd = Seqd::start(SeqdOptions::local());
    let mut t = seqd.text();
    t.send_raw(b"HELP\n");
    let mut help = Vec::new();
    loop {
        let l = t.read_line();
        if l == "." {
            break;
        }
        help.push(l);
    }
    for cmd in [
        "PING",
        "DAILY NEXT <user>",
        "CONV GET group <g>",
        "HEALTH",
        "METRICS",
    ] {
        assert!(help.iter().any(|l| l.starts_with(cmd)), "HELP lacks {cmd}");
    }
    let health = t.cmd("HEALTH");
    assert_eq!(field(&health, "redis"), "disabled");
    assert_eq!(field(&health, "breaker"), "closed");
    assert_eq!(field(&health, "mode"), "local");

    t.cmd("DAILY NEXT m");
    t.cmd("DAILY NEXT m:x");
    t.send_raw(b"METRICS\n");
    let mut metrics = Vec::new();
    loop {
        let l = t.read_line();
        if l == "." {
            break;
        }
        metrics.push(l);
    }
    let has = |needle: &str| metrics.iter().any(|l| l.starts_with(needle));
    assert!(
        has(r#"seqd_requests_total{op="daily_next",outcome="ok"} 1"#),
        "{metrics:#?}"
    );
    assert!(has(
        r#"seqd_requests_total{op="daily_next",outcome="invalid_argument"} 1"#
    ));
    // Latency per operation and source: the answered one came from the
    // store, the refused one from nowhere.
    assert!(has(
        r#"seqd_request_duration_seconds_count{op="daily_next",source="local"} 1"#
    ));
    assert!(has(
        r#"seqd_request_duration_seconds_count{op="daily_next",source="-"} 1"#
    ));
    assert!(has(
        r#"seqd_sequence_numbers_issued_total{kind="daily",source="local"} 1"#
    ));
    assert_eq!(t.cmd("QUIT"), "OK bye");
    let mut rest = String::new();
    assert_eq!(t.reader.read_to_string(&mut rest).unwrap(), 0);
}

#[test]
fn redis_mode_health_reports_redis_up_and_down() {
    let mut redis = RedisServer::start();
    let seqd = Seqd::start(SeqdOptions::redis(&redis));
    let mut c = seqd.client();
    let health = c.health().unwrap();
    let get =
        |h: &[(String, String)], k: &str| h.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    assert_eq!(get(&health, "redis").as_deref(), Some("up"));
    assert_eq!(get(&health, "mode").as_deref(), Some("redis"));
    assert_eq!(get(&health, "breaker").as_deref(), Some("closed"));
    assert_eq!(get(&health, "last_error").as_deref(), Some("none"));
    redis.kill9();
    // Without Redis a NEXT is answered from the local store.
    assert_eq!(c.group_next("g").unwrap().source, Source::Local);
    let health = c.health().unwrap();
    assert_eq!(get(&health, "redis").as_deref(), Some("down"));
    assert_ne!(get(&health, "last_error").as_deref(), Some("none"));
    assert_eq!(get(&health, "pending_reconciliation").as_deref(), Some("1"));
}
