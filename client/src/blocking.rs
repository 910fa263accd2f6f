//! The blocking client: one std Unix socket, driven through the I/O-free
//! session (`session.rs`).
//!
//! A [`Client`] holds one connection. After the connection breaks, the next
//! call reconnects, and a call that failed because the connection broke is
//! retried once on a new one. For a `*_next` call that means the daemon may
//! have issued a number whose reply was lost: that number is skipped, never
//! handed out twice.

use crate::answers;
use crate::requests::{cache_del, cache_set, daily_query, gap_event, stream};
use crate::session::{hello_answer, retry_older, ConnectRetry, Session};
use crate::{ClientError, ConvSeq, DailySeq, DEFAULT_TIMEOUT};
use seqd_protocol::codec;
use seqd_protocol::{
    CacheItem, Conversation, GapEvent, GapResult, Request, Response, StreamStats, WriteOutcome,
};
use std::io::{BufReader, BufWriter, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

struct Conn {
    reader: BufReader<UnixStream>,
    writer: BufWriter<UnixStream>,
}

/// A blocking connection to seqd.
pub struct Client {
    path: PathBuf,
    timeout: Duration,
    session: Session,
    conn: Option<Conn>,
    /// Reused for every exchange.
    out: Vec<u8>,
}

impl Client {
    /// Connects to the socket at `path` and says hello, waiting for a seqd
    /// that is not up yet for up to [`DEFAULT_TIMEOUT`].
    pub fn connect(path: impl AsRef<Path>) -> Result<Client, ClientError> {
        Client::connect_with_timeout(path, DEFAULT_TIMEOUT)
    }

    /// Like [`Client::connect`], with a time limit for every reply. While
    /// seqd is not up yet (its socket missing or refusing), connecting
    /// tries again for up to `timeout`.
    pub fn connect_with_timeout(
        path: impl AsRef<Path>,
        timeout: Duration,
    ) -> Result<Client, ClientError> {
        let mut client = Client {
            path: path.as_ref().to_path_buf(),
            timeout,
            session: Session::new(),
            conn: None,
            out: Vec::with_capacity(256),
        };
        let mut retry = ConnectRetry::within(timeout);
        loop {
            match client.open() {
                Ok(conn) => {
                    client.conn = Some(conn);
                    return Ok(client);
                }
                Err(e) => match retry.after(&e) {
                    Some(pause) => std::thread::sleep(pause),
                    None => return Err(e),
                },
            }
        }
    }

    /// The time limit of every reply (and of write-through's retries).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Connects and says hello; a daemon older than this client is spoken
    /// to in protocol 1 (its answers then carry no host).
    fn open(&mut self) -> Result<Conn, ClientError> {
        loop {
            let (conn, answer) = self.open_once()?;
            if retry_older(&mut self.session, &answer) {
                continue;
            }
            answer?;
            return Ok(conn);
        }
    }

    fn open_once(&self) -> Result<(Conn, Result<(), ClientError>), ClientError> {
        let stream = UnixStream::connect(&self.path)?;
        stream.set_read_timeout(Some(self.timeout))?;
        stream.set_write_timeout(Some(self.timeout))?;
        let mut conn = Conn {
            reader: BufReader::new(stream.try_clone()?),
            writer: BufWriter::new(stream),
        };
        conn.writer.write_all(&self.session.hello()?)?;
        conn.writer.flush()?;
        let answer = hello_answer(codec::read_frame(&mut conn.reader, self.session.max_frame)?);
        Ok((conn, answer))
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
        let mut batch = self.session.encode(requests, &mut self.out)?;
        let max = self.session.max_frame;
        let conn = self.conn.as_mut().expect("connected above");
        conn.writer.write_all(&self.out)?;
        conn.writer.flush()?;
        while !batch.is_complete() {
            let msg = codec::read_frame(&mut conn.reader, max)?;
            if let Err(e) = batch.accept(msg) {
                self.conn = None;
                return Err(e);
            }
        }
        Ok(batch.finish())
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
        answers::gap_stats(self.request(Request::GapStats(stream(exchange, symbol)))?)
    }

    /// Forgets a stream.
    pub fn gap_clear(&mut self, exchange: &str, symbol: &str) -> Result<(), ClientError> {
        answers::done(self.request(Request::GapClear(stream(exchange, symbol)))?)
    }

    /// Forgets every stream (`SCAN` + `UNLINK` in Redis); returns how many.
    pub fn gap_clear_all(&mut self) -> Result<u64, ClientError> {
        answers::cleared(self.request(Request::GapClearAll)?)
    }

    /// Reads a cached value (`None` on a miss). While Redis is down the
    /// answer is an error with code `unavailable`: read the database.
    pub fn cache_get(&mut self, key: &str) -> Result<Option<Vec<u8>>, ClientError> {
        answers::cache_value(self.request(Request::CacheGet { key: key.into() })?)
    }

    /// Reads several cached values, one answer per key.
    pub fn cache_get_many(&mut self, keys: &[&str]) -> Result<Vec<Option<Vec<u8>>>, ClientError> {
        let keys = keys.iter().map(|k| k.to_string()).collect();
        answers::cache_values(self.request(Request::CacheGetMany { keys })?)
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

    /// The daemon's health as `name=value` pairs (`redis`, `breaker`, ...).
    pub fn health(&mut self) -> Result<Vec<(String, String)>, ClientError> {
        answers::health(self.request(Request::Health)?)
    }

    /// The daemon's metrics in the Prometheus text format.
    pub fn metrics(&mut self) -> Result<String, ClientError> {
        answers::metrics(self.request(Request::Metrics)?)
    }

    /// What the daemon is and accepts (`INFO`: version, protocols, host,
    /// mode, limits, the requests it knows) as `name=value` pairs.
    pub fn info(&mut self) -> Result<Vec<(String, String)>, ClientError> {
        answers::info(self.request(Request::Info)?)
    }
}
