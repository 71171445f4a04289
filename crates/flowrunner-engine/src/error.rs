//! The engine's error type.

use flowrunner_dsl::InputError;

/// Everything an engine operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The flow or execution does not exist, or is not visible to the caller's scope.
    #[error("not found")]
    NotFound,
    /// The execution already reached a terminal status (HTTP 409).
    #[error("the execution has already finished")]
    AlreadyFinished,
    /// The input does not match the flow's declared inputs (HTTP 422); one entry per field.
    #[error("invalid input: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    InvalidInput(Vec<InputError>),
    /// The stored flow definition no longer parses with this runtime (e.g. a node type was
    /// removed); the message lists the diagnostics.
    #[error("the flow definition is invalid: {0}")]
    InvalidFlow(String),
    /// The engine is shutting down and accepts no new work.
    #[error("the engine is shutting down")]
    ShuttingDown,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] flowrunner_store::Error),
    /// The runtime refused to start an execution.
    #[error("runtime error: {0}")]
    Runtime(String),
}

/// The engine's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<flowrunner_runtime::Error> for Error {
    fn from(err: flowrunner_runtime::Error) -> Self {
        Error::Runtime(err.to_string())
    }
}
