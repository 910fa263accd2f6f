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

use crate::{
    answers, cache_del, cache_set, daily_query, gap_event, hello, hello_answer, response_of,
    ClientError, ConvSeq, DailySeq,
};
use seqd_protocol::codec::{self, FrameError, LENGTH_PREFIX};
use seqd_protocol::{
    ClientMessage, Conversation, GapEvent, GapResult, Request, Response, ServerMessage,
    WriteOutcome, DEFAULT_MAX_FRAME,
};
use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

/// An async connection to seqd.
pub struct AsyncClient {
    stream: BufReader<UnixStream>,
    max_frame: usize,
    next_id: u64,
    /// Reused for every exchange: one allocation per connection, not per
    /// request.
    out: Vec<u8>,
    payload: Vec<u8>,
}

impl AsyncClient {
    /// Connects to the socket at `path` and says hello.
    pub async fn connect(path: impl AsRef<Path>) -> Result<AsyncClient, ClientError> {
        let stream = UnixStream::connect(path).await?;
        let mut c = AsyncClient {
            stream: BufReader::new(stream),
            max_frame: DEFAULT_MAX_FRAME,
            next_id: 1,
            out: Vec::with_capacity(256),
            payload: Vec::with_capacity(256),
        };
        let frame = codec::encode_frame(&hello(), c.max_frame)?;
        c.stream.get_mut().write_all(&frame).await?;
        let msg = c.read_message().await?;
        hello_answer(msg)?;
        Ok(c)
    }

    async fn read_message(&mut self) -> Result<ServerMessage, ClientError> {
        let mut len = [0u8; LENGTH_PREFIX];
        self.stream.read_exact(&mut len).await?;
        let len = u32::from_be_bytes(len) as usize;
        if len > self.max_frame {
            return Err(FrameError::TooLarge {
                len,
                max: self.max_frame,
            }
            .into());
        }
        self.payload.resize(len, 0);
        self.stream.read_exact(&mut self.payload).await?;
        Ok(codec::decode_payload(&self.payload, self.max_frame)?)
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
        let first_id = self.next_id;
        self.next_id += requests.len() as u64;
        self.out.clear();
        for (i, request) in requests.iter().enumerate() {
            let msg = ClientMessage::Request {
                id: first_id + i as u64,
                request: request.clone(),
            };
            self.out
                .extend_from_slice(&codec::encode_frame(&msg, self.max_frame)?);
        }
        self.stream.get_mut().write_all(&self.out).await?;
        if requests.len() == 1 {
            let msg = self.read_message().await?;
            let (_, result) = response_of(msg, first_id..self.next_id)?;
            return Ok(vec![result]);
        }
        let mut results = HashMap::with_capacity(requests.len());
        while results.len() < requests.len() {
            let msg = self.read_message().await?;
            let (id, result) = response_of(msg, first_id..self.next_id)?;
            results.insert(id, result);
        }
        Ok((0..requests.len() as u64)
            .map(|i| results.remove(&(first_id + i)).expect("collected above"))
            .collect())
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
