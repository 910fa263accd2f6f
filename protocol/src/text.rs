//! The text protocol: one command per line, for `socat` and shell scripts.
//!
//! This module owns the syntax only — words to [`Request`]s and
//! [`Response`]s to lines — and does no I/O. Values (user ids, zones) are
//! checked by the daemon, the same way for both protocols.
//!
//! Choices the text protocol's reference leaves open:
//! - words are separated by runs of spaces or tabs; a trailing `\r` is
//!   dropped, so CRLF works;
//! - an empty line (or one of only blanks) is ignored and gets no reply;
//! - command words (`DAILY`, `next`, `Private`) and option names (`tz=`) are
//!   case-insensitive; ids and values are taken as written;
//! - an option given twice, or an unknown option, is `bad_request`;
//! - `QUIT` answers `OK bye` and closes the connection.

use crate::wire::{
    CacheItem, Conversation, DailyQuery, ErrorCode, GapEvent, GapResult, Request, Response, Stream,
    StreamStats, WireError, WriteOutcome,
};

/// One parsed line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TextCommand {
    Help,
    Quit,
    Request(Request),
}

/// The `HELP` reply, one line per command; the caller adds the final `.`.
pub const HELP_LINES: &[&str] = &[
    "PING",
    "HELP",
    "QUIT",
    "DAILY NEXT <user> [tz=<IANA zone>] [at=<RFC3339>]",
    "DAILY GET <user> [tz=<IANA zone>] [at=<RFC3339>]",
    "CONV NEXT private <a> <b>",
    "CONV NEXT group <g>",
    "CONV GET private <a> <b>",
    "CONV GET group <g>",
    "GAP CHECK <exchange> <symbol> <seq>",
    "GAP STATS <exchange> <symbol>",
    "GAP CLEAR <exchange> <symbol>",
    "GAP CLEARALL",
    "CACHE GET <key>",
    "CACHE SET <key> <value...>",
    "CACHE SETEX <key> <ttl seconds> <value...>",
    "CACHE DEL <key> [<key>...]",
    "CACHE DELPREFIX <prefix>",
    "HEALTH",
    "METRICS",
    "INFO",
];

fn bad(msg: impl Into<String>) -> WireError {
    WireError::new(ErrorCode::BadRequest, msg)
}

/// Splits a line into words on runs of spaces and tabs.
fn words(line: &str) -> impl Iterator<Item = &str> {
    line.split([' ', '\t']).filter(|w| !w.is_empty())
}

/// Parses one line (without its `\n`; a trailing `\r` is allowed).
/// `Ok(None)` means a blank line, which gets no reply.
pub fn parse_line(line: &[u8]) -> Result<Option<TextCommand>, WireError> {
    let line = std::str::from_utf8(line).map_err(|_| bad("line is not valid UTF-8"))?;
    let line = line.strip_suffix('\r').unwrap_or(line);
    let mut w = words(line);
    let Some(cmd) = w.next() else {
        return Ok(None);
    };
    let cmd = cmd.to_ascii_uppercase();
    let rest: Vec<&str> = w.collect();
    let parsed = match cmd.as_str() {
        "PING" => no_args(&cmd, &rest, TextCommand::Request(Request::Ping))?,
        "HELP" => no_args(&cmd, &rest, TextCommand::Help)?,
        "QUIT" => no_args(&cmd, &rest, TextCommand::Quit)?,
        "HEALTH" => no_args(&cmd, &rest, TextCommand::Request(Request::Health))?,
        "METRICS" => no_args(&cmd, &rest, TextCommand::Request(Request::Metrics))?,
        "INFO" => no_args(&cmd, &rest, TextCommand::Request(Request::Info))?,
        "DAILY" => TextCommand::Request(parse_daily(&rest)?),
        "CONV" => TextCommand::Request(parse_conv(&rest)?),
        "GAP" => TextCommand::Request(parse_gap(&rest)?),
        "CACHE" => TextCommand::Request(parse_cache(line, &rest)?),
        _ => {
            return Err(WireError::new(
                ErrorCode::UnknownCommand,
                format!("unknown command '{}'; HELP lists the commands", clip(&cmd)),
            ))
        }
    };
    Ok(Some(parsed))
}

/// Shortens user input quoted back in an error message.
fn clip(s: &str) -> String {
    const MAX: usize = 64;
    if s.chars().count() <= MAX {
        s.to_string()
    } else {
        let head: String = s.chars().take(MAX).collect();
        format!("{head}...")
    }
}

fn no_args(cmd: &str, rest: &[&str], out: TextCommand) -> Result<TextCommand, WireError> {
    if rest.is_empty() {
        Ok(out)
    } else {
        Err(bad(format!("{cmd} takes no arguments")))
    }
}

/// `NEXT` or `GET`, case-insensitive.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Verb {
    Next,
    Get,
}

fn parse_verb(cmd: &str, word: Option<&&str>) -> Result<Verb, WireError> {
    match word.map(|w| w.to_ascii_uppercase()).as_deref() {
        Some("NEXT") => Ok(Verb::Next),
        Some("GET") => Ok(Verb::Get),
        Some(other) => Err(WireError::new(
            ErrorCode::UnknownCommand,
            format!(
                "unknown command '{cmd} {}'; expected {cmd} NEXT or {cmd} GET",
                clip(other)
            ),
        )),
        None => Err(bad(format!("{cmd} needs NEXT or GET"))),
    }
}

fn parse_daily(rest: &[&str]) -> Result<Request, WireError> {
    const USAGE: &str = "usage: DAILY NEXT|GET <user> [tz=<IANA zone>] [at=<RFC3339>]";
    let verb = parse_verb("DAILY", rest.first())?;
    let user = rest.get(1).ok_or_else(|| bad(USAGE))?;
    if user.contains('=') {
        return Err(bad(USAGE));
    }
    let mut query = DailyQuery {
        user: (*user).to_string(),
        tz: None,
        at_ms: None,
    };
    for opt in &rest[2..] {
        let (name, value) = opt.split_once('=').ok_or_else(|| bad(USAGE))?;
        match name.to_ascii_lowercase().as_str() {
            "tz" if query.tz.is_none() => query.tz = Some(value.to_string()),
            "at" if query.at_ms.is_none() => query.at_ms = Some(parse_rfc3339_ms(value)?),
            "tz" | "at" => return Err(bad(format!("option {name}= given twice"))),
            _ => return Err(bad(format!("unknown option '{}'; {USAGE}", clip(name)))),
        }
    }
    Ok(match verb {
        Verb::Next => Request::DailyNext(query),
        Verb::Get => Request::DailyGet(query),
    })
}

/// Parses an RFC 3339 instant (`2026-01-06T18:29:59Z`,
/// `2026-01-07T00:00:00+05:30`) into milliseconds since the epoch.
pub fn parse_rfc3339_ms(value: &str) -> Result<i64, WireError> {
    chrono::DateTime::parse_from_rfc3339(value)
        .map(|t| t.timestamp_millis())
        .map_err(|_| {
            WireError::new(
                ErrorCode::InvalidArgument,
                format!(
                    "malformed at='{}': expected an RFC 3339 instant such as 2026-01-06T18:29:59Z",
                    clip(value)
                ),
            )
        })
}

fn parse_conv(rest: &[&str]) -> Result<Request, WireError> {
    const USAGE: &str = "usage: CONV NEXT|GET private <a> <b> | CONV NEXT|GET group <g>";
    let verb = parse_verb("CONV", rest.first())?;
    let kind = rest.get(1).map(|k| k.to_ascii_lowercase());
    let conv = match (kind.as_deref(), &rest[rest.len().min(2)..]) {
        (Some("private"), [a, b]) => Conversation::Private {
            a: (*a).to_string(),
            b: (*b).to_string(),
        },
        (Some("group"), [g]) => Conversation::Group {
            id: (*g).to_string(),
        },
        _ => return Err(bad(USAGE)),
    };
    Ok(match verb {
        Verb::Next => Request::ConvNext(conv),
        Verb::Get => Request::ConvGet(conv),
    })
}

fn parse_gap(rest: &[&str]) -> Result<Request, WireError> {
    const USAGE: &str =
        "usage: GAP CHECK <exchange> <symbol> <seq> | GAP STATS|CLEAR <exchange> <symbol> | GAP CLEARALL";
    let verb = rest.first().map(|w| w.to_ascii_uppercase());
    let stream = |ex: &&str, sym: &&str| Stream {
        exchange: (*ex).to_string(),
        symbol: (*sym).to_string(),
    };
    match (verb.as_deref(), &rest[rest.len().min(1)..]) {
        (Some("CHECK"), [ex, sym, seq]) => Ok(Request::GapCheck(GapEvent {
            stream: stream(ex, sym),
            seq: parse_u64("seq", seq)?,
        })),
        (Some("STATS"), [ex, sym]) => Ok(Request::GapStats(stream(ex, sym))),
        (Some("CLEAR"), [ex, sym]) => Ok(Request::GapClear(stream(ex, sym))),
        (Some("CLEARALL"), []) => Ok(Request::GapClearAll),
        (Some("CHECK" | "STATS" | "CLEAR" | "CLEARALL"), _) | (None, _) => Err(bad(USAGE)),
        (Some(other), _) => Err(WireError::new(
            ErrorCode::UnknownCommand,
            format!("unknown command 'GAP {}'; {USAGE}", clip(other)),
        )),
    }
}

fn parse_cache(line: &str, rest: &[&str]) -> Result<Request, WireError> {
    const USAGE: &str = "usage: CACHE GET <key> | CACHE SET <key> <value...> | \
                         CACHE SETEX <key> <ttl seconds> <value...> | CACHE DEL <key>... | CACHE DELPREFIX <prefix>";
    let verb = rest.first().map(|w| w.to_ascii_uppercase());
    let args = &rest[rest.len().min(1)..];
    match verb.as_deref() {
        Some("GET") if args.len() == 1 => Ok(Request::CacheGet {
            key: args[0].to_string(),
        }),
        Some("SET") if args.len() >= 2 => Ok(Request::CacheSet(CacheItem {
            key: args[0].to_string(),
            value: rest_of_line(line, 3).as_bytes().to_vec(),
            ttl_ms: None,
        })),
        Some("SETEX") if args.len() >= 3 => {
            let secs = parse_u64("ttl", args[1])?;
            Ok(Request::CacheSet(CacheItem {
                key: args[0].to_string(),
                value: rest_of_line(line, 4).as_bytes().to_vec(),
                ttl_ms: Some(secs.saturating_mul(1000)),
            }))
        }
        Some("DEL") if !args.is_empty() => Ok(Request::CacheDel {
            keys: args.iter().map(|k| k.to_string()).collect(),
        }),
        Some("DELPREFIX") if args.len() == 1 => Ok(Request::CacheDelPrefix {
            prefix: args[0].to_string(),
        }),
        Some("GET" | "SET" | "SETEX" | "DEL" | "DELPREFIX") | None => Err(bad(USAGE)),
        Some(other) => Err(WireError::new(
            ErrorCode::UnknownCommand,
            format!("unknown command 'CACHE {}'; {USAGE}", clip(other)),
        )),
    }
}

/// The line after its first `n` words and the one blank that follows
/// them: a `CACHE SET` value, with any further blanks kept as sent.
fn rest_of_line(line: &str, n: usize) -> &str {
    let mut rest = line.strip_suffix('\r').unwrap_or(line);
    for _ in 0..n {
        rest = rest.trim_start_matches([' ', '\t']);
        let end = rest.find([' ', '\t']).unwrap_or(rest.len());
        rest = &rest[end..];
    }
    rest.strip_prefix([' ', '\t']).unwrap_or(rest)
}

/// Parses a decimal `u64`; anything else is `invalid_argument`.
fn parse_u64(what: &str, word: &str) -> Result<u64, WireError> {
    word.parse().map_err(|_| {
        WireError::new(
            ErrorCode::InvalidArgument,
            format!(
                "{what} must be a whole number from 0 to {}, got '{}'",
                u64::MAX,
                clip(word)
            ),
        )
    })
}

/// ` host=<id>` for a number issued from a host's local store, else nothing.
fn host_field(host: Option<u16>) -> String {
    host.map_or_else(String::new, |h| format!(" host={h}"))
}

/// Formats an outcome as its reply: one line without the final `\n`, or for
/// multi-line replies several lines ending with a line holding only `.`.
pub fn format_reply(result: &Result<Response, WireError>) -> String {
    match result {
        Ok(Response::Pong) => "OK pong".to_string(),
        Ok(Response::Daily { seq, day, source }) => {
            format!("OK seq={seq} day={day:08} source={}", source.as_str())
        }
        Ok(Response::Conv { seq, source }) => format!("OK seq={seq} source={}", source.as_str()),
        // `host=` is appended only when there is one: the fields of the
        // reply without it keep their order and meaning.
        Ok(Response::DailyNumber {
            seq,
            day,
            source,
            host,
        }) => format!(
            "OK seq={seq} day={day:08} source={}{}",
            source.as_str(),
            host_field(*host)
        ),
        Ok(Response::ConvNumber { seq, source, host }) => format!(
            "OK seq={seq} source={}{}",
            source.as_str(),
            host_field(*host)
        ),
        Ok(Response::Health { fields } | Response::Info { fields }) => {
            let mut line = String::from("OK");
            for (k, v) in fields {
                line.push(' ');
                line.push_str(k);
                line.push('=');
                line.push_str(&one_word(v));
            }
            line
        }
        Ok(Response::Gap(r)) => format_gap(r),
        Ok(Response::GapBatch(results)) => {
            let mut out = String::new();
            for r in results {
                out.push_str(&format_gap(r));
                out.push('\n');
            }
            out.push('.');
            out
        }
        Ok(Response::GapStats(None)) => "OK exists=false".to_string(),
        Ok(Response::GapStats(Some(st))) => format_stats(st),
        Ok(Response::Done) => "OK".to_string(),
        Ok(Response::CacheValue(None)) => "OK miss".to_string(),
        Ok(Response::CacheValue(Some(v))) => format!("OK hit {}", show_value(v)),
        Ok(Response::CacheValues(values)) => {
            let mut out = String::new();
            for v in values {
                out.push_str(&format_reply(&Ok(Response::CacheValue(v.clone()))));
                out.push('\n');
            }
            out.push('.');
            out
        }
        Ok(Response::CacheWritten(WriteOutcome::Stored)) => "OK".to_string(),
        Ok(Response::CacheWritten(WriteOutcome::Invalidated)) => "OK invalidated=true".to_string(),
        Ok(Response::CacheWritten(WriteOutcome::Deferred)) => "OK deferred=true".to_string(),
        Ok(Response::CacheDeleted { count, deferred }) => match deferred {
            false => format!("OK deleted={count}"),
            true => format!("OK deleted={count} deferred=true"),
        },
        Ok(Response::Cleared { count }) => format!("OK cleared={count}"),
        Ok(Response::Metrics { text }) => {
            let mut out = String::with_capacity(text.len() + 2);
            for l in text.lines().filter(|l| *l != ".") {
                out.push_str(l);
                out.push('\n');
            }
            out.push('.');
            out
        }
        Err(e) => format_error(e),
    }
}

/// A cached value on one line: as is when it is printable UTF-8 without a
/// backslash; otherwise with escapes (`\\`, `\n`, `\r`, `\t`, `\xNN` for
/// other bytes), so a backslash in a reply always starts an escape.
pub fn show_value(v: &[u8]) -> String {
    if let Ok(s) = std::str::from_utf8(v) {
        if !s.chars().any(|c| c.is_control() || c == '\\') {
            return s.to_string();
        }
    }
    let mut out = String::with_capacity(v.len() + 8);
    let mut rest = v;
    while !rest.is_empty() {
        // Keep printable UTF-8 characters; escape everything else by byte.
        let valid = match std::str::from_utf8(rest) {
            Ok(s) => s,
            Err(e) => std::str::from_utf8(&rest[..e.valid_up_to()]).unwrap_or(""),
        };
        if let Some(c) = valid.chars().next() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                c if c.is_control() => {
                    let mut buf = [0u8; 4];
                    for b in c.encode_utf8(&mut buf).bytes() {
                        out.push_str(&format!("\\x{b:02x}"));
                    }
                }
                c => out.push(c),
            }
            rest = &rest[c.len_utf8()..];
        } else {
            out.push_str(&format!("\\x{:02x}", rest[0]));
            rest = &rest[1..];
        }
    }
    out
}

fn format_gap(r: &GapResult) -> String {
    let expected = r
        .expected
        .map_or_else(|| "-".to_string(), |e| e.to_string());
    let mut line = format!(
        "OK event={} seq={} expected={expected} gap={} source={}",
        r.kind.as_str(),
        r.seq,
        r.gap,
        r.source.as_str()
    );
    if let Some(filled) = r.filled {
        line.push_str(if filled {
            " filled=true"
        } else {
            " filled=false"
        });
    }
    line
}

fn format_stats(st: &StreamStats) -> String {
    let missing = if st.missing.is_empty() {
        "-".to_string()
    } else {
        st.missing
            .iter()
            .map(|(a, b)| format!("{a}-{b}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    format!(
        "OK exists=true last={} gaps={} resets={} last_ts={} missing={missing} source={}",
        st.last_seq,
        st.gap_count,
        st.reset_count,
        format_rfc3339_ms(st.last_ts_ms),
        st.source.as_str()
    )
}

/// `ERR <code> <message>` on one line.
pub fn format_error(e: &WireError) -> String {
    format!("ERR {} {}", e.code, one_line(&e.message))
}

/// The `HELP` reply, ending with `.`.
pub fn format_help() -> String {
    let mut out = String::new();
    for l in HELP_LINES {
        out.push_str(l);
        out.push('\n');
    }
    out.push('.');
    out
}

/// Keeps a reply on one line whatever a message contains.
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// A field value must be one word for `key=value` parsing to work.
fn one_word(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_whitespace() || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect()
}

/// Parses the `key=value` fields of an `OK` line (the inverse of the reply
/// formats above), for clients and tests that read text replies.
pub fn parse_ok_fields(line: &str) -> Option<Vec<(&str, &str)>> {
    let rest = line.strip_prefix("OK")?;
    Some(words(rest).filter_map(|w| w.split_once('=')).collect())
}

/// Formats a request as a text command line (without `\n`), the inverse of
/// [`parse_line`]; `None` for requests the text protocol does not carry
/// (batches).
pub fn format_request(request: &Request) -> Option<String> {
    fn daily(verb: &str, q: &DailyQuery) -> String {
        let mut line = format!("DAILY {verb} {}", q.user);
        if let Some(tz) = &q.tz {
            line.push_str(" tz=");
            line.push_str(tz);
        }
        if let Some(ms) = q.at_ms {
            line.push_str(" at=");
            line.push_str(&format_rfc3339_ms(ms));
        }
        line
    }
    fn conv(verb: &str, c: &Conversation) -> String {
        match c {
            Conversation::Private { a, b } => format!("CONV {verb} private {a} {b}"),
            Conversation::Group { id } => format!("CONV {verb} group {id}"),
        }
    }
    Some(match request {
        Request::Ping => "PING".into(),
        Request::Health => "HEALTH".into(),
        Request::Metrics => "METRICS".into(),
        Request::Info => "INFO".into(),
        Request::DailyNext(q) => daily("NEXT", q),
        Request::DailyGet(q) => daily("GET", q),
        Request::ConvNext(c) => conv("NEXT", c),
        Request::ConvGet(c) => conv("GET", c),
        Request::GapCheck(e) => format!(
            "GAP CHECK {} {} {}",
            e.stream.exchange, e.stream.symbol, e.seq
        ),
        Request::GapStats(st) => format!("GAP STATS {} {}", st.exchange, st.symbol),
        Request::GapClear(st) => format!("GAP CLEAR {} {}", st.exchange, st.symbol),
        Request::GapClearAll => "GAP CLEARALL".into(),
        Request::GapBatch(_) => return None,
        Request::CacheGet { key } => format!("CACHE GET {key}"),
        Request::CacheSet(item) => {
            // Only values that survive a text line round trip.
            let value = std::str::from_utf8(&item.value).ok()?;
            if value.contains(['\n', '\r']) || value.is_empty() {
                return None;
            }
            match item.ttl_ms {
                None => format!("CACHE SET {} {value}", item.key),
                Some(ms) if ms % 1000 == 0 => {
                    format!("CACHE SETEX {} {} {value}", item.key, ms / 1000)
                }
                Some(_) => return None,
            }
        }
        Request::CacheDel { keys } if !keys.is_empty() => format!("CACHE DEL {}", keys.join(" ")),
        Request::CacheDelPrefix { prefix } => format!("CACHE DELPREFIX {prefix}"),
        Request::CacheDel { .. } | Request::CacheGetMany { .. } | Request::CacheSetMany(_) => {
            return None
        }
    })
}

/// Formats milliseconds since the epoch as RFC 3339 in UTC
/// (`2026-01-06T18:29:59.000Z`); out-of-range values print as the epoch.
pub fn format_rfc3339_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
