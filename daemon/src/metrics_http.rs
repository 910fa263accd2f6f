//! An optional HTTP listener on a loopback address so that Prometheus can
//! scrape `GET /metrics`. Deliberately tiny: one request per connection,
//! a bounded request head, a time limit, no other routes.

use crate::context::Context;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Largest request head read.
const MAX_HEAD: usize = 8 * 1024;
/// Time a scraper has to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Binds `addr`, which must be a loopback address: seqd exposes nothing
/// beyond the host.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    if !addr.ip().is_loopback() {
        anyhow::bail!("--metrics-listen {addr}: only loopback addresses are allowed");
    }
    Ok(TcpListener::bind(addr).await?)
}

/// Serves scrapes until `stop`; each scrape is a task on `tasks`, bounded
/// by the read timeout.
pub async fn serve(
    listener: TcpListener,
    ctx: Arc<Context>,
    tasks: TaskTracker,
    stop: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.cancelled() => return,
        };
        let Ok((stream, _)) = accepted else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let ctx = ctx.clone();
        tasks.spawn(async move {
            let _ = tokio::time::timeout(READ_TIMEOUT, answer(stream, &ctx)).await;
        });
    }
}

async fn answer(mut stream: TcpStream, ctx: &Context) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 || head.len() + n > MAX_HEAD {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let request_line = head.split(|b| *b == b'\r').next().unwrap_or_default();
    let (status, body) = match request_line.split(|b| *b == b' ').collect::<Vec<_>>()[..] {
        [b"GET", b"/metrics", _] => ("200 OK", crate::status::metrics(ctx)),
        _ => (
            "404 Not Found",
            "only GET /metrics is served here\n".to_string(),
        ),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}
