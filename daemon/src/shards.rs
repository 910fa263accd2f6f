//! The threads that serve connections.
//!
//! # What it owns
//!
//! N shards, each one OS thread running a current-thread Tokio runtime.
//! A connection is handed to a shard once, when it is accepted (the one
//! serving the fewest connections), and lives there to its end: its
//! requests are read, sent to Redis and answered by tasks of that one
//! thread. The Redis pool gives every thread that calls it connections of
//! its own (`redis::pool`), whose writer and reader tasks are spawned by
//! that thread's first request: a request wakes no other thread on its way
//! to Redis and back.
//!
//! # What it guarantees
//!
//! - A job handed to [`Shards::spawn`] runs to its end on one shard,
//!   unless the shards are stopped first (shutdown drains connections
//!   before that).
//! - [`Shards::all_answer`] is true only when every shard's runtime ran a
//!   task within the time given: the watchdog's proof that no shard is
//!   stuck.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

type Job = Pin<Box<dyn Future<Output = ()> + Send>>;

struct Shard {
    jobs: mpsc::UnboundedSender<Job>,
    /// Jobs handed to this shard and not ended.
    load: Arc<AtomicUsize>,
}

/// The shards, and their threads until [`Shards::stop`].
pub struct Shards {
    shards: Vec<Shard>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
    /// Cancelled by [`Shards::stop`]: each shard's loop ends.
    stop: CancellationToken,
    /// Where the search for the least loaded shard starts, so that ties
    /// go round.
    next: AtomicUsize,
}

/// Ends a job's count on its shard when the job ends or is dropped.
struct Counted(Arc<AtomicUsize>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Shards {
    /// Starts `n` shard threads (at least one).
    pub fn start(n: usize) -> std::io::Result<Shards> {
        let mut shards = Vec::new();
        let mut threads = Vec::new();
        let stop = CancellationToken::new();
        for i in 0..n.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let (jobs, mut queue) = mpsc::unbounded_channel::<Job>();
            let stopped = stop.clone();
            let thread = std::thread::Builder::new()
                .name(format!("seqd-shard-{i}"))
                .spawn(move || {
                    runtime.block_on(async move {
                        loop {
                            tokio::select! {
                                Some(job) = queue.recv() => {
                                    tokio::spawn(job);
                                }
                                () = stopped.cancelled() => break,
                            }
                        }
                    });
                    // Dropping the runtime drops what is left on it: the
                    // shard's Redis connection tasks.
                })?;
            shards.push(Shard {
                jobs,
                load: Arc::default(),
            });
            threads.push(thread);
        }
        Ok(Shards {
            shards,
            threads: Mutex::new(threads),
            stop,
            next: AtomicUsize::new(0),
        })
    }

    pub fn len(&self) -> usize {
        self.shards.len()
    }

    pub fn is_empty(&self) -> bool {
        self.shards.is_empty()
    }

    /// Runs `job` on the shard with the fewest jobs.
    pub fn spawn(&self, job: impl Future<Output = ()> + Send + 'static) {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let n = self.shards.len();
        let shard = (0..n)
            .map(|i| &self.shards[(start + i) % n])
            .min_by_key(|s| s.load.load(Ordering::Relaxed))
            .expect("at least one shard");
        shard.load.fetch_add(1, Ordering::Relaxed);
        let counted = Counted(shard.load.clone());
        let job = Box::pin(async move {
            job.await;
            drop(counted);
        });
        if let Err(mpsc::error::SendError(job)) = shard.jobs.send(job) {
            // The shard's thread is gone (it never is before `stop`):
            // serve on the caller's runtime rather than drop the job.
            tracing::error!("a shard thread has stopped; serving on the accept thread");
            tokio::spawn(job);
        }
    }

    /// Whether every shard runs a task within `within`.
    pub async fn all_answer(&self, within: Duration) -> bool {
        let mut answers = Vec::with_capacity(self.shards.len());
        for shard in &self.shards {
            let (tx, rx) = oneshot::channel();
            let job: Job = Box::pin(async move {
                let _ = tx.send(());
            });
            if shard.jobs.send(job).is_err() {
                return false;
            }
            answers.push(rx);
        }
        let all = futures_util::future::join_all(answers);
        matches!(tokio::time::timeout(within, all).await, Ok(r) if r.iter().all(Result::is_ok))
    }

    /// Stops the shards: what still runs on them is dropped. Call after
    /// the connections drained.
    pub async fn stop(&self) {
        self.stop.cancel();
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|p| p.into_inner()));
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn jobs_run_on_shard_threads_and_spread_over_them() {
        let shards = Shards::start(2).unwrap();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let (hold_tx, hold) = tokio::sync::watch::channel(false);
        for _ in 0..4 {
            let tx = tx.clone();
            let mut hold = hold.clone();
            shards.spawn(async move {
                let name = std::thread::current().name().unwrap_or("").to_string();
                tx.send(name).unwrap();
                // Held until all four run: each shard then counts two.
                let _ = hold.wait_for(|h| *h).await;
            });
        }
        let mut names = Vec::new();
        for _ in 0..4 {
            names.push(rx.recv().await.unwrap());
        }
        names.sort();
        assert_eq!(
            names,
            [
                "seqd-shard-0",
                "seqd-shard-0",
                "seqd-shard-1",
                "seqd-shard-1"
            ]
        );
        assert!(shards.all_answer(Duration::from_secs(5)).await);
        hold_tx.send(true).unwrap();
        shards.stop().await;
    }

    #[tokio::test]
    async fn a_stuck_shard_is_reported() {
        let shards = Shards::start(1).unwrap();
        let (release, stuck) = std::sync::mpsc::channel::<()>();
        // Blocks the shard's only thread (what a bug in a handler would do).
        shards.spawn(async move {
            let _ = stuck.recv();
        });
        assert!(!shards.all_answer(Duration::from_millis(200)).await);
        release.send(()).unwrap();
        assert!(shards.all_answer(Duration::from_secs(5)).await);
        shards.stop().await;
    }
}
