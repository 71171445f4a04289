//! [`Engine`]: submission, scheduling (global cap, per-flow concurrency, FIFO), cancellation,
//! queries, live watching, recovery at start and shutdown.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use chrono::{DateTime, Utc};
use flowrunner_domain::{AccountId, ExecutionId, ExecutionStatus, FlowId, LogLevel, RevisionId};
use flowrunner_dsl::Flow;
use flowrunner_runtime::{
    Event, EventKind, ExecutionOutcome, ExecutionRequest, Runtime, SecretProvider, Snapshot,
    StaticSecrets,
};
use flowrunner_store::{
    Backend, ClaimScope, EventFilter, ExecutionEvent, ExecutionFilter, ExecutionRecord,
    JournalEntry, JournalWriter, NewExecution, RowChange, Scope, Store, WriterConfig, WriterStats,
};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::config::EngineConfig;
use crate::error::{Error, Result};
use crate::journal::{Committed, StoreJournal, convert, row_change};
use crate::types::{
    LiveEvents, LogLine, RunRequest, StoredEvent, Submitted, SubscriberState, Watch,
};

/// How often an execution whose journal failed is retried before it is marked failed.
const MAX_JOURNAL_RETRIES: u32 = 3;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A parsed flow revision, shared by every execution of it.
struct FlowEntry {
    flow: Arc<Flow>,
    /// Whether the definition mentions `secrets` (otherwise none are loaded).
    uses_secrets: bool,
    /// `metadata.concurrency`.
    concurrency: Option<usize>,
}

/// A flow as [`Engine::submit`] last read it: what a run needs of it.
struct CurrentFlow {
    owner_id: AccountId,
    revision_id: RevisionId,
    revision: i32,
    version: String,
    entry: Arc<FlowEntry>,
    /// The store's [`flow_changes`](flowrunner_store::BlockingStore::flow_changes) before it was read.
    changes: u64,
    read_at: std::time::Instant,
}

/// Most flows (and parsed revisions) kept in the engine's caches; past that they are emptied
/// and refill from the store.
const FLOW_CACHE_CAP: usize = 4096;

/// An execution waiting for (or holding) a run slot.
struct Job {
    id: ExecutionId,
    flow_id: FlowId,
    account: AccountId,
    entry: Arc<FlowEntry>,
    input: serde_json::Value,
    /// Continue from this snapshot instead of starting over.
    resume: Option<Snapshot>,
    /// The stored `seq` of the next journal entry.
    next_seq: i64,
    /// Runs already interrupted by a journal failure.
    retries: u32,
}

/// A running execution, as seen by `cancel`.
struct Active {
    cancel: CancellationToken,
    done: watch::Receiver<bool>,
}

/// Where a queued job waits.
struct QueuedAt {
    ticket: u64,
    flow_id: FlowId,
}

/// Run slots: the global cap, per-flow limits, and the FIFO queues.
#[derive(Default)]
struct Sched {
    running: usize,
    per_flow: HashMap<FlowId, usize>,
    /// Jobs in arrival order, waiting for a global slot.
    ready: BTreeMap<u64, Job>,
    /// Jobs whose flow is at its concurrency limit, in arrival order.
    blocked: HashMap<FlowId, BTreeMap<u64, Job>>,
    queued: HashMap<ExecutionId, QueuedAt>,
    active: HashMap<ExecutionId, Active>,
    next_ticket: u64,
    stopping: bool,
}

impl Sched {
    fn push(&mut self, job: Job) {
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        self.queued.insert(
            job.id.clone(),
            QueuedAt {
                ticket,
                flow_id: job.flow_id.clone(),
            },
        );
        self.ready.insert(ticket, job);
    }

    /// Takes every job that may start now (in arrival order) and marks it active.
    fn take_startable(
        &mut self,
        max_running: usize,
    ) -> Vec<(Job, CancellationToken, watch::Sender<bool>)> {
        let mut out = Vec::new();
        if self.stopping {
            return out;
        }
        while self.running < max_running {
            let Some((ticket, job)) = self.ready.pop_first() else {
                break;
            };
            let running = self.per_flow.get(&job.flow_id).copied().unwrap_or(0);
            if job.entry.concurrency.is_some_and(|limit| running >= limit) {
                self.blocked
                    .entry(job.flow_id.clone())
                    .or_default()
                    .insert(ticket, job);
                continue;
            }
            self.running += 1;
            *self.per_flow.entry(job.flow_id.clone()).or_default() += 1;
            self.queued.remove(&job.id);
            let cancel = CancellationToken::new();
            let (done_tx, done_rx) = watch::channel(false);
            self.active.insert(
                job.id.clone(),
                Active {
                    cancel: cancel.clone(),
                    done: done_rx,
                },
            );
            out.push((job, cancel, done_tx));
        }
        out
    }

    /// Frees the slot of a finished job; the oldest job blocked on its flow becomes ready.
    fn release(&mut self, id: &ExecutionId, flow_id: &FlowId) {
        if self.active.remove(id).is_none() {
            return;
        }
        self.running = self.running.saturating_sub(1);
        if let Some(n) = self.per_flow.get_mut(flow_id) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_flow.remove(flow_id);
            }
        }
        if let Some(blocked) = self.blocked.get_mut(flow_id) {
            if let Some((ticket, job)) = blocked.pop_first() {
                self.ready.insert(ticket, job);
            }
            if blocked.is_empty() {
                self.blocked.remove(flow_id);
            }
        }
    }

    /// Removes a queued job (for cancellation).
    fn remove_queued(&mut self, id: &ExecutionId) -> Option<Job> {
        let at = self.queued.remove(id)?;
        if let Some(job) = self.ready.remove(&at.ticket) {
            return Some(job);
        }
        let blocked = self.blocked.get_mut(&at.flow_id)?;
        let job = blocked.remove(&at.ticket);
        if blocked.is_empty() {
            self.blocked.remove(&at.flow_id);
        }
        job
    }
}

/// One live subscriber of an execution.
struct Subscriber {
    sink: Sink,
    state: Arc<SubscriberState>,
}

/// A subscription to the end of one execution (see [`Hub::subscribe_end`]).
type EndSubscription = (oneshot::Receiver<Ended>, Arc<SubscriberState>);

/// The end of an execution as seen by an end subscriber.
struct Ended {
    /// When it started, if the subscriber saw its `started` event.
    started_at: Option<DateTime<Utc>>,
    /// The terminal event.
    terminal: StoredEvent,
}

impl Ended {
    /// Brings `record` (as created) to its stored final state: the terminal entry's row change
    /// ([`row_change`], what the writer stored with it); `false` when that cannot be known here
    /// (the start was not seen, or the entry does not read back as a terminal event), and the
    /// row must be read instead. The snapshot is not carried over (it is left `None`).
    fn apply(&self, record: &mut ExecutionRecord) -> bool {
        let Some(started_at) = self.started_at.or(record.started_at) else {
            return false;
        };
        let Ok(event) = serde_json::from_value::<Event>(self.terminal.data.clone()) else {
            return false;
        };
        let RowChange::Finish {
            status,
            result,
            error,
            error_node,
            ..
        } = row_change(&event, "", Duration::ZERO)
        else {
            return false;
        };
        record.status = status;
        record.result = result;
        record.error = error;
        record.error_node = error_node;
        record.snapshot = None;
        record.owner = None;
        record.lease_until = None;
        record.started_at = Some(started_at);
        // The stored precision (the event's own timestamp has nanoseconds).
        record.completed_at = Some(self.terminal.timestamp);
        true
    }
}

/// What a subscriber receives.
enum Sink {
    /// Every event (a WebSocket).
    Stream(mpsc::Sender<StoredEvent>),
    /// Only the end (a caller waiting for it); the sender is taken when used.
    End {
        tx: Option<oneshot::Sender<Ended>>,
        started_at: Option<DateTime<Utc>>,
    },
}

/// Live subscribers by execution; fed by the writer's `on_commit`, so only with durable events.
#[derive(Default)]
struct Hub {
    subscribers: Mutex<HashMap<ExecutionId, Vec<Subscriber>>>,
}

impl Hub {
    fn publish(&self, events: Vec<Committed>) {
        let mut subscribers = lock(&self.subscribers);
        if subscribers.is_empty() {
            return;
        }
        for committed in events {
            let terminal = committed.is_terminal();
            let Some(list) = subscribers.get_mut(&committed.execution_id) else {
                continue;
            };
            // Parsed once, and only when a subscriber takes it.
            let parsed = std::cell::OnceCell::new();
            let event = || parsed.get_or_init(|| committed.to_stored()).clone();
            list.retain_mut(|sub| match &mut sub.sink {
                Sink::Stream(tx) => match tx.try_send(event()) {
                    Ok(()) => true,
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        sub.state.lagged.store(true, Ordering::Release);
                        false
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => false,
                },
                Sink::End { tx, started_at } if terminal => {
                    if let Some(tx) = tx.take() {
                        let _gone = tx.send(Ended {
                            started_at: *started_at,
                            terminal: event(),
                        });
                    }
                    false
                }
                Sink::End { tx, started_at } => {
                    if committed.kind == "started" {
                        started_at.get_or_insert(committed.timestamp);
                    }
                    tx.as_ref().is_some_and(|tx| !tx.is_closed())
                }
            });
            if terminal || list.is_empty() {
                subscribers.remove(&committed.execution_id);
            }
        }
    }

    fn subscribe(
        &self,
        id: &ExecutionId,
        buffer: usize,
    ) -> (mpsc::Receiver<StoredEvent>, Arc<SubscriberState>) {
        let (tx, rx) = mpsc::channel(buffer.max(1));
        (rx, self.add(id, Sink::Stream(tx)))
    }

    /// Subscribes to the terminal event only.
    fn subscribe_end(&self, id: &ExecutionId) -> EndSubscription {
        let (tx, rx) = oneshot::channel();
        let sink = Sink::End {
            tx: Some(tx),
            started_at: None,
        };
        (rx, self.add(id, sink))
    }

    fn add(&self, id: &ExecutionId, sink: Sink) -> Arc<SubscriberState> {
        let state = Arc::new(SubscriberState::default());
        lock(&self.subscribers)
            .entry(id.clone())
            .or_default()
            .push(Subscriber {
                sink,
                state: Arc::clone(&state),
            });
        state
    }

    /// Drops the subscriber whose state is `state` (its stream ends).
    fn unsubscribe(&self, id: &ExecutionId, state: &Arc<SubscriberState>) {
        let mut subscribers = lock(&self.subscribers);
        if let Some(list) = subscribers.get_mut(id) {
            list.retain(|sub| !Arc::ptr_eq(&sub.state, state));
            if list.is_empty() {
                subscribers.remove(id);
            }
        }
    }

    fn shutdown(&self) {
        let mut subscribers = lock(&self.subscribers);
        for (_, list) in subscribers.drain() {
            for sub in list {
                sub.state.shutdown.store(true, Ordering::Release);
            }
        }
    }
}

struct Inner {
    store: Store,
    runtime: Runtime,
    config: EngineConfig,
    writer: JournalWriter<Committed>,
    hub: Arc<Hub>,
    flows: Mutex<HashMap<RevisionId, Arc<FlowEntry>>>,
    /// Flows by id, as last read by `submit` (see [`EngineConfig::flow_cache_ttl`]).
    current: Mutex<HashMap<FlowId, Arc<CurrentFlow>>>,
    sched: Mutex<Sched>,
    /// Cancelled at shutdown: running tasks detach.
    stop: CancellationToken,
    /// Set at shutdown: journals write nothing more.
    closed: Arc<AtomicBool>,
    /// Notified whenever a run slot is freed.
    slot_freed: tokio::sync::Notify,
}

/// How many times [`Engine::cancel`] looks again for an execution in transit.
const CANCEL_TRANSIT_ATTEMPTS: u32 = 200;
/// Pause between those looks (at most ~1 s in all).
const CANCEL_TRANSIT_PAUSE: Duration = Duration::from_millis(5);

/// The durable execution engine. Cheap to clone (shared state). Dropping the last clone without
/// [`shutdown`](Engine::shutdown) stops it as abruptly as a crash would, except that what is
/// already queued is committed: running executions stop where they are and resume on the next
/// start.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
    _last: Arc<StopOnDrop>,
}

/// Stops the engine when the last [`Engine`] handle goes (its tasks hold only `Inner`).
struct StopOnDrop {
    inner: Weak<Inner>,
}

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let Some(inner) = self.inner.upgrade() else {
            return;
        };
        if inner.closed.swap(true, Ordering::AcqRel) {
            return; // shut down already
        }
        inner.stop.cancel();
        if !inner.writer.close_soon() {
            log::warn!("engine dropped: the journal writer could not be asked to stop");
        }
    }
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sched = lock(&self.inner.sched);
        f.debug_struct("Engine")
            .field("worker_id", &self.inner.config.worker_id)
            .field("running", &sched.running)
            .field("queued", &sched.queued.len())
            .finish_non_exhaustive()
    }
}

/// How a run task ended.
enum RunEnd {
    /// The execution reached a terminal state (or was failed by the engine).
    Finished,
    /// The engine is shutting down: nothing was marked; the execution resumes on next start.
    Detached,
    /// The journal failed; resume from the stored state.
    Retry(String),
}

impl Engine {
    /// Starts the store's journal writer, claims and resumes every unfinished execution (on
    /// SQLite all of them: one process owns the database; on PostgreSQL those without a live
    /// lease), and starts lease renewal. Call inside a tokio runtime.
    pub async fn start(store: Store, runtime: Runtime, config: EngineConfig) -> Result<Engine> {
        let mut config = config;
        config.max_running = config.max_running.max(1);
        config.subscriber_buffer = config.subscriber_buffer.max(1);
        let hub = Arc::new(Hub::default());
        let publish = Arc::clone(&hub);
        let writer = store.start_writer(
            WriterConfig {
                max_batch: config.max_batch.max(1),
                ..WriterConfig::default()
            },
            move |events| publish.publish(events),
        )?;
        let inner = Arc::new(Inner {
            store,
            runtime,
            config,
            writer,
            hub,
            flows: Mutex::new(HashMap::new()),
            current: Mutex::new(HashMap::new()),
            sched: Mutex::new(Sched::default()),
            stop: CancellationToken::new(),
            closed: Arc::new(AtomicBool::new(false)),
            slot_freed: tokio::sync::Notify::new(),
        });
        let engine = Engine {
            _last: Arc::new(StopOnDrop {
                inner: Arc::downgrade(&inner),
            }),
            inner,
        };
        engine.recover().await?;
        spawn_lease_renewal(Arc::downgrade(&engine.inner), engine.inner.stop.clone());
        Ok(engine)
    }

    /// Creates an execution of the flow's current revision and schedules it. With an
    /// idempotency key used for the same flow and account in the last 24 hours, returns that
    /// execution (`created: false`). [`Error::NotFound`] if the flow does not exist (or was
    /// deleted, or is not visible in `req.scope`); [`Error::InvalidInput`] with one entry per
    /// field; [`Error::ShuttingDown`] after [`shutdown`](Self::shutdown).
    pub async fn submit(&self, req: RunRequest) -> Result<Submitted> {
        Ok(self.submit_inner(req, false).await?.0)
    }

    /// [`submit`](Self::submit), then waits up to `wait` for the execution to end (a run found
    /// by idempotency key included). Returns the execution as it is then: terminal when it
    /// ended in time, else still `queued` or `running`.
    pub async fn submit_and_wait(&self, req: RunRequest, wait: Duration) -> Result<Submitted> {
        let inner = &self.inner;
        let scope = req.scope.clone();
        let (mut submitted, end) = self.submit_inner(req, true).await?;
        let id = submitted.execution.id.clone();
        if submitted.execution.status.is_terminal() {
            return Ok(submitted);
        }
        let (end, state) = match end {
            Some(end) => end,
            None => {
                // Found by key: it may be running anywhere. Subscribe, then look again.
                let end = inner.hub.subscribe_end(&id);
                match inner.store.get_execution(&id, scope.clone()).await {
                    Ok(Some(record)) if record.status.is_terminal() => {
                        inner.hub.unsubscribe(&id, &end.1);
                        submitted.execution = record;
                        return Ok(submitted);
                    }
                    Ok(_) => end,
                    Err(err) => {
                        inner.hub.unsubscribe(&id, &end.1);
                        return Err(err.into());
                    }
                }
            }
        };
        // The terminal event usually tells the final state; the engine stopping or the time
        // running out (an execution run by another process never reaches this hub) leave the
        // stored row as the answer.
        match tokio::time::timeout(wait, end).await {
            Ok(Ok(ended)) if ended.apply(&mut submitted.execution) => return Ok(submitted),
            Ok(_) => {}
            Err(_elapsed) => inner.hub.unsubscribe(&id, &state),
        }
        if let Some(record) = inner.store.get_execution(&id, Scope::All).await? {
            submitted.execution = record;
        }
        Ok(submitted)
    }

    /// Creates and schedules; with `follow`, a new execution gets an end subscription before
    /// it can start (so its end cannot be missed).
    async fn submit_inner(
        &self,
        req: RunRequest,
        follow: bool,
    ) -> Result<(Submitted, Option<EndSubscription>)> {
        let inner = &self.inner;
        if inner.closed.load(Ordering::Acquire) {
            return Err(Error::ShuttingDown);
        }
        let flow = inner.current_flow(&req.flow_id).await?;
        if req
            .scope
            .owner()
            .is_some_and(|owner| *owner != flow.owner_id)
        {
            return Err(Error::NotFound);
        }
        let entry = Arc::clone(&flow.entry);
        let input = entry
            .flow
            .check_input(&req.input)
            .map_err(Error::InvalidInput)?;
        let new = NewExecution {
            flow_id: req.flow_id.clone(),
            revision_id: flow.revision_id.clone(),
            revision: flow.revision,
            flow_version: flow.version.clone(),
            account_id: flow.owner_id.clone(),
            input: input.clone(),
            idempotency_key: req.idempotency_key,
            owner: Some(inner.config.worker_id.clone()),
            lease_until: Some(Utc::now() + inner.config.lease),
        };
        let created = match inner.writer.create_execution(new.clone()).await {
            // Another process inserted the same idempotency key at the same moment.
            Err(flowrunner_store::Error::Conflict(_)) if new.idempotency_key.is_some() => {
                inner.writer.create_execution(new).await?
            }
            other => other?,
        };
        let (mut record, created) = created;
        let mut end = None;
        if created {
            if follow {
                end = Some(inner.hub.subscribe_end(&record.id));
            }
            let started = inner.enqueue(Job {
                id: record.id.clone(),
                flow_id: record.flow_id.clone(),
                account: record.account_id.clone(),
                entry,
                input,
                resume: None,
                next_seq: 0,
                retries: 0,
            });
            if started {
                // It holds a run slot and its task is spawned: report what the caller will see
                // a moment later (the row says `running` once the `started` entry commits).
                record.status = ExecutionStatus::Running;
            }
        }
        Ok((
            Submitted {
                execution: record,
                created,
            },
            end,
        ))
    }

    /// Cancels an execution. A queued one is cancelled at once; a running one is interrupted
    /// (its running node stops) and the call waits, bounded by
    /// [`EngineConfig::cancel_wait`], until the cancellation is persisted. Returns the record
    /// (status `cancelled`, unless the execution finished on its own in the meantime).
    /// [`Error::NotFound`] when it does not exist or is not visible in `scope`;
    /// [`Error::AlreadyFinished`] when it had already ended.
    pub async fn cancel(&self, id: &ExecutionId, scope: Scope) -> Result<ExecutionRecord> {
        let inner = &self.inner;
        enum Found {
            Queued(Box<Job>),
            Running(CancellationToken, watch::Receiver<bool>),
            Elsewhere,
        }
        let mut attempts = 0u32;
        let (found, record) = loop {
            let record = inner
                .store
                .get_execution(id, scope.clone())
                .await?
                .ok_or(Error::NotFound)?;
            if record.status.is_terminal() {
                return Err(Error::AlreadyFinished);
            }
            let found = {
                let mut sched = lock(&inner.sched);
                if let Some(job) = sched.remove_queued(id) {
                    Found::Queued(Box::new(job))
                } else if let Some(active) = sched.active.get(id) {
                    Found::Running(active.cancel.clone(), active.done.clone())
                } else {
                    Found::Elsewhere
                }
            };
            // An execution this process owns but neither queues nor runs is in transit: just
            // created and not yet handed to the scheduler, or just finished and not yet read
            // back as terminal. Writing a cancellation beside it would race its own journal,
            // so look again shortly instead.
            let in_transit = matches!(found, Found::Elsewhere)
                && record.owner.as_deref() == Some(inner.config.worker_id.as_str());
            if in_transit && attempts < CANCEL_TRANSIT_ATTEMPTS {
                attempts += 1;
                tokio::time::sleep(CANCEL_TRANSIT_PAUSE).await;
                continue;
            }
            break (found, record);
        };
        match found {
            Found::Queued(job) => {
                inner
                    .finish_directly(&job.id, &job.entry.flow, job.next_seq, EventKind::Cancelled)
                    .await?;
            }
            Found::Running(cancel, mut done) => {
                cancel.cancel();
                let wait = done.wait_for(|finished| *finished);
                // Timing out or the run task vanishing both end in a re-read of the record.
                let _ended = tokio::time::timeout(inner.config.cancel_wait, wait).await;
            }
            Found::Elsewhere => {
                // Not held by this process (e.g. claimed by no one yet): cancel it in the store.
                let last = inner.store.last_event_seq(id).await?;
                let flow = inner.flow_for_revision(&record.revision_id).await.ok();
                let empty = Arc::new(empty_flow());
                let flow = flow.map_or(empty, |entry| Arc::clone(&entry.flow));
                inner
                    .finish_directly(id, &flow, last.map_or(0, |s| s + 1), EventKind::Cancelled)
                    .await?;
            }
        }
        inner
            .store
            .get_execution(id, Scope::All)
            .await?
            .ok_or(Error::NotFound)
    }

    /// The execution, if it exists and is visible in `scope`.
    pub async fn get(&self, id: &ExecutionId, scope: Scope) -> Result<Option<ExecutionRecord>> {
        Ok(self.inner.store.get_execution(id, scope).await?)
    }

    /// One page of executions visible in `scope`, newest first, and the total matching.
    pub async fn list(
        &self,
        scope: Scope,
        filter: ExecutionFilter,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<ExecutionRecord>, i64)> {
        Ok(self
            .inner
            .store
            .list_executions(scope, filter, limit, offset)
            .await?)
    }

    /// One page of an execution's log lines (oldest first) at `min_level` or above, and the
    /// total matching; `None` when the execution is not found in `scope`.
    pub async fn logs(
        &self,
        id: &ExecutionId,
        scope: Scope,
        min_level: Option<LogLevel>,
        limit: i64,
        offset: i64,
    ) -> Result<Option<(Vec<LogLine>, i64)>> {
        let store = &self.inner.store;
        if store.get_execution(id, scope).await?.is_none() {
            return Ok(None);
        }
        let filter = EventFilter {
            min_level,
            logs_only: true,
            ..EventFilter::default()
        };
        let (events, total) = store
            .list_execution_events(id, filter, limit, offset)
            .await?;
        let lines = events.into_iter().filter_map(log_line).collect();
        Ok(Some((lines, total)))
    }

    /// Watches an execution: its committed history, then live events (only `seq` after the
    /// history), without gap or duplicate. `None` when the execution is not found in `scope`.
    pub async fn watch(&self, id: &ExecutionId, scope: Scope) -> Result<Option<Watch>> {
        let inner = &self.inner;
        // Subscribe first, then read the history: every event committed after the read is
        // delivered live; duplicates are filtered by seq.
        let (rx, state) = inner.hub.subscribe(id, inner.config.subscriber_buffer);
        let events = match inner.store.execution_journal(id, scope).await {
            Ok(Some(events)) => events,
            Ok(None) => {
                inner.hub.unsubscribe(id, &state);
                return Ok(None);
            }
            Err(err) => {
                inner.hub.unsubscribe(id, &state);
                return Err(err.into());
            }
        };
        let history: Vec<StoredEvent> = events.into_iter().map(stored_event).collect();
        let finished = history.last().is_some_and(StoredEvent::is_terminal);
        if finished {
            inner.hub.unsubscribe(id, &state);
        }
        let after_seq = history.last().map(|e| e.seq);
        Ok(Some(Watch {
            history,
            live: LiveEvents {
                rx,
                state,
                after_seq,
            },
            finished,
        }))
    }

    /// Stops claiming work, stops running executions without marking them (they resume on
    /// the next start), flushes the writer and releases this worker's leases.
    pub async fn shutdown(&self) {
        let inner = &self.inner;
        lock(&inner.sched).stopping = true;
        inner.closed.store(true, Ordering::Release);
        inner.stop.cancel();
        if let Err(err) = inner.writer.flush().await {
            log::warn!("engine shutdown: flushing the journal failed: {err}");
        }
        match inner.writer.release_leases(&inner.config.worker_id).await {
            Ok(n) => log::info!("engine shutdown: released {n} lease(s)"),
            Err(err) => log::warn!("engine shutdown: releasing leases failed: {err}"),
        }
        if let Err(err) = inner.writer.close().await {
            log::warn!("engine shutdown: closing the journal writer failed: {err}");
        }
        inner.hub.shutdown();
    }

    /// The journal writer's counters (commits, messages, rejected writes).
    pub fn writer_stats(&self) -> WriterStats {
        self.inner.writer.stats()
    }

    /// Executions of this process currently holding a run slot, and those queued.
    pub fn load(&self) -> (usize, usize) {
        let sched = lock(&self.inner.sched);
        (sched.running, sched.queued.len())
    }

    /// Waits until this process has no running and no queued execution (tests, benchmarks,
    /// draining before maintenance).
    pub async fn wait_idle(&self) {
        loop {
            let freed = self.inner.slot_freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if self.load() == (0, 0) {
                return;
            }
            freed.await;
        }
    }

    /// Claims and schedules unfinished executions, oldest first: on SQLite all of them (one
    /// process owns the database), on PostgreSQL those without owner, its own and those whose
    /// lease expired.
    async fn recover(&self) -> Result<()> {
        let which = match self.inner.store.backend() {
            Backend::Sqlite => ClaimScope::Everything,
            Backend::Postgres => ClaimScope::OwnAndAbandoned,
        };
        self.inner.adopt(which).await.map(|_| ())
    }
}

impl Inner {
    /// Claims the unfinished executions `which` selects and schedules them, oldest first
    /// (resumed from their snapshot; one that cannot be resumed is marked failed). Returns
    /// how many were claimed.
    async fn adopt(self: &Arc<Self>, which: ClaimScope) -> Result<usize> {
        let now = Utc::now();
        let claimed = self
            .writer
            .claim_unfinished(&self.config.worker_id, now + self.config.lease, now, which)
            .await?;
        let count = claimed.len();
        if count > 0 {
            log::info!("resuming {count} unfinished execution(s)");
        }
        for claimed in claimed {
            let record = claimed.record;
            let next_seq = claimed.last_seq.map_or(0, |s| s + 1);
            match self.resume_job(&record, next_seq).await {
                Ok(job) => {
                    self.enqueue(job);
                }
                Err(err) => {
                    log::error!("execution {} cannot be resumed: {err}", record.id);
                    let flow = Arc::new(empty_flow());
                    let failed = EventKind::Failed {
                        error: format!("the execution cannot be resumed: {err}"),
                        node_id: None,
                    };
                    if let Err(err) = self
                        .finish_directly(&record.id, &flow, next_seq, failed)
                        .await
                    {
                        log::error!("execution {} could not be marked failed: {err}", record.id);
                    }
                }
            }
        }
        Ok(count)
    }

    /// The current revision of a live flow, from the cache while it is fresh (see
    /// [`EngineConfig::flow_cache_ttl`]) or read now. [`Error::NotFound`] when the flow does
    /// not exist or was deleted.
    async fn current_flow(&self, id: &FlowId) -> Result<Arc<CurrentFlow>> {
        let ttl = self.config.flow_cache_ttl;
        let changes = self.store.blocking().flow_changes();
        if !ttl.is_zero()
            && let Some(cached) = lock(&self.current).get(id)
            && cached.changes == changes
            && cached.read_at.elapsed() < ttl
        {
            return Ok(Arc::clone(cached));
        }
        let read_at = std::time::Instant::now();
        let flow = self
            .store
            .get_flow(id, Scope::All)
            .await?
            .ok_or(Error::NotFound)?;
        let current = Arc::new(CurrentFlow {
            entry: self.flow_entry(&flow.revision_id, &flow.definition)?,
            owner_id: flow.owner_id,
            revision_id: flow.revision_id,
            revision: flow.revision,
            version: flow.version,
            changes,
            read_at,
        });
        if !ttl.is_zero() {
            let mut cache = lock(&self.current);
            if cache.len() >= FLOW_CACHE_CAP {
                cache.clear();
            }
            cache.insert(id.clone(), Arc::clone(&current));
        }
        Ok(current)
    }

    /// The parsed flow of a revision, from the cache or parsed now.
    fn flow_entry(&self, revision: &RevisionId, definition: &str) -> Result<Arc<FlowEntry>> {
        if let Some(entry) = lock(&self.flows).get(revision) {
            return Ok(Arc::clone(entry));
        }
        let parsed = self
            .runtime
            .parse(definition)
            .map_err(|diagnostics| Error::InvalidFlow(diagnostics.to_string()))?;
        let flow = parsed.flow;
        let entry = Arc::new(FlowEntry {
            concurrency: flow
                .metadata
                .concurrency
                .map(|n| usize::try_from(n).unwrap_or(usize::MAX).max(1)),
            uses_secrets: definition.contains("secrets"),
            flow: Arc::new(flow),
        });
        let mut flows = lock(&self.flows);
        if flows.len() >= FLOW_CACHE_CAP {
            // Running executions keep their own reference.
            flows.clear();
        }
        flows.insert(revision.clone(), Arc::clone(&entry));
        Ok(entry)
    }

    /// The parsed flow of a stored revision (read from the store when not cached).
    async fn flow_for_revision(&self, revision: &RevisionId) -> Result<Arc<FlowEntry>> {
        if let Some(entry) = lock(&self.flows).get(revision) {
            return Ok(Arc::clone(entry));
        }
        let stored = self
            .store
            .get_revision(revision)
            .await?
            .ok_or(Error::NotFound)?;
        self.flow_entry(revision, &stored.definition)
    }

    /// A job that continues a stored execution from its snapshot (or from the start).
    async fn resume_job(&self, record: &ExecutionRecord, next_seq: i64) -> Result<Job> {
        let entry = self.flow_for_revision(&record.revision_id).await?;
        let mut resume = record
            .snapshot
            .clone()
            .map(serde_json::from_value::<Snapshot>)
            .transpose()
            .map_err(|e| Error::Runtime(format!("unreadable snapshot: {e}")))?;
        if let Some(snapshot) = &mut resume {
            self.advance_past_completions(snapshot, &entry.flow).await?;
        }
        Ok(Job {
            id: record.id.clone(),
            flow_id: record.flow_id.clone(),
            account: record.account_id.clone(),
            entry,
            input: record.input.clone(),
            resume,
            next_seq,
            retries: 0,
        })
    }

    /// Moves a stored snapshot past the node completions journaled after it (their snapshots
    /// are not stored, see `StoreJournal`).
    async fn advance_past_completions(&self, snapshot: &mut Snapshot, flow: &Flow) -> Result<()> {
        let filter = EventFilter {
            after_seq: Some(i64::try_from(snapshot.next_seq).unwrap_or(i64::MAX) - 1),
            // The `type` tag of `EventKind::NodeCompleted`.
            kind: Some("node_completed".to_string()),
            ..EventFilter::default()
        };
        let (completions, _) = self
            .store
            .list_execution_events(&snapshot.execution_id, filter, i64::MAX, 0)
            .await?;
        for stored in completions {
            let data = stored.data.ok_or_else(|| {
                Error::Runtime(format!("journal entry {} has no data", stored.seq))
            })?;
            let event: Event = serde_json::from_value(data).map_err(|e| {
                Error::Runtime(format!("unreadable journal entry {}: {e}", stored.seq))
            })?;
            snapshot.advance(flow, &event)?;
        }
        Ok(())
    }

    /// Queues a job and starts whatever may start; `true` when this job got a run slot now.
    fn enqueue(self: &Arc<Self>, job: Job) -> bool {
        let id = job.id.clone();
        let starts = {
            let mut sched = lock(&self.sched);
            sched.push(job);
            sched.take_startable(self.config.max_running)
        };
        let started = starts.iter().any(|(job, _, _)| job.id == id);
        self.spawn_all(starts);
        started
    }

    fn spawn_all(self: &Arc<Self>, starts: Vec<(Job, CancellationToken, watch::Sender<bool>)>) {
        for (job, cancel, done) in starts {
            let inner = Arc::clone(self);
            // On the writer's thread: the execution's journal writes and their commits then
            // need no hand-off between threads (see `JournalWriter::runtime`).
            self.writer
                .runtime()
                .spawn(async move { inner.run_job(job, cancel, done).await });
        }
    }

    /// Runs one job to its end, then frees its slot and starts what may start.
    async fn run_job(
        self: Arc<Self>,
        job: Job,
        cancel: CancellationToken,
        done: watch::Sender<bool>,
    ) {
        let end = self.execute(&job, &cancel).await;
        let id = job.id.clone();
        let flow_id = job.flow_id.clone();
        let retry = match end {
            RunEnd::Detached => {
                let _ = done.send(true);
                return;
            }
            RunEnd::Finished => None,
            RunEnd::Retry(reason) => Some((job, reason)),
        };
        let starts = {
            let mut sched = lock(&self.sched);
            sched.release(&id, &flow_id);
            sched.take_startable(self.config.max_running)
        };
        // Wake cancel() only after the slot is free.
        let _no_waiters = done.send(true);
        self.slot_freed.notify_waiters();
        self.spawn_all(starts);
        if let Some((job, reason)) = retry {
            self.retry(job, reason).await;
        }
    }

    /// After a journal failure: resume from the stored state, or give up and fail it.
    async fn retry(self: &Arc<Self>, job: Job, reason: String) {
        log::warn!("execution {} interrupted: {reason}", job.id);
        tokio::time::sleep(Duration::from_millis(100)).await;
        if self.closed.load(Ordering::Acquire) {
            return;
        }
        let reloaded = async {
            let record = self
                .store
                .get_execution(&job.id, Scope::All)
                .await?
                .ok_or(Error::NotFound)?;
            let last = self.store.last_event_seq(&job.id).await?;
            Ok::<_, Error>((record, last.map_or(0, |s| s + 1)))
        }
        .await;
        match reloaded {
            Ok((record, _)) if record.status.is_terminal() => {}
            Ok((record, next_seq)) if job.retries < MAX_JOURNAL_RETRIES => {
                match self.resume_job(&record, next_seq).await {
                    Ok(mut resumed) => {
                        resumed.retries = job.retries + 1;
                        self.enqueue(resumed);
                    }
                    Err(err) => log::error!("execution {} cannot be resumed: {err}", job.id),
                }
            }
            Ok((_, next_seq)) => {
                let failed = EventKind::Failed {
                    error: format!("the execution journal failed repeatedly: {reason}"),
                    node_id: None,
                };
                if let Err(err) = self
                    .finish_directly(&job.id, &job.entry.flow, next_seq, failed)
                    .await
                {
                    log::error!("execution {} could not be marked failed: {err}", job.id);
                }
            }
            Err(err) => log::error!("execution {} could not be reloaded: {err}", job.id),
        }
    }

    /// Starts the runtime on a job and waits for its outcome.
    async fn execute(self: &Arc<Self>, job: &Job, cancel: &CancellationToken) -> RunEnd {
        let secrets: Arc<dyn SecretProvider> = if job.entry.uses_secrets {
            match self.store.secret_values(&job.account).await {
                Ok(values) => Arc::new(values.into_iter().collect::<StaticSecrets>()),
                Err(flowrunner_store::Error::NoSecretKey) => Arc::new(StaticSecrets::new()),
                Err(err) => {
                    return self
                        .fail_job(job, job.next_seq, format!("cannot load secrets: {err}"))
                        .await;
                }
            }
        } else {
            Arc::new(StaticSecrets::new())
        };
        let journal = Arc::new(StoreJournal {
            writer: self.writer.clone(),
            flow: Arc::clone(&job.entry.flow),
            next_seq: AtomicI64::new(job.next_seq),
            owner: self.config.worker_id.clone(),
            lease: self.config.lease,
            closed: Arc::clone(&self.closed),
            stored_secret_keys: AtomicUsize::new(
                job.resume
                    .as_ref()
                    .map_or(usize::MAX, |snapshot| snapshot.secret_keys.len()),
            ),
            pending: Mutex::new(Vec::new()),
        });
        // The journal may hold entries past the snapshot (node starts, log lines): go on after
        // them.
        let mut request = ExecutionRequest::new(Arc::clone(&job.entry.flow), job.input.clone())
            .execution_id(job.id.clone())
            .first_seq(u64::try_from(job.next_seq).unwrap_or(0))
            .secrets(secrets)
            .journal(Arc::clone(&journal) as Arc<dyn flowrunner_runtime::Journal>);
        if let Some(snapshot) = &job.resume {
            request = request.resume(snapshot.clone());
        }
        let handle = match self.runtime.start(request) {
            Ok(handle) => handle,
            Err(err) => {
                return self
                    .fail_job(job, journal.next_seq(), format!("cannot start: {err}"))
                    .await;
            }
        };
        let runtime_cancel = handle.cancellation_token();
        let wait = handle.wait();
        tokio::pin!(wait);
        let outcome = tokio::select! {
            biased;
            outcome = &mut wait => outcome,
            () = cancel.cancelled() => {
                runtime_cancel.cancel();
                tokio::select! {
                    biased;
                    outcome = &mut wait => outcome,
                    () = self.stop.cancelled() => return RunEnd::Detached,
                }
            }
            () = self.stop.cancelled() => return RunEnd::Detached,
        };
        match outcome {
            ExecutionOutcome::Interrupted { reason } => {
                if self.closed.load(Ordering::Acquire) {
                    RunEnd::Detached
                } else {
                    RunEnd::Retry(reason)
                }
            }
            ExecutionOutcome::Completed { .. }
            | ExecutionOutcome::Failed { .. }
            | ExecutionOutcome::Cancelled => RunEnd::Finished,
        }
    }

    async fn fail_job(&self, job: &Job, next_seq: i64, error: String) -> RunEnd {
        log::warn!("execution {} failed before running: {error}", job.id);
        let failed = EventKind::Failed {
            error,
            node_id: None,
        };
        if let Err(err) = self
            .finish_directly(&job.id, &job.entry.flow, next_seq, failed)
            .await
        {
            log::error!("execution {} could not be marked failed: {err}", job.id);
        }
        RunEnd::Finished
    }

    /// Ends an execution that is not running here with a terminal event at `seq`.
    async fn finish_directly(
        &self,
        id: &ExecutionId,
        flow: &Flow,
        seq: i64,
        kind: EventKind,
    ) -> Result<()> {
        let event = Event {
            execution_id: id.clone(),
            seq: u64::try_from(seq).unwrap_or_default(),
            timestamp: Utc::now(),
            kind,
        };
        let (row, stored) = convert(&event, flow)
            .map_err(|e| Error::Runtime(format!("cannot encode event: {e}")))?;
        let entry = JournalEntry {
            event: row,
            snapshot: None,
            change: row_change(&event, &self.config.worker_id, self.config.lease),
            payload: stored,
        };
        match self.writer.append(entry).await?.wait().await {
            Ok(()) => Ok(()),
            Err(flowrunner_store::Error::Conflict(_)) => Err(Error::AlreadyFinished),
            Err(err) => Err(err.into()),
        }
    }
}

/// Renews this worker's leases every `lease / 3` until the engine stops or is dropped.
fn spawn_lease_renewal(inner: Weak<Inner>, stop: CancellationToken) {
    tokio::spawn(async move {
        let period = {
            let Some(inner) = inner.upgrade() else { return };
            (inner.config.lease / 3).max(Duration::from_millis(10))
        };
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = ticks.tick() => {}
            }
            let Some(inner) = inner.upgrade() else { return };
            let until = Utc::now() + inner.config.lease;
            if let Err(err) = inner
                .writer
                .renew_leases(&inner.config.worker_id, until)
                .await
            {
                log::warn!("lease renewal failed: {err}");
            }
            // Several processes share a PostgreSQL database: take over what a process that
            // died (or stopped and released it) left, without waiting for a restart.
            let stopping = lock(&inner.sched).stopping;
            if inner.store.backend() == Backend::Postgres
                && !stopping
                && let Err(err) = inner.adopt(ClaimScope::Abandoned).await
            {
                log::warn!("taking over abandoned executions failed: {err}");
            }
        }
    });
}

/// A flow without nodes, for converting events of executions whose flow is unavailable.
fn empty_flow() -> Flow {
    Flow {
        metadata: flowrunner_dsl::Metadata {
            name: String::new(),
            description: None,
            version: String::new(),
            concurrency: None,
            tags: Vec::new(),
            max_steps: 0,
        },
        inputs: Default::default(),
        start: String::new(),
        nodes: Default::default(),
        output: None,
    }
}

fn stored_event(event: ExecutionEvent) -> StoredEvent {
    StoredEvent {
        execution_id: event.execution_id,
        seq: u64::try_from(event.seq).unwrap_or_default(),
        timestamp: event.created_at,
        kind: event.kind,
        node_id: event.node_id,
        node_type: event.node_type,
        data: event.data.unwrap_or(serde_json::Value::Null),
    }
}

fn log_line(event: ExecutionEvent) -> Option<LogLine> {
    let level = event.level?;
    let data = if event.kind == "log" {
        event
            .data
            .as_ref()
            .and_then(|d| d.get("data"))
            .filter(|d| !d.is_null())
            .cloned()
    } else {
        None
    };
    Some(LogLine {
        seq: u64::try_from(event.seq).unwrap_or_default(),
        timestamp: event.created_at,
        level,
        message: event.message.unwrap_or_default(),
        node_id: event.node_id,
        node_type: event.node_type,
        data,
    })
}
