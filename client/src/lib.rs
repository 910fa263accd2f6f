//! # seqd-client
//!
//! A small blocking client for seqd's binary protocol, an async one
//! ([`AsyncClient`], feature `tokio`), and (feature `cli`) the `seqctl`
//! tool.
//!
//! ```no_run
//! use seqd_client::{Client, format_daily_seq};
//!
//! let mut seqd = Client::connect("/run/seqd/seqd.sock")?;
//! let daily = seqd.daily_next("123", Some("Asia/Kolkata"), None)?;
//! let order_id = format!("ORD-{}-{}", daily.day, format_daily_seq(daily.seq));
//! let msg_no = seqd.private_next("alice", "bob")?.seq;
//! # Ok::<(), seqd_client::ClientError>(())
//! ```
//!
//! A `Client` holds one connection. After the connection breaks, the next
//! call reconnects, and a call that failed because the connection broke is
//! retried once on a new one. For a `*_next` call that means the daemon may
//! have issued a number whose reply was lost: that number is skipped, never
//! handed out twice.

use seqd_protocol::codec::{self, FrameError};
use seqd_protocol::{
    CacheItem, ClientMessage, Conversation, DailyQuery, ErrorCode, GapEvent, GapResult, Request,
    Response, ServerMessage, Source, Stream, StreamStats, WireError, WriteOutcome,
    DEFAULT_MAX_FRAME, PROTOCOL_VERSION,
};
use std::collections::HashMap;
use std::io::{BufReader, BufWriter, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use seqd_protocol;

pub mod keys;

#[cfg(feature = "tokio")]
mod asynchronous;
#[cfg(feature = "tokio")]
pub use asynchronous::AsyncClient;

/// The default socket path of a seqd installed as a service.
pub const DEFAULT_SOCKET: &str = "/run/seqd/seqd.sock";
/// Default time limit for connecting and for each reply.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The daemon answered with an error code and message.
    #[error("seqd: {0}")]
    Server(WireError),
    #[error("seqd connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("seqd protocol: {0}")]
    Protocol(String),
}

impl ClientError {
    /// The daemon's error code, when the daemon answered with one.
    pub fn code(&self) -> Option<seqd_protocol::ErrorCode> {
        match self {
            ClientError::Server(e) => Some(e.code),
            _ => None,
        }
    }

    fn is_broken_connection(&self) -> bool {
        matches!(self, ClientError::Io(_))
    }
}

impl From<FrameError> for ClientError {
    fn from(e: FrameError) -> Self {
        match e {
            FrameError::Io(e) => ClientError::Io(e),
            other => ClientError::Protocol(other.to_string()),
        }
    }
}

/// A daily sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DailySeq {
    pub seq: u64,
    /// The local day, YYYYMMDD.
    pub day: u32,
    pub source: Source,
}

/// A conversation sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvSeq {
    pub seq: u64,
    pub source: Source,
}

/// Formats a daily number in the 5-digit form of order ids (`00042`).
/// Past 99999 the number keeps all its digits (`100000`): it never wraps.
pub fn format_daily_seq(seq: u64) -> String {
    format!("{seq:05}")
}

struct Conn {
    reader: BufReader<UnixStream>,
    writer: BufWriter<UnixStream>,
}

/// A blocking connection to seqd.
pub struct Client {
    path: PathBuf,
    timeout: Duration,
    max_frame: usize,
    conn: Option<Conn>,
    next_id: u64,
}

impl Client {
    /// Connects to the socket at `path` and says hello.
    pub fn connect(path: impl AsRef<Path>) -> Result<Client, ClientError> {
        Client::connect_with_timeout(path, DEFAULT_TIMEOUT)
    }

    /// Like [`Client::connect`], with a time limit for every reply.
    pub fn connect_with_timeout(
        path: impl AsRef<Path>,
        timeout: Duration,
    ) -> Result<Client, ClientError> {
        let mut client = Client {
            path: path.as_ref().to_path_buf(),
            timeout,
            max_frame: DEFAULT_MAX_FRAME,
            conn: None,
            next_id: 1,
        };
        client.conn = Some(client.open()?);
        Ok(client)
    }

    fn open(&self) -> Result<Conn, ClientError> {
        let stream = UnixStream::connect(&self.path)?;
        stream.set_read_timeout(Some(self.timeout))?;
        stream.set_write_timeout(Some(self.timeout))?;
        let mut conn = Conn {
            reader: BufReader::new(stream.try_clone()?),
            writer: BufWriter::new(stream),
        };
        codec::write_frame(&mut conn.writer, &hello(), self.max_frame)?;
        hello_answer(codec::read_frame(&mut conn.reader, self.max_frame)?)?;
        Ok(conn)
    }

    /// Sends one request and waits for its response.
    pub fn request(&mut self, request: Request) -> Result<Response, ClientError> {
        let mut out = self.pipeline(vec![request])?;
        out.pop()
            .unwrap_or_else(|| Err(ClientError::Protocol("no response".into())))
    }

    /// Sends several requests back to back, then collects their responses
    /// (which the daemon may send in any order), returned in request order.
    /// The outer error is a connection failure; inner ones are per request.
    pub fn pipeline(
        &mut self,
        requests: Vec<Request>,
    ) -> Result<Vec<Result<Response, ClientError>>, ClientError> {
        match self.try_pipeline(&requests) {
            Err(e) if e.is_broken_connection() => {
                self.conn = None;
                self.try_pipeline(&requests)
            }
            other => other,
        }
    }

    fn try_pipeline(
        &mut self,
        requests: &[Request],
    ) -> Result<Vec<Result<Response, ClientError>>, ClientError> {
        if self.conn.is_none() {
            self.conn = Some(self.open()?);
        }
        let result = self.exchange(requests);
        if matches!(&result, Err(e) if e.is_broken_connection() || matches!(e, ClientError::Protocol(_)))
        {
            // After a broken or confused exchange, start over next time.
            self.conn = None;
        }
        result
    }

    fn exchange(
        &mut self,
        requests: &[Request],
    ) -> Result<Vec<Result<Response, ClientError>>, ClientError> {
        let max = self.max_frame;
        let first_id = self.next_id;
        self.next_id += requests.len() as u64;
        let conn = self.conn.as_mut().expect("connected above");
        for (i, request) in requests.iter().enumerate() {
            let msg = ClientMessage::Request {
                id: first_id + i as u64,
                request: request.clone(),
            };
            let frame = codec::encode_frame(&msg, max)?;
            conn.writer.write_all(&frame)?;
        }
        conn.writer.flush()?;
        let mut results: HashMap<u64, Result<Response, ClientError>> =
            HashMap::with_capacity(requests.len());
        while results.len() < requests.len() {
            let msg = codec::read_frame(&mut conn.reader, max)?;
            match response_of(msg, first_id..self.next_id) {
                Ok((id, result)) => {
                    results.insert(id, result);
                }
                Err(e) => {
                    self.conn = None;
                    return Err(e);
                }
            }
        }
        Ok((0..requests.len() as u64)
            .map(|i| results.remove(&(first_id + i)).expect("collected above"))
            .collect())
    }

    pub fn ping(&mut self) -> Result<(), ClientError> {
        answers::pong(self.request(Request::Ping)?)
    }

    /// Issues the next daily number of `user`. `tz` is an IANA zone (the
    /// daemon's default when `None`); `at_ms` picks the day (now when `None`).
    pub fn daily_next(
        &mut self,
        user: &str,
        tz: Option<&str>,
        at_ms: Option<i64>,
    ) -> Result<DailySeq, ClientError> {
        self.daily(Request::DailyNext(daily_query(user, tz, at_ms)))
    }

    /// Reads the current daily number of `user` (0 when none was issued).
    pub fn daily_get(
        &mut self,
        user: &str,
        tz: Option<&str>,
        at_ms: Option<i64>,
    ) -> Result<DailySeq, ClientError> {
        self.daily(Request::DailyGet(daily_query(user, tz, at_ms)))
    }

    fn daily(&mut self, request: Request) -> Result<DailySeq, ClientError> {
        answers::daily(self.request(request)?)
    }

    /// Issues the next message number of a conversation.
    pub fn conv_next(&mut self, conv: Conversation) -> Result<ConvSeq, ClientError> {
        self.conv(Request::ConvNext(conv))
    }

    /// Reads the current message number of a conversation (0 when none).
    pub fn conv_get(&mut self, conv: Conversation) -> Result<ConvSeq, ClientError> {
        self.conv(Request::ConvGet(conv))
    }

    /// Next number of the private chat of `a` and `b` (in either order).
    pub fn private_next(&mut self, a: &str, b: &str) -> Result<ConvSeq, ClientError> {
        self.conv_next(Conversation::Private {
            a: a.into(),
            b: b.into(),
        })
    }

    /// Next number of a group chat.
    pub fn group_next(&mut self, group: &str) -> Result<ConvSeq, ClientError> {
        self.conv_next(Conversation::Group { id: group.into() })
    }

    fn conv(&mut self, request: Request) -> Result<ConvSeq, ClientError> {
        answers::conv(self.request(request)?)
    }

    /// Classifies one market-data sequence number of `exchange`/`symbol`.
    pub fn gap_check(
        &mut self,
        exchange: &str,
        symbol: &str,
        seq: u64,
    ) -> Result<GapResult, ClientError> {
        answers::gap(self.request(Request::GapCheck(gap_event(exchange, symbol, seq)))?)
    }

    /// Classifies `events` in order, atomically; one result per event.
    pub fn gap_batch(&mut self, events: Vec<GapEvent>) -> Result<Vec<GapResult>, ClientError> {
        answers::gap_batch(self.request(Request::GapBatch(events))?)
    }

    /// What is known about a stream (`None`: nothing).
    pub fn gap_stats(
        &mut self,
        exchange: &str,
        symbol: &str,
    ) -> Result<Option<StreamStats>, ClientError> {
        match self.request(Request::GapStats(stream(exchange, symbol)))? {
            Response::GapStats(s) => Ok(s),
            other => Err(unexpected(other)),
        }
    }

    /// Forgets a stream.
    pub fn gap_clear(&mut self, exchange: &str, symbol: &str) -> Result<(), ClientError> {
        match self.request(Request::GapClear(stream(exchange, symbol)))? {
            Response::Done => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Forgets every stream (`SCAN` + `UNLINK` in Redis); returns how many.
    pub fn gap_clear_all(&mut self) -> Result<u64, ClientError> {
        match self.request(Request::GapClearAll)? {
            Response::Cleared { count } => Ok(count),
            other => Err(unexpected(other)),
        }
    }

    /// Reads a cached value (`None` on a miss). While Redis is down the
    /// answer is an error with code `unavailable`: read the database.
    pub fn cache_get(&mut self, key: &str) -> Result<Option<Vec<u8>>, ClientError> {
        answers::cache_value(self.request(Request::CacheGet { key: key.into() })?)
    }

    /// Reads several cached values, one answer per key.
    pub fn cache_get_many(&mut self, keys: &[&str]) -> Result<Vec<Option<Vec<u8>>>, ClientError> {
        let keys = keys.iter().map(|k| k.to_string()).collect();
        match self.request(Request::CacheGetMany { keys })? {
            Response::CacheValues(v) => Ok(v),
            other => Err(unexpected(other)),
        }
    }

    /// Stores a value, optionally with a time to live.
    pub fn cache_set(
        &mut self,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
    ) -> Result<WriteOutcome, ClientError> {
        answers::cache_written(self.request(cache_set(key, value, ttl))?)
    }

    /// Stores several values; the outcome is the worst of them.
    pub fn cache_set_many(&mut self, items: Vec<CacheItem>) -> Result<WriteOutcome, ClientError> {
        answers::cache_written(self.request(Request::CacheSetMany(items))?)
    }

    /// Invalidates keys; returns how many were removed now and whether the
    /// removal was deferred until Redis is back.
    pub fn cache_del(&mut self, keys: &[&str]) -> Result<(u64, bool), ClientError> {
        answers::cache_deleted(self.request(cache_del(keys))?)
    }

    /// Invalidates every key starting with `prefix` (`user:42:` resets a
    /// user; `admin:defaults:` the defaults).
    pub fn cache_del_prefix(&mut self, prefix: &str) -> Result<(u64, bool), ClientError> {
        answers::cache_deleted(self.request(Request::CacheDelPrefix {
            prefix: prefix.into(),
        })?)
    }

    /// Cache-aside: a hit returns the cached value; a miss calls `loader`
    /// (your database read) and caches what it returns; while the cache is
    /// unavailable, `loader` alone answers and nothing is cached, so a
    /// value superseded during an outage is never written back.
    pub fn get_or_load<E>(
        &mut self,
        key: &str,
        ttl: Option<Duration>,
        loader: impl FnOnce() -> Result<Vec<u8>, E>,
    ) -> Result<Vec<u8>, CacheAsideError<E>> {
        match self.cache_get(key) {
            Ok(Some(v)) => Ok(v),
            Ok(None) => {
                let v = loader().map_err(CacheAsideError::Load)?;
                // A failed populate only costs a later miss.
                let _ = self.cache_set(key, &v, ttl);
                Ok(v)
            }
            Err(e) if e.code() == Some(ErrorCode::Unavailable) => {
                loader().map_err(CacheAsideError::Load)
            }
            Err(e) => Err(CacheAsideError::Cache(e)),
        }
    }

    /// Write-through: runs `db_write` (the database is the truth) and then
    /// updates the cache with `value`, or, with `None`, invalidates the key.
    /// The database write's error stops everything; the cache step's
    /// outcome is returned (`Deferred` still means no reader will see the
    /// old value).
    pub fn write_through<T, E>(
        &mut self,
        key: &str,
        value: Option<&[u8]>,
        ttl: Option<Duration>,
        db_write: impl FnOnce() -> Result<T, E>,
    ) -> Result<(T, WriteOutcome), CacheAsideError<E>> {
        let written = db_write().map_err(CacheAsideError::Load)?;
        let outcome = match value {
            Some(v) => self
                .cache_set(key, v, ttl)
                .map_err(CacheAsideError::Cache)?,
            None => match self.cache_del(&[key]).map_err(CacheAsideError::Cache)? {
                (_, true) => WriteOutcome::Deferred,
                (_, false) => WriteOutcome::Invalidated,
            },
        };
        Ok((written, outcome))
    }

    /// The daemon's health as `name=value` pairs (`redis`, `breaker`, ...).
    pub fn health(&mut self) -> Result<Vec<(String, String)>, ClientError> {
        answers::health(self.request(Request::Health)?)
    }

    /// The daemon's metrics in the Prometheus text format.
    pub fn metrics(&mut self) -> Result<String, ClientError> {
        match self.request(Request::Metrics)? {
            Response::Metrics { text } => Ok(text),
            other => Err(unexpected(other)),
        }
    }
}

fn hello() -> ClientMessage {
    ClientMessage::Hello {
        version: PROTOCOL_VERSION,
        client: format!("seqd-client/{}", env!("CARGO_PKG_VERSION")),
    }
}

fn hello_answer(msg: ServerMessage) -> Result<(), ClientError> {
    match msg {
        ServerMessage::Hello { .. } => Ok(()),
        ServerMessage::Error { error } => Err(ClientError::Server(error)),
        other => Err(ClientError::Protocol(format!(
            "unexpected answer to hello: {other:?}"
        ))),
    }
}

/// A server message read while waiting for the requests with ids in
/// `expected`: the response of one of them, or why the connection cannot
/// go on (the caller drops it).
fn response_of(
    msg: ServerMessage,
    expected: std::ops::Range<u64>,
) -> Result<(u64, Result<Response, ClientError>), ClientError> {
    match msg {
        ServerMessage::Response { id, result } if expected.contains(&id) => {
            Ok((id, result.map_err(ClientError::Server)))
        }
        ServerMessage::Response { id, .. } => Err(ClientError::Protocol(format!(
            "response for unknown request id {id}"
        ))),
        // The daemon closed an idle connection while this request was on
        // its way: a broken connection, so it is retried.
        ServerMessage::Error { error } if error.code == ErrorCode::Unavailable => {
            Err(ClientError::Io(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                error.message,
            )))
        }
        ServerMessage::Error { error } => Err(ClientError::Server(error)),
        ServerMessage::Hello { .. } => Err(ClientError::Protocol("unexpected hello".into())),
    }
}

fn daily_query(user: &str, tz: Option<&str>, at_ms: Option<i64>) -> DailyQuery {
    DailyQuery {
        user: user.into(),
        tz: tz.map(Into::into),
        at_ms,
    }
}

/// What [`Client::get_or_load`] and [`Client::write_through`] fail with:
/// your database step's error, or the cache's.
#[derive(Debug, thiserror::Error)]
pub enum CacheAsideError<E> {
    #[error("database: {0}")]
    Load(E),
    #[error(transparent)]
    Cache(ClientError),
}

/// A stream name pair.
pub fn stream(exchange: &str, symbol: &str) -> Stream {
    Stream {
        exchange: exchange.into(),
        symbol: symbol.into(),
    }
}

/// One event for [`Client::gap_batch`].
pub fn gap_event(exchange: &str, symbol: &str, seq: u64) -> GapEvent {
    GapEvent {
        stream: stream(exchange, symbol),
        seq,
    }
}

fn unexpected(r: Response) -> ClientError {
    ClientError::Protocol(format!("unexpected response {r:?}"))
}

fn cache_set(key: &str, value: &[u8], ttl: Option<Duration>) -> Request {
    Request::CacheSet(CacheItem {
        key: key.into(),
        value: value.to_vec(),
        ttl_ms: ttl.map(|d| d.as_millis() as u64),
    })
}

fn cache_del(keys: &[&str]) -> Request {
    Request::CacheDel {
        keys: keys.iter().map(|k| k.to_string()).collect(),
    }
}

/// The typed answer of each request, shared by the blocking and the async
/// client.
mod answers {
    use super::{unexpected, ClientError, ConvSeq, DailySeq};
    use seqd_protocol::{GapResult, Response, WriteOutcome};

    pub fn pong(r: Response) -> Result<(), ClientError> {
        match r {
            Response::Pong => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    pub fn daily(r: Response) -> Result<DailySeq, ClientError> {
        match r {
            Response::Daily { seq, day, source } => Ok(DailySeq { seq, day, source }),
            other => Err(unexpected(other)),
        }
    }

    pub fn conv(r: Response) -> Result<ConvSeq, ClientError> {
        match r {
            Response::Conv { seq, source } => Ok(ConvSeq { seq, source }),
            other => Err(unexpected(other)),
        }
    }

    pub fn gap(r: Response) -> Result<GapResult, ClientError> {
        match r {
            Response::Gap(r) => Ok(r),
            other => Err(unexpected(other)),
        }
    }

    pub fn gap_batch(r: Response) -> Result<Vec<GapResult>, ClientError> {
        match r {
            Response::GapBatch(r) => Ok(r),
            other => Err(unexpected(other)),
        }
    }

    pub fn cache_value(r: Response) -> Result<Option<Vec<u8>>, ClientError> {
        match r {
            Response::CacheValue(v) => Ok(v),
            other => Err(unexpected(other)),
        }
    }

    pub fn cache_written(r: Response) -> Result<WriteOutcome, ClientError> {
        match r {
            Response::CacheWritten(o) => Ok(o),
            other => Err(unexpected(other)),
        }
    }

    pub fn cache_deleted(r: Response) -> Result<(u64, bool), ClientError> {
        match r {
            Response::CacheDeleted { count, deferred } => Ok((count, deferred)),
            other => Err(unexpected(other)),
        }
    }

    pub fn health(r: Response) -> Result<Vec<(String, String)>, ClientError> {
        match r {
            Response::Health { fields } => Ok(fields),
            other => Err(unexpected(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn daily_numbers_format_to_five_digits_without_wrapping() {
        assert_eq!(format_daily_seq(1), "00001");
        assert_eq!(format_daily_seq(99_999), "99999");
        assert_eq!(format_daily_seq(100_000), "100000");
    }
}
