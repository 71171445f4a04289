//! [`Engine`]: submission, scheduling, cancellation, queries and live watching of executions.

use std::sync::Arc;

use flowrunner_domain::{ExecutionId, LogLevel};
use flowrunner_runtime::Runtime;
use flowrunner_store::{ExecutionFilter, ExecutionRecord, Scope, Store};

use crate::config::EngineConfig;
use crate::error::{Error, Result};
use crate::types::{LogLine, RunRequest, Submitted, Watch};

struct Inner {
    store: Store,
    #[allow(dead_code)]
    runtime: Runtime,
    #[allow(dead_code)]
    config: EngineConfig,
}

/// The durable execution engine. Cheap to clone (shared state).
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").finish_non_exhaustive()
    }
}

impl Engine {
    /// Starts the store's journal writer, claims and resumes every unfinished execution, and
    /// starts lease renewal. Call inside a tokio runtime.
    pub async fn start(store: Store, runtime: Runtime, config: EngineConfig) -> Result<Engine> {
        Ok(Engine { inner: Arc::new(Inner { store, runtime, config }) })
    }

    /// Creates an execution of the flow's current revision and schedules it. With an
    /// idempotency key used for the same flow and account in the last 24 hours, returns that
    /// execution (`created: false`). [`Error::NotFound`] if the flow does not exist (or was
    /// deleted, or is not visible in `req.scope`); [`Error::InvalidInput`] with one entry per
    /// field.
    pub async fn submit(&self, req: RunRequest) -> Result<Submitted> {
        let _ = req;
        Err(Error::Runtime("not implemented yet".into()))
    }

    /// Cancels an execution. A queued one is cancelled at once; a running one is interrupted
    /// (its running node stops) and the call waits, bounded by
    /// [`EngineConfig::cancel_wait`], until the cancellation is persisted. Returns the record
    /// (status `cancelled`). [`Error::NotFound`] when it does not exist or belongs to another
    /// account; [`Error::AlreadyFinished`] when it already ended.
    pub async fn cancel(&self, id: &ExecutionId, scope: Scope) -> Result<ExecutionRecord> {
        let _ = (id, scope);
        Err(Error::NotFound)
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
        Ok(self.inner.store.list_executions(scope, filter, limit, offset).await?)
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
        let _ = (id, scope, min_level, limit, offset);
        Ok(None)
    }

    /// Watches an execution: its committed history, then live events. `None` when the
    /// execution is not found in `scope`.
    pub async fn watch(&self, id: &ExecutionId, scope: Scope) -> Result<Option<Watch>> {
        let _ = (id, scope);
        Ok(None)
    }

    /// Stops claiming work, stops running executions without marking them (they resume on
    /// the next start), flushes the writer and releases this worker's leases.
    pub async fn shutdown(&self) {}
}
