//! The runtime (node registry, blocking pool, HTTP agent) and how executions are started.

use std::sync::Arc;

use chrono::{SecondsFormat, Utc};
use flowrunner_domain::ExecutionId;
use flowrunner_dsl::Flow;
use indexmap::IndexMap;
use serde_json::{Value, json};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::builtins;
use crate::context::{ScopeInit, TemplateScope};
use crate::emit::{Emitter, EventHub};
use crate::engine::{Engine, ExecutionOutcome, Progress};
use crate::error::{Error, Result};
use crate::event::Event;
use crate::http;
use crate::journal::Journal;
use crate::node::{ExecShared, NodeRegistry, NodeType};
use crate::pool::BlockingPool;
use crate::secrets::{NoSecrets, SecretProvider, SecretTracker};
use crate::snapshot::{SNAPSHOT_FORMAT, Snapshot};

/// Default number of blocking worker threads.
pub const DEFAULT_BLOCKING_THREADS: usize = 8;
/// Default capacity of an execution's live event channel.
pub const DEFAULT_EVENT_CAPACITY: usize = 1024;

/// Largest accepted [`RuntimeBuilder::event_capacity`].
pub const MAX_EVENT_CAPACITY: usize = 1 << 20;

/// Configures and builds a [`Runtime`].
pub struct RuntimeBuilder {
    blocking_threads: usize,
    event_capacity: usize,
    custom: Vec<Arc<dyn NodeType>>,
}

impl std::fmt::Debug for RuntimeBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuntimeBuilder")
            .field("blocking_threads", &self.blocking_threads)
            .field("event_capacity", &self.event_capacity)
            .field("custom_types", &self.custom.len())
            .finish()
    }
}

impl Default for RuntimeBuilder {
    fn default() -> Self {
        Self {
            blocking_threads: DEFAULT_BLOCKING_THREADS,
            event_capacity: DEFAULT_EVENT_CAPACITY,
            custom: Vec::new(),
        }
    }
}

impl RuntimeBuilder {
    /// Number of threads of the blocking pool (HTTP calls, `run_blocking`), at least 1.
    pub fn blocking_threads(mut self, threads: usize) -> Self {
        self.blocking_threads = threads;
        self
    }

    /// Capacity of each execution's live event channel; a subscriber that falls further
    /// behind receives `RecvError::Lagged`.
    pub fn event_capacity(mut self, capacity: usize) -> Self {
        self.event_capacity = capacity;
        self
    }

    /// Registers a custom node type.
    pub fn register(self, node: impl NodeType) -> Self {
        self.register_arc(Arc::new(node))
    }

    /// Registers a shared custom node type.
    pub fn register_arc(mut self, node: Arc<dyn NodeType>) -> Self {
        self.custom.push(node);
        self
    }

    /// Starts the blocking pool and builds the runtime.
    pub fn build(self) -> Result<Runtime> {
        if self.blocking_threads == 0 {
            return Err(Error::Config("blocking_threads must be at least 1".into()));
        }
        if !(1..=MAX_EVENT_CAPACITY).contains(&self.event_capacity) {
            return Err(Error::Config(format!(
                "event_capacity must be between 1 and {MAX_EVENT_CAPACITY}"
            )));
        }
        let agent = http::new_agent();
        let mut nodes = builtins::all(&agent);
        nodes.extend(self.custom);
        let registry = NodeRegistry::new(nodes)?;
        let pool = BlockingPool::new(self.blocking_threads)?;
        Ok(Runtime {
            inner: Arc::new(Inner {
                registry,
                pool: Arc::new(pool),
                event_capacity: self.event_capacity,
            }),
        })
    }
}

struct Inner {
    registry: NodeRegistry,
    pool: Arc<BlockingPool>,
    event_capacity: usize,
}

/// Runs flows. Cheap to clone; all clones share the registry and the blocking pool.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("registry", &self.inner.registry)
            .field("blocking_threads", &self.inner.pool.threads())
            .finish()
    }
}

/// What to run: a flow, its input, and optionally an id, secrets, a journal or a snapshot.
pub struct ExecutionRequest {
    flow: Arc<Flow>,
    input: Value,
    execution_id: Option<ExecutionId>,
    secrets: Option<Arc<dyn SecretProvider>>,
    journal: Option<Arc<dyn Journal>>,
    resume: Option<Snapshot>,
    first_seq: Option<u64>,
    events: Option<Arc<EventHub>>,
}

impl std::fmt::Debug for ExecutionRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecutionRequest")
            .field("flow", &self.flow.metadata.name)
            .field("execution_id", &self.execution_id)
            .field("journal", &self.journal.is_some())
            .field("resume", &self.resume.is_some())
            .finish_non_exhaustive()
    }
}

impl ExecutionRequest {
    /// Runs `flow` with `input` (validated against its declared inputs; defaults applied).
    pub fn new(flow: Arc<Flow>, input: Value) -> Self {
        Self {
            flow,
            input,
            execution_id: None,
            secrets: None,
            journal: None,
            resume: None,
            first_seq: None,
            events: None,
        }
    }

    /// The journal already holds this execution's entries up to `seq - 1`: number new events
    /// from `seq` on (or from the resumed snapshot's `next_seq`, if that is later). A journal
    /// keeps entries recorded after the last snapshot (node starts, log lines) or of an attempt
    /// that never recorded one; resuming from the snapshot alone would number events again
    /// from the snapshot's `next_seq` and collide with them.
    pub fn first_seq(mut self, seq: u64) -> Self {
        self.first_seq = Some(seq);
        self
    }

    /// Uses this execution id (default: a new one, or the snapshot's when resuming).
    pub fn execution_id(mut self, id: ExecutionId) -> Self {
        self.execution_id = Some(id);
        self
    }

    /// Where `secrets.<key>` values come from (default: no secrets).
    pub fn secrets(mut self, provider: Arc<dyn SecretProvider>) -> Self {
        self.secrets = Some(provider);
        self
    }

    /// Records every event (and snapshots) durably before the execution continues.
    pub fn journal(mut self, journal: Arc<dyn Journal>) -> Self {
        self.journal = Some(journal);
        self
    }

    /// Continues the execution captured by `snapshot` instead of starting a new one. The
    /// request's input is ignored (the snapshot's is used). Give the same secret provider as
    /// the original run: the values of [`Snapshot::secret_keys`] are read from it again so they
    /// stay redacted.
    pub fn resume(mut self, snapshot: Snapshot) -> Self {
        self.resume = Some(snapshot);
        self
    }

    /// A receiver of every event of this execution from its first one (use
    /// [`ExecutionHandle::subscribe`] to join later). Its channel holds
    /// [`DEFAULT_EVENT_CAPACITY`] events; a receiver further behind gets `RecvError::Lagged`.
    pub fn subscribe(&mut self) -> broadcast::Receiver<Event> {
        self.events
            .get_or_insert_with(|| Arc::new(EventHub::new(DEFAULT_EVENT_CAPACITY)))
            .subscribe()
    }
}

/// A running execution. Dropping the handle does not stop it (use [`cancel`](Self::cancel)).
#[derive(Debug)]
pub struct ExecutionHandle {
    id: ExecutionId,
    events: Arc<EventHub>,
    cancel: CancellationToken,
    task: JoinHandle<ExecutionOutcome>,
}

impl ExecutionHandle {
    /// The execution id.
    pub fn id(&self) -> &ExecutionId {
        &self.id
    }

    /// A live receiver of the events emitted from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// Requests cancellation: the execution stops waiting at once (delays, HTTP calls, retry
    /// backoff) and ends as [`ExecutionOutcome::Cancelled`].
    pub fn cancel(&self) {
        self.cancel.cancel();
    }

    /// A token that cancels this execution (for use outside the handle).
    pub fn cancellation_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Waits for the end of the execution.
    pub async fn wait(self) -> ExecutionOutcome {
        match self.task.await {
            Ok(outcome) => outcome,
            Err(err) if err.is_cancelled() => ExecutionOutcome::Interrupted {
                reason: "the execution task was aborted".into(),
            },
            Err(_) => ExecutionOutcome::Interrupted {
                reason: "the execution task panicked".into(),
            },
        }
    }
}

impl Runtime {
    /// A builder with defaults.
    pub fn builder() -> RuntimeBuilder {
        RuntimeBuilder::default()
    }

    /// The node types this runtime runs (a [`flowrunner_dsl::NodeCatalog`]).
    pub fn registry(&self) -> &NodeRegistry {
        &self.inner.registry
    }

    /// Parses and validates a flow against exactly the node types this runtime can run.
    pub fn parse(
        &self,
        source: &str,
    ) -> std::result::Result<flowrunner_dsl::Parsed, flowrunner_dsl::Diagnostics> {
        flowrunner_dsl::parse(source, &self.inner.registry)
    }

    /// Starts an execution on the current tokio runtime.
    pub fn start(&self, request: ExecutionRequest) -> Result<ExecutionHandle> {
        let tokio = tokio::runtime::Handle::try_current().map_err(|_| Error::NoTokioRuntime)?;
        let ExecutionRequest {
            flow,
            input,
            execution_id,
            secrets,
            journal,
            resume,
            first_seq,
            events,
        } = request;
        let handlers = self.resolve(&flow)?;
        let secrets = Arc::new(SecretTracker::new(
            secrets.unwrap_or_else(|| Arc::new(NoSecrets)),
        ));
        let events = events.unwrap_or_else(|| Arc::new(EventHub::new(self.inner.event_capacity)));
        let cancel = CancellationToken::new();

        let resumed = resume.is_some();
        let (execution_id, progress, next_seq, in_flight, snapshot) = match resume {
            Some(snapshot) => {
                let id = check_snapshot(&flow, &snapshot, execution_id)?;
                secrets.preload(&snapshot.secret_keys);
                let progress = progress_from_snapshot(&flow, &snapshot)?;
                let next_seq = snapshot.next_seq;
                let in_flight = snapshot.in_flight.clone();
                (id, progress, next_seq, in_flight, Some(snapshot))
            }
            None => {
                let input = flow.check_input(&input).map_err(|errors| {
                    Error::InvalidInput(
                        errors
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join("; "),
                    )
                })?;
                let start = flow.nodes.get_index_of(&flow.start).ok_or_else(|| {
                    Error::InvalidInput(format!(
                        "the flow's start node `{}` does not exist",
                        flow.start
                    ))
                })?;
                let progress = Progress {
                    input,
                    started_at: Utc::now(),
                    outputs: IndexMap::new(),
                    last_node: None,
                    steps: 0,
                    next: Some(start),
                    error: None,
                };
                (
                    execution_id.unwrap_or_else(ExecutionId::generate),
                    progress,
                    0,
                    None,
                    None,
                )
            }
        };
        let next_seq = first_seq.map_or(next_seq, |first| first.max(next_seq));

        let mut scope = TemplateScope::new(ScopeInit {
            input: &progress.input,
            execution: json!({
                "id": execution_id.as_str(),
                "started_at": progress.started_at.to_rfc3339_opts(SecondsFormat::Millis, true),
            }),
            flow: json!({"name": flow.metadata.name, "version": flow.metadata.version}),
            secrets: Arc::clone(&secrets),
        });
        for (node_id, output) in &progress.outputs {
            scope.record_output(node_id, output);
        }
        if progress.error.is_some() {
            scope.set_error(progress.error.as_ref());
        }

        let emitter = Emitter::new(
            execution_id.clone(),
            journal,
            Arc::clone(&events),
            Arc::clone(&secrets),
            next_seq,
        );
        let shared = Arc::new(ExecShared {
            execution_id: execution_id.clone(),
            flow,
            emitter,
            cancel: cancel.clone(),
            pool: Arc::clone(&self.inner.pool),
            secrets,
        });
        let engine = Engine {
            shared,
            handlers,
            progress,
            scope,
            resumed_in_flight: in_flight,
            last_snapshot: snapshot.map(Arc::new),
        };
        let task = tokio.spawn(engine.run(resumed));
        Ok(ExecutionHandle {
            id: execution_id,
            events,
            cancel,
            task,
        })
    }

    /// Runs an execution to its end.
    pub async fn run(&self, request: ExecutionRequest) -> Result<ExecutionOutcome> {
        Ok(self.start(request)?.wait().await)
    }

    fn resolve(&self, flow: &Flow) -> Result<Vec<Arc<dyn NodeType>>> {
        flow.nodes
            .values()
            .map(|node| {
                self.inner
                    .registry
                    .get(&node.node_type)
                    .cloned()
                    .ok_or_else(|| Error::UnknownNodeType {
                        node_id: node.id.clone(),
                        node_type: node.node_type.clone(),
                    })
            })
            .collect()
    }
}

fn check_snapshot(
    flow: &Flow,
    snapshot: &Snapshot,
    requested: Option<ExecutionId>,
) -> Result<ExecutionId> {
    let mismatch = |reason: String| Error::SnapshotMismatch {
        execution_id: snapshot.execution_id.clone(),
        reason,
    };
    if snapshot.format != SNAPSHOT_FORMAT {
        return Err(mismatch(format!(
            "unsupported snapshot format {}",
            snapshot.format
        )));
    }
    if let Some(requested) = requested
        && requested != snapshot.execution_id
    {
        return Err(mismatch(format!(
            "the request asks for execution {requested}"
        )));
    }
    if snapshot.flow_name != flow.metadata.name {
        return Err(mismatch(format!(
            "it belongs to flow `{}`, not `{}`",
            snapshot.flow_name, flow.metadata.name
        )));
    }
    if let Some(in_flight) = &snapshot.in_flight
        && snapshot.next_node.as_deref() != Some(in_flight.node_id.as_str())
    {
        return Err(mismatch(format!(
            "its in-flight node `{}` is not its next node",
            in_flight.node_id
        )));
    }
    Ok(snapshot.execution_id.clone())
}

fn progress_from_snapshot(flow: &Flow, snapshot: &Snapshot) -> Result<Progress> {
    let index_of = |id: &str| {
        flow.nodes
            .get_index_of(id)
            .ok_or_else(|| Error::SnapshotMismatch {
                execution_id: snapshot.execution_id.clone(),
                reason: format!("node `{id}` does not exist in the flow"),
            })
    };
    let next = snapshot.next_node.as_deref().map(index_of).transpose()?;
    let last_node = snapshot.last_node.as_deref().map(index_of).transpose()?;
    Ok(Progress {
        input: snapshot.input.clone(),
        started_at: snapshot.started_at,
        outputs: snapshot
            .outputs
            .iter()
            .map(|(k, v)| (k.clone(), Arc::clone(v)))
            .collect(),
        last_node,
        steps: snapshot.steps,
        next,
        error: snapshot.error.clone(),
    })
}
