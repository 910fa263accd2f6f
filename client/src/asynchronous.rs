//! The async client (feature `tokio`): the same protocol and typed calls as
//! [`Client`](crate::Client), on a Tokio Unix socket.
//!
//! An [`AsyncClient`] holds one connection and has one exchange in flight
//! at a time (`&mut self`); open several for concurrency, or send many
//! requests at once with [`AsyncClient::pipeline`]. Unlike the blocking
//! client it does not reconnect by itself: after an I/O error, connect
//! again. There is no time limit of its own either; wrap a call in
//! `tokio::time::timeout` where one is wanted.
//!
//! ```no_run
//! # async fn demo() -> Result<(), seqd_client::ClientError> {
//! let mut seqd = seqd_client::AsyncClient::connect("/run/seqd/seqd.sock").await?;
//! let daily = seqd.daily_next("123", Some("Asia/Kolkata"), None).await?;
//! println!("{}", seqd_client::format_daily_seq(daily.seq));
//! # Ok(()) }
//! ```

use crate::answers;
use crate::requests::{cache_del, cache_set, daily_query, gap_event};
use crate::session::{hello_answer, retry_older, Session};
use crate::{ClientError, ConvSeq, DailySeq};
use futures_util::StreamExt;
use seqd_protocol::codec::{self, length_delimited};
use seqd_protocol::{
    Conversation, GapEvent, GapResult, Request, Response, ServerMessage, WriteOutcome,
};
use std::path::Path;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;
use tokio_util::codec::{FramedRead, LengthDelimitedCodec, LengthDelimitedCodecError};

/// An async connection to seqd.
pub struct AsyncClient {
    /// Frames through the protocol crate's length-delimited codec, which
    /// checks the length against the limit before buffering the payload.
    frames: FramedRead<OwnedReadHalf, LengthDelimitedCodec>,
    writer: OwnedWriteHalf,
    session: Session,
    /// Reused for every exchange: one allocation per connection, not per
    /// request.
    out: Vec<u8>,
}

impl AsyncClient {
    /// Connects to the socket at `path` and says hello.
    /// Connects to the socket at `path` and says hello (in protocol 1 to
    /// a daemon older than this client).
    pub async fn connect(path: impl AsRef<Path>) -> Result<AsyncClient, ClientError> {
        let path = path.as_ref();
        let mut session = Session::new();
        loop {
            let (rd, writer) = UnixStream::connect(path).await?.into_split();
            let mut c = AsyncClient {
                frames: FramedRead::new(rd, length_delimited(session.max_frame)),
                writer,
                session,
                out: Vec::with_capacity(256),
            };
            let hello = c.session.hello()?;
            c.writer.write_all(&hello).await?;
            let answer = hello_answer(c.read_message().await?);
            session = c.session;
            if retry_older(&mut session, &answer) {
                continue;
            }
            answer?;
            c.session = session;
            return Ok(c);
        }
    }

    async fn read_message(&mut self) -> Result<ServerMessage, ClientError> {
        let frame = match self.frames.next().await {
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
        Ok(codec::decode_payload(&frame, self.session.max_frame)?)
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
        let mut batch = self.session.encode(requests, &mut self.out)?;
        self.writer.write_all(&self.out).await?;
        while !batch.is_complete() {
            let msg = self.read_message().await?;
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

    /// The daemon's health as `name=value` pairs.
    pub async fn health(&mut self) -> Result<Vec<(String, String)>, ClientError> {
        answers::health(self.request(Request::Health).await?)
    }
}
