//! FlowRunner's persistence: accounts, flows and their revisions, encrypted secrets, revoked
//! tokens and settings, on SQLite or PostgreSQL through one diesel code path.
//!
//! * [`Store::open`] picks the backend from the URL scheme (`sqlite://path`, `postgres://…`,
//!   `postgresql://…`), builds an r2d2 pool (SQLite connections get WAL, `busy_timeout`,
//!   `foreign_keys=ON`, `synchronous=NORMAL`) and applies the embedded migrations found in
//!   `migrations/sqlite` and `migrations/postgres` at the repository root.
//! * [`Store`] is async: every call runs the synchronous diesel code of [`BlockingStore`] on
//!   tokio's blocking pool.
//! * Executions and their append-only journal (`execution_events`) are written only by the
//!   single group-commit [`JournalWriter`] ([`Store::start_writer`]): creation, journal entries
//!   with their [`RowChange`] (start, finish: at most one terminal status), leases and claims.
//!   [`Store`] only reads them (get, list, journal pages). Flows, revisions and accounts are
//!   referenced by id only, so history outlives them.
//! * Secrets are encrypted with ChaCha20-Poly1305 under the configured 32-byte key, bound to
//!   their account and name.
//! * [`testing::TestDatabase`] gives tests a fresh SQLite file or PostgreSQL database.
//!
//! This is the only FlowRunner crate that knows diesel; no diesel type appears in its API.
#![warn(missing_docs)]

mod accounts;
mod config;
mod conn;
mod crypto;
mod error;
mod executions;
mod flows;
mod models;
mod schema;
mod secrets;
mod store;
pub mod testing;
mod time;
mod tokens;
mod writer;

pub use config::{Backend, DEFAULT_POOL_SIZE, StoreConfig, redact_url};
pub use crypto::{format_secret_key, generate_secret_key, parse_secret_key};
pub use error::{BoxError, Error, Result};
pub use executions::IDEMPOTENCY_WINDOW;
pub use models::{
    Account, AccountChanges, EventFilter, ExecutionEvent, ExecutionFilter, ExecutionRecord,
    FlowChanges, FlowRecord, NewAccount, NewExecution, NewFlow, RevisionRecord, Scope, SecretMeta,
};
pub use store::{BlockingStore, Store};
pub use writer::{
    ClaimScope, ClaimedExecution, DEFAULT_MAX_BATCH, DEFAULT_WAL_RESTART_FRAMES,
    DEFAULT_WRITER_QUEUE, JournalEntry, JournalWriter, NewEvent, RowChange, Ticket,
    UNAWAITED_WINDOW, WriterConfig, WriterStats,
};
