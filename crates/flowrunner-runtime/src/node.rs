//! Node types: the trait embedders implement, the context a node runs with, and the registry.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use flowrunner_domain::{ExecutionId, LogLevel};
use flowrunner_dsl::{Flow, NodeCatalog, NodeSpec};
use serde_json::Value;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use uuid::Uuid;

use crate::emit::Emitter;
use crate::error::{Error, Result};
use crate::event::EventKind;
use crate::journal::BoxFuture;
use crate::pool::BlockingPool;
use crate::secrets::SecretTracker;
use crate::snapshot::{InFlight, Snapshot};

/// A kind of node the runtime can execute (`http.request`, or an embedder's own type).
///
/// `execute` receives the node's params already rendered and returns a `'static` future: clone
/// what you need out of `self`. Blocking work must go through [`NodeContext::run_blocking`].
/// The future may be dropped at any await point (cancellation, timeout).
///
/// ```
/// use flowrunner_runtime::{BoxFuture, NodeContext, NodeError, NodeOutput, NodeType};
/// use flowrunner_dsl::{NodeSpec, Outcomes};
///
/// struct Upper;
/// impl NodeType for Upper {
///     fn spec(&self) -> NodeSpec {
///         NodeSpec::new("text.upper", "Upper-cases `text`.")
///     }
///     fn execute(&self, _ctx: NodeContext, params: serde_json::Value)
///         -> BoxFuture<'static, Result<NodeOutput, NodeError>> {
///         Box::pin(async move {
///             let text = params["text"].as_str().ok_or_else(|| NodeError::permanent("`text` must be a string"))?;
///             Ok(NodeOutput::new(serde_json::json!({ "text": text.to_uppercase() })))
///         })
///     }
/// }
/// ```
pub trait NodeType: Send + Sync + 'static {
    /// The node's type name, params and outcomes, used to validate flows.
    fn spec(&self) -> NodeSpec;

    /// Runs one attempt of the node with its rendered params.
    fn execute(
        &self,
        ctx: NodeContext,
        params: Value,
    ) -> BoxFuture<'static, std::result::Result<NodeOutput, NodeError>>;
}

/// What a successful node run produced.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeOutput {
    /// The output, visible to later templates as `nodes.<id>.output`.
    pub output: Value,
    /// The outcome whose `next` edge is taken (`default` unless the node branches).
    pub outcome: String,
}

impl NodeOutput {
    /// An output taking the `default` outcome.
    pub fn new(output: Value) -> Self {
        Self {
            output,
            outcome: flowrunner_dsl::OUTCOME_DEFAULT.to_string(),
        }
    }

    /// Sets the outcome.
    pub fn with_outcome(mut self, outcome: impl Into<String>) -> Self {
        self.outcome = outcome.into();
        self
    }
}

/// A failed node attempt.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct NodeError {
    pub(crate) message: String,
    pub(crate) retryable: bool,
}

impl NodeError {
    /// A failure that the node's retry policy may retry (network errors, bad statuses…).
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: true,
        }
    }

    /// A failure that retrying cannot fix (invalid params…): no further attempt is made.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: false,
        }
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether another attempt may succeed.
    pub fn is_retryable(&self) -> bool {
        self.retryable
    }
}

/// State shared by every node of one execution.
pub(crate) struct ExecShared {
    pub(crate) execution_id: ExecutionId,
    pub(crate) flow: Arc<Flow>,
    pub(crate) emitter: Emitter,
    pub(crate) cancel: CancellationToken,
    pub(crate) pool: Arc<BlockingPool>,
    pub(crate) secrets: Arc<SecretTracker>,
}

/// What a node attempt can see and do besides its params.
pub struct NodeContext {
    pub(crate) exec: Arc<ExecShared>,
    pub(crate) node_index: usize,
    pub(crate) attempt: u32,
    pub(crate) previous: Option<Arc<Value>>,
    pub(crate) resumed: Option<Value>,
    pub(crate) step: u32,
    pub(crate) timeout: Option<Duration>,
    pub(crate) base_snapshot: Option<Arc<Snapshot>>,
}

impl std::fmt::Debug for NodeContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeContext")
            .field("execution_id", &self.exec.execution_id)
            .field("node_id", &self.node_id())
            .field("attempt", &self.attempt)
            .finish_non_exhaustive()
    }
}

impl NodeContext {
    /// The execution.
    pub fn execution_id(&self) -> &ExecutionId {
        &self.exec.execution_id
    }

    /// The running node's id.
    pub fn node_id(&self) -> &str {
        self.exec
            .flow
            .nodes
            .get_index(self.node_index)
            .map_or("", |(id, _)| id.as_str())
    }

    /// The running node's type.
    pub fn node_type(&self) -> &str {
        self.exec
            .flow
            .nodes
            .get_index(self.node_index)
            .map_or("", |(_, node)| node.node_type.as_str())
    }

    /// 1-based attempt number.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The output of the node that completed before this one, if any.
    pub fn previous_output(&self) -> Option<&Value> {
        self.previous.as_deref()
    }

    /// The node's per-attempt timeout, if it has one.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// A key unique to this node run and identical across its retry attempts and across a
    /// resume (derived from the execution id and the step number): use it for idempotency.
    pub fn run_key(&self) -> Uuid {
        crate::engine::run_key(self.exec.execution_id.as_str(), self.step)
    }

    /// The state this node saved with [`checkpoint`](Self::checkpoint) before the process
    /// stopped, when the execution was resumed from that checkpoint.
    pub fn resumed_state(&self) -> Option<&Value> {
        self.resumed.as_ref()
    }

    /// Emits a log event attributed to this node. Secret values are redacted.
    pub async fn log(&self, level: LogLevel, message: impl Into<String>, data: Option<Value>) {
        let message = message.into();
        let node_id = self.node_id().to_string();
        let exec = Arc::clone(&self.exec);
        // A journal failure is noticed by the engine when the node returns.
        let _noticed_later = detached(async move {
            exec.emitter
                .emit(move || EventKind::Log {
                    level,
                    message,
                    node_id: Some(node_id),
                    data,
                })
                .await
        })
        .await;
    }

    /// Durably records `state` for this node (journaled with a snapshot) before continuing.
    /// If the process stops, the resumed execution runs this node again with
    /// [`resumed_state`](Self::resumed_state) set to `state`.
    pub async fn checkpoint(&self, state: Value) -> std::result::Result<(), NodeError> {
        let node_id = self.node_id().to_string();
        let attempt = self.attempt;
        let base = self.base_snapshot.clone();
        let secrets = Arc::clone(&self.exec.secrets);
        let mut state = state;
        secrets.redact_value(&mut state);
        let event_state = state.clone();
        let event_node = node_id.clone();
        let exec = Arc::clone(&self.exec);
        let result = detached(async move {
            match base {
                Some(base) => exec
                    .emitter
                    .emit_with_snapshot(
                        move || EventKind::NodeCheckpoint {
                            node_id: event_node,
                            attempt,
                            state: event_state,
                        },
                        move |next_seq| {
                            let mut snapshot = (*base).clone();
                            snapshot.in_flight = Some(InFlight {
                                node_id,
                                attempt,
                                state,
                            });
                            snapshot.next_seq = next_seq;
                            snapshot.secret_keys = secrets.keys();
                            snapshot.redact(&secrets);
                            snapshot
                        },
                    )
                    .await
                    .map(|_| ()),
                None => {
                    exec.emitter
                        .emit(move || EventKind::NodeCheckpoint {
                            node_id: event_node,
                            attempt,
                            state: event_state,
                        })
                        .await
                }
            }
        })
        .await;
        result.map_err(|stop| NodeError::permanent(stop.0))
    }

    /// Completes when the execution is cancelled.
    pub fn cancelled(&self) -> WaitForCancellationFutureOwned {
        self.exec.cancel.clone().cancelled_owned()
    }

    /// Whether the execution was cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.exec.cancel.is_cancelled()
    }

    /// Runs blocking work on the runtime's bounded pool. If this future is dropped
    /// (cancellation, timeout), `work` still runs to its end in the background: keep it bounded.
    pub async fn run_blocking<F, T>(&self, work: F) -> std::result::Result<T, NodeError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        self.exec
            .pool
            .run(work)
            .await
            .map_err(|err| NodeError::new(err.to_string()))
    }
}

struct Registered {
    node: Arc<dyn NodeType>,
    spec: NodeSpec,
}

/// The node types a runtime can execute; the catalog flows are validated against.
pub struct NodeRegistry {
    types: HashMap<String, Registered>,
}

impl std::fmt::Debug for NodeRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeRegistry")
            .field("types", &self.node_types().collect::<Vec<_>>())
            .finish()
    }
}

impl NodeRegistry {
    pub(crate) fn new(nodes: Vec<Arc<dyn NodeType>>) -> Result<Self> {
        let mut types = HashMap::with_capacity(nodes.len());
        for node in nodes {
            let spec = node.spec();
            let name = spec.node_type.clone();
            if types
                .insert(name.clone(), Registered { node, spec })
                .is_some()
            {
                return Err(Error::DuplicateNodeType(name));
            }
        }
        Ok(Self { types })
    }

    /// The implementation of `node_type`.
    pub fn get(&self, node_type: &str) -> Option<&Arc<dyn NodeType>> {
        self.types.get(node_type).map(|r| &r.node)
    }

    /// Every registered type name, sorted.
    pub fn node_types(&self) -> impl Iterator<Item = &str> {
        let mut names: Vec<&str> = self.types.keys().map(String::as_str).collect();
        names.sort_unstable();
        names.into_iter()
    }
}

impl NodeCatalog for NodeRegistry {
    fn spec(&self, node_type: &str) -> Option<&NodeSpec> {
        self.types.get(node_type).map(|r| &r.spec)
    }

    fn node_types(&self) -> Vec<String> {
        NodeRegistry::node_types(self).map(str::to_string).collect()
    }
}

/// Runs an emission started from inside a node on its own task and waits for it.
///
/// The engine drops a node's future when the execution is cancelled or the node times out.
/// An emission dropped halfway could leave its entry queued in the journal without the
/// emitter counting its `seq`, so the next event (the cancellation, the failure) would reuse
/// that `seq` and be rejected as a duplicate, interrupting the execution. On its own task the
/// emission, once started, always completes; the engine's next event waits for it (the
/// emitter numbers events one at a time).
async fn detached<T: Send + 'static>(
    emission: impl Future<Output = std::result::Result<T, crate::emit::Interrupted>> + Send + 'static,
) -> std::result::Result<T, crate::emit::Interrupted> {
    match tokio::spawn(emission).await {
        Ok(result) => result,
        Err(err) => Err(crate::emit::Interrupted(format!(
            "event emission failed: {err}"
        ))),
    }
}
