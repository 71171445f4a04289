//! The runtime's own bounded thread pool for blocking node work (HTTP calls, embedder code).
//!
//! Blocking work never runs on tokio's worker threads nor on tokio's global `spawn_blocking`
//! pool: a fixed number of named threads take jobs from one queue. The async side awaits a
//! oneshot reply. When it stops waiting (cancellation, timeout), a job that has not started yet
//! is skipped, and a job already running finishes in the background and its result is dropped,
//! so every job must be bounded (HTTP requests always carry a timeout).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;

type Job = Box<dyn FnOnce() + Send + 'static>;

/// Why a blocking job produced no value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PoolError {
    /// The pool has shut down (its runtime was dropped).
    #[error("the runtime's blocking pool has shut down")]
    Closed,
    /// The job panicked; the worker survived.
    #[error("blocking work panicked: {0}")]
    Panicked(String),
}

/// A fixed-size pool of worker threads.
#[derive(Debug)]
pub(crate) struct BlockingPool {
    sender: mpsc::Sender<Job>,
    threads: usize,
}

impl BlockingPool {
    /// Starts `threads` workers (at least one).
    pub(crate) fn new(threads: usize) -> std::io::Result<Self> {
        let threads = threads.max(1);
        let (sender, receiver) = mpsc::channel::<Job>();
        let receiver = Arc::new(Mutex::new(receiver));
        for index in 0..threads {
            let receiver = Arc::clone(&receiver);
            thread::Builder::new()
                .name(format!("flowrunner-blocking-{index}"))
                .spawn(move || worker(&receiver))?;
        }
        Ok(Self { sender, threads })
    }

    /// Number of worker threads.
    pub(crate) fn threads(&self) -> usize {
        self.threads
    }

    /// Runs `job` on a worker and waits for its value without blocking the async caller.
    pub(crate) async fn run<F, T>(&self, job: F) -> Result<T, PoolError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let boxed: Job = Box::new(move || {
            if reply.is_closed() {
                // The caller stopped waiting (cancelled, timed out) before the job started.
                return;
            }
            let result = catch_unwind(AssertUnwindSafe(job)).map_err(|panic| {
                let text = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".to_string());
                PoolError::Panicked(text)
            });
            // The receiver is gone when the caller stopped waiting: the value is dropped.
            let _ignored = reply.send(result);
        });
        self.sender.send(boxed).map_err(|_| PoolError::Closed)?;
        answer.await.map_err(|_| PoolError::Closed)?
    }
}

fn worker(receiver: &Mutex<mpsc::Receiver<Job>>) {
    loop {
        let job = {
            let guard = match receiver.lock() {
                Ok(guard) => guard,
                Err(poisoned) => poisoned.into_inner(),
            };
            guard.recv()
        };
        match job {
            Ok(job) => job(),
            // Every sender is gone: the runtime was dropped.
            Err(mpsc::RecvError) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn runs_on_named_pool_threads_and_bounds_concurrency() {
        let pool = Arc::new(BlockingPool::new(2).expect("pool"));
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..6 {
            let pool = Arc::clone(&pool);
            let running = Arc::clone(&running);
            let peak = Arc::clone(&peak);
            tasks.push(tokio::spawn(async move {
                pool.run(move || {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(10));
                    running.fetch_sub(1, Ordering::SeqCst);
                    std::thread::current().name().map(str::to_string)
                })
                .await
            }));
        }
        for task in tasks {
            let name = task.await.expect("join").expect("job").expect("named");
            assert!(name.starts_with("flowrunner-blocking-"), "{name}");
        }
        assert!(peak.load(Ordering::SeqCst) <= 2);
        assert_eq!(pool.threads(), 2);
    }

    #[tokio::test]
    async fn a_job_nobody_waits_for_anymore_is_skipped() {
        let pool = Arc::new(BlockingPool::new(1).expect("pool"));
        let busy = tokio::spawn({
            let pool = Arc::clone(&pool);
            async move {
                pool.run(|| std::thread::sleep(Duration::from_millis(50)))
                    .await
            }
        });
        tokio::time::sleep(Duration::from_millis(5)).await;
        let ran = Arc::new(AtomicUsize::new(0));
        let flag = Arc::clone(&ran);
        let abandoned = tokio::time::timeout(
            Duration::from_millis(1),
            pool.run(move || flag.fetch_add(1, Ordering::SeqCst)),
        );
        assert!(
            abandoned.await.is_err(),
            "the job cannot have run while the worker sleeps"
        );
        assert_eq!(busy.await.expect("join"), Ok(()));
        assert_eq!(pool.run(|| 1).await, Ok(1));
        assert_eq!(ran.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_panicking_job_is_an_error_and_the_worker_survives() {
        let pool = BlockingPool::new(1).expect("pool");
        let err = pool.run(|| -> u32 { panic!("boom") }).await;
        assert_eq!(err, Err(PoolError::Panicked("boom".into())));
        assert_eq!(pool.run(|| 7).await, Ok(7));
    }
}
