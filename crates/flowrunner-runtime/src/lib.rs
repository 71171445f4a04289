//! FlowRunner's embeddable flow runtime: executes validated flows on tokio.
//!
//! * Async API on tokio; blocking node work (HTTP) runs on the runtime's own bounded thread
//!   pool ([`RuntimeBuilder::blocking_threads`]), never on tokio's threads.
//! * Retries with backoff and jitter, per-attempt timeouts, `error` edges, `max_steps`,
//!   cancellation at any moment ([`ExecutionHandle::cancel`]), durable delays.
//! * Embedders add node types with [`NodeType`]; the runtime's [`NodeRegistry`] is the
//!   [`flowrunner_dsl::NodeCatalog`] flows are validated against ([`Runtime::parse`]).
//!
//! # Events and the journal
//! Every execution emits typed [`Event`]s numbered by `seq` (0, 1, 2… without gaps, continued
//! across resumes). Each event is first given to the request's [`Journal`], which the engine
//! awaits, in order, before it continues; then it is broadcast to live subscribers
//! ([`ExecutionRequest::subscribe`] from the first event, [`ExecutionHandle::subscribe`] from
//! now on). A failing journal ends the execution as [`ExecutionOutcome::Interrupted`]. Without
//! journal and subscribers no event is even built.
//!
//! # Snapshots and resume
//! With a journal, a [`Snapshot`] accompanies the `started` event, every `node_completed`
//! event, a `node_failed` event that takes an `error` edge, and every `node_checkpoint` (e.g.
//! a `delay` recording its wake-up time). Persist the latest one; after a restart,
//! [`ExecutionRequest::resume`] continues from it: completed nodes are not run again, `seq`
//! continues, and an in-flight node gets its checkpoint back
//! ([`NodeContext::resumed_state`]; a delay sleeps only the remaining time). The node that was
//! running without a checkpoint runs again from its start (at-least-once).
//!
//! # Secrets
//! `secrets.<key>` reads from the request's [`SecretProvider`]. From the moment a value is
//! read it is replaced by [`REDACTED`] (`***`) in every JSON string and message the execution
//! records: events, the [`ExecutionOutcome`], snapshots. A node's output is redacted when it is
//! recorded, so later nodes see `***` too: a secret value lives only in the rendered params of
//! the node whose template references it. Snapshots keep the keys read
//! ([`Snapshot::secret_keys`]), never the values; a resumed execution reads them again from its
//! provider and redacts them from the start. Events emitted before a value was first read are
//! not rewritten (e.g. a `started` event whose input happens to contain it).
//!
//! ```
//! use std::sync::Arc;
//! use flowrunner_runtime::{ExecutionOutcome, ExecutionRequest, Runtime};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let tokio = tokio::runtime::Runtime::new()?;
//! tokio.block_on(async {
//!     let runtime = Runtime::builder().blocking_threads(2).build()?;
//!     let parsed = runtime
//!         .parse(
//!             r#"
//! metadata:
//!   name: greet
//! inputs:
//!   name:
//!     type: string
//!     required: true
//! start: hello
//! nodes:
//!   hello:
//!     type: transform
//!     params:
//!       value: "Hello, {{ input.name }}!"
//! "#,
//!         )
//!         .map_err(|d| d.to_string())?;
//!     let request = ExecutionRequest::new(Arc::new(parsed.flow), serde_json::json!({"name": "Ada"}));
//!     let outcome = runtime.run(request).await?;
//!     assert_eq!(outcome, ExecutionOutcome::Completed { result: serde_json::json!("Hello, Ada!") });
//!     Ok(())
//! })
//! # }
//! ```
#![warn(missing_docs)]

mod builtins;
mod context;
mod emit;
mod engine;
mod error;
mod event;
mod http;
mod journal;
mod node;
mod pool;
mod retry;
mod runtime;
mod secrets;
mod snapshot;

pub use engine::ExecutionOutcome;
pub use error::{Error, Result};
pub use event::{Event, EventKind};
pub use http::{
    DEFAULT_MAX_RESPONSE_BYTES, DELIVERY_HEADER, SIGNATURE_HEADER, sign_payload, verify_signature,
};
pub use journal::{BoxFuture, Journal, JournalError, MemoryJournal};
pub use node::{NodeContext, NodeError, NodeOutput, NodeRegistry, NodeType};
pub use retry::backoff_delay;
pub use runtime::{
    DEFAULT_BLOCKING_THREADS, DEFAULT_EVENT_CAPACITY, ExecutionHandle, ExecutionRequest,
    MAX_EVENT_CAPACITY, Runtime, RuntimeBuilder,
};
pub use secrets::{REDACTED, SecretProvider, StaticSecrets};
pub use snapshot::{InFlight, SNAPSHOT_FORMAT, Snapshot};
