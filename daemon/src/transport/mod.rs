//! Transport: sockets to requests and responses back.
//!
//! One Unix stream socket carries two protocols; the first byte a client
//! sends decides which one its connection speaks ([`binary`] for `0x00`,
//! the first byte of the hello's length; [`text`] otherwise). Either way, requests go to [`crate::dispatch`], and a
//! client's bad input only ever affects that client's connection.

pub mod binary;
pub mod frames;
pub mod order;
pub mod text;

use crate::context::Context;
use seqd_protocol::{ErrorCode, ServerMessage, WireError};
use std::io::Cursor;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio_util::sync::CancellationToken;

/// How long a connection still takes requests once shutdown began: a
/// client that connected just before (its hello or request on the way)
/// is answered, not cut off; a busy one is closed after it, so that the
/// next seqd, which takes the socket's backlog, is not held up.
pub const LAST_CALL: std::time::Duration = std::time::Duration::from_millis(500);

/// Serves one connection until the client leaves, a fatal protocol error,
/// or [`LAST_CALL`] after `shutdown` (then requests in flight are still
/// answered). The peer was let in by the server (credentials, slots).
pub async fn serve_connection(ctx: Arc<Context>, stream: UnixStream, shutdown: CancellationToken) {
    let (mut rd, mut wr) = stream.into_split();
    let mut first = [0u8; 1];
    let handshake = ctx.config().handshake_timeout();
    let read = tokio::select! {
        r = tokio::time::timeout(handshake, rd.read(&mut first)) => r,
        _ = shutdown.cancelled() => {
            match tokio::time::timeout(LAST_CALL, rd.read(&mut first)).await {
                Ok(r) => Ok(r),
                Err(_) => return,
            }
        }
    };
    match read {
        Ok(Ok(1)) => {}
        Ok(_) => return, // closed before saying anything, or a read error
        Err(_) => {
            let _ = wr
                .write_all(b"ERR bad_request nothing received within the handshake timeout\n")
                .await;
            return;
        }
    }
    // Put the byte back in front of the stream for the protocol's framing.
    let reader = Cursor::new(first).chain(rd);
    if seqd_protocol::is_binary_first_byte(first[0]) {
        ctx.metrics.count_connection("binary");
        binary::serve(ctx, reader, wr, shutdown).await;
    } else {
        ctx.metrics.count_connection("text");
        text::serve(ctx, reader, wr, shutdown).await;
    }
}

/// Why a peer is turned away before it gets a slot.
#[derive(Debug, Clone, Copy)]
pub enum Refusal {
    /// Not in `--allow-uids`/`--allow-gids`.
    NotAllowed,
    /// Its uid holds this many connections already.
    TooManyForUid(u32),
    /// Its process holds this many connections already.
    TooManyForPid(u32),
}

/// Tells a refused peer why, in the protocol it starts to speak (its first
/// byte, awaited at most `wait`), then closes.
pub async fn refuse(stream: UnixStream, why: Refusal, wait: std::time::Duration) {
    let (mut rd, mut wr) = stream.into_split();
    let mut first = [0u8; 1];
    let first = match tokio::time::timeout(wait, rd.read(&mut first)).await {
        Ok(Ok(1)) => first[0],
        _ => return,
    };
    let error = match why {
        Refusal::NotAllowed => WireError::new(
            ErrorCode::Forbidden,
            "this user may not use seqd (see --allow-uids/--allow-gids)",
        ),
        Refusal::TooManyForUid(limit) => WireError::new(
            ErrorCode::Unavailable,
            format!("this user holds its limit of {limit} connections (--max-connections-per-uid)"),
        ),
        Refusal::TooManyForPid(limit) => WireError::new(
            ErrorCode::Unavailable,
            format!(
                "this process holds its limit of {limit} connections (--max-connections-per-pid)"
            ),
        ),
    };
    let bytes = if seqd_protocol::is_binary_first_byte(first) {
        let msg = ServerMessage::Error { error };
        seqd_protocol::codec::encode_frame(&msg, seqd_protocol::MAX_FRAME_CEILING)
            .unwrap_or_default()
    } else {
        format!("{}\n", seqd_protocol::text::format_error(&error)).into_bytes()
    };
    let _ = wr.write_all(&bytes).await;
    let _ = wr.shutdown().await;
}
