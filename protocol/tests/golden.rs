//! Golden vectors: the exact bytes of representative frames, checked in at
//! `protocol/golden/vectors.txt` and documented in `PROTOCOL.md`. A change
//! to the wire format fails here before it reaches a client.
//!
//! To re-record after a deliberate, versioned change:
//! `SEQD_BLESS_GOLDEN=1 cargo test -p seqd-protocol --test golden`.

use seqd_protocol::codec::{decode_payload, encode_frame, LENGTH_PREFIX};
use seqd_protocol::*;
use std::fmt::Write as _;

const MAX: usize = DEFAULT_MAX_FRAME;

enum Msg {
    C(ClientMessage),
    S(ServerMessage),
}

fn vectors() -> Vec<(&'static str, Msg)> {
    use Msg::*;
    vec![
        (
            "hello",
            C(ClientMessage::Hello {
                version: 1,
                client: "c".into(),
            }),
        ),
        (
            "ping",
            C(ClientMessage::Request {
                id: 1,
                request: Request::Ping,
            }),
        ),
        (
            "daily_next_full",
            C(ClientMessage::Request {
                id: 7,
                request: Request::DailyNext(DailyQuery {
                    user: "123".into(),
                    tz: Some("Asia/Kolkata".into()),
                    // 2026-01-06T18:29:59Z
                    at_ms: Some(1_767_724_199_000),
                }),
            }),
        ),
        (
            "daily_get_defaults",
            C(ClientMessage::Request {
                id: 8,
                request: Request::DailyGet(DailyQuery {
                    user: "u".into(),
                    tz: None,
                    at_ms: None,
                }),
            }),
        ),
        (
            "conv_next_private",
            C(ClientMessage::Request {
                id: 9,
                request: Request::ConvNext(Conversation::Private {
                    a: "a".into(),
                    b: "b".into(),
                }),
            }),
        ),
        (
            "conv_get_group",
            C(ClientMessage::Request {
                id: 10,
                request: Request::ConvGet(Conversation::Group { id: "g".into() }),
            }),
        ),
        (
            "health",
            C(ClientMessage::Request {
                id: 11,
                request: Request::Health,
            }),
        ),
        (
            "metrics",
            C(ClientMessage::Request {
                id: 12,
                request: Request::Metrics,
            }),
        ),
        (
            "gap_check",
            C(ClientMessage::Request {
                id: 13,
                request: Request::GapCheck(gap_event("x", "BTC", 5)),
            }),
        ),
        (
            "gap_batch",
            C(ClientMessage::Request {
                id: 14,
                request: Request::GapBatch(vec![gap_event("x", "A", 1), gap_event("x", "A", 3)]),
            }),
        ),
        (
            "gap_stats",
            C(ClientMessage::Request {
                id: 15,
                request: Request::GapStats(stream("x", "A")),
            }),
        ),
        (
            "gap_clear",
            C(ClientMessage::Request {
                id: 16,
                request: Request::GapClear(stream("x", "A")),
            }),
        ),
        (
            "gap_clear_all",
            C(ClientMessage::Request {
                id: 17,
                request: Request::GapClearAll,
            }),
        ),
        (
            "cache_get",
            C(ClientMessage::Request {
                id: 18,
                request: Request::CacheGet { key: "k".into() },
            }),
        ),
        (
            "cache_set",
            C(ClientMessage::Request {
                id: 19,
                request: Request::CacheSet(CacheItem {
                    key: "k".into(),
                    value: b"v".to_vec(),
                    ttl_ms: Some(5000),
                }),
            }),
        ),
        (
            "cache_del",
            C(ClientMessage::Request {
                id: 20,
                request: Request::CacheDel {
                    keys: vec!["a".into(), "b".into()],
                },
            }),
        ),
        (
            "cache_del_prefix",
            C(ClientMessage::Request {
                id: 21,
                request: Request::CacheDelPrefix {
                    prefix: "user:1:".into(),
                },
            }),
        ),
        (
            "server_hello",
            S(ServerMessage::Hello {
                version: 1,
                server: "s".into(),
            }),
        ),
        (
            "pong",
            S(ServerMessage::Response {
                id: 1,
                result: Ok(Response::Pong),
            }),
        ),
        (
            "daily_reply",
            S(ServerMessage::Response {
                id: 7,
                result: Ok(Response::Daily {
                    seq: 1,
                    day: 20_260_106,
                    source: Source::Redis,
                }),
            }),
        ),
        (
            "conv_reply_local",
            S(ServerMessage::Response {
                id: 9,
                result: Ok(Response::Conv {
                    seq: 300,
                    source: Source::Local,
                }),
            }),
        ),
        (
            "health_reply",
            S(ServerMessage::Response {
                id: 11,
                result: Ok(Response::Health {
                    fields: vec![("redis".into(), "up".into())],
                }),
            }),
        ),
        (
            "metrics_reply",
            S(ServerMessage::Response {
                id: 12,
                result: Ok(Response::Metrics {
                    text: "m 1\n".into(),
                }),
            }),
        ),
        (
            "error_reply",
            S(ServerMessage::Response {
                id: 5,
                result: Err(WireError::new(ErrorCode::InvalidArgument, "bad")),
            }),
        ),
        (
            "gap_reply",
            S(ServerMessage::Response {
                id: 13,
                result: Ok(Response::Gap(GapResult {
                    kind: GapKind::Gap,
                    seq: 105,
                    expected: Some(101),
                    gap: 4,
                    filled: None,
                    source: Source::Redis,
                })),
            }),
        ),
        (
            "gap_out_of_order_reply",
            S(ServerMessage::Response {
                id: 13,
                result: Ok(Response::Gap(GapResult {
                    kind: GapKind::OutOfOrder,
                    seq: 102,
                    expected: Some(106),
                    gap: 0,
                    filled: Some(true),
                    source: Source::Local,
                })),
            }),
        ),
        (
            "gap_stats_reply",
            S(ServerMessage::Response {
                id: 15,
                result: Ok(Response::GapStats(Some(StreamStats {
                    last_seq: 105,
                    last_ts_ms: 1_767_724_199_000,
                    gap_count: 1,
                    reset_count: 0,
                    missing: vec![(101, 104)],
                    source: Source::Redis,
                }))),
            }),
        ),
        (
            "gap_stats_none",
            S(ServerMessage::Response {
                id: 15,
                result: Ok(Response::GapStats(None)),
            }),
        ),
        (
            "done",
            S(ServerMessage::Response {
                id: 16,
                result: Ok(Response::Done),
            }),
        ),
        (
            "cleared",
            S(ServerMessage::Response {
                id: 17,
                result: Ok(Response::Cleared { count: 3 }),
            }),
        ),
        (
            "cache_hit",
            S(ServerMessage::Response {
                id: 18,
                result: Ok(Response::CacheValue(Some(b"v".to_vec()))),
            }),
        ),
        (
            "cache_miss",
            S(ServerMessage::Response {
                id: 18,
                result: Ok(Response::CacheValue(None)),
            }),
        ),
        (
            "cache_deferred",
            S(ServerMessage::Response {
                id: 19,
                result: Ok(Response::CacheWritten(WriteOutcome::Deferred)),
            }),
        ),
        (
            "cache_deleted",
            S(ServerMessage::Response {
                id: 20,
                result: Ok(Response::CacheDeleted {
                    count: 2,
                    deferred: false,
                }),
            }),
        ),
        (
            "fatal_version_mismatch",
            S(ServerMessage::Error {
                error: WireError::new(ErrorCode::VersionMismatch, "v"),
            }),
        ),
        // Protocol 2 (appended: the vectors above stay version 1's bytes).
        (
            "hello_v2",
            C(ClientMessage::Hello {
                version: 2,
                client: "c".into(),
            }),
        ),
        (
            "daily_number_local_host",
            S(ServerMessage::Response {
                id: 7,
                result: Ok(Response::DailyNumber {
                    seq: 42,
                    day: 20_261_122,
                    source: Source::Local,
                    host: Some(513),
                }),
            }),
        ),
        (
            "conv_number_redis",
            S(ServerMessage::Response {
                id: 9,
                result: Ok(Response::ConvNumber {
                    seq: 300,
                    source: Source::Redis,
                    host: None,
                }),
            }),
        ),
        // Every remaining variant (appended: the bytes above never change).
        (
            "cache_get_many",
            C(ClientMessage::Request {
                id: 22,
                request: Request::CacheGetMany {
                    keys: vec!["a".into(), "b".into()],
                },
            }),
        ),
        (
            "cache_set_many",
            C(ClientMessage::Request {
                id: 23,
                request: Request::CacheSetMany(vec![
                    CacheItem {
                        key: "a".into(),
                        value: vec![0, 255],
                        ttl_ms: None,
                    },
                    CacheItem {
                        key: "b".into(),
                        value: vec![],
                        ttl_ms: Some(1),
                    },
                ]),
            }),
        ),
        (
            "info",
            C(ClientMessage::Request {
                id: 24,
                request: Request::Info,
            }),
        ),
        (
            "conv_reply_redis_v1",
            S(ServerMessage::Response {
                id: 9,
                result: Ok(Response::Conv {
                    seq: 7,
                    source: Source::Redis,
                }),
            }),
        ),
        (
            "gap_batch_reply",
            S(ServerMessage::Response {
                id: 14,
                result: Ok(Response::GapBatch(vec![
                    GapResult {
                        kind: GapKind::Normal,
                        seq: 1,
                        expected: None,
                        gap: 0,
                        filled: None,
                        source: Source::Redis,
                    },
                    GapResult {
                        kind: GapKind::Duplicate,
                        seq: 1,
                        expected: Some(2),
                        gap: 0,
                        filled: None,
                        source: Source::Redis,
                    },
                ])),
            }),
        ),
        (
            "cache_values",
            S(ServerMessage::Response {
                id: 22,
                result: Ok(Response::CacheValues(vec![Some(vec![0, 255]), None])),
            }),
        ),
        (
            "cache_stored",
            S(ServerMessage::Response {
                id: 23,
                result: Ok(Response::CacheWritten(WriteOutcome::Stored)),
            }),
        ),
        (
            "cache_invalidated",
            S(ServerMessage::Response {
                id: 23,
                result: Ok(Response::CacheWritten(WriteOutcome::Invalidated)),
            }),
        ),
        (
            "info_reply",
            S(ServerMessage::Response {
                id: 24,
                result: Ok(Response::Info {
                    fields: vec![("max_batch".into(), "10000".into())],
                }),
            }),
        ),
        (
            "error_invalid_argument",
            S(ServerMessage::Response {
                id: 25,
                result: Err(WireError::new(ErrorCode::InvalidArgument, "tz")),
            }),
        ),
        (
            "error_unknown_command",
            S(ServerMessage::Response {
                id: 25,
                result: Err(WireError::new(ErrorCode::UnknownCommand, "x")),
            }),
        ),
        (
            "error_forbidden",
            S(ServerMessage::Response {
                id: 25,
                result: Err(WireError::new(ErrorCode::Forbidden, "seq:")),
            }),
        ),
        (
            "error_too_large",
            S(ServerMessage::Response {
                id: 25,
                result: Err(WireError::new(ErrorCode::TooLarge, "big")),
            }),
        ),
        (
            "error_unavailable",
            S(ServerMessage::Response {
                id: 25,
                result: Err(WireError::new(ErrorCode::Unavailable, "redis")),
            }),
        ),
        (
            "error_internal",
            S(ServerMessage::Response {
                id: 25,
                result: Err(WireError::new(ErrorCode::Internal, "bug")),
            }),
        ),
        (
            "fatal_bad_request",
            S(ServerMessage::Error {
                error: WireError::new(ErrorCode::BadRequest, "hello first"),
            }),
        ),
        // Ids of the admitted alphabet's wider classes: e-mail-like users
        // (`@`, `+`), in a daily and a private conversation request.
        (
            "daily_next_email_user",
            C(ClientMessage::Request {
                id: 60,
                request: Request::DailyNext(DailyQuery {
                    user: "alice+orders@example.com".into(),
                    tz: None,
                    at_ms: None,
                }),
            }),
        ),
        (
            "conv_next_private_email",
            C(ClientMessage::Request {
                id: 61,
                request: Request::ConvNext(Conversation::Private {
                    a: "bob@example.com".into(),
                    b: "alice+orders@example.com".into(),
                }),
            }),
        ),
    ]
}

#[test]
fn the_vectors_hold_every_request_response_and_error_code() {
    let mut requests = std::collections::BTreeSet::new();
    let mut responses = std::collections::BTreeSet::new();
    let mut codes = std::collections::BTreeSet::new();
    // The variant's index as encoded: after the message's index and id
    // for a request, and after the `Result` tag too for a response.
    let index_at = |bytes: &[u8], i: usize| {
        let i = LENGTH_PREFIX + i;
        u32::from_le_bytes(bytes[i..i + 4].try_into().unwrap())
    };
    for (name, m) in vectors() {
        let bytes = encode(&m);
        match &m {
            Msg::C(ClientMessage::Request { .. }) => {
                requests.insert(index_at(&bytes, 12));
            }
            Msg::S(ServerMessage::Response { result: Ok(_), .. }) => {
                responses.insert(index_at(&bytes, 16));
            }
            Msg::S(ServerMessage::Response { result: Err(e), .. })
            | Msg::S(ServerMessage::Error { error: e }) => {
                codes.insert(e.code as u32);
            }
            Msg::C(ClientMessage::Hello { .. }) | Msg::S(ServerMessage::Hello { .. }) => {
                assert!(name.contains("hello"), "{name}")
            }
        }
    }
    assert_eq!(
        requests,
        (0..Request::NAMES.len() as u32).collect(),
        "request variants"
    );
    assert_eq!(responses, (0..=16).collect(), "response variants");
    assert_eq!(
        codes,
        (0..ErrorCode::ALL.len() as u32).collect(),
        "error codes"
    );
}

fn stream(exchange: &str, symbol: &str) -> Stream {
    Stream {
        exchange: exchange.into(),
        symbol: symbol.into(),
    }
}

fn gap_event(exchange: &str, symbol: &str, seq: u64) -> GapEvent {
    GapEvent {
        stream: stream(exchange, symbol),
        seq,
    }
}

fn encode(m: &Msg) -> Vec<u8> {
    match m {
        Msg::C(c) => encode_frame(c, MAX).unwrap(),
        Msg::S(s) => encode_frame(s, MAX).unwrap(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

const FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/golden/vectors.txt");

#[test]
fn golden_vectors_match_the_checked_in_bytes() {
    let vectors = vectors();
    if std::env::var_os("SEQD_BLESS_GOLDEN").is_some() {
        let mut out = String::from(
            "# name hex-of-whole-frame (4-byte BE length + bincode payload); see PROTOCOL.md\n",
        );
        for (name, m) in &vectors {
            writeln!(out, "{name} {}", hex(&encode(m))).unwrap();
        }
        std::fs::write(FILE, out).unwrap();
    }
    let text = std::fs::read_to_string(FILE).expect("golden/vectors.txt is checked in");
    let recorded: Vec<(&str, &str)> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.split_once(' ').unwrap())
        .collect();
    assert_eq!(
        recorded.len(),
        vectors.len(),
        "every vector is recorded once"
    );
    for ((name, m), (rec_name, rec_hex)) in vectors.iter().zip(recorded) {
        assert_eq!(*name, rec_name);
        let bytes = unhex(rec_hex);
        assert_eq!(hex(&encode(m)), rec_hex, "encoding of {name} changed");
        // And the recorded bytes decode back to the same message.
        let len = u32::from_be_bytes(bytes[..LENGTH_PREFIX].try_into().unwrap()) as usize;
        assert_eq!(len, bytes.len() - LENGTH_PREFIX, "{name}: length prefix");
        let payload = &bytes[LENGTH_PREFIX..];
        match m {
            Msg::C(c) => assert_eq!(
                &decode_payload::<ClientMessage>(payload, MAX).unwrap(),
                c,
                "{name}"
            ),
            Msg::S(s) => assert_eq!(
                &decode_payload::<ServerMessage>(payload, MAX).unwrap(),
                s,
                "{name}"
            ),
        }
    }
}

#[test]
fn ping_request_bytes_are_as_documented() {
    // The worked example of PROTOCOL.md, spelled out by hand.
    let frame = encode_frame(
        &ClientMessage::Request {
            id: 1,
            request: Request::Ping,
        },
        MAX,
    )
    .unwrap();
    let expected: Vec<u8> = [
        &[0, 0, 0, 16][..],        // length 16, big-endian
        &[1, 0, 0, 0],             // ClientMessage::Request (variant 1), u32 LE
        &[1, 0, 0, 0, 0, 0, 0, 0], // id = 1, u64 LE
        &[0, 0, 0, 0],             // Request::Ping (variant 0)
    ]
    .concat();
    assert_eq!(frame, expected);
}

#[test]
fn trailing_bytes_are_rejected() {
    let mut payload = seqd_protocol::codec::encode_payload(
        &ClientMessage::Request {
            id: 1,
            request: Request::Ping,
        },
        MAX,
    )
    .unwrap();
    payload.push(0);
    assert!(decode_payload::<ClientMessage>(&payload, MAX).is_err());
}

#[test]
fn a_string_length_beyond_the_limit_is_refused_without_allocating() {
    // Hello with a client-name length of 2^62: must fail on the limit, not
    // try to allocate.
    let mut payload = vec![0, 0, 0, 0, 1, 0, 0, 0];
    payload.extend_from_slice(&(1u64 << 62).to_le_bytes());
    assert!(decode_payload::<ClientMessage>(&payload, 1024).is_err());
}

#[test]
fn an_oversized_length_prefix_is_refused_before_reading_the_payload() {
    let mut only_prefix = std::io::Cursor::new(vec![0x0f, 0xff, 0xff, 0xff]);
    match seqd_protocol::codec::read_frame::<_, ServerMessage>(&mut only_prefix, MAX) {
        Err(FrameError::TooLarge { len, max }) => {
            assert_eq!(len, 0x0fff_ffff);
            assert_eq!(max, MAX);
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
}
