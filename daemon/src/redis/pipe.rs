//! An auto-pipelined Redis connection.
//!
//! # What it owns
//!
//! One TCP (or Unix) connection to Redis and two tasks: a writer that
//! coalesces the commands of every request waiting at that moment into one
//! write, and a reader that hands each reply back to its request, in order.
//!
//! # Why not the redis crate's `MultiplexedConnection`
//!
//! It sends each command as soon as its request gets there, so with 50
//! clients on 4 connections it made 1.4 commands per `writev` — and a
//! loopback TCP write was the largest single cost in a profile of seqd
//! (29% of its worker threads' time in a `perf` profile).
//! Here the writer, once woken, yields to the scheduler before it drains
//! its queue: the requests that are ready to run at that moment queue their
//! commands first, and all of them leave in one write. Commands are still
//! encoded by the redis crate ([`redis::Cmd`]); replies are framed and
//! parsed by [`super::resp`]; this module only batches and routes.
//!
//! # Fencing (`--redis-wait-replicas`)
//!
//! A request may ask for its writes to be *acknowledged* ([`Pipe::fenced`]).
//! When a write batch holds such a request, the writer appends one
//! `WAIT <replicas> <timeout>` after it, and the reader holds the replies of
//! the fenced requests until `WAIT` answers: with enough replicas they are
//! delivered, otherwise each fails with `NOREPLICAS` (and the caller falls
//! back or refuses). One `WAIT` per batch, not per request: it covers every
//! write the connection made before it.
//!
//! # What it guarantees
//!
//! - Replies reach their requests in order; a request that gave up (its
//!   caller's own timeout) only drops its reply.
//! - A request sent through a handle with a deadline ([`Pipe::until`])
//!   fails with a timeout when its reply has not come by then, and the
//!   connection closes: one timer per connection, not one per request.
//! - A fenced request never sees its reply before `WAIT` confirmed it.
//! - When the connection breaks, every request waiting on it fails as a
//!   closed connection, and so does every later one: the pool then drops it.
//! - When the last handle is dropped, both tasks end and the socket closes,
//!   even when Redis hangs and never answers again.

use super::resp;
use super::target::{Endpoint, TlsSettings};
use redis::aio::ConnectionLike;
use redis::{Cmd, RedisError, RedisFuture, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Bytes one write carries at most; more waits for the next write.
const MAX_WRITE: usize = 256 * 1024;

/// A handle to the connection; cheap to clone.
#[derive(Clone)]
pub struct Pipe {
    jobs: mpsc::UnboundedSender<Job>,
    db: i64,
    /// Fencing of this connection; `None` when off.
    fence: Option<Fence>,
    /// Whether this handle's requests wait for the fence.
    fenced: bool,
    /// When this handle's requests time out (see [`Pipe::until`]).
    deadline: Option<Instant>,
    /// Set when the connection closed because a reply did not come in
    /// time: every request it fails, fails as a timeout.
    hung: Arc<AtomicBool>,
}

/// `WAIT` settings of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fence {
    /// Replicas that must acknowledge.
    pub replicas: u32,
    /// How long Redis waits for them, in milliseconds (never 0: `WAIT`
    /// with 0 blocks forever).
    pub timeout_ms: u64,
}

/// Encoded commands and where their replies go.
struct Job {
    bytes: Vec<u8>,
    /// Replies the commands produce.
    replies: usize,
    /// Replies to drop from the front (the `MULTI` / `QUEUED` of a
    /// transaction).
    skip: usize,
    /// Set on a fenced request: hold the replies until the batch's `WAIT`
    /// confirms them.
    fence: Option<Fence>,
    deadline: Option<Instant>,
    done: oneshot::Sender<redis::RedisResult<Vec<Value>>>,
}

/// What the reader expects next, in the order the bytes were written.
enum Waiting {
    /// A job's replies.
    Job {
        replies: usize,
        skip: usize,
        fenced: bool,
        deadline: Option<Instant>,
        done: oneshot::Sender<redis::RedisResult<Vec<Value>>>,
    },
    /// The `WAIT` that closes a batch with fenced jobs.
    Wait(Fence),
}

/// The error of a request whose reply did not come by its deadline: the
/// connection is taken for hung and closed.
fn timed_out() -> RedisError {
    RedisError::from(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        "no reply from Redis within the operation timeout",
    ))
}

/// One timer for a connection's deadlines, re-armed lazily. A timer per
/// request would cost a system call each: registering a timer that comes
/// before the runtime's next wake-up unparks its thread (an eventfd write),
/// and a current-thread runtime learns its next wake-up only when it parks.
/// This one is armed at the deadline of the reply being waited for, unless
/// it is armed earlier already (for an earlier request: replies come in
/// order); when it fires for a reply that has time left, it is re-armed
/// once. Under steady load that is one registration per timeout period.
struct Deadlines {
    sleep: std::pin::Pin<Box<tokio::time::Sleep>>,
    armed: Option<Instant>,
}

impl Deadlines {
    fn new() -> Deadlines {
        Deadlines {
            sleep: Box::pin(tokio::time::sleep_until(Instant::now())),
            armed: None,
        }
    }

    /// Completes once `deadline` has passed (never for `None`). Cancel
    /// safe: the timer stays armed for the next call.
    async fn passed(&mut self, deadline: Option<Instant>) {
        let Some(deadline) = deadline else {
            return std::future::pending().await;
        };
        loop {
            if self.armed.is_none_or(|at| at > deadline) {
                self.sleep.as_mut().reset(deadline);
                self.armed = Some(deadline);
            }
            self.sleep.as_mut().await;
            self.armed = None;
            if Instant::now() >= deadline {
                return;
            }
        }
    }
}

fn closed() -> RedisError {
    RedisError::from(std::io::Error::new(
        std::io::ErrorKind::BrokenPipe,
        "Redis connection closed",
    ))
}

/// Connects (over TLS when `tls` is given), authenticates and selects
/// database `db`.
pub async fn connect(
    endpoint: &Endpoint,
    tls: Option<&TlsSettings>,
    login: &Login,
    fence: Option<Fence>,
) -> redis::RedisResult<Pipe> {
    let db = login.db;
    let mut pipe = match (endpoint, tls) {
        (Endpoint::Tcp { host, port }, None) => {
            let stream = tokio::net::TcpStream::connect((host.as_str(), *port)).await?;
            stream.set_nodelay(true)?;
            let (rd, wr) = stream.into_split();
            spawn(rd, wr, db, fence)
        }
        (Endpoint::Tcp { host, port }, Some(tls)) => {
            let stream = tokio::net::TcpStream::connect((host.as_str(), *port)).await?;
            stream.set_nodelay(true)?;
            let name = rustls::pki_types::ServerName::try_from(host.clone()).map_err(|e| {
                std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{host}: {e}"))
            })?;
            let stream = tokio_rustls::TlsConnector::from(tls.client.clone())
                .connect(name, stream)
                .await?;
            let (rd, wr) = tokio::io::split(stream);
            spawn(rd, wr, db, fence)
        }
        (Endpoint::Unix(path), _) => {
            let (rd, wr) = tokio::net::UnixStream::connect(path).await?.into_split();
            spawn(rd, wr, db, fence)
        }
    };
    if let Some(password) = &login.password {
        let mut auth = redis::cmd("AUTH");
        if let Some(user) = &login.username {
            auth.arg(user);
        }
        auth.arg(password).query_async::<()>(&mut pipe).await?;
    }
    if db != 0 {
        redis::cmd("SELECT")
            .arg(db)
            .query_async::<()>(&mut pipe)
            .await?;
    }
    Ok(pipe)
}

/// How a connection logs in.
#[derive(Debug, Clone, Default)]
pub struct Login {
    pub username: Option<String>,
    pub password: Option<String>,
    pub db: i64,
}

fn spawn<R, W>(rd: R, wr: W, db: i64, fence: Option<Fence>) -> Pipe
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (jobs, queue) = mpsc::unbounded_channel();
    let (waiting_tx, waiting_rx) = mpsc::unbounded_channel();
    let stop = CancellationToken::new();
    let hung = Arc::new(AtomicBool::new(false));
    tokio::spawn(write_loop(wr, queue, waiting_tx, stop.clone()));
    tokio::spawn(read_loop(rd, waiting_rx, stop, hung.clone()));
    Pipe {
        jobs,
        db,
        fence,
        fenced: false,
        deadline: None,
        hung,
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(
    mut wr: W,
    mut queue: mpsc::UnboundedReceiver<Job>,
    waiting: mpsc::UnboundedSender<Waiting>,
    stop: CancellationToken,
) {
    let mut buf = Vec::with_capacity(16 * 1024);
    'run: while let Some(first) = queue.recv().await {
        // Auto-pipelining: let the requests that are ready now queue their
        // commands, then send them all in one write.
        tokio::task::yield_now().await;
        let mut next = Some(first);
        let mut fence = None;
        while let Some(job) = next.take().or_else(|| queue.try_recv().ok()) {
            buf.extend_from_slice(&job.bytes);
            fence = fence.or(job.fence);
            let w = Waiting::Job {
                replies: job.replies,
                skip: job.skip,
                fenced: job.fence.is_some(),
                deadline: job.deadline,
                done: job.done,
            };
            if waiting.send(w).is_err() {
                break 'run; // the reader stopped: the connection is broken
            }
            if buf.len() >= MAX_WRITE {
                break;
            }
        }
        if let Some(f) = fence {
            buf.extend_from_slice(
                &redis::cmd("WAIT")
                    .arg(f.replicas)
                    .arg(f.timeout_ms)
                    .get_packed_command(),
            );
            if waiting.send(Waiting::Wait(f)).is_err() {
                break 'run;
            }
        }
        let written = tokio::select! {
            r = wr.write_all(&buf) => r.is_ok(),
            () = stop.cancelled() => false,
        };
        if !written {
            break;
        }
        buf.clear();
    }
    // Every handle is gone or the connection broke: stop the reader too
    // (Redis may never answer again), which fails whatever is waiting.
    stop.cancel();
}

async fn read_loop<R: AsyncRead + Unpin>(
    mut rd: R,
    mut waiting: mpsc::UnboundedReceiver<Waiting>,
    stop: CancellationToken,
    hung: Arc<AtomicBool>,
) {
    let mut buf = bytes::BytesMut::with_capacity(16 * 1024);
    // Replies of fenced jobs, held until their batch's `WAIT` answers,
    // and the earliest deadline among them.
    let mut held: Vec<(Vec<Value>, Done)> = Vec::new();
    let mut held_until: Option<Instant> = None;
    let mut deadlines = Deadlines::new();
    'run: loop {
        let w = tokio::select! {
            w = waiting.recv() => match w {
                Some(w) => w,
                None => break,
            },
            () = stop.cancelled() => break,
        };
        match w {
            Waiting::Job {
                replies,
                skip,
                fenced,
                deadline,
                done,
            } => {
                let mut values = Vec::with_capacity(replies);
                while values.len() < replies {
                    let next =
                        next_value_by(&mut rd, &mut buf, &stop, &mut deadlines, deadline, &hung);
                    match next.await {
                        Ok(v) => values.push(v),
                        Err(e) => {
                            let _ = done.send(Err(e));
                            break 'run;
                        }
                    }
                }
                values.drain(..skip.min(values.len()));
                if fenced {
                    held.push((values, done));
                    held_until = match (held_until, deadline) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                } else {
                    let _ = done.send(Ok(values));
                }
            }
            Waiting::Wait(f) => {
                let until = held_until.take();
                let next = next_value_by(&mut rd, &mut buf, &stop, &mut deadlines, until, &hung);
                let acked = match next.await {
                    Ok(Value::Int(n)) => n,
                    Ok(other) => {
                        // A Redis without WAIT (or refusing it) fences
                        // nothing: no fenced reply may pass.
                        tracing::debug!(reply = ?other, "WAIT did not answer a count");
                        -1
                    }
                    Err(e) => {
                        for (_, done) in held.drain(..) {
                            let e = match hung.load(Ordering::Relaxed) {
                                true => timed_out(),
                                false => closed_with(&e),
                            };
                            let _ = done.send(Err(e));
                        }
                        break 'run;
                    }
                };
                for (values, done) in held.drain(..) {
                    let _ = done.send(if acked >= i64::from(f.replicas) {
                        Ok(values)
                    } else {
                        Err(not_acknowledged(acked, f))
                    });
                }
            }
        }
    }
    stop.cancel();
    // Held replies were never confirmed: they fail as a closed connection.
    drop(held);
    // Dropping `waiting` fails every request still queued: closed().
}

type Done = oneshot::Sender<redis::RedisResult<Vec<Value>>>;

/// The error of a fenced request whose batch too few replicas
/// acknowledged: `NOREPLICAS`, which the breaker reads as a Redis that
/// cannot serve.
pub(super) fn not_acknowledged(acked: i64, f: Fence) -> RedisError {
    super::error::server_error(&format!(
        "NOREPLICAS {} of {} replicas acknowledged the write within {} ms (--redis-wait-replicas)",
        acked.max(0),
        f.replicas,
        f.timeout_ms
    ))
}

/// A transport error for each request that shared a broken read.
fn closed_with(e: &RedisError) -> RedisError {
    RedisError::from(std::io::Error::new(
        std::io::ErrorKind::BrokenPipe,
        format!("Redis connection failed: {e}"),
    ))
}

/// [`next_value`], unless `deadline` passes first: then the connection is
/// taken for hung (`hung` is set) and the reply fails as a timeout.
async fn next_value_by<R: AsyncRead + Unpin>(
    rd: &mut R,
    buf: &mut bytes::BytesMut,
    stop: &CancellationToken,
    deadlines: &mut Deadlines,
    deadline: Option<Instant>,
    hung: &AtomicBool,
) -> redis::RedisResult<Value> {
    tokio::select! {
        biased;
        r = next_value(rd, buf, stop) => r,
        () = deadlines.passed(deadline) => {
            hung.store(true, Ordering::Relaxed);
            Err(timed_out())
        }
    }
}

/// Reads until one whole reply is buffered, then parses it.
async fn next_value<R: AsyncRead + Unpin>(
    rd: &mut R,
    buf: &mut bytes::BytesMut,
    stop: &CancellationToken,
) -> redis::RedisResult<Value> {
    loop {
        match resp::frame_len(buf) {
            Ok(Some(len)) => {
                let frame = buf.split_to(len);
                return resp::parse(&frame).map_err(|e| {
                    RedisError::from(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("unparsable reply from Redis: {e}"),
                    ))
                });
            }
            Ok(None) => {}
            // Broken framing ends the connection: an I/O error (so the
            // breaker counts it), not a parse error (which the breaker
            // reads as one key's value that did not convert).
            Err(e) => {
                return Err(RedisError::from(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("unexpected bytes from Redis: {e}"),
                )))
            }
        }
        let n = tokio::select! {
            r = rd.read_buf(buf) => r?,
            () = stop.cancelled() => return Err(closed()),
        };
        if n == 0 {
            return Err(closed());
        }
    }
}

impl Pipe {
    /// A handle whose requests are answered only once `WAIT` confirmed
    /// their writes (when this connection fences; otherwise the same).
    pub fn fenced(&self) -> Pipe {
        Pipe {
            fenced: self.fence.is_some(),
            ..self.clone()
        }
    }

    /// A handle whose requests fail with a timeout when their reply has
    /// not come by `deadline`; the connection is then closed (a Redis
    /// that does not answer in time is taken for hung, and every request
    /// waiting on it fails).
    pub fn until(&self, deadline: Instant) -> Pipe {
        Pipe {
            deadline: Some(deadline),
            ..self.clone()
        }
    }

    /// `INCR key`, encoded here rather than by [`redis::Cmd`] (which
    /// builds two vectors before the bytes): the new value.
    pub async fn incr(&self, key: &str) -> redis::RedisResult<u64> {
        use std::io::Write as _;
        let mut bytes = Vec::with_capacity(key.len() + 32);
        let _ = write!(bytes, "*2\r\n$4\r\nINCR\r\n${}\r\n", key.len());
        bytes.extend_from_slice(key.as_bytes());
        bytes.extend_from_slice(b"\r\n");
        let value = self.send(bytes, 1, 0).await?.pop().ok_or_else(closed)?;
        Ok(redis::from_redis_value(value.extract_error()?)?)
    }

    /// `MULTI` / `INCR key` / `EXPIRE key ttl NX` / `EXEC`, encoded here
    /// like [`Pipe::incr`]: the four replies.
    pub async fn incr_expire(&self, key: &str, ttl: u64) -> redis::RedisResult<Vec<Value>> {
        use std::io::Write as _;
        let ttl = ttl.to_string();
        let mut bytes = Vec::with_capacity(2 * key.len() + ttl.len() + 96);
        bytes.extend_from_slice(b"*1\r\n$5\r\nMULTI\r\n");
        let _ = write!(bytes, "*2\r\n$4\r\nINCR\r\n${}\r\n", key.len());
        bytes.extend_from_slice(key.as_bytes());
        let _ = write!(bytes, "\r\n*4\r\n$6\r\nEXPIRE\r\n${}\r\n", key.len());
        bytes.extend_from_slice(key.as_bytes());
        let _ = write!(bytes, "\r\n${}\r\n{ttl}\r\n$2\r\nNX\r\n", ttl.len());
        bytes.extend_from_slice(b"*1\r\n$4\r\nEXEC\r\n");
        self.send(bytes, 4, 0).await
    }

    async fn send(
        &self,
        bytes: Vec<u8>,
        replies: usize,
        skip: usize,
    ) -> redis::RedisResult<Vec<Value>> {
        let (done, answer) = oneshot::channel();
        let job = Job {
            bytes,
            replies,
            skip,
            fence: self.fence.filter(|_| self.fenced),
            deadline: self.deadline,
            done,
        };
        let gone = || match self.hung.load(Ordering::Relaxed) {
            true => timed_out(),
            false => closed(),
        };
        self.jobs.send(job).map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

impl ConnectionLike for Pipe {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let mut values = self.send(cmd.get_packed_command(), 1, 0).await?;
            values.pop().ok_or_else(closed)
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let bytes = pipeline.get_packed_pipeline();
            self.send(bytes, offset + count, offset).await
        })
    }

    fn get_db(&self) -> i64 {
        self.db
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::AsyncBufReadExt;

    /// A pipe on one end of a socket pair; the other end plays Redis.
    fn pipe_and_server() -> (Pipe, tokio::io::BufReader<tokio::net::UnixStream>) {
        let (ours, theirs) = tokio::net::UnixStream::pair().unwrap();
        let (rd, wr) = ours.into_split();
        (spawn(rd, wr, 0, None), tokio::io::BufReader::new(theirs))
    }

    /// Reads one `PING` as Redis would (`*1\r\n$4\r\nPING\r\n`).
    async fn read_ping(server: &mut tokio::io::BufReader<tokio::net::UnixStream>) {
        for _ in 0..3 {
            let mut line = String::new();
            server.read_line(&mut line).await.unwrap();
        }
    }

    async fn ping(p: &mut Pipe) -> redis::RedisResult<String> {
        redis::cmd("PING").query_async(p).await
    }

    #[tokio::test]
    async fn replies_within_their_deadline_arrive_and_a_late_one_closes_the_connection() {
        let (pipe, mut server) = pipe_and_server();
        let soon = Instant::now() + Duration::from_millis(300);
        // Answered in time, one after the other: the timer armed for the
        // first serves the second.
        for _ in 0..2 {
            let mut p = pipe.until(soon);
            let answer = tokio::spawn(async move { ping(&mut p).await });
            read_ping(&mut server).await;
            server.get_mut().write_all(b"+PONG\r\n").await.unwrap();
            assert_eq!(answer.await.unwrap().unwrap(), "PONG");
        }
        // Never answered: a timeout at the deadline, not before.
        let mut late = pipe.until(Instant::now() + Duration::from_millis(100));
        let mut behind = pipe.until(Instant::now() + Duration::from_secs(30));
        let started = Instant::now();
        let (a, b) = tokio::join!(ping(&mut late), ping(&mut behind));
        let waited = started.elapsed();
        assert!(a.unwrap_err().is_timeout());
        // The connection is taken for hung: what waits behind fails as a
        // timeout too, at once, and so does what comes after.
        assert!(b.unwrap_err().is_timeout());
        assert!(
            waited >= Duration::from_millis(100) && waited < Duration::from_secs(10),
            "{waited:?}"
        );
        assert!(ping(&mut pipe.clone()).await.unwrap_err().is_timeout());
    }

    #[tokio::test]
    async fn without_a_deadline_a_request_waits_for_its_reply() {
        let (pipe, mut server) = pipe_and_server();
        let mut p = pipe.clone();
        let answer = tokio::spawn(async move { ping(&mut p).await });
        read_ping(&mut server).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        server.get_mut().write_all(b"+PONG\r\n").await.unwrap();
        assert_eq!(answer.await.unwrap().unwrap(), "PONG");
    }
}
