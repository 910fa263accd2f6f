//! Property tests of both parsers: the text line parser, the line framing
//! and the binary payload decoder. Whatever the input, they answer (a value
//! or an error) and never panic; what they accept round-trips.

use proptest::prelude::*;
use seqd_protocol::codec::{decode_payload, encode_frame, encode_frame_into, encode_payload};
use seqd_protocol::text::{format_reply, format_request, parse_line, TextCommand};
use seqd_protocol::*;

fn id() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_.-]{1,64}"
}

fn daily_query() -> impl Strategy<Value = DailyQuery> {
    (
        id(),
        proptest::option::of(prop_oneof![
            Just("UTC".to_string()),
            Just("Asia/Kolkata".to_string()),
            "[A-Za-z_/]{1,30}"
        ]),
        // Whole milliseconds within chrono's RFC 3339 range (years 0000-9999).
        proptest::option::of(-62_000_000_000_000i64..253_000_000_000_000i64),
    )
        .prop_map(|(user, tz, at_ms)| DailyQuery { user, tz, at_ms })
}

fn conversation() -> impl Strategy<Value = Conversation> {
    prop_oneof![
        (id(), id()).prop_map(|(a, b)| Conversation::Private { a, b }),
        id().prop_map(|id| Conversation::Group { id }),
    ]
}

fn gap_event() -> impl Strategy<Value = GapEvent> {
    (
        "[A-Za-z0-9_.-]{1,16}",
        "[A-Za-z0-9_./-]{1,16}",
        any::<u64>(),
    )
        .prop_map(|(exchange, symbol, seq)| GapEvent {
            stream: Stream { exchange, symbol },
            seq,
        })
}

fn cache_key() -> impl Strategy<Value = String> {
    "[!-~]{1,40}"
}

fn cache_item() -> impl Strategy<Value = CacheItem> {
    (
        cache_key(),
        prop_oneof![
            ".{1,40}".prop_map(String::into_bytes),
            proptest::collection::vec(any::<u8>(), 0..40)
        ],
        proptest::option::of(prop_oneof![
            (0u64..10_000).prop_map(|s| s * 1000),
            any::<u64>()
        ]),
    )
        .prop_map(|(key, value, ttl_ms)| CacheItem { key, value, ttl_ms })
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        Just(Request::Ping),
        Just(Request::Health),
        Just(Request::Metrics),
        daily_query().prop_map(Request::DailyNext),
        daily_query().prop_map(Request::DailyGet),
        conversation().prop_map(Request::ConvNext),
        conversation().prop_map(Request::ConvGet),
        gap_event().prop_map(Request::GapCheck),
        proptest::collection::vec(gap_event(), 0..5).prop_map(Request::GapBatch),
        gap_event().prop_map(|e| Request::GapStats(e.stream)),
        gap_event().prop_map(|e| Request::GapClear(e.stream)),
        Just(Request::GapClearAll),
        cache_key().prop_map(|key| Request::CacheGet { key }),
        proptest::collection::vec(cache_key(), 0..4)
            .prop_map(|keys| Request::CacheGetMany { keys }),
        cache_item().prop_map(Request::CacheSet),
        proptest::collection::vec(cache_item(), 0..3).prop_map(Request::CacheSetMany),
        proptest::collection::vec(cache_key(), 0..4).prop_map(|keys| Request::CacheDel { keys }),
        cache_key().prop_map(|prefix| Request::CacheDelPrefix { prefix }),
    ]
}

fn gap_result() -> impl Strategy<Value = GapResult> {
    (
        proptest::sample::select(GapKind::ALL.to_vec()),
        any::<u64>(),
        proptest::option::of(any::<u64>()),
        any::<u64>(),
        proptest::option::of(any::<bool>()),
        source(),
    )
        .prop_map(|(kind, seq, expected, gap, filled, source)| GapResult {
            kind,
            seq,
            expected,
            gap,
            filled,
            source,
        })
}

fn source() -> impl Strategy<Value = Source> {
    prop_oneof![Just(Source::Redis), Just(Source::Local)]
}

fn response() -> impl Strategy<Value = Result<Response, WireError>> {
    prop_oneof![
        Just(Ok(Response::Pong)),
        (any::<u64>(), any::<u32>(), source()).prop_map(|(seq, day, source)| Ok(Response::Daily {
            seq,
            day,
            source
        })),
        (any::<u64>(), source()).prop_map(|(seq, source)| Ok(Response::Conv { seq, source })),
        (any::<u64>(), any::<u32>(), source(), any::<Option<u16>>()).prop_map(
            |(seq, day, source, host)| Ok(Response::DailyNumber {
                seq,
                day,
                source,
                host
            })
        ),
        (any::<u64>(), source(), any::<Option<u16>>())
            .prop_map(|(seq, source, host)| Ok(Response::ConvNumber { seq, source, host })),
        proptest::collection::vec(("[a-z_]{1,12}", ".{0,20}"), 0..5)
            .prop_map(|fields| Ok(Response::Health { fields })),
        ".{0,200}".prop_map(|text| Ok(Response::Metrics { text })),
        gap_result().prop_map(|r| Ok(Response::Gap(r))),
        proptest::collection::vec(gap_result(), 0..4).prop_map(|r| Ok(Response::GapBatch(r))),
        Just(Ok(Response::GapStats(None))),
        (
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            proptest::collection::vec((any::<u64>(), any::<u64>()), 0..4),
            source()
        )
            .prop_map(|(last_seq, gap_count, reset_count, missing, source)| Ok(
                Response::GapStats(Some(StreamStats {
                    last_seq,
                    last_ts_ms: 1_767_724_199_000,
                    gap_count,
                    reset_count,
                    missing,
                    source,
                }))
            )),
        Just(Ok(Response::Done)),
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40))
            .prop_map(|v| Ok(Response::CacheValue(v))),
        proptest::collection::vec(
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..10)),
            0..4
        )
        .prop_map(|v| Ok(Response::CacheValues(v))),
        prop_oneof![
            Just(WriteOutcome::Stored),
            Just(WriteOutcome::Invalidated),
            Just(WriteOutcome::Deferred)
        ]
        .prop_map(|o| Ok(Response::CacheWritten(o))),
        (any::<u64>(), any::<bool>())
            .prop_map(|(count, deferred)| Ok(Response::CacheDeleted { count, deferred })),
        any::<u64>().prop_map(|count| Ok(Response::Cleared { count })),
        (proptest::sample::select(ErrorCode::ALL.to_vec()), ".{0,40}")
            .prop_map(|(code, message)| Err(WireError::new(code, message))),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn text_parser_never_panics(line in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = parse_line(&line);
    }

    #[test]
    fn text_parser_never_panics_on_near_commands(
        words in proptest::collection::vec(
            prop_oneof![
                Just("DAILY".to_string()), Just("next".to_string()), Just("GET".to_string()),
                Just("CONV".to_string()), Just("private".to_string()), Just("group".to_string()),
                Just("tz=".to_string()), Just("at=".to_string()), Just("tz=UTC".to_string()),
                Just("at=2026-01-06T18:29:59Z".to_string()), ".{0,8}",
            ],
            0..7,
        ),
        sep in prop_oneof![Just(" "), Just("\t"), Just("  ")],
        crlf in any::<bool>(),
    ) {
        let mut line = words.join(sep);
        if crlf { line.push('\r'); }
        match parse_line(line.as_bytes()) {
            Ok(_) => {}
            Err(e) => {
                prop_assert!(!e.message.contains('\n'));
                prop_assert!(matches!(e.code, ErrorCode::BadRequest | ErrorCode::InvalidArgument | ErrorCode::UnknownCommand));
            }
        }
    }

    #[test]
    fn text_requests_round_trip(req in request()) {
        let Some(line) = format_request(&req) else {
            return Ok(()); // batches have no text form
        };
        prop_assert_eq!(parse_line(line.as_bytes()).unwrap(), Some(TextCommand::Request(req.clone())));
        // Command words are case-insensitive, CRLF is accepted.
        let lower = format!("{}\r", lower_command_words(&line));
        prop_assert_eq!(parse_line(lower.as_bytes()).unwrap(), Some(TextCommand::Request(req)));
    }

    #[test]
    fn text_replies_are_single_lines_or_dot_terminated(r in response()) {
        let reply = format_reply(&r);
        match &r {
            Ok(Response::Metrics { .. }) | Ok(Response::GapBatch(_)) | Ok(Response::CacheValues(_)) => {
                prop_assert!(reply == "." || reply.ends_with("\n."))
            }
            _ => {
                prop_assert!(!reply.contains('\n') && !reply.contains('\r'), "{:?}", reply);
                prop_assert!(reply.starts_with("OK") || reply.starts_with("ERR "));
            }
        }
    }

    #[test]
    fn binary_requests_round_trip(id in any::<u64>(), req in request()) {
        let msg = ClientMessage::Request { id, request: req };
        let bytes = encode_payload(&msg, DEFAULT_MAX_FRAME).unwrap();
        prop_assert_eq!(decode_payload::<ClientMessage>(&bytes, DEFAULT_MAX_FRAME).unwrap(), msg);
    }

    #[test]
    fn binary_responses_round_trip(id in any::<u64>(), result in response()) {
        let msg = ServerMessage::Response { id, result };
        let bytes = encode_payload(&msg, DEFAULT_MAX_FRAME).unwrap();
        prop_assert_eq!(decode_payload::<ServerMessage>(&bytes, DEFAULT_MAX_FRAME).unwrap(), msg);
    }

    #[test]
    fn frames_appended_in_place_equal_frames_on_their_own(
        id in any::<u64>(),
        result in response(),
        prefix in proptest::collection::vec(any::<u8>(), 0..16),
        max in 16usize..512,
    ) {
        let msg = ServerMessage::Response { id, result };
        let mut buf = prefix.clone();
        match (encode_frame_into(&mut buf, &msg, max), encode_frame(&msg, max)) {
            (Ok(()), Ok(frame)) => prop_assert_eq!(&buf[prefix.len()..], &frame[..]),
            // A frame over the limit leaves the buffer as it was.
            (Err(_), Err(_)) => prop_assert_eq!(&buf, &prefix),
            (a, b) => prop_assert!(false, "in place {:?}, on its own {:?}", a, b.map(|_| ())),
        }
    }

    #[test]
    fn binary_decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = decode_payload::<ClientMessage>(&bytes, 4096);
        let _ = decode_payload::<ServerMessage>(&bytes, 4096);
    }

    #[test]
    fn truncated_binary_payloads_are_errors(id in any::<u64>(), req in request(), cut in any::<prop::sample::Index>()) {
        let bytes = encode_payload(&ClientMessage::Request { id, request: req }, DEFAULT_MAX_FRAME).unwrap();
        let cut = cut.index(bytes.len());
        prop_assert!(decode_payload::<ClientMessage>(&bytes[..cut], DEFAULT_MAX_FRAME).is_err());
    }
}

fn lower_command_words(line: &str) -> String {
    let mut words: Vec<String> = line.split(' ').map(str::to_string).collect();
    for (i, w) in words.iter_mut().enumerate() {
        // The verb words; ids keep their case.
        if i < 2 || w == "private" || w == "group" {
            *w = w.to_ascii_lowercase();
        }
    }
    words.join(" ")
}

proptest! {
    #[test]
    fn shown_values_are_one_line_and_unambiguous(v in proptest::collection::vec(any::<u8>(), 0..64)) {
        let shown = seqd_protocol::text::show_value(&v);
        prop_assert!(!shown.contains('\n') && !shown.contains('\r'));
        prop_assert_eq!(unescape(&shown), v);
    }
}

/// The inverse of `show_value`, written here to check it.
fn unescape(s: &str) -> Vec<u8> {
    if !s.contains('\\') && !s.chars().any(char::is_control) {
        return s.as_bytes().to_vec();
    }
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' {
            match b[i + 1] {
                b'\\' => out.push(b'\\'),
                b'n' => out.push(b'\n'),
                b'r' => out.push(b'\r'),
                b't' => out.push(b'\t'),
                b'x' => {
                    out.push(u8::from_str_radix(&s[i + 2..i + 4], 16).unwrap());
                    i += 2;
                }
                other => panic!("bad escape {other}"),
            }
            i += 2;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

#[test]
fn cache_set_keeps_the_rest_of_the_line() {
    let parsed = parse_line(b"CACHE SET user:1:settings:all {\"a\": 1,  \"b\": [2, 3]}\r").unwrap();
    match parsed {
        Some(TextCommand::Request(Request::CacheSet(item))) => {
            assert_eq!(item.key, "user:1:settings:all");
            assert_eq!(item.value, b"{\"a\": 1,  \"b\": [2, 3]}");
            assert_eq!(item.ttl_ms, None);
        }
        other => panic!("{other:?}"),
    }
    match parse_line(b"cache setex k 5  two blanks").unwrap() {
        Some(TextCommand::Request(Request::CacheSet(item))) => {
            assert_eq!(item.value, b" two blanks");
            assert_eq!(item.ttl_ms, Some(5000));
        }
        other => panic!("{other:?}"),
    }
}
