//! Engine configuration.

use std::time::Duration;

/// Default [`EngineConfig::max_running`]: room for 10,000 executions waiting in `delay` with
/// headroom.
pub const DEFAULT_MAX_RUNNING: usize = 20_000;
/// Default [`EngineConfig::lease`].
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);
/// Default [`EngineConfig::subscriber_buffer`].
pub const DEFAULT_SUBSCRIBER_BUFFER: usize = 1024;
/// Default [`EngineConfig::flow_cache_ttl`].
pub const DEFAULT_FLOW_CACHE_TTL: Duration = Duration::from_secs(1);
/// Default [`EngineConfig::cancel_wait`].
pub const DEFAULT_CANCEL_WAIT: Duration = Duration::from_secs(10);

/// How an [`Engine`](crate::Engine) runs.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// This process's name as lease owner (default: `worker-<random uuid>`).
    pub worker_id: String,
    /// Executions running at once in this process (started and not finished, including those
    /// waiting in a `delay`); further ones wait as `queued`, first in, first out. At least 1.
    pub max_running: usize,
    /// How long a claimed execution stays owned without renewal; renewed every `lease / 3`.
    pub lease: Duration,
    /// Events buffered per live subscriber ([`Engine::watch`](crate::Engine::watch)); a
    /// subscriber further behind is dropped. At least 1.
    pub subscriber_buffer: usize,
    /// How long [`Engine::cancel`](crate::Engine::cancel) waits for a running execution to
    /// persist its cancellation.
    pub cancel_wait: Duration,
    /// Most writes the store's writer commits in one transaction.
    pub max_batch: usize,
    /// How long [`Engine::submit`](crate::Engine::submit) reuses a flow it read (its current
    /// revision and owner) instead of reading it again. Changes made through this process's
    /// store are seen at once; changes made by another process (several servers on one
    /// PostgreSQL database) after at most this long. Zero reads the flow on every run.
    pub flow_cache_ttl: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            worker_id: format!("worker-{}", uuid::Uuid::new_v4().simple()),
            max_running: DEFAULT_MAX_RUNNING,
            lease: DEFAULT_LEASE,
            subscriber_buffer: DEFAULT_SUBSCRIBER_BUFFER,
            cancel_wait: DEFAULT_CANCEL_WAIT,
            max_batch: flowrunner_store::DEFAULT_MAX_BATCH,
            flow_cache_ttl: DEFAULT_FLOW_CACHE_TTL,
        }
    }
}
