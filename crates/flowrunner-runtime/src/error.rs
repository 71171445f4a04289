//! The runtime's error type: why an execution could not be started.

use flowrunner_domain::ExecutionId;

/// Why the runtime refused a request. Failures that happen while an execution runs are not
/// errors of this type: they end the execution with an [`crate::ExecutionOutcome`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `start`/`run` was called outside a tokio runtime.
    #[error("no tokio runtime: executions must be started from within a tokio runtime")]
    NoTokioRuntime,
    /// The caller's input does not match the flow's declared inputs.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The flow uses a node type this runtime does not know.
    #[error("node `{node_id}` uses unknown node type `{node_type}`")]
    UnknownNodeType {
        /// The node that uses it.
        node_id: String,
        /// The unknown type.
        node_type: String,
    },
    /// Two node types with the same name were registered.
    #[error("node type `{0}` is registered twice")]
    DuplicateNodeType(String),
    /// A snapshot cannot be resumed with the given flow or request.
    #[error("cannot resume execution {execution_id}: {reason}")]
    SnapshotMismatch {
        /// The snapshot's execution.
        execution_id: ExecutionId,
        /// What does not match.
        reason: String,
    },
    /// The runtime's configuration is invalid.
    #[error("invalid runtime configuration: {0}")]
    Config(String),
    /// A worker thread of the blocking pool could not be started.
    #[error("cannot start a blocking worker thread: {0}")]
    Spawn(#[from] std::io::Error),
}

/// Result with the runtime's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
