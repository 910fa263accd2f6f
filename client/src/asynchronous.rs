//! The async client (feature `tokio`): the same protocol and typed calls as
//! [`Client`](crate::Client), on a Tokio Unix socket.
//!
//! An [`AsyncClient`] holds one connection and has one exchange in flight
//! at a time (`&mut self`); open several for concurrency, or send many
//! requests at once with [`AsyncClient::pipeline`]. Like the blocking
//! client it reconnects by itself: after the connection breaks, the next
//! call reconnects, and a call that failed because the connection broke is
//! retried once on a new one (a `*_next` whose reply was lost then skips a
//! number, never repeats one). [`AsyncClient::set_timeout`] puts a time
//! limit on every call; a call that runs out of it fails with an I/O error
//! of kind `TimedOut` and the connection is dropped (its reply may still
//! be on the way).
//!
//! ```no_run
//! # async fn demo() -> Result<(), seqd_client::ClientError> {
//! let mut seqd = seqd_client::AsyncClient::connect("/run/seqd/seqd.sock").await?;
//! let daily = seqd.daily_next("123", Some("Asia/Kolkata"), None).await?;
//! println!("{}", seqd_client::format_daily_seq(daily.seq));
//! # Ok(()) }
//! ```

use crate::answers;
use crate::cache_aside::{deleted, Step, WriteThrough};
use crate::requests::{cache_del, cache_set, daily_query, gap_event, stream};
use crate::session::{hello_answer, retry_older, ConnectRetry, Session};
use crate::{CacheAsideError, ClientError, ConvSeq, DailySeq};
use futures_util::StreamExt;
use seqd_protocol::codec::{self, length_delimited};
use seqd_protocol::{
    CacheItem, Conversation, GapEvent, GapResult, Request, Response, ServerMessage, StreamStats,
    WriteOutcome,
};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;
use tokio_util::codec::{FramedRead, LengthDelimitedCodec, LengthDelimitedCodecError};

/// One open connection.
struct Conn {
    /// Frames through the protocol crate's length-delimited codec, which
    /// checks the length against the limit before buffering the payload.
    frames: FramedRead<OwnedReadHalf, LengthDelimitedCodec>,
    writer: OwnedWriteHalf,
}

/// An async connection to seqd.
pub struct AsyncClient {
    path: PathBuf,
    /// Time limit of one call (connecting again included); `None` = none.
    timeout: Option<Duration>,
    session: Session,
    conn: Option<Conn>,
    /// Reused for every exchange: one allocation per connection, not per
    /// request.
    out: Vec<u8>,
}

impl AsyncClient {
    /// Connects to the socket at `path` and says hello (in protocol 1 to
    /// a daemon older than this client), waiting for a seqd that is not up
    /// yet for up to [`DEFAULT_TIMEOUT`](crate::DEFAULT_TIMEOUT). No time
    /// limit on later calls until [`AsyncClient::set_timeout`].
    pub async fn connect(path: impl AsRef<Path>) -> Result<AsyncClient, ClientError> {
        let mut c = AsyncClient {
            path: path.as_ref().to_path_buf(),
            timeout: None,
            session: Session::new(),
            conn: None,
            out: Vec::with_capacity(256),
        };
        // A seqd not up yet is waited for, for up to the default timeout.
        let mut retry = ConnectRetry::within(crate::DEFAULT_TIMEOUT);
        loop {
            match c.open().await {
                Ok(conn) => {
                    c.conn = Some(conn);
                    return Ok(c);
                }
                Err(e) => match retry.after(&e) {
                    Some(pause) => tokio::time::sleep(pause).await,
                    None => return Err(e),
                },
            }
        }
    }

    /// Like [`AsyncClient::connect`], with a time limit for connecting and
    /// for every later call.
    pub async fn connect_with_timeout(
        path: impl AsRef<Path>,
        timeout: Duration,
    ) -> Result<AsyncClient, ClientError> {
        within(Some(timeout), AsyncClient::connect(path))
            .await
            .map(|mut c| {
                c.timeout = Some(timeout);
                c
            })
    }

    /// Sets (or with `None` removes) the time limit of every call.
    pub fn set_timeout(&mut self, timeout: Option<Duration>) {
        self.timeout = timeout;
    }

    async fn open(&mut self) -> Result<Conn, ClientError> {
        loop {
            let (rd, writer) = UnixStream::connect(&self.path).await?.into_split();
            let mut conn = Conn {
                frames: FramedRead::new(rd, length_delimited(self.session.max_frame)),
                writer,
            };
            conn.writer.write_all(&self.session.hello()?).await?;
            let answer = hello_answer(read_message(&mut conn, self.session.max_frame).await?);
            if retry_older(&mut self.session, &answer) {
                continue;
            }
            answer?;
            return Ok(conn);
        }
    }

    /// Sends one request and waits for its response.
    pub async fn request(&mut self, request: Request) -> Result<Response, ClientError> {
        let mut out = self.pipeline(std::slice::from_ref(&request)).await?;
        out.pop()
            .unwrap_or_else(|| Err(ClientError::Protocol("no response".into())))
    }

    /// Sends several requests in one write, then collects their responses
    /// (which the daemon may send in any order), returned in request order.
    /// The outer error is a connection failure; inner ones are per request.
    pub async fn pipeline(
        &mut self,
        requests: &[Request],
    ) -> Result<Vec<Result<Response, ClientError>>, ClientError> {
        let timeout = self.timeout;
        let result = within(timeout, async {
            match self.try_pipeline(requests).await {
                Err(e) if e.is_broken_connection() => self.try_pipeline(requests).await,
                other => other,
            }
        })
        .await;
        if result.is_err() {
            // A broken, confused or timed-out exchange: start over next time.
            self.conn = None;
        }
        result
    }

    async fn try_pipeline(
        &mut self,
        requests: &[Request],
    ) -> Result<Vec<Result<Response, ClientError>>, ClientError> {
        if self.conn.is_none() {
            self.conn = Some(self.open().await?);
        }
        let result = self.exchange(requests).await;
        if result.is_err() {
            self.conn = None;
        }
        result
    }

    async fn exchange(
        &mut self,
        requests: &[Request],
    ) -> Result<Vec<Result<Response, ClientError>>, ClientError> {
        let mut batch = self.session.encode(requests, &mut self.out)?;
        let max = self.session.max_frame;
        let conn = self.conn.as_mut().expect("connected above");
        conn.writer.write_all(&self.out).await?;
        while !batch.is_complete() {
            let msg = read_message(conn, max).await?;
            batch.accept(msg)?;
        }
        Ok(batch.finish())
    }

    pub async fn ping(&mut self) -> Result<(), ClientError> {
        answers::pong(self.request(Request::Ping).await?)
    }

    /// Issues the next daily number of `user` (see
    /// [`Client::daily_next`](crate::Client::daily_next)).
    pub async fn daily_next(
        &mut self,
        user: &str,
        tz: Option<&str>,
        at_ms: Option<i64>,
    ) -> Result<DailySeq, ClientError> {
        let q = daily_query(user, tz, at_ms);
        answers::daily(self.request(Request::DailyNext(q)).await?)
    }

    /// Reads the current daily number of `user` (0 when none was issued).
    pub async fn daily_get(
        &mut self,
        user: &str,
        tz: Option<&str>,
        at_ms: Option<i64>,
    ) -> Result<DailySeq, ClientError> {
        let q = daily_query(user, tz, at_ms);
        answers::daily(self.request(Request::DailyGet(q)).await?)
    }

    /// Issues the next message number of a conversation.
    pub async fn conv_next(&mut self, conv: Conversation) -> Result<ConvSeq, ClientError> {
        answers::conv(self.request(Request::ConvNext(conv)).await?)
    }

    /// Reads the current message number of a conversation (0 when none).
    pub async fn conv_get(&mut self, conv: Conversation) -> Result<ConvSeq, ClientError> {
        answers::conv(self.request(Request::ConvGet(conv)).await?)
    }

    /// Classifies one market-data sequence number of `exchange`/`symbol`.
    pub async fn gap_check(
        &mut self,
        exchange: &str,
        symbol: &str,
        seq: u64,
    ) -> Result<GapResult, ClientError> {
        let event = gap_event(exchange, symbol, seq);
        answers::gap(self.request(Request::GapCheck(event)).await?)
    }

    /// Classifies `events` in order, atomically; one result per event.
    pub async fn gap_batch(
        &mut self,
        events: Vec<GapEvent>,
    ) -> Result<Vec<GapResult>, ClientError> {
        answers::gap_batch(self.request(Request::GapBatch(events)).await?)
    }

    /// Reads a cached value (`None` on a miss; code `unavailable` while
    /// Redis is down: read the database).
    pub async fn cache_get(&mut self, key: &str) -> Result<Option<Vec<u8>>, ClientError> {
        let request = Request::CacheGet { key: key.into() };
        answers::cache_value(self.request(request).await?)
    }

    /// Stores a value, optionally with a time to live.
    pub async fn cache_set(
        &mut self,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
    ) -> Result<WriteOutcome, ClientError> {
        answers::cache_written(self.request(cache_set(key, value, ttl)).await?)
    }

    /// Invalidates keys: how many were removed now, and whether the removal
    /// was deferred until Redis is back.
    pub async fn cache_del(&mut self, keys: &[&str]) -> Result<(u64, bool), ClientError> {
        answers::cache_deleted(self.request(cache_del(keys)).await?)
    }

    /// Next number of the private chat of `a` and `b` (in either order).
    pub async fn private_next(&mut self, a: &str, b: &str) -> Result<ConvSeq, ClientError> {
        self.conv_next(Conversation::Private {
            a: a.into(),
            b: b.into(),
        })
        .await
    }

    /// Next number of a group chat.
    pub async fn group_next(&mut self, group: &str) -> Result<ConvSeq, ClientError> {
        self.conv_next(Conversation::Group { id: group.into() })
            .await
    }

    /// What is known about a stream (`None`: nothing).
    pub async fn gap_stats(
        &mut self,
        exchange: &str,
        symbol: &str,
    ) -> Result<Option<StreamStats>, ClientError> {
        let request = Request::GapStats(stream(exchange, symbol));
        answers::gap_stats(self.request(request).await?)
    }

    /// Forgets a stream.
    pub async fn gap_clear(&mut self, exchange: &str, symbol: &str) -> Result<(), ClientError> {
        let request = Request::GapClear(stream(exchange, symbol));
        answers::done(self.request(request).await?)
    }

    /// Forgets every stream; returns how many.
    pub async fn gap_clear_all(&mut self) -> Result<u64, ClientError> {
        answers::cleared(self.request(Request::GapClearAll).await?)
    }

    /// Reads several cached values, one answer per key.
    pub async fn cache_get_many(
        &mut self,
        keys: &[&str],
    ) -> Result<Vec<Option<Vec<u8>>>, ClientError> {
        let keys = keys.iter().map(|k| k.to_string()).collect();
        answers::cache_values(self.request(Request::CacheGetMany { keys }).await?)
    }

    /// Stores several values; the outcome is the worst of them.
    pub async fn cache_set_many(
        &mut self,
        items: Vec<CacheItem>,
    ) -> Result<WriteOutcome, ClientError> {
        answers::cache_written(self.request(Request::CacheSetMany(items)).await?)
    }

    /// Invalidates every key starting with `prefix`.
    pub async fn cache_del_prefix(&mut self, prefix: &str) -> Result<(u64, bool), ClientError> {
        let request = Request::CacheDelPrefix {
            prefix: prefix.into(),
        };
        answers::cache_deleted(self.request(request).await?)
    }

    /// Cache-aside (see [`Client::get_or_load`](crate::Client::get_or_load)):
    /// a hit returns the cached value; a miss awaits `loader` (your
    /// database read) and caches what it returns; while the cache is
    /// unavailable, `loader` alone answers and nothing is cached.
    pub async fn get_or_load<E, F>(
        &mut self,
        key: &str,
        ttl: Option<Duration>,
        loader: impl FnOnce() -> F,
    ) -> Result<Vec<u8>, CacheAsideError<E>>
    where
        F: Future<Output = Result<Vec<u8>, E>>,
    {
        match self.cache_get(key).await {
            Ok(Some(v)) => Ok(v),
            Ok(None) => {
                let v = loader().await.map_err(CacheAsideError::Load)?;
                // A failed populate only costs a later miss.
                let _ = self.cache_set(key, &v, ttl).await;
                Ok(v)
            }
            Err(e) if e.is_unavailable() => loader().await.map_err(CacheAsideError::Load),
            Err(e) => Err(CacheAsideError::Cache(e)),
        }
    }

    /// Write-through (see
    /// [`Client::write_through`](crate::Client::write_through)): awaits
    /// `db_write`, then updates the cache with `value` or, with `None`,
    /// invalidates the key, trying the invalidation again while seqd is
    /// unreachable for up to the client's timeout (5 s without one).
    pub async fn write_through<T, E, F>(
        &mut self,
        key: &str,
        value: Option<&[u8]>,
        ttl: Option<Duration>,
        db_write: impl FnOnce() -> F,
    ) -> Result<(T, WriteOutcome), CacheAsideError<E>>
    where
        F: Future<Output = Result<T, E>>,
    {
        let written = db_write().await.map_err(CacheAsideError::Load)?;
        let window = self.timeout.unwrap_or(crate::DEFAULT_TIMEOUT);
        let mut steps = WriteThrough::new(value.is_some(), window);
        loop {
            let done = match (steps.step(), value) {
                (Step::Set, Some(v)) => self.cache_set(key, v, ttl).await,
                _ => self.cache_del(&[key]).await.map(|(_, d)| deleted(d)),
            };
            match done {
                Ok(outcome) => return Ok((written, outcome)),
                Err(e) => tokio::time::sleep(steps.failed(e)?).await,
            }
        }
    }

    /// The daemon's metrics in the Prometheus text format.
    pub async fn metrics(&mut self) -> Result<String, ClientError> {
        answers::metrics(self.request(Request::Metrics).await?)
    }

    /// What the daemon is and accepts (`INFO`): `name=value` pairs.
    pub async fn info(&mut self) -> Result<Vec<(String, String)>, ClientError> {
        answers::info(self.request(Request::Info).await?)
    }

    /// The daemon's health as `name=value` pairs.
    pub async fn health(&mut self) -> Result<Vec<(String, String)>, ClientError> {
        answers::health(self.request(Request::Health).await?)
    }
}

/// Runs `f` within `timeout` (when there is one).
async fn within<T>(
    timeout: Option<Duration>,
    f: impl Future<Output = Result<T, ClientError>>,
) -> Result<T, ClientError> {
    match timeout {
        None => f.await,
        Some(t) => tokio::time::timeout(t, f)
            .await
            .unwrap_or_else(|_| Err(ClientError::Io(std::io::ErrorKind::TimedOut.into()))),
    }
}

async fn read_message(conn: &mut Conn, max_frame: usize) -> Result<ServerMessage, ClientError> {
    let frame = match conn.frames.next().await {
        Some(Ok(frame)) => frame,
        Some(Err(e)) => {
            return Err(
                match e
                    .get_ref()
                    .and_then(|i| i.downcast_ref::<LengthDelimitedCodecError>())
                {
                    Some(too_large) => ClientError::Protocol(too_large.to_string()),
                    None => ClientError::Io(e),
                },
            )
        }
        None => return Err(ClientError::Io(std::io::ErrorKind::UnexpectedEof.into())),
    };
    Ok(codec::decode_payload(&frame, max_frame)?)
}
