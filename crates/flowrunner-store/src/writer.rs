//! The single group-commit journal writer: one OS thread owns one connection and commits every
//! execution write (creation, journal entries with their snapshot and status changes, lease
//! renewals) in batches.
//!
//! Each write is a message on a bounded channel with a one-shot reply. The writer takes
//! whatever is waiting (up to [`WriterConfig::max_batch`]), runs it all in ONE transaction,
//! commits, hands the committed journal payloads to the `on_commit` callback (in order), and
//! only then answers every sender. Under load batches grow on their own; at low load a write
//! waits for a single commit.
//!
//! A message that fails (a duplicate `(execution_id, seq)`, a change to a finished execution)
//! does not poison the others: the transaction is rolled back and the batch is run again
//! without it; only its sender gets the error. A failing `BEGIN` or `COMMIT` fails the whole
//! batch.
//!
//! Reads never go through the writer: they use the pool (WAL readers do not block it).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;

use chrono::{DateTime, Utc};
use diesel::backend::Backend;
use diesel::connection::{AnsiTransactionManager, TransactionManager};
use diesel::prelude::*;
use diesel::query_builder::{AstPass, QueryFragment, QueryId};
use diesel::serialize::ToSql;
use diesel::sql_types::{BigInt, HasSqlType, Nullable, Text, Timestamp};
use flowrunner_domain::{ExecutionId, ExecutionStatus, LogLevel};
use tokio::sync::{mpsc, oneshot};

use crate::config::Target;
use crate::conn::{self, DbConn, on_backend};
use crate::error::{Error, Result};
use crate::executions::{ExecutionRow, TERMINAL, UNFINISHED, create_in, to_json};
use crate::models::{ExecutionRecord, NewExecution};
use crate::schema::{execution_events, executions};
use crate::store::Store;
use crate::time::{self, DbTime};

/// How long the writer waits for another message when it holds only entries nobody awaits
/// (see [`JournalWriter::append_unawaited`]); tokio's timer rounds it up to its 1 ms tick.
pub const UNAWAITED_WINDOW: std::time::Duration = std::time::Duration::from_millis(1);

/// Default most writes committed in one transaction.
pub const DEFAULT_MAX_BATCH: usize = 512;
/// Default capacity of the writer's channel (senders wait when it is full).
pub const DEFAULT_WRITER_QUEUE: usize = 65_536;

/// How the writer batches.
#[derive(Debug, Clone, Copy)]
pub struct WriterConfig {
    /// Most messages committed in one transaction (at least 1).
    pub max_batch: usize,
    /// Capacity of the channel; senders wait for room when it is full (at least 1).
    pub queue: usize,
    /// SQLite: WAL length in frames (one page each) from which the checkpointer makes the WAL
    /// start over (see [`DEFAULT_WAL_RESTART_FRAMES`]).
    pub wal_restart_frames: i64,
}

/// Default [`WriterConfig::wal_restart_frames`]: 4,096 frames, 16 MiB of 4 KiB pages.
pub const DEFAULT_WAL_RESTART_FRAMES: i64 = 4096;

impl Default for WriterConfig {
    fn default() -> Self {
        Self {
            max_batch: DEFAULT_MAX_BATCH,
            queue: DEFAULT_WRITER_QUEUE,
            wal_restart_frames: DEFAULT_WAL_RESTART_FRAMES,
        }
    }
}

/// A journal row to insert.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// The execution (must exist).
    pub execution_id: ExecutionId,
    /// Position in its journal; `(execution_id, seq)` is unique.
    pub seq: i64,
    /// Event type (`started`, `node_completed`, `log`, …).
    pub kind: String,
    /// The node concerned.
    pub node_id: Option<String>,
    /// Its type.
    pub node_type: Option<String>,
    /// Severity, for entries that are log lines.
    pub level: Option<LogLevel>,
    /// Log message, for entries that are log lines.
    pub message: Option<String>,
    /// The event as JSON text.
    pub data: String,
    /// When it happened.
    pub created_at: DateTime<Utc>,
}

/// What a journal entry changes on its execution row, in the same transaction.
#[derive(Debug, Clone, PartialEq)]
pub enum RowChange {
    /// Nothing besides the snapshot, if one is given.
    None,
    /// The execution starts running under `owner` (status `running`, `started_at`, lease).
    Start {
        /// The lease owner.
        owner: String,
        /// Until when the lease runs.
        lease_until: DateTime<Utc>,
        /// When it started.
        started_at: DateTime<Utc>,
    },
    /// The execution ends: terminal status, result or error, `completed_at`; the lease is
    /// released.
    Finish {
        /// `completed`, `failed` or `cancelled`.
        status: ExecutionStatus,
        /// The result, when completed.
        result: Option<serde_json::Value>,
        /// The error, when failed.
        error: Option<String>,
        /// The node the error belongs to.
        error_node: Option<String>,
        /// When it ended.
        completed_at: DateTime<Utc>,
    },
}

/// One journal write: an event row, optionally the new resumable snapshot and a status
/// change of its execution, and a payload handed to `on_commit` once it is durable.
///
/// The whole entry is rejected with [`Error::Conflict`] when the execution has already
/// finished (so an execution never gets two terminal events) or the `seq` is taken.
#[derive(Debug)]
pub struct JournalEntry<P> {
    /// The row to insert.
    pub event: NewEvent,
    /// The execution's new snapshot as JSON text (opaque to the store).
    pub snapshot: Option<String>,
    /// The status change committed with the event.
    pub change: RowChange,
    /// Given back to `on_commit` after the commit.
    pub payload: P,
}

/// Which unfinished executions [`JournalWriter::claim_unfinished`] takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimScope {
    /// Every one: this process owns the database (SQLite), at start.
    Everything,
    /// Those without owner, already the claimer's, or whose lease expired: several processes
    /// share the database, at start.
    OwnAndAbandoned,
    /// Only those without owner or whose other owner's lease expired (that process died or
    /// stopped without releasing): while running, never the claimer's own, which it is
    /// running or queueing already.
    Abandoned,
}

/// An unfinished execution claimed by [`JournalWriter::claim_unfinished`].
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimedExecution {
    /// The execution (owner and lease already updated).
    pub record: ExecutionRecord,
    /// Its highest journal `seq`, if it has entries.
    pub last_seq: Option<i64>,
}

/// Counters of a writer, for tests and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Transactions committed.
    pub commits: u64,
    /// Messages committed.
    pub messages: u64,
    /// Messages rejected (their sender got the error; the rest of the batch was committed).
    pub rejected: u64,
}

#[derive(Default)]
struct Counters {
    commits: AtomicU64,
    messages: AtomicU64,
    rejected: AtomicU64,
}

/// The answer to a write, available once its batch has committed (or failed).
#[derive(Debug)]
pub struct Ticket<T> {
    rx: oneshot::Receiver<Result<T>>,
}

impl<T> Ticket<T> {
    /// Waits until the write is committed.
    pub async fn wait(self) -> Result<T> {
        self.rx.await.unwrap_or(Err(Error::WriterClosed))
    }

    /// The outcome if the batch has already been processed, without waiting.
    pub fn try_take(&mut self) -> Option<Result<T>> {
        match self.rx.try_recv() {
            Ok(result) => Some(result),
            Err(oneshot::error::TryRecvError::Empty) => None,
            Err(oneshot::error::TryRecvError::Closed) => Some(Err(Error::WriterClosed)),
        }
    }
}

type Reply<T> = oneshot::Sender<Result<T>>;

enum Op<P> {
    Create {
        new: Box<NewExecution>,
        reply: Reply<(ExecutionRecord, bool)>,
    },
    Append {
        entry: Box<JournalEntry<P>>,
        /// Nobody waits for this commit (see [`JournalWriter::append_unawaited`]).
        unawaited: bool,
        reply: Reply<()>,
    },
    Renew {
        owner: String,
        lease_until: DateTime<Utc>,
        reply: Reply<u64>,
    },
    Release {
        owner: String,
        reply: Reply<u64>,
    },
    Claim {
        owner: String,
        lease_until: DateTime<Utc>,
        now: DateTime<Utc>,
        which: ClaimScope,
        reply: Reply<Vec<ClaimedExecution>>,
    },
    Flush {
        reply: Reply<()>,
    },
    Close {
        reply: Reply<()>,
    },
}

/// What a message produced, kept until the commit.
enum Output {
    Created(Box<(ExecutionRecord, bool)>),
    Unit,
    Count(u64),
    Claimed(Vec<ClaimedExecution>),
}

/// Handle to the writer thread. Cheap to clone; the thread stops after [`close`](Self::close)
/// or when every handle is dropped.
///
/// The thread runs the writer as a task of its own single-threaded tokio runtime, and other
/// tasks may share it ([`JournalWriter::runtime`]): a task there that queues a write and awaits
/// its commit hands nothing to another thread — the writer takes the write as soon as the task
/// yields, commits it with whatever else is waiting, and wakes the task on the same thread.
/// Such tasks are dropped when the writer stops.
pub struct JournalWriter<P> {
    tx: mpsc::Sender<Op<P>>,
    counters: Arc<Counters>,
    thread: Arc<std::sync::Mutex<Option<JoinHandle<()>>>>,
    runtime: tokio::runtime::Handle,
}

impl<P> Clone for JournalWriter<P> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
            counters: Arc::clone(&self.counters),
            thread: Arc::clone(&self.thread),
            runtime: self.runtime.clone(),
        }
    }
}

impl<P> std::fmt::Debug for JournalWriter<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JournalWriter")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Starts the group-commit writer on its own thread and connection. `on_commit` runs on
    /// that thread after each commit with the payloads of the committed journal entries, in
    /// commit order (keep it short: it delays the replies of the batch).
    pub fn start_writer<P, F>(&self, config: WriterConfig, on_commit: F) -> Result<JournalWriter<P>>
    where
        P: Send + 'static,
        F: FnMut(Vec<P>) + Send + 'static,
    {
        let target = self.blocking().target().clone();
        let mut conn = conn::connect(&target)?;
        let checkpointer = match &target {
            Target::Sqlite(_) => {
                // Checkpoint the WAL on another thread and connection, so the writer never
                // stalls on a checkpoint's fsync.
                use diesel::connection::SimpleConnection;
                conn.batch_execute("PRAGMA wal_autocheckpoint = 0")?;
                Some(spawn_checkpointer(
                    conn::connect(&target)?,
                    config.wal_restart_frames.max(1),
                )?)
            }
            Target::Postgres(_) => None,
        };
        let (tx, rx) = mpsc::channel(config.queue.max(1));
        let counters = Arc::new(Counters::default());
        let thread_counters = Arc::clone(&counters);
        let max_batch = config.max_batch.max(1);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name("flowrunner-writer")
            .build()
            .map_err(|e| Error::Database(Box::new(e)))?;
        let handle = runtime.handle().clone();
        let thread = std::thread::Builder::new()
            .name("flowrunner-writer".into())
            .spawn(move || {
                runtime.block_on(
                    Worker {
                        conn,
                        group_inserts: matches!(target, Target::Postgres(_)),
                        target,
                        rx,
                        counters: thread_counters,
                        max_batch,
                        on_commit,
                    }
                    .run(),
                );
                // Tasks still on this thread's runtime are dropped with it; blocking work they
                // started is not waited for.
                runtime.shutdown_background();
                if let Some(stop) = checkpointer {
                    stop.store(true, Ordering::Release);
                }
            })
            .map_err(|e| Error::Database(Box::new(e)))?;
        Ok(JournalWriter {
            tx,
            counters,
            thread: Arc::new(std::sync::Mutex::new(Some(thread))),
            runtime: handle,
        })
    }
}

/// How often the checkpointer moves the SQLite WAL into the database file.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(250);
/// What `PRAGMA wal_checkpoint` reports.
#[derive(diesel::QueryableByName)]
struct Checkpoint {
    /// 1 when the checkpoint could not take the locks it needed.
    #[diesel(sql_type = diesel::sql_types::Integer)]
    busy: i32,
    /// Frames in the WAL.
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    log: i64,
    /// Frames copied into the database file.
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    checkpointed: i64,
}

fn checkpoint(conn: &mut DbConn, mode: &str) -> Result<Checkpoint> {
    Ok(diesel::sql_query(format!("PRAGMA wal_checkpoint({mode})")).get_result(conn)?)
}

/// Starts the SQLite checkpointer thread; it stops once the returned flag is set.
///
/// Every [`CHECKPOINT_EVERY`] it copies what it can of the WAL into the database file without
/// blocking anyone (`PASSIVE`). That alone never lets the WAL start over while the writer keeps
/// committing (the WAL is reset only when a write begins with every frame copied, and under
/// load new frames always arrive first), so the file would grow without bound. Once the WAL
/// holds `restart_frames`, a `RESTART` checkpoint follows: it holds the write lock while it
/// copies the few frames the `PASSIVE` one left and syncs (the writer waits that long), then
/// the next commit writes the WAL from its start again (pages already cached, no file growth;
/// `journal_size_limit` trims a file that grew past [`conn::WAL_SIZE_LIMIT`]).
fn spawn_checkpointer(
    mut conn: DbConn,
    restart_frames: i64,
) -> Result<Arc<std::sync::atomic::AtomicBool>> {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    std::thread::Builder::new()
        .name("flowrunner-checkpoint".into())
        .spawn(move || {
            while !flag.load(Ordering::Acquire) {
                std::thread::sleep(CHECKPOINT_EVERY);
                let restart = match checkpoint(&mut conn, "PASSIVE") {
                    Ok(done) => done.log >= restart_frames,
                    Err(err) => {
                        log::warn!("WAL checkpoint failed: {err}");
                        false
                    }
                };
                if restart {
                    match checkpoint(&mut conn, "RESTART") {
                        Ok(done) if done.busy != 0 => log::debug!(
                            "WAL restart postponed: {} of {} frames copied",
                            done.checkpointed,
                            done.log
                        ),
                        Ok(_) => {}
                        Err(err) => log::warn!("WAL restart checkpoint failed: {err}"),
                    }
                }
            }
        })
        .map_err(|e| Error::Database(Box::new(e)))?;
    Ok(stop)
}

impl<P: Send + 'static> JournalWriter<P> {
    async fn send<T>(&self, make: impl FnOnce(Reply<T>) -> Op<P>) -> Result<Ticket<T>> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(make(reply))
            .await
            .map_err(|_| Error::WriterClosed)?;
        Ok(Ticket { rx })
    }

    /// Creates a queued execution, or finds the one started with the same idempotency key by
    /// the same account for the same flow within [`IDEMPOTENCY_WINDOW`](crate::IDEMPOTENCY_WINDOW)
    /// (`false` then); waits for the commit.
    pub async fn create_execution(&self, new: NewExecution) -> Result<(ExecutionRecord, bool)> {
        self.send(|reply| Op::Create {
            new: Box::new(new),
            reply,
        })
        .await?
        .wait()
        .await
    }

    /// Queues a journal entry; returns once it is queued (waiting only for channel room). Await
    /// the ticket for durability; entries of one sender are committed in the order queued.
    pub async fn append(&self, entry: JournalEntry<P>) -> Result<Ticket<()>> {
        self.send(|reply| Op::Append {
            entry: Box::new(entry),
            unawaited: false,
            reply,
        })
        .await
    }

    /// Like [`append`](Self::append), for an entry whose commit nobody awaits right away
    /// (e.g. `node_started`, log lines): when the writer finds only such entries waiting, it
    /// gives the next message up to [`UNAWAITED_WINDOW`] to join them, so that one commit
    /// covers both (at low load a node then costs one commit instead of two). The ticket
    /// still tells when, or whether, it was committed.
    pub async fn append_unawaited(&self, entry: JournalEntry<P>) -> Result<Ticket<()>> {
        self.send(|reply| Op::Append {
            entry: Box::new(entry),
            unawaited: true,
            reply,
        })
        .await
    }

    /// Renews the lease of every unfinished execution owned by `owner`; returns how many.
    pub async fn renew_leases(&self, owner: &str, lease_until: DateTime<Utc>) -> Result<u64> {
        let owner = owner.to_string();
        self.send(|reply| Op::Renew {
            owner,
            lease_until,
            reply,
        })
        .await?
        .wait()
        .await
    }

    /// Releases the lease of every unfinished execution owned by `owner`; returns how many.
    pub async fn release_leases(&self, owner: &str) -> Result<u64> {
        let owner = owner.to_string();
        self.send(|reply| Op::Release { owner, reply })
            .await?
            .wait()
            .await
    }

    /// Claims unfinished (queued or running) executions for `owner`, oldest first, with their
    /// last journal `seq`; `which` says which ones (on PostgreSQL the candidates are locked
    /// `FOR UPDATE SKIP LOCKED`, so several processes can claim at once).
    pub async fn claim_unfinished(
        &self,
        owner: &str,
        lease_until: DateTime<Utc>,
        now: DateTime<Utc>,
        which: ClaimScope,
    ) -> Result<Vec<ClaimedExecution>> {
        let owner = owner.to_string();
        self.send(|reply| Op::Claim {
            owner,
            lease_until,
            now,
            which,
            reply,
        })
        .await?
        .wait()
        .await
    }

    /// Waits until everything queued before this call is committed.
    pub async fn flush(&self) -> Result<()> {
        self.send(|reply| Op::Flush { reply }).await?.wait().await
    }

    /// Commits everything queued, then stops the thread; later writes fail with
    /// [`Error::WriterClosed`].
    pub async fn close(&self) -> Result<()> {
        let closed = match self.send(|reply| Op::Close { reply }).await {
            Ok(ticket) => ticket.wait().await,
            Err(Error::WriterClosed) => Ok(()),
            Err(other) => Err(other),
        };
        let handle = self
            .thread
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(handle) = handle {
            // The thread exits right after answering Close.
            tokio::task::spawn_blocking(move || handle.join())
                .await?
                .map_err(|_| Error::Database("the writer thread panicked".into()))?;
        }
        closed
    }
}

impl<P> JournalWriter<P> {
    /// The writer thread's runtime: tasks spawned on it share the thread with the writer, and
    /// their writes are committed without a hand-off to another thread (keep them short: while
    /// one runs, nothing is committed). They are dropped when the writer stops.
    pub fn runtime(&self) -> &tokio::runtime::Handle {
        &self.runtime
    }

    /// Asks the writer to commit what is queued and stop, without waiting (for a `Drop`); `false`
    /// when the request could not be queued (channel full or writer already stopped).
    pub fn close_soon(&self) -> bool {
        let (reply, _ignored) = oneshot::channel();
        self.tx.try_send(Op::Close { reply }).is_ok()
    }

    /// Counters since the start.
    pub fn stats(&self) -> WriterStats {
        WriterStats {
            commits: self.counters.commits.load(Ordering::Relaxed),
            messages: self.counters.messages.load(Ordering::Relaxed),
            rejected: self.counters.rejected.load(Ordering::Relaxed),
        }
    }
}

struct Worker<P, F> {
    conn: DbConn,
    /// Insert a batch's journal rows together (see `Worker::attempt`): on
    /// PostgreSQL, where every statement is a round trip to the server (twice the executions
    /// per second in docs/benchmarks.md). Not on SQLite, where a statement costs microseconds
    /// and the multi-row statements measured slower.
    group_inserts: bool,
    target: Target,
    rx: mpsc::Receiver<Op<P>>,
    counters: Arc<Counters>,
    max_batch: usize,
    on_commit: F,
}

impl<P, F: FnMut(Vec<P>)> Worker<P, F> {
    async fn run(mut self) {
        let mut batch: Vec<Op<P>> = Vec::with_capacity(self.max_batch);
        loop {
            let Some(first) = self.rx.recv().await else {
                return;
            };
            batch.push(first);
            self.drain(&mut batch);
            if batch.len() < self.max_batch {
                // Tasks sharing this thread that are ready to run queue their writes first, so
                // that they join this commit.
                tokio::task::yield_now().await;
                self.drain(&mut batch);
            }
            let unawaited_only = batch.iter().all(|op| {
                matches!(
                    op,
                    Op::Append {
                        unawaited: true,
                        ..
                    }
                )
            });
            if unawaited_only && batch.len() < self.max_batch {
                // Usually the awaited entry that follows (the node's completion) is about to
                // arrive: commit both at once. A closed channel ends the loop at the next
                // `recv`.
                let next = tokio::time::timeout(UNAWAITED_WINDOW, self.rx.recv()).await;
                if let Ok(Some(op)) = next {
                    batch.push(op);
                    self.drain(&mut batch);
                }
            }
            let close = batch.iter().any(|op| matches!(op, Op::Close { .. }));
            self.process(&mut batch);
            if close {
                self.rx.close();
                // Answer whatever raced in before the channel closed.
                while let Ok(op) = self.rx.try_recv() {
                    batch.push(op);
                }
                self.process(&mut batch);
                return;
            }
        }
    }

    /// Adds whatever is waiting to `batch`, up to `max_batch`.
    fn drain(&mut self, batch: &mut Vec<Op<P>>) {
        while batch.len() < self.max_batch {
            match self.rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
    }

    /// Runs one batch in one transaction (retrying without failing messages), commits, calls
    /// `on_commit`, answers. Leaves `batch` empty.
    fn process(&mut self, batch: &mut Vec<Op<P>>) {
        if batch.is_empty() {
            return;
        }
        let mut failed: Vec<Option<Error>> = (0..batch.len()).map(|_| None).collect();
        let mut grouped = self.group_inserts;
        let outcome = loop {
            match self.attempt(batch, &failed, grouped) {
                Attempt::Committed(outputs) => break Ok(outputs),
                Attempt::GroupFailed(err) => {
                    log::debug!("journal writer: grouped insert failed ({err}); one by one");
                    grouped = false;
                }
                Attempt::MessageFailed(index, err) => {
                    log::debug!("journal writer: message rejected: {err}");
                    if let Some(slot) = failed.get_mut(index) {
                        *slot = Some(err);
                    }
                }
                Attempt::BatchFailed(err) => break Err(err),
            }
        };
        let ops = std::mem::take(batch);
        match outcome {
            Ok(mut outputs) => {
                let rejected = failed.iter().filter(|f| f.is_some()).count() as u64;
                self.counters.commits.fetch_add(1, Ordering::Relaxed);
                self.counters
                    .messages
                    .fetch_add(ops.len() as u64 - rejected, Ordering::Relaxed);
                self.counters
                    .rejected
                    .fetch_add(rejected, Ordering::Relaxed);
                let mut replies = Vec::with_capacity(ops.len());
                let mut payloads = Vec::new();
                for ((op, failure), output) in ops.into_iter().zip(failed).zip(outputs.drain(..)) {
                    match failure {
                        Some(err) => {
                            replies.push(Answer::from_op(op, Err(err), &mut payloads, false))
                        }
                        None => replies.push(Answer::from_op(op, Ok(output), &mut payloads, true)),
                    }
                }
                if !payloads.is_empty() {
                    (self.on_commit)(payloads);
                }
                for answer in replies {
                    answer.send();
                }
            }
            Err(err) => {
                log::error!("journal writer: batch of {} failed: {err}", ops.len());
                let message = err.to_string();
                self.counters
                    .rejected
                    .fetch_add(ops.len() as u64, Ordering::Relaxed);
                let mut ignored = Vec::new();
                for op in ops {
                    let err = Error::Database(message.clone().into());
                    Answer::from_op(op, Err(err), &mut ignored, false).send();
                }
                self.reconnect_if_broken();
            }
        }
    }

    fn reconnect_if_broken(&mut self) {
        let broken = <DbConn as Connection>::TransactionManager::is_broken_transaction_manager(
            &mut self.conn,
        );
        if broken || self.conn.batch_execute_ping().is_err() {
            match conn::connect(&self.target) {
                Ok(fresh) => self.conn = fresh,
                Err(err) => log::error!("journal writer: reconnect failed: {err}"),
            }
        }
    }

    /// Runs the batch in one transaction. With `grouped`, each journal entry's execution-row
    /// change (snapshot, status) is made in order as usual, but the journal rows themselves are
    /// inserted together by multi-row statements after the batch's other writes (see
    /// [`insert_events`]); a failure among them is reported as [`Attempt::GroupFailed`], and
    /// the batch runs again one entry at a time to find the culprit.
    fn attempt(&mut self, batch: &[Op<P>], failed: &[Option<Error>], grouped: bool) -> Attempt {
        if let Err(err) = begin(&mut self.conn) {
            return Attempt::BatchFailed(err);
        }
        let mut outputs = Vec::with_capacity(batch.len());
        let mut rows: Vec<EventRow<'_>> = Vec::new();
        for (index, op) in batch.iter().enumerate() {
            if failed.get(index).is_some_and(Option::is_some) {
                outputs.push(Output::Unit);
                continue;
            }
            if grouped {
                if let Op::Append { entry, .. } = op {
                    if let Err(err) = change_row(&mut self.conn, entry) {
                        rollback(&mut self.conn);
                        return Attempt::MessageFailed(index, err);
                    }
                    rows.push(EventRow::of(&entry.event));
                    outputs.push(Output::Unit);
                    continue;
                }
                // Claims read the journal (its highest `seq`): what came before goes first.
                if matches!(op, Op::Claim { .. })
                    && let Err(err) = insert_events(&mut self.conn, &std::mem::take(&mut rows))
                {
                    rollback(&mut self.conn);
                    return Attempt::GroupFailed(err);
                }
            }
            match apply(&mut self.conn, op) {
                Ok(output) => outputs.push(output),
                Err(err) => {
                    rollback(&mut self.conn);
                    return Attempt::MessageFailed(index, err);
                }
            }
        }
        if let Err(err) = insert_events(&mut self.conn, &rows) {
            rollback(&mut self.conn);
            return Attempt::GroupFailed(err);
        }
        match <DbConn as Connection>::TransactionManager::commit_transaction(&mut self.conn) {
            Ok(()) => Attempt::Committed(outputs),
            Err(err) => {
                rollback(&mut self.conn);
                Attempt::BatchFailed(err.into())
            }
        }
    }
}

enum Attempt {
    Committed(Vec<Output>),
    MessageFailed(usize, Error),
    /// One of the rows inserted together failed (which one is not known).
    GroupFailed(Error),
    BatchFailed(Error),
}

/// A reply ready to be sent once `on_commit` has run.
enum Answer {
    Created(
        Reply<(ExecutionRecord, bool)>,
        Box<Result<(ExecutionRecord, bool)>>,
    ),
    Unit(Reply<()>, Result<()>),
    Count(Reply<u64>, Result<u64>),
    Claimed(Reply<Vec<ClaimedExecution>>, Result<Vec<ClaimedExecution>>),
}

impl Answer {
    fn from_op<P>(
        op: Op<P>,
        output: Result<Output>,
        payloads: &mut Vec<P>,
        committed: bool,
    ) -> Answer {
        let mismatch = || Error::Database("journal writer: unexpected output".into());
        match op {
            Op::Create { reply, .. } => Answer::Created(
                reply,
                Box::new(output.and_then(|o| match o {
                    Output::Created(v) => Ok(*v),
                    _ => Err(mismatch()),
                })),
            ),
            Op::Append { entry, reply, .. } => {
                if committed {
                    payloads.push(entry.payload);
                }
                Answer::Unit(reply, output.map(|_| ()))
            }
            Op::Flush { reply } | Op::Close { reply } => Answer::Unit(reply, output.map(|_| ())),
            Op::Renew { reply, .. } | Op::Release { reply, .. } => Answer::Count(
                reply,
                output.and_then(|o| match o {
                    Output::Count(n) => Ok(n),
                    _ => Err(mismatch()),
                }),
            ),
            Op::Claim { reply, .. } => Answer::Claimed(
                reply,
                output.and_then(|o| match o {
                    Output::Claimed(v) => Ok(v),
                    _ => Err(mismatch()),
                }),
            ),
        }
    }

    fn send(self) {
        // A sender that stopped waiting is not an error.
        let _gone = match self {
            Answer::Created(reply, value) => reply.send(*value).is_ok(),
            Answer::Unit(reply, value) => reply.send(value).is_ok(),
            Answer::Count(reply, value) => reply.send(value).is_ok(),
            Answer::Claimed(reply, value) => reply.send(value).is_ok(),
        };
    }
}

fn begin(conn: &mut DbConn) -> Result<()> {
    match conn {
        DbConn::Sqlite(c) => AnsiTransactionManager::begin_transaction_sql(c, "BEGIN IMMEDIATE")?,
        DbConn::Postgres(_) => <DbConn as Connection>::TransactionManager::begin_transaction(conn)?,
    }
    Ok(())
}

fn rollback(conn: &mut DbConn) {
    if let Err(err) = <DbConn as Connection>::TransactionManager::rollback_transaction(conn) {
        log::warn!("journal writer: rollback failed: {err}");
    }
}

trait Ping {
    fn batch_execute_ping(&mut self) -> Result<()>;
}

impl Ping for DbConn {
    fn batch_execute_ping(&mut self) -> Result<()> {
        use diesel::connection::SimpleConnection;
        self.batch_execute("SELECT 1")?;
        Ok(())
    }
}

fn apply<P>(conn: &mut DbConn, op: &Op<P>) -> Result<Output> {
    match op {
        Op::Create { new, .. } => Ok(Output::Created(Box::new(create_in(
            conn,
            (**new).clone(),
            time::now(),
        )?))),
        Op::Append { entry, .. } => {
            append(conn, entry)?;
            Ok(Output::Unit)
        }
        Op::Renew {
            owner, lease_until, ..
        } => {
            let n = diesel::update(
                executions::table
                    .filter(executions::status.eq_any(UNFINISHED))
                    .filter(executions::owner.eq(owner)),
            )
            .set(executions::lease_until.eq(time::to_db(*lease_until)))
            .execute(conn)?;
            Ok(Output::Count(n as u64))
        }
        Op::Release { owner, .. } => {
            let n = diesel::update(
                executions::table
                    .filter(executions::status.eq_any(UNFINISHED))
                    .filter(executions::owner.eq(owner)),
            )
            .set((
                executions::owner.eq(None::<String>),
                executions::lease_until.eq(None::<chrono::NaiveDateTime>),
            ))
            .execute(conn)?;
            Ok(Output::Count(n as u64))
        }
        Op::Claim {
            owner,
            lease_until,
            now,
            which,
            ..
        } => Ok(Output::Claimed(claim(
            conn,
            owner,
            *lease_until,
            *now,
            *which,
        )?)),
        Op::Flush { .. } | Op::Close { .. } => Ok(Output::Unit),
    }
}

fn append<P>(conn: &mut DbConn, entry: &JournalEntry<P>) -> Result<()> {
    change_row(conn, entry)?;
    EventRows::<1>(&[EventRow::of(&entry.event)]).run(conn)
}

/// The execution-row part of an entry (its snapshot, its status change), if any; rejected with
/// [`Error::Conflict`] when the execution has finished (or does not exist).
fn change_row<P>(conn: &mut DbConn, entry: &JournalEntry<P>) -> Result<()> {
    let id = entry.event.execution_id.as_str();
    let snapshot = entry.snapshot.as_deref();
    let result = match &entry.change {
        RowChange::Finish { status, .. } if !status.is_terminal() => {
            return Err(Error::Conflict(format!(
                "`{status}` is not a terminal status"
            )));
        }
        RowChange::Finish {
            result: Some(result),
            ..
        } => Some(to_json(result)?),
        _ => None,
    };
    let set = match &entry.change {
        RowChange::None => snapshot.map(|snapshot| RowSet::Snapshot { snapshot }),
        RowChange::Start {
            owner,
            lease_until,
            started_at,
        } => Some(RowSet::Start {
            owner,
            lease_until: DbTime::of(*lease_until),
            started_at: DbTime::of(*started_at),
            snapshot,
        }),
        RowChange::Finish {
            status,
            error,
            error_node,
            completed_at,
            ..
        } => Some(RowSet::Finish {
            status: status.as_str(),
            result: result.as_deref(),
            error: error.as_deref(),
            error_node: error_node.as_deref(),
            completed_at: DbTime::of(*completed_at),
        }),
    };
    let changed = match set {
        Some(set @ RowSet::Snapshot { .. }) => Some(update_row::<SNAPSHOT>(conn, id, set)?),
        Some(set @ RowSet::Start { .. }) => Some(update_row::<START>(conn, id, set)?),
        Some(set @ RowSet::Finish { .. }) => Some(update_row::<FINISH>(conn, id, set)?),
        None => None,
    };
    if changed == Some(0) {
        return Err(Error::Conflict(format!(
            "execution {id} does not exist or has already finished"
        )));
    }
    Ok(())
}

/// Inserts journal rows, as few statements as possible (up to 64 rows each). Each statement
/// size is its own statement type, found in diesel's cache by its type.
fn insert_events(conn: &mut DbConn, rows: &[EventRow<'_>]) -> Result<()> {
    let mut rest = rows;
    // The sizes there are statements for: at most four shapes in the cache.
    loop {
        rest = if let Some((now, later)) = rest.split_first_chunk::<64>() {
            EventRows(now).run(conn)?;
            later
        } else if let Some((now, later)) = rest.split_first_chunk::<16>() {
            EventRows(now).run(conn)?;
            later
        } else if let Some((now, later)) = rest.split_first_chunk::<4>() {
            EventRows(now).run(conn)?;
            later
        } else if let Some((now, later)) = rest.split_first_chunk::<1>() {
            EventRows(now).run(conn)?;
            later
        } else {
            return Ok(());
        };
    }
}

/// One journal row's values, borrowed from its [`NewEvent`].
struct EventRow<'a> {
    event: &'a NewEvent,
    node_id: Option<&'a str>,
    node_type: Option<&'a str>,
    level: Option<&'static str>,
    message: Option<&'a str>,
    created_at: DbTime,
}

impl<'a> EventRow<'a> {
    fn of(event: &'a NewEvent) -> Self {
        Self {
            event,
            node_id: event.node_id.as_deref(),
            node_type: event.node_type.as_deref(),
            level: event.level.map(LogLevel::as_str),
            message: event.message.as_deref(),
            created_at: DbTime::of(event.created_at),
        }
    }
}

/// `INSERT` of exactly `N` journal rows, as a statement diesel prepares once and finds by its
/// type.
///
/// diesel's own insert of a column tuple walks the tuple twice per row (once only to decide
/// that the statement may be cached, once to bind) and, through the multi-backend connection,
/// has no static query id at all, so diesel built the SQL text of every insert again just to
/// look the statement up (a third of the writer thread under load, docs/benchmarks.md). This
/// one only binds the values; it runs on the concrete connection ([`on_backend!`]).
struct EventRows<'r, 'a, const N: usize>(&'r [EventRow<'a>; N]);

/// The cache identity of [`EventRows`]`<N>`.
struct EventRowsId<const N: usize>;

impl<const N: usize> EventRows<'_, '_, N> {
    fn run(self, conn: &mut DbConn) -> Result<()> {
        on_backend!(conn, |c| self.execute(c))?;
        Ok(())
    }
}

impl<DB, const N: usize> QueryFragment<DB> for EventRows<'_, '_, N>
where
    DB: Backend + HasSqlType<Text> + HasSqlType<BigInt> + HasSqlType<Timestamp>,
    str: ToSql<Text, DB>,
    i64: ToSql<BigInt, DB>,
    DbTime: ToSql<Timestamp, DB>,
    for<'x> Option<&'x str>: ToSql<Nullable<Text>, DB>,
{
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        out.push_sql(
            "INSERT INTO execution_events \
             (execution_id, seq, kind, node_id, node_type, level, message, data, created_at) \
             VALUES ",
        );
        for (i, row) in self.0.iter().enumerate() {
            let e = row.event;
            out.push_sql(if i == 0 { "(" } else { ", (" });
            out.push_bind_param::<Text, str>(e.execution_id.as_str())?;
            out.push_sql(", ");
            out.push_bind_param::<BigInt, i64>(&e.seq)?;
            out.push_sql(", ");
            out.push_bind_param::<Text, str>(&e.kind)?;
            out.push_sql(", ");
            out.push_bind_param::<Nullable<Text>, _>(&row.node_id)?;
            out.push_sql(", ");
            out.push_bind_param::<Nullable<Text>, _>(&row.node_type)?;
            out.push_sql(", ");
            out.push_bind_param::<Nullable<Text>, _>(&row.level)?;
            out.push_sql(", ");
            out.push_bind_param::<Nullable<Text>, _>(&row.message)?;
            out.push_sql(", ");
            out.push_bind_param::<Text, str>(&e.data)?;
            out.push_sql(", ");
            out.push_bind_param::<Timestamp, _>(&row.created_at)?;
            out.push_sql(")");
        }
        Ok(())
    }

    fn is_safe_to_cache_prepared(&self, _backend: &DB) -> QueryResult<bool> {
        // Its text depends on `N` only.
        Ok(true)
    }
}

impl<const N: usize> QueryId for EventRows<'_, '_, N> {
    type QueryId = EventRowsId<N>;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl<Conn, const N: usize> RunQueryDsl<Conn> for EventRows<'_, '_, N> {}

/// [`RowUpdate`] kinds: one per [`RowSet`] variant.
const SNAPSHOT: u8 = 0;
const START: u8 = 1;
const FINISH: u8 = 2;

/// Runs the row update; `KIND` must be the one of `set`'s variant (its statement's identity in
/// diesel's cache).
fn update_row<const KIND: u8>(conn: &mut DbConn, id: &str, set: RowSet<'_>) -> Result<usize> {
    let update = RowUpdate::<KIND> { id, set };
    Ok(on_backend!(conn, |c| update.execute(c))?)
}

/// The execution-row part of a journal entry, as an `UPDATE` that stays in diesel's
/// prepared-statement cache.
///
/// diesel never caches its own `UPDATE` statements (a changeset may skip `None` fields, so two
/// calls may produce different SQL), so SQLite compiled the row update of every node again
/// (most of the SQL compilation of the writer thread in the profile of docs/benchmarks.md).
/// This statement's text depends only on the kind of change, `KIND`, so each kind is its own
/// statement type, cached by type (a cache keyed by SQL text would build the text on every
/// call just to look it up). The row is only changed while the execution is unfinished (0 rows
/// otherwise).
struct RowUpdate<'a, const KIND: u8> {
    id: &'a str,
    set: RowSet<'a>,
}

/// The cache identity of [`RowUpdate`]`<KIND>`.
struct RowUpdateId<const KIND: u8>;

/// What [`RowUpdate`] sets.
enum RowSet<'a> {
    /// `snapshot`.
    Snapshot { snapshot: &'a str },
    /// `running` under `owner`, with the snapshot (possibly none).
    Start {
        owner: &'a str,
        lease_until: DbTime,
        started_at: DbTime,
        snapshot: Option<&'a str>,
    },
    /// A terminal status with its result or error; the lease is released.
    Finish {
        status: &'a str,
        result: Option<&'a str>,
        error: Option<&'a str>,
        error_node: Option<&'a str>,
        completed_at: DbTime,
    },
}

impl<DB, const KIND: u8> QueryFragment<DB> for RowUpdate<'_, KIND>
where
    DB: Backend + HasSqlType<Text> + HasSqlType<Timestamp>,
    str: ToSql<Text, DB>,
    DbTime: ToSql<Timestamp, DB>,
    for<'x> Option<&'x str>: ToSql<Nullable<Text>, DB>,
{
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        out.push_sql("UPDATE executions SET ");
        match &self.set {
            RowSet::Snapshot { snapshot } => {
                out.push_sql("snapshot = ");
                out.push_bind_param::<Text, str>(snapshot)?;
            }
            RowSet::Start {
                owner,
                lease_until,
                started_at,
                snapshot,
            } => {
                out.push_sql("status = ");
                out.push_bind_param::<Text, str>(ExecutionStatus::Running.as_str())?;
                out.push_sql(", owner = ");
                out.push_bind_param::<Text, str>(owner)?;
                out.push_sql(", lease_until = ");
                out.push_bind_param::<Timestamp, _>(lease_until)?;
                out.push_sql(", started_at = ");
                out.push_bind_param::<Timestamp, _>(started_at)?;
                out.push_sql(", snapshot = ");
                out.push_bind_param::<Nullable<Text>, _>(snapshot)?;
            }
            RowSet::Finish {
                status,
                result,
                error,
                error_node,
                completed_at,
            } => {
                out.push_sql("status = ");
                out.push_bind_param::<Text, str>(status)?;
                out.push_sql(", result = ");
                out.push_bind_param::<Nullable<Text>, _>(result)?;
                out.push_sql(", error = ");
                out.push_bind_param::<Nullable<Text>, _>(error)?;
                out.push_sql(", error_node = ");
                out.push_bind_param::<Nullable<Text>, _>(error_node)?;
                out.push_sql(", completed_at = ");
                out.push_bind_param::<Timestamp, _>(completed_at)?;
                out.push_sql(", owner = NULL, lease_until = NULL");
            }
        }
        out.push_sql(" WHERE id = ");
        out.push_bind_param::<Text, str>(self.id)?;
        for status in TERMINAL {
            // Constants of this crate, not input.
            out.push_sql(" AND status <> '");
            out.push_sql(status);
            out.push_sql("'");
        }
        Ok(())
    }

    fn is_safe_to_cache_prepared(&self, _backend: &DB) -> QueryResult<bool> {
        // Its text depends on `KIND` only; without this diesel walks it once more to find out.
        Ok(true)
    }
}

impl<const KIND: u8> QueryId for RowUpdate<'_, KIND> {
    type QueryId = RowUpdateId<KIND>;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl<Conn, const KIND: u8> RunQueryDsl<Conn> for RowUpdate<'_, KIND> {}

/// Most ids per `IN (…)` list.
const CHUNK: usize = 500;

fn claim(
    conn: &mut DbConn,
    owner: &str,
    lease_until: DateTime<Utc>,
    now: DateTime<Utc>,
    which: ClaimScope,
) -> Result<Vec<ClaimedExecution>> {
    let candidates = executions::table
        .filter(executions::status.eq_any(UNFINISHED))
        .order((executions::created_at.asc(), executions::id.asc()))
        .select(executions::id);
    let expired = executions::lease_until.lt(time::to_db(now));
    // Several processes may claim at once: on PostgreSQL, skip rows another one has locked.
    macro_rules! load_unlocked {
        ($query:expr) => {
            match conn {
                DbConn::Sqlite(c) => $query.load(c)?,
                DbConn::Postgres(c) => $query.for_update().skip_locked().load(c)?,
            }
        };
    }
    let ids: Vec<String> = match which {
        ClaimScope::Everything => candidates.load(conn)?,
        ClaimScope::OwnAndAbandoned => load_unlocked!(
            candidates.filter(
                executions::owner
                    .is_null()
                    .or(executions::owner.eq(owner))
                    .or(expired),
            )
        ),
        ClaimScope::Abandoned => load_unlocked!(
            candidates.filter(
                executions::owner
                    .is_null()
                    .or(executions::owner.ne(owner).and(expired)),
            )
        ),
    };
    let mut out = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(CHUNK) {
        diesel::update(executions::table.filter(executions::id.eq_any(chunk)))
            .set((
                executions::owner.eq(owner),
                executions::lease_until.eq(time::to_db(lease_until)),
            ))
            .execute(conn)?;
        let rows: Vec<ExecutionRow> = executions::table
            .filter(executions::id.eq_any(chunk))
            .order((executions::created_at.asc(), executions::id.asc()))
            .select(ExecutionRow::as_select())
            .load(conn)?;
        let seqs: Vec<(String, Option<i64>)> = execution_events::table
            .filter(execution_events::execution_id.eq_any(chunk))
            .group_by(execution_events::execution_id)
            .select((
                execution_events::execution_id,
                diesel::dsl::max(execution_events::seq),
            ))
            .load(conn)?;
        let seqs: std::collections::HashMap<String, Option<i64>> = seqs.into_iter().collect();
        for row in rows {
            let record = ExecutionRecord::try_from(row)?;
            let last_seq = seqs.get(record.id.as_str()).copied().flatten();
            out.push(ClaimedExecution { record, last_seq });
        }
    }
    Ok(out)
}
