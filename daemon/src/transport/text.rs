//! The text protocol on a connection: one line in, one reply out, in order.

use crate::context::Context;
use crate::dispatch;
use futures_util::StreamExt;
use seqd_protocol::lines::{Line, LineDecoder};
use seqd_protocol::text::{self, TextCommand};
use seqd_protocol::{ErrorCode, WireError};
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWriteExt, BufWriter};
use tokio::net::unix::OwnedWriteHalf;
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;

pub async fn serve<R>(
    ctx: Arc<Context>,
    reader: R,
    writer: OwnedWriteHalf,
    shutdown: CancellationToken,
) where
    R: AsyncRead + Unpin,
{
    let max_line = ctx.config().max_line as usize;
    let mut lines = FramedRead::new(reader, LineDecoder::new(max_line));
    let mut out = BufWriter::new(writer);
    // Set once shutdown began: lines are still answered until then.
    let mut last_call: Option<tokio::time::Instant> = None;
    loop {
        let idle = ctx.config().idle_timeout();
        // One timer: the idle limit, or the end of the last call if sooner.
        let idle_at = (!idle.is_zero()).then(|| tokio::time::Instant::now() + idle);
        let wake = match (idle_at, last_call) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let item = tokio::select! {
            item = lines.next() => item,
            _ = tokio::time::sleep_until(wake.unwrap_or_else(tokio::time::Instant::now)), if wake.is_some() => {
                if last_call.is_none() {
                    let _ = out.write_all(idle_notice(idle).as_bytes()).await;
                }
                break;
            }
            _ = shutdown.cancelled(), if last_call.is_none() => {
                last_call = Some(tokio::time::Instant::now() + super::LAST_CALL);
                continue;
            }
        };
        let mut quit = false;
        let reply = match item {
            None | Some(Err(_)) => break,
            Some(Ok(Line::TooLong)) => text::format_error(&WireError::new(
                ErrorCode::TooLarge,
                format!("line longer than {max_line} bytes; it was discarded"),
            )),
            Some(Ok(Line::Line(bytes))) => match text::parse_line(&bytes) {
                Ok(None) => continue,
                Ok(Some(TextCommand::Help)) => text::format_help(),
                Ok(Some(TextCommand::Quit)) => {
                    quit = true;
                    "OK bye".to_string()
                }
                Ok(Some(TextCommand::Request(request))) => {
                    text::format_reply(&dispatch::serve(&ctx, request).await)
                }
                Err(e) => text::format_error(&e),
            },
        };
        if out.write_all(reply.as_bytes()).await.is_err() || out.write_all(b"\n").await.is_err() {
            return;
        }
        // Pipelined input: while another whole line is already buffered,
        // answer it before flushing, so a burst costs one write.
        let more_buffered = lines.read_buffer().contains(&b'\n');
        if (quit || !more_buffered) && out.flush().await.is_err() {
            return;
        }
        if quit {
            break;
        }
    }
    let _ = out.flush().await;
    let _ = out.shutdown().await;
}

/// The line a text client gets before an idle connection is closed.
fn idle_notice(idle: std::time::Duration) -> String {
    format!(
        "{}\n",
        text::format_error(&WireError::new(
            ErrorCode::Unavailable,
            format!(
                "idle for {} ms; closing (reconnect to go on)",
                idle.as_millis()
            )
        ))
    )
}
