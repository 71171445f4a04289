//! FlowRunner's embeddable flow runtime: executes validated flows on tokio.
//!
//! * Async API on tokio; blocking node work (HTTP) runs on the runtime's own bounded thread
//!   pool ([`RuntimeBuilder::blocking_threads`]), never on tokio's threads.
//! * Every execution emits typed [`Event`]s with a per-execution `seq`, to an optional
//!   [`Journal`] (awaited, in order) and to live [`tokio::sync::broadcast`] subscribers.
//! * Retries with backoff and jitter, per-attempt timeouts, `error` edges, `max_steps`,
//!   cancellation at any moment, durable delays.
//! * Resumable: a [`Snapshot`] taken after each node (and at node checkpoints) restarts the
//!   execution in another process.
//! * Secrets come from a [`SecretProvider`]; every value read is redacted (`***`) from events,
//!   results and snapshots (see [`secrets`](crate::SecretProvider) for the exact semantics).
//! * Embedders add node types with [`NodeType`]; the runtime's [`NodeRegistry`] is the
//!   [`flowrunner_dsl::NodeCatalog`] flows are validated against ([`Runtime::parse`]).
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
    DEFAULT_BLOCKING_THREADS, DEFAULT_EVENT_CAPACITY, ExecutionHandle, ExecutionRequest, Runtime,
    RuntimeBuilder,
};
pub use secrets::{REDACTED, SecretProvider, StaticSecrets};
pub use snapshot::{InFlight, SNAPSHOT_FORMAT, Snapshot};
