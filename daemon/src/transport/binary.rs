//! The binary protocol on a connection.
//!
//! Reading and writing are decoupled: the reader decodes frames and spawns
//! one task per request (at most `max_inflight` at once per connection), and
//! a writer task sends responses as they complete, in any order, batching
//! whatever is ready into one write.

use crate::context::Context;
use crate::dispatch;
use futures_util::StreamExt;
use seqd_protocol::codec::{self, length_delimited};
use seqd_protocol::{ClientMessage, ErrorCode, ServerMessage, WireError, PROTOCOL_VERSION};
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWriteExt, BufWriter};
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::{mpsc, Semaphore};
use tokio_util::codec::{FramedRead, LengthDelimitedCodecError};
use tokio_util::sync::CancellationToken;

/// The variant index of `ClientMessage::Request` in bincode (u32 LE).
const REQUEST_TAG: [u8; 4] = [1, 0, 0, 0];

pub async fn serve<R>(
    ctx: Arc<Context>,
    reader: R,
    writer: OwnedWriteHalf,
    shutdown: CancellationToken,
) where
    R: AsyncRead + Unpin,
{
    let max = ctx.config().max_frame;
    let max_inflight = ctx.config().max_inflight as usize;
    let mut frames = FramedRead::new(reader, length_delimited(max));
    let (tx, rx) = mpsc::channel::<Vec<u8>>(max_inflight);
    let writer = tokio::spawn(write_frames(writer, rx));

    if hello(&ctx, &mut frames, &tx).await {
        let inflight = Arc::new(Semaphore::new(max_inflight));
        loop {
            // Idle: nothing received and nothing in flight for that long.
            let idle = ctx.config().idle_timeout();
            let quiet = inflight.available_permits() == max_inflight;
            let frame = tokio::select! {
                f = frames.next() => f,
                _ = tokio::time::sleep(idle), if !idle.is_zero() && quiet => {
                    let msg = format!("idle for {} ms; closing (reconnect to go on)", idle.as_millis());
                    fatal(&tx, WireError::new(ErrorCode::Unavailable, msg)).await;
                    break;
                }
                _ = shutdown.cancelled() => break,
            };
            let payload = match frame {
                None => break,
                Some(Ok(payload)) => payload,
                Some(Err(e)) => {
                    fatal(&tx, framing_error(&e, max)).await;
                    break;
                }
            };
            match codec::decode_payload::<ClientMessage>(&payload, max) {
                Ok(ClientMessage::Request { id, request }) => {
                    // Waiting here is backpressure on this client only.
                    let Ok(permit) = inflight.clone().acquire_owned().await else {
                        break;
                    };
                    let ctx = ctx.clone();
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        let result = dispatch::serve(&ctx, request).await;
                        send(
                            &tx,
                            &ServerMessage::Response { id, result },
                            ctx.config().max_frame,
                            Some(id),
                        )
                        .await;
                        drop(permit);
                    });
                }
                Ok(ClientMessage::Hello { .. }) => {
                    fatal(
                        &tx,
                        WireError::new(ErrorCode::BadRequest, "hello sent twice"),
                    )
                    .await;
                    break;
                }
                Err(e) => match request_id(&payload) {
                    // The frame was intact and names its request: answer
                    // that request with an error and keep the connection.
                    Some(id) => {
                        let error = WireError::new(
                            ErrorCode::BadRequest,
                            format!("undecodable request: {e}"),
                        );
                        send(
                            &tx,
                            &ServerMessage::Response {
                                id,
                                result: Err(error),
                            },
                            max,
                            None,
                        )
                        .await;
                    }
                    None => {
                        fatal(
                            &tx,
                            WireError::new(
                                ErrorCode::BadRequest,
                                format!("undecodable frame: {e}"),
                            ),
                        )
                        .await;
                        break;
                    }
                },
            }
        }
    }
    // The writer ends once every in-flight request has sent its response
    // and dropped its sender: that is the drain.
    drop(tx);
    let _ = writer.await;
}

/// Reads and answers the hello. False means the connection must close.
async fn hello<R>(
    ctx: &Context,
    frames: &mut FramedRead<R, tokio_util::codec::LengthDelimitedCodec>,
    tx: &mpsc::Sender<Vec<u8>>,
) -> bool
where
    R: AsyncRead + Unpin,
{
    let max = ctx.config().max_frame;
    let frame = match tokio::time::timeout(ctx.config().handshake_timeout(), frames.next()).await {
        Err(_) => {
            fatal(
                tx,
                WireError::new(
                    ErrorCode::BadRequest,
                    "no hello within the handshake timeout",
                ),
            )
            .await;
            return false;
        }
        Ok(None) => return false,
        Ok(Some(Err(e))) => {
            fatal(tx, framing_error(&e, max)).await;
            return false;
        }
        Ok(Some(Ok(frame))) => frame,
    };
    match codec::decode_payload::<ClientMessage>(&frame, max) {
        Ok(ClientMessage::Hello { version, client }) if version == PROTOCOL_VERSION => {
            tracing::debug!(client = %client, "binary client said hello");
            let reply = ServerMessage::Hello {
                version: PROTOCOL_VERSION,
                server: format!("seqd/{}", env!("CARGO_PKG_VERSION")),
            };
            send(tx, &reply, max, None).await;
            true
        }
        Ok(ClientMessage::Hello { version, .. }) => {
            let msg = format!(
                "client speaks protocol version {version}; this seqd speaks {PROTOCOL_VERSION}"
            );
            fatal(tx, WireError::new(ErrorCode::VersionMismatch, msg)).await;
            false
        }
        Ok(ClientMessage::Request { .. }) => {
            fatal(
                tx,
                WireError::new(ErrorCode::BadRequest, "the first frame must be a hello"),
            )
            .await;
            false
        }
        Err(e) => {
            fatal(
                tx,
                WireError::new(ErrorCode::BadRequest, format!("undecodable hello: {e}")),
            )
            .await;
            false
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

fn framing_error(e: &std::io::Error, max: usize) -> WireError {
    let too_long = e
        .get_ref()
        .is_some_and(|inner| inner.is::<LengthDelimitedCodecError>());
    if too_long {
        WireError::new(
            ErrorCode::TooLarge,
            format!("frame longer than the limit of {max} bytes"),
        )
    } else {
        WireError::new(ErrorCode::BadRequest, format!("broken frame: {e}"))
    }
}

/// Sends a connection-level error; the caller then closes the connection.
async fn fatal(tx: &mpsc::Sender<Vec<u8>>, error: WireError) {
    tracing::debug!(%error, "closing binary connection");
    send(
        tx,
        &ServerMessage::Error { error },
        seqd_protocol::MAX_FRAME_CEILING,
        None,
    )
    .await;
}

/// Encodes and queues one frame. A response too large to encode is replaced
/// by an error response for the same id.
async fn send(tx: &mpsc::Sender<Vec<u8>>, msg: &ServerMessage, max: usize, id: Option<u64>) {
    let frame = match (codec::encode_frame(msg, max), id) {
        (Ok(frame), _) => frame,
        (Err(e), Some(id)) => {
            let error = WireError::new(ErrorCode::Internal, format!("response not sendable: {e}"));
            match codec::encode_frame(
                &ServerMessage::Response {
                    id,
                    result: Err(error),
                },
                max,
            ) {
                Ok(frame) => frame,
                Err(_) => return,
            }
        }
        (Err(e), None) => {
            tracing::error!(error = %e, "cannot encode a server message");
            return;
        }
    };
    // A send error means the writer stopped: the client is gone.
    let _ = tx.send(frame).await;
}

async fn write_frames(writer: OwnedWriteHalf, mut rx: mpsc::Receiver<Vec<u8>>) {
    let mut out = BufWriter::with_capacity(64 * 1024, writer);
    while let Some(frame) = rx.recv().await {
        if out.write_all(&frame).await.is_err() {
            return;
        }
        while let Ok(frame) = rx.try_recv() {
            if out.write_all(&frame).await.is_err() {
                return;
            }
        }
        if out.flush().await.is_err() {
            return;
        }
    }
    let _ = out.shutdown().await;
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
