//! The text protocol from a test's side: a connection, and the fields of
//! its replies.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// A text-protocol connection: write lines, read reply lines.
pub struct TextConn {
    pub reader: BufReader<UnixStream>,
    pub writer: UnixStream,
}

impl TextConn {
    pub fn connect(path: &Path) -> TextConn {
        let s = UnixStream::connect(path).expect("connecting to seqd");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        TextConn {
            reader: BufReader::new(s.try_clone().unwrap()),
            writer: s,
        }
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).expect("writing to seqd");
    }

    /// Reads one reply line, without its `\n`.
    pub fn read_line(&mut self) -> String {
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("reading from seqd");
        assert!(line.ends_with('\n'), "connection closed; got {line:?}");
        line.pop();
        line
    }

    /// Sends one command line and reads its one-line reply.
    pub fn cmd(&mut self, line: &str) -> String {
        self.send_raw(format!("{line}\n").as_bytes());
        self.read_line()
    }

    /// Sends a command with a multi-line reply (`HELP`, `METRICS`) and
    /// reads it up to its closing `.` line, which is left out.
    pub fn cmd_multiline(&mut self, line: &str) -> String {
        self.send_raw(format!("{line}\n").as_bytes());
        let mut out = String::new();
        loop {
            let l = self.read_line();
            if l == "." {
                return out;
            }
            out.push_str(&l);
            out.push('\n');
        }
    }
}

/// The value of `name` in an `OK k=v ...` reply.
pub fn field<'a>(reply: &'a str, name: &str) -> &'a str {
    seqd_protocol::text::parse_ok_fields(reply)
        .unwrap_or_else(|| panic!("not an OK reply: {reply}"))
        .into_iter()
        .find(|(k, _)| *k == name)
        .unwrap_or_else(|| panic!("no {name}= in {reply}"))
        .1
}

/// `seq=` of an `OK` reply as a number.
pub fn seq_of(reply: &str) -> u64 {
    field(reply, "seq").parse().expect("seq is a number")
}

/// Today's date (YYYYMMDD) in `tz`, for replies without `at=`.
pub fn today_in(tz: &str) -> u32 {
    let tz: chrono_tz::Tz = tz.parse().unwrap();
    chrono::Utc::now()
        .with_timezone(&tz)
        .format("%Y%m%d")
        .to_string()
        .parse()
        .unwrap()
}

/// One instant for the whole test process (the first call's now), in
/// milliseconds: tests that pass `at=` keep their daily keys on one day
/// even across midnight, and it is always within seqd's window of days
/// that accept `DAILY NEXT`.
pub fn test_instant_ms() -> i64 {
    static AT: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *AT.get_or_init(|| chrono::Utc::now().timestamp_millis())
}

/// The local date (YYYYMMDD) of `at_ms` in `tz`.
pub fn day_at(at_ms: i64, tz: &str) -> u32 {
    let tz: chrono_tz::Tz = tz.parse().unwrap();
    chrono::DateTime::from_timestamp_millis(at_ms)
        .unwrap()
        .with_timezone(&tz)
        .format("%Y%m%d")
        .to_string()
        .parse()
        .unwrap()
}

/// `at_ms` as RFC 3339 (for `at=` in text commands).
pub fn rfc3339(at_ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(at_ms)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}
