//! Transport: sockets to requests and responses back.
//!
//! One Unix stream socket carries two protocols; the first byte a client
//! sends decides which one its connection speaks ([`binary`] for `0x00`,
//! the first byte of the hello's length; [`text`] otherwise). Either way, requests go to [`crate::dispatch`], and a
//! client's bad input only ever affects that client's connection.

pub mod binary;
pub mod order;
pub mod text;

use crate::context::Context;
use seqd_protocol::{ErrorCode, ServerMessage, WireError};
use std::io::Cursor;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio_util::sync::CancellationToken;

/// Serves one connection until the client leaves, a fatal protocol error,
/// or `shutdown` (then requests in flight are still answered).
pub async fn serve_connection(ctx: Arc<Context>, stream: UnixStream, shutdown: CancellationToken) {
    let allowed = match stream.peer_cred() {
        Ok(cred) => {
            tracing::debug!(uid = cred.uid(), gid = cred.gid(), pid = ?cred.pid(), "connection accepted");
            ctx.config().peer_allowed(cred.uid(), cred.gid())
        }
        // Without credentials an allow-list cannot be honoured.
        Err(_) => ctx.config().allow_uids.is_empty() && ctx.config().allow_gids.is_empty(),
    };
    let (mut rd, mut wr) = stream.into_split();
    let mut first = [0u8; 1];
    let read = tokio::select! {
        r = tokio::time::timeout(ctx.config().handshake_timeout(), rd.read(&mut first)) => r,
        _ = shutdown.cancelled() => return,
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
    if !allowed {
        refuse(&mut wr, first[0]).await;
        return;
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

/// Tells a peer outside the allow-list why it is refused, in the protocol
/// it started to speak, then the connection closes.
async fn refuse(wr: &mut tokio::net::unix::OwnedWriteHalf, first: u8) {
    tracing::info!("connection refused: peer not in the allow-list");
    let error = WireError::new(
        ErrorCode::Forbidden,
        "this user may not use seqd (see --allow-uids/--allow-gids)",
    );
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
