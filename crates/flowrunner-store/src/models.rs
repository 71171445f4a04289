//! The records the store reads and writes, free of any database type.

use chrono::{DateTime, Utc};
use flowrunner_domain::{
    AccountId, ExecutionId, ExecutionStatus, FlowId, LogLevel, RevisionId, Role,
};

/// A stored account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// The account id (`account-…`).
    pub id: AccountId,
    /// The email address, lowercased.
    pub email: String,
    /// Display name.
    pub name: String,
    /// What the account may do.
    pub role: Role,
    /// The password hash (bcrypt or similar; the store never sees the password).
    pub password_hash: String,
    /// When the account was created.
    pub created_at: DateTime<Utc>,
    /// When the account was last changed.
    pub updated_at: DateTime<Utc>,
    /// Tokens issued before this instant are invalid; set when the password or the role changes.
    pub tokens_valid_after: Option<DateTime<Utc>>,
}

/// What [`Store::create_account`](crate::Store::create_account) needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAccount {
    /// The email address; stored trimmed and lowercased, unique case-insensitively.
    pub email: String,
    /// Display name.
    pub name: String,
    /// Role of the new account.
    pub role: Role,
    /// The already hashed password.
    pub password_hash: String,
}

/// Changes to an account; `None` fields are left alone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccountChanges {
    /// New email address (lowercased like on creation).
    pub email: Option<String>,
    /// New display name.
    pub name: Option<String>,
    /// New role; demoting the last admin fails with [`Error::LastAdmin`](crate::Error::LastAdmin).
    pub role: Option<Role>,
    /// New password hash.
    pub password_hash: Option<String>,
}

impl AccountChanges {
    /// Whether no field is set.
    pub fn is_empty(&self) -> bool {
        self.email.is_none()
            && self.name.is_none()
            && self.role.is_none()
            && self.password_hash.is_none()
    }
}

/// Which flows a caller may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every flow (admins).
    All,
    /// Only the flows this account owns.
    Owner(AccountId),
}

impl Scope {
    /// The owner the scope is limited to, if any.
    pub fn owner(&self) -> Option<&AccountId> {
        match self {
            Scope::All => None,
            Scope::Owner(id) => Some(id),
        }
    }
}

/// A flow with its current definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowRecord {
    /// The flow id (`flow-…`).
    pub id: FlowId,
    /// The owning account.
    pub owner_id: AccountId,
    /// Flow name.
    pub name: String,
    /// Optional description.
    pub description: Option<String>,
    /// The version string of the current definition.
    pub version: String,
    /// Tags, in the order given, without duplicates.
    pub tags: Vec<String>,
    /// The current definition text (as submitted).
    pub definition: String,
    /// Number of the current revision (1, 2, …).
    pub revision: i32,
    /// Id of the current revision (`rev-…`).
    pub revision_id: RevisionId,
    /// When the flow was created.
    pub created_at: DateTime<Utc>,
    /// When the flow was last changed.
    pub updated_at: DateTime<Utc>,
}

/// What [`Store::create_flow`](crate::Store::create_flow) needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewFlow {
    /// The owning account (must exist).
    pub owner_id: AccountId,
    /// Flow name.
    pub name: String,
    /// Optional description.
    pub description: Option<String>,
    /// Version string of the definition.
    pub version: String,
    /// Tags; duplicates are dropped, order kept.
    pub tags: Vec<String>,
    /// The definition text.
    pub definition: String,
}

/// Changes to a flow; `None` fields are left alone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlowChanges {
    /// New name.
    pub name: Option<String>,
    /// New description (`Some(None)` clears it).
    pub description: Option<Option<String>>,
    /// New version string.
    pub version: Option<String>,
    /// New definition text.
    pub definition: Option<String>,
    /// New tags (replace the old ones).
    pub tags: Option<Vec<String>>,
}

/// One stored revision of a flow's definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevisionRecord {
    /// The revision id (`rev-…`).
    pub id: RevisionId,
    /// The revision number (1, 2, …).
    pub revision: i32,
    /// Version string of this definition.
    pub version: String,
    /// When the revision was stored.
    pub created_at: DateTime<Utc>,
    /// The definition text.
    pub definition: String,
}

/// A secret without its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretMeta {
    /// The secret's name.
    pub key: String,
    /// When it was first stored.
    pub created_at: DateTime<Utc>,
    /// When its value last changed.
    pub updated_at: DateTime<Utc>,
}

/// A stored execution of a flow.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecutionRecord {
    /// The execution id (`exec-…`).
    pub id: ExecutionId,
    /// The flow that ran (the flow may have been deleted since).
    pub flow_id: FlowId,
    /// The revision the execution is pinned to.
    pub revision_id: RevisionId,
    /// The number of that revision (1, 2, …).
    pub revision: i32,
    /// The flow's version string in that revision.
    pub flow_version: String,
    /// The account that started it (and may see it).
    pub account_id: AccountId,
    /// Where it stands.
    pub status: ExecutionStatus,
    /// The input it was started with.
    pub input: serde_json::Value,
    /// The flow's output, once completed.
    pub result: Option<serde_json::Value>,
    /// Why it failed.
    pub error: Option<String>,
    /// The node it failed at.
    pub error_node: Option<String>,
    /// The runtime's resumable state, opaque to the store.
    pub snapshot: Option<serde_json::Value>,
    /// The idempotency key it was started with.
    pub idempotency_key: Option<String>,
    /// The worker holding its lease.
    pub owner: Option<String>,
    /// Until when the owner's lease runs.
    pub lease_until: Option<DateTime<Utc>>,
    /// When it was accepted.
    pub created_at: DateTime<Utc>,
    /// When a worker started it.
    pub started_at: Option<DateTime<Utc>>,
    /// When it reached a terminal status.
    pub completed_at: Option<DateTime<Utc>>,
}

/// What [`JournalWriter::create_execution`](crate::JournalWriter::create_execution) needs.
#[derive(Debug, Clone, PartialEq)]
pub struct NewExecution {
    /// The flow to run.
    pub flow_id: FlowId,
    /// The revision to pin.
    pub revision_id: RevisionId,
    /// The number of that revision.
    pub revision: i32,
    /// The flow's version string in that revision.
    pub flow_version: String,
    /// The account the execution belongs to.
    pub account_id: AccountId,
    /// The input.
    pub input: serde_json::Value,
    /// Optional idempotency key: a second request with the same account, flow and key within
    /// [`IDEMPOTENCY_WINDOW`](crate::IDEMPOTENCY_WINDOW) finds the first execution instead of
    /// creating another; an older key is reused for the new execution.
    pub idempotency_key: Option<String>,
    /// The worker that will run it (its lease owner from the start), if known.
    pub owner: Option<String>,
    /// Until when that worker's lease runs.
    pub lease_until: Option<DateTime<Utc>>,
}

/// Filters for listing executions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecutionFilter {
    /// Only executions of this flow.
    pub flow_id: Option<FlowId>,
    /// Only executions with this status.
    pub status: Option<ExecutionStatus>,
}

/// One entry of an execution's journal.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecutionEvent {
    /// The execution it belongs to.
    pub execution_id: ExecutionId,
    /// Position in the execution's journal (unique per execution, increasing).
    pub seq: i64,
    /// What happened (`execution_started`, `node_completed`, `log`, …; defined by the runtime).
    pub kind: String,
    /// The node concerned.
    pub node_id: Option<String>,
    /// The type of that node.
    pub node_type: Option<String>,
    /// Severity, for log entries.
    pub level: Option<LogLevel>,
    /// Human-readable message.
    pub message: Option<String>,
    /// Structured details.
    pub data: Option<serde_json::Value>,
    /// When it happened.
    pub created_at: DateTime<Utc>,
}

/// Filters for reading an execution's journal.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// Only events with a sequence number greater than this.
    pub after_seq: Option<i64>,
    /// Only events of this kind.
    pub kind: Option<String>,
    /// Only events with this level.
    pub level: Option<LogLevel>,
    /// Only events with a level at or above this one (log lines).
    pub min_level: Option<LogLevel>,
    /// Only events that are log lines (`level` set).
    pub logs_only: bool,
}
