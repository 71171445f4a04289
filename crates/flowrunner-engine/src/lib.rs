//! FlowRunner's durable execution engine: runs flows on the server so that they survive a
//! restart.
//!
//! * An execution pins the flow revision current when it was submitted
//!   ([`Engine::submit`]); parsed flows are cached per revision.
//! * Every runtime event is journaled through the store's single group-commit writer
//!   ([`flowrunner_store::JournalWriter`]): node completions and checkpoints (with the
//!   resumable snapshot) and terminal events are awaited before the execution continues,
//!   other events are queued in order without waiting. Live subscribers ([`Engine::watch`])
//!   only ever see events after they are durable.
//! * On [`Engine::start`] every queued or running execution is claimed (owner + lease) and
//!   resumed from its last snapshot: a node in flight runs again (at-least-once per node), a
//!   `delay` waits only its remaining time.
//! * A global cap on running executions ([`EngineConfig::max_running`]) and the flows'
//!   `metadata.concurrency` keep further executions `queued`, first in, first out.
//!
//! See `docs/executions.md` for the durability design.
#![warn(missing_docs)]

mod config;
mod engine;
mod error;
mod journal;
mod types;

pub use config::{
    DEFAULT_CANCEL_WAIT, DEFAULT_FLOW_CACHE_TTL, DEFAULT_LEASE, DEFAULT_MAX_RUNNING,
    DEFAULT_SUBSCRIBER_BUFFER, EngineConfig,
};
pub use engine::Engine;
pub use error::{Error, Result};
pub use flowrunner_domain::{ExecutionId, ExecutionStatus, FlowId, LogLevel};
pub use flowrunner_dsl::InputError;
pub use flowrunner_store::{ExecutionFilter, ExecutionRecord, Scope};
pub use types::{LiveEnd, LiveEvents, LogLine, RunRequest, StoredEvent, Submitted, Watch};
