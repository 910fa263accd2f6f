//! The binary protocol on a connection.
//!
//! One task per connection does everything: it decodes frames, runs up to
//! `max_inflight` requests of the connection concurrently (a
//! `FuturesUnordered` polled by the same task, so a request costs no task
//! spawn and no hop to a writer task), and writes responses as they
//! complete, in any order, appending every ready one to a single buffer so
//! that a burst costs one write. Reading stops while the buffer holds more
//! than `OUT_HIGH_WATER` unsent bytes, and so does the running of its
//! requests (a finished reply is output too): a client that does not read
//! its answers only ever slows itself, and holds at most that much plus
//! one reply. Requests that touch a common key take
//! effect in the order sent ([`super::order`]).

use super::frames::{Frame, FrameError, FrameReader};
use super::order::Order;
use crate::context::Context;
use crate::dispatch;
use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use seqd_protocol::codec;
use seqd_protocol::{
    ClientMessage, ErrorCode, Request, Response, ServerMessage, WireError, MIN_PROTOCOL_VERSION,
    PROTOCOL_VERSION,
};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWriteExt};
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The variant index of `ClientMessage::Request` in bincode (u32 LE).
const REQUEST_TAG: [u8; 4] = [1, 0, 0, 0];
/// Unsent response bytes above which no more requests are read, and no
/// request runs on to completion.
const OUT_HIGH_WATER: usize = 256 * 1024;
/// Requests of one connection whose reply may be large (a cache value, the
/// metrics) that run at once. A started read holds its value (from Redis)
/// until it completes, and completing waits for the client to read: with
/// this bound a client that never reads holds at most this many values.
const BULKY_IN_FLIGHT: usize = 4;

/// Responses waiting to be written, and the socket they go to.
struct Out {
    wr: OwnedWriteHalf,
    buf: Vec<u8>,
    /// How much of `buf` is written already.
    sent: usize,
    max: usize,
    /// The daemon-wide buffer budget (`--max-buffered-bytes`): unsent
    /// output takes from it too.
    budget: Arc<tokio::sync::Semaphore>,
    /// Bytes of the budget this connection's output holds.
    held: usize,
    /// The budget could not cover the output: no request completes until
    /// the client has taken what is written.
    over: bool,
}

impl Out {
    fn new(wr: OwnedWriteHalf, max: usize, budget: Arc<tokio::sync::Semaphore>) -> Out {
        Out {
            wr,
            buf: Vec::with_capacity(4096),
            sent: 0,
            max,
            budget,
            held: 0,
            over: false,
        }
    }

    fn pending(&self) -> usize {
        self.buf.len() - self.sent
    }

    /// Takes budget for what is unsent, or marks the connection over it.
    fn account(&mut self) {
        let need = self.pending().saturating_sub(self.held);
        if need == 0 {
            return;
        }
        match u32::try_from(need).map(|n| self.budget.try_acquire_many(n)) {
            Ok(Ok(permit)) => {
                permit.forget();
                self.held += need;
            }
            _ => self.over = true,
        }
    }

    /// Everything written: the budget goes back.
    fn release(&mut self) {
        self.budget.add_permits(self.held);
        self.held = 0;
        self.over = false;
    }

    /// Appends one frame. A response too large to encode is replaced by an
    /// error response for the same id.
    fn push(&mut self, msg: &ServerMessage, id: Option<u64>) {
        self.encode(msg, id);
        self.account();
    }

    fn encode(&mut self, msg: &ServerMessage, id: Option<u64>) {
        let error = match codec::encode_frame_into(&mut self.buf, msg, self.max) {
            Ok(()) => return,
            Err(e) => e,
        };
        match id {
            Some(id) => {
                let error = WireError::new(
                    ErrorCode::Internal,
                    format!("response not sendable: {error}"),
                );
                let msg = ServerMessage::Response {
                    id,
                    result: Err(error),
                };
                if let Err(e) = codec::encode_frame_into(&mut self.buf, &msg, self.max) {
                    tracing::error!(error = %e, "cannot encode an error response");
                }
            }
            None => tracing::error!(%error, "cannot encode a server message"),
        }
    }

    /// Appends the answer to request `id`, in the shape of the
    /// connection's protocol version.
    fn respond(&mut self, id: u64, result: Result<Response, WireError>, version: u32) {
        let result = result.map(|r| r.for_version(version));
        self.push(&ServerMessage::Response { id, result }, Some(id));
    }

    /// A connection-level error; the caller then closes the connection.
    fn fatal(&mut self, error: WireError) {
        tracing::debug!(%error, "closing binary connection");
        let max = self.max;
        self.max = seqd_protocol::MAX_FRAME_CEILING;
        self.push(&ServerMessage::Error { error }, None);
        self.max = max;
    }

    /// Writes some of what is pending (cancel safe: `write` either wrote or
    /// did not). False when the client is gone.
    async fn write_some(&mut self) -> bool {
        match self.wr.write(&self.buf[self.sent..]).await {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.sent += n;
                if self.sent == self.buf.len() {
                    self.buf.clear();
                    self.sent = 0;
                    self.release();
                }
                true
            }
        }
    }

    /// Writes everything pending, then closes the write side.
    async fn finish(mut self) {
        if self.wr.write_all(&self.buf[self.sent..]).await.is_ok() {
            let _ = self.wr.shutdown().await;
        }
    }
}

impl Drop for Out {
    fn drop(&mut self) {
        self.release();
    }
}

pub async fn serve<R>(
    ctx: Arc<Context>,
    reader: R,
    writer: OwnedWriteHalf,
    shutdown: CancellationToken,
) where
    R: AsyncRead + Unpin,
{
    // Limits are read once per connection; a reload applies to new ones.
    let (max, max_inflight, idle) = {
        let config = ctx.config();
        let inflight = config.max_inflight as usize;
        (config.max_frame, inflight, config.idle_timeout())
    };
    let mut frames = FrameReader::new(reader, max, &ctx.buffer_budget);
    let mut out = Out::new(writer, max, ctx.buffer_budget.semaphore());
    let Some(version) = hello(&ctx, &mut frames, &mut out).await else {
        out.finish().await;
        return;
    };
    let ctx: &Context = &ctx;
    // Declared before the requests that borrow it, so it outlives them.
    let bulky = tokio::sync::Semaphore::new(BULKY_IN_FLIGHT);
    let bulky = &bulky;
    let mut inflight = FuturesUnordered::new();
    let mut order = Order::default();
    let cancelled = shutdown.cancelled();
    tokio::pin!(cancelled);
    // Set once shutdown began: requests are still read until then.
    let mut last_call: Option<Instant> = None;
    // One idle timer per connection, pushed back when it fires early
    // rather than re-armed for every request.
    let mut last_activity = Instant::now();
    let idle_timer = tokio::time::sleep(idle);
    tokio::pin!(idle_timer);
    loop {
        let quiet = inflight.is_empty() && out.pending() == 0;
        tokio::select! {
            biased;
            // Finished replies count toward the output limit: while the
            // client has not taken what is written, no request runs on
            // (none completes, so none copies its reply), so a client
            // that does not read holds at most the limit plus one reply.
            Some((seq, id, result)) = inflight.next(), if !inflight.is_empty() && out.pending() < OUT_HIGH_WATER && !out.over => {
                last_activity = Instant::now();
                order.finished(seq);
                out.respond(id, result, version);
            }
            alive = out.write_some(), if out.pending() > 0 => {
                if !alive {
                    return;
                }
            }
            frame = frames.next(), if inflight.len() < max_inflight && out.pending() < OUT_HIGH_WATER => {
                last_activity = Instant::now();
                match read_request(frame, max, &mut out) {
                    Read::Request { id, request, held } => {
                        inflight.push(run_request(ctx, bulky, &mut order, id, request, held));
                    }
                    Read::Answered => {}
                    Read::Close => break,
                }
            }
            () = &mut idle_timer, if !idle.is_zero() || last_call.is_some() => {
                if last_call.is_some_and(|at| Instant::now() >= at) {
                    break;
                }
                let next = if idle.is_zero() {
                    Ok(Instant::now() + super::LAST_CALL)
                } else {
                    idle_check(quiet, last_activity, idle)
                };
                match next {
                    Ok(next) => idle_timer.as_mut().reset(last_call.map_or(next, |at| at.min(next))),
                    Err(error) => {
                        out.fatal(error);
                        break;
                    }
                }
            }
            () = &mut cancelled, if last_call.is_none() => {
                let at = Instant::now() + super::LAST_CALL;
                last_call = Some(at);
                idle_timer.as_mut().reset(at);
            }
        }
    }
    if drain(&mut out, &mut inflight, version).await {
        out.finish().await;
    }
}

/// Answers every request still in flight, within the same output limit (a
/// client that stopped reading holds the drain, which the server bounds
/// by its drain timeout). False when the client is gone.
async fn drain<F>(out: &mut Out, inflight: &mut FuturesUnordered<F>, version: u32) -> bool
where
    F: Future<Output = (u64, u64, Result<Response, WireError>)>,
{
    loop {
        if out.pending() >= OUT_HIGH_WATER || out.over {
            if !out.write_some().await {
                return false;
            }
            continue;
        }
        let Some((_, id, result)) = inflight.next().await else {
            return true;
        };
        out.respond(id, result, version);
    }
}

/// When the idle timer fires: the connection closes (the error to send)
/// when nothing was received and nothing is in flight or unsent for
/// `idle`; otherwise the timer's next instant (pushed back rather than
/// re-armed for every request).
fn idle_check(quiet: bool, last_activity: Instant, idle: Duration) -> Result<Instant, WireError> {
    let due = last_activity + idle;
    if quiet && Instant::now() >= due {
        let msg = format!(
            "idle for {} ms; closing (reconnect to go on)",
            idle.as_millis()
        );
        return Err(WireError::new(ErrorCode::Unavailable, msg));
    }
    Ok(due.max(Instant::now() + idle / 8))
}

/// What a frame read from the client asks for.
enum Read {
    /// A request to run; `held` is the frame's share of the buffer
    /// budget, given back when the request is done.
    Request {
        id: u64,
        request: Request,
        held: Option<OwnedSemaphorePermit>,
    },
    /// Nothing to run: an error answer is already in the output.
    Answered,
    /// The connection ends (end of input, or a fatal error is in the
    /// output).
    Close,
}

/// Decodes one frame (`None`: the client closed its side).
fn read_request(frame: Option<Result<Frame, FrameError>>, max: usize, out: &mut Out) -> Read {
    let (payload, held) = match frame {
        None => return Read::Close,
        Some(Ok(frame)) => (frame.payload, frame.held),
        Some(Err(e)) => {
            out.fatal(framing_error(&e));
            return Read::Close;
        }
    };
    match codec::decode_payload::<ClientMessage>(&payload, max) {
        Ok(ClientMessage::Request { id, request }) => Read::Request { id, request, held },
        Ok(ClientMessage::Hello { .. }) => {
            out.fatal(WireError::new(ErrorCode::BadRequest, "hello sent twice"));
            Read::Close
        }
        Err(e) => match request_id(&payload) {
            // The frame was intact and names its request: answer that
            // request with an error and keep the connection.
            Some(id) => {
                let error =
                    WireError::new(ErrorCode::BadRequest, format!("undecodable request: {e}"));
                out.push(
                    &ServerMessage::Response {
                        id,
                        result: Err(error),
                    },
                    None,
                );
                Read::Answered
            }
            None => {
                out.fatal(WireError::new(
                    ErrorCode::BadRequest,
                    format!("undecodable frame: {e}"),
                ));
                Read::Close
            }
        },
    }
}

/// Admits `request` in the connection's effect order ([`super::order`])
/// and returns the work of answering it: wait for the earlier requests it
/// must follow, run it, and for a draw that follows another, draw again
/// if its number came out below that one's.
fn run_request<'a>(
    ctx: &'a Context,
    bulky: &'a tokio::sync::Semaphore,
    order: &mut Order,
    id: u64,
    request: Request,
    held: Option<OwnedSemaphorePermit>,
) -> impl Future<Output = (u64, u64, Result<Response, WireError>)> + 'a {
    let draw = dispatch::draws(&request);
    let admitted = order.admit(dispatch::touches(&request), draw);
    let large = dispatch::reply_may_be_large(&request);
    // A draw that follows another may have to draw again.
    let again = admitted.follow.is_some().then(|| request.clone());
    async move {
        for (_, earlier) in admitted.wait_for {
            let _ = earlier.await;
        }
        // Never closed, so acquiring cannot fail.
        let _permit = match large {
            true => bulky.acquire().await.ok(),
            false => None,
        };
        let mut result = dispatch::serve(ctx, request).await;
        if let (Some((_, earlier)), Some(again)) = (admitted.follow, again) {
            let before = earlier.await.ok().flatten();
            if dispatch::drawn_too_low(before, &result) {
                ctx.metrics.numbers_redrawn.inc();
                result = dispatch::serve(ctx, again).await;
            }
        }
        // The frame's bytes count until its request is done.
        drop(held);
        let drawn = match (draw, &result) {
            (true, Ok(r)) => dispatch::drawn(r),
            _ => None,
        };
        let _ = admitted.end.send(drawn);
        (admitted.seq, id, result)
    }
}

/// Reads and answers the hello: the protocol version the connection
/// speaks (the client's, if this seqd speaks it), or `None` when the
/// connection must close.
async fn hello<R>(ctx: &Context, frames: &mut FrameReader<R>, out: &mut Out) -> Option<u32>
where
    R: AsyncRead + Unpin,
{
    let max = out.max;
    let frame = match tokio::time::timeout(ctx.config().handshake_timeout(), frames.next()).await {
        Err(_) => {
            out.fatal(WireError::new(
                ErrorCode::BadRequest,
                "no hello within the handshake timeout",
            ));
            return None;
        }
        Ok(None) => return None,
        Ok(Some(Err(e))) => {
            out.fatal(framing_error(&e));
            return None;
        }
        Ok(Some(Ok(frame))) => frame.payload,
    };
    match codec::decode_payload::<ClientMessage>(&frame, max) {
        Ok(ClientMessage::Hello { version, client })
            if (MIN_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(&version) =>
        {
            tracing::debug!(client = %client, version, "binary client said hello");
            let reply = ServerMessage::Hello {
                version,
                server: format!("seqd/{}", env!("CARGO_PKG_VERSION")),
            };
            out.push(&reply, None);
            Some(version)
        }
        Ok(ClientMessage::Hello { version, .. }) => {
            let msg = format!(
                "client speaks protocol version {version}; this seqd speaks \
                 {MIN_PROTOCOL_VERSION} to {PROTOCOL_VERSION}"
            );
            out.fatal(WireError::new(ErrorCode::VersionMismatch, msg));
            None
        }
        Ok(ClientMessage::Request { .. }) => {
            out.fatal(WireError::new(
                ErrorCode::BadRequest,
                "the first frame must be a hello",
            ));
            None
        }
        Err(e) => {
            out.fatal(WireError::new(
                ErrorCode::BadRequest,
                format!("undecodable hello: {e}"),
            ));
            None
        }
    }
}

/// The id of a request frame that failed to decode, when its first bytes
/// are intact (`Request` tag, then the u64 id).
fn request_id(payload: &[u8]) -> Option<u64> {
    if payload.len() >= 12 && payload[..4] == REQUEST_TAG {
        Some(u64::from_le_bytes(payload[4..12].try_into().ok()?))
    } else {
        None
    }
}

fn framing_error(e: &FrameError) -> WireError {
    match e {
        FrameError::TooLarge {
            len,
            limit,
            budget: false,
        } => WireError::new(
            ErrorCode::TooLarge,
            format!("frame of {len} bytes is longer than the limit of {limit} bytes"),
        ),
        FrameError::TooLarge { len, limit, .. } => WireError::new(
            ErrorCode::TooLarge,
            format!(
                "frame of {len} bytes is larger than all the buffer memory seqd allows \
                 (--max-buffered-bytes {limit})"
            ),
        ),
        FrameError::Broken(e) => {
            WireError::new(ErrorCode::BadRequest, format!("broken frame: {e}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use seqd_protocol::Request;

    #[test]
    fn request_id_is_read_from_an_intact_prefix() {
        let payload = codec::encode_payload(
            &ClientMessage::Request {
                id: 0xABCD,
                request: Request::Ping,
            },
            1024,
        )
        .unwrap();
        assert_eq!(request_id(&payload), Some(0xABCD));
        assert_eq!(request_id(&payload[..11]), None);
        assert_eq!(request_id(&[0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8]), None);
    }
}
