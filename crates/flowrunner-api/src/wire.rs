//! The JSON shapes of the HTTP API (requests and responses), as written in the API reference.

use chrono::{DateTime, SecondsFormat, Utc};
use flowrunner_domain::{ExecutionStatus, LogLevel, Role};
use flowrunner_dsl::Diagnostic;
use flowrunner_engine::{ExecutionRecord, LogLine};
use flowrunner_store::{Account, FlowRecord, RevisionRecord, SecretMeta};
use serde::{Deserialize, Serialize};

/// RFC 3339 UTC with millisecond precision and a `Z` suffix, e.g. `2023-01-01T12:00:00.000Z`.
pub fn timestamp(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// `POST /auth/login` body.
#[derive(Debug, Deserialize)]
pub struct LoginRequest {
    /// The account's email.
    pub username: String,
    /// Its password.
    pub password: String,
}

/// Login and refresh answer.
#[derive(Debug, Serialize)]
pub struct TokenResponse {
    /// The bearer token.
    pub token: String,
    /// When it expires.
    pub expires_at: String,
    /// The account it belongs to.
    pub account_id: String,
}

/// `{"message": "..."}` answers.
#[derive(Debug, Serialize)]
pub struct MessageResponse {
    /// What happened.
    pub message: &'static str,
}

/// `POST /flows` and `PUT /flows/{id}` body. Absent fields come from the definition's metadata.
#[derive(Debug, Deserialize)]
pub struct FlowRequest {
    /// Flow name (default: `metadata.name`).
    pub name: Option<String>,
    /// Description (default: `metadata.description`).
    pub description: Option<String>,
    /// The YAML definition; required on create, the current one is kept when absent on update.
    pub definition: Option<String>,
    /// Tags (default: `metadata.tags`).
    pub tags: Option<Vec<String>>,
}

/// `POST /flows/validate` body.
#[derive(Debug, Deserialize)]
pub struct ValidateRequest {
    /// The YAML definition to check.
    pub definition: String,
}

/// `POST /flows/validate` answer.
#[derive(Debug, Serialize)]
pub struct ValidateResponse {
    /// Whether the definition has no errors (warnings allowed).
    pub valid: bool,
    /// Every error and warning, sorted by position.
    pub diagnostics: Vec<Diagnostic>,
}

/// A flow in lists and create/update answers (no definition).
#[derive(Debug, Serialize)]
pub struct FlowSummary {
    /// `flow-…`.
    pub id: String,
    /// Name.
    pub name: String,
    /// Description, `null` when none.
    pub description: Option<String>,
    /// Version of the current definition.
    pub version: String,
    /// Creation time.
    pub created_at: String,
    /// Last change.
    pub updated_at: String,
    /// Tags.
    pub tags: Vec<String>,
}

impl From<&FlowRecord> for FlowSummary {
    fn from(f: &FlowRecord) -> Self {
        Self {
            id: f.id.to_string(),
            name: f.name.clone(),
            description: f.description.clone(),
            version: f.version.clone(),
            created_at: timestamp(&f.created_at),
            updated_at: timestamp(&f.updated_at),
            tags: f.tags.clone(),
        }
    }
}

/// `GET /flows/{id}` answer: the summary plus the definition.
#[derive(Debug, Serialize)]
pub struct FlowDetail {
    /// `flow-…`.
    pub id: String,
    /// Name.
    pub name: String,
    /// Description, `null` when none.
    pub description: Option<String>,
    /// Version of the current definition.
    pub version: String,
    /// The current definition text.
    pub definition: String,
    /// Creation time.
    pub created_at: String,
    /// Last change.
    pub updated_at: String,
    /// Tags.
    pub tags: Vec<String>,
}

impl From<FlowRecord> for FlowDetail {
    fn from(f: FlowRecord) -> Self {
        Self {
            id: f.id.to_string(),
            created_at: timestamp(&f.created_at),
            updated_at: timestamp(&f.updated_at),
            name: f.name,
            description: f.description,
            version: f.version,
            definition: f.definition,
            tags: f.tags,
        }
    }
}

/// `GET /flows` answer.
#[derive(Debug, Serialize)]
pub struct FlowList {
    /// The page.
    pub flows: Vec<FlowSummary>,
    /// All matches.
    pub total: i64,
    /// Page size used.
    pub limit: u32,
    /// Offset used.
    pub offset: u64,
}

/// One stored revision in `GET /flows/{id}/versions`.
#[derive(Debug, Serialize)]
pub struct RevisionResponse {
    /// `rev-…`.
    pub id: String,
    /// 1, 2, …
    pub revision: i32,
    /// `metadata.version` of that definition.
    pub version: String,
    /// When it was stored.
    pub created_at: String,
    /// The definition text.
    pub definition: String,
}

impl From<RevisionRecord> for RevisionResponse {
    fn from(r: RevisionRecord) -> Self {
        Self {
            id: r.id.to_string(),
            revision: r.revision,
            version: r.version,
            created_at: timestamp(&r.created_at),
            definition: r.definition,
        }
    }
}

/// `GET /flows/{id}/versions` answer.
#[derive(Debug, Serialize)]
pub struct RevisionList {
    /// The flow.
    pub flow_id: String,
    /// Oldest first.
    pub versions: Vec<RevisionResponse>,
}

/// `POST /accounts` body.
#[derive(Debug, Deserialize)]
pub struct CreateAccountRequest {
    /// Display name.
    pub name: String,
    /// Email (login name).
    pub email: String,
    /// Password.
    pub password: String,
    /// Role, default `user`.
    pub role: Option<Role>,
}

/// `PUT /accounts/{id}` body; absent fields are left alone.
#[derive(Debug, Deserialize)]
pub struct UpdateAccountRequest {
    /// New display name.
    pub name: Option<String>,
    /// New email.
    pub email: Option<String>,
    /// New password (invalidates the account's existing tokens).
    pub password: Option<String>,
    /// New role (admins only).
    pub role: Option<Role>,
}

/// An account as the API shows it (never the password hash).
#[derive(Debug, Serialize)]
pub struct AccountResponse {
    /// `account-…`.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Email.
    pub email: String,
    /// Role.
    pub role: Role,
    /// Creation time.
    pub created_at: String,
    /// Last change.
    pub updated_at: String,
}

impl From<&Account> for AccountResponse {
    fn from(a: &Account) -> Self {
        Self {
            id: a.id.to_string(),
            name: a.name.clone(),
            email: a.email.clone(),
            role: a.role,
            created_at: timestamp(&a.created_at),
            updated_at: timestamp(&a.updated_at),
        }
    }
}

/// `GET /accounts` answer.
#[derive(Debug, Serialize)]
pub struct AccountList {
    /// The page.
    pub accounts: Vec<AccountResponse>,
    /// All matches.
    pub total: i64,
    /// Page size used.
    pub limit: u32,
    /// Offset used.
    pub offset: u64,
}

/// `POST /accounts/{id}/secrets` body.
#[derive(Debug, Deserialize)]
pub struct PutSecretRequest {
    /// `^[A-Z_][A-Z0-9_]{0,127}$`.
    pub key: String,
    /// Up to 64 KiB.
    pub value: String,
}

/// A secret's metadata (never its value).
#[derive(Debug, Serialize)]
pub struct SecretResponse {
    /// Name.
    pub key: String,
    /// First stored.
    pub created_at: String,
    /// Value last changed.
    pub updated_at: String,
}

impl From<&SecretMeta> for SecretResponse {
    fn from(s: &SecretMeta) -> Self {
        Self {
            key: s.key.clone(),
            created_at: timestamp(&s.created_at),
            updated_at: timestamp(&s.updated_at),
        }
    }
}

/// `GET /accounts/{id}/secrets` answer.
#[derive(Debug, Serialize)]
pub struct SecretList {
    /// Ordered by key.
    pub secrets: Vec<SecretResponse>,
}

/// `GET /healthz` answer.
#[derive(Debug, Serialize)]
pub struct HealthResponse {
    /// `ok`.
    pub status: &'static str,
    /// `sqlite` or `postgres`.
    pub database: &'static str,
}

/// `POST /flows/{id}/run` body (an empty body counts as `{}`).
#[derive(Debug, Default, Deserialize)]
pub struct RunFlowRequest {
    /// The execution's input: a JSON object (absent or `null` means `{}`).
    #[serde(default)]
    pub input: Option<serde_json::Value>,
}

/// `POST /flows/{id}/run` answer (202).
#[derive(Debug, Serialize)]
pub struct RunFlowResponse {
    /// `exec-…`.
    pub execution_id: String,
    /// The flow.
    pub flow_id: String,
    /// `queued` or `running` (any status when an idempotency key found an earlier execution).
    pub status: ExecutionStatus,
    /// When the execution was accepted.
    pub created_at: String,
}

impl From<&ExecutionRecord> for RunFlowResponse {
    fn from(e: &ExecutionRecord) -> Self {
        Self {
            execution_id: e.id.to_string(),
            flow_id: e.flow_id.to_string(),
            status: e.status,
            created_at: timestamp(&e.created_at),
        }
    }
}

/// `POST /flows/{id}/run?wait=…` answer: the run answer's `execution_id` beside every field
/// of `GET /executions/{id}` (200 once finished, 202 while still queued or running).
#[derive(Debug, Serialize)]
pub struct RunWaitResponse {
    /// `exec-…` (also in `id`).
    pub execution_id: String,
    /// The execution as it is when the answer is sent.
    #[serde(flatten)]
    pub execution: ExecutionDetail,
}

impl From<ExecutionRecord> for RunWaitResponse {
    fn from(e: ExecutionRecord) -> Self {
        Self {
            execution_id: e.id.to_string(),
            execution: ExecutionDetail::from(e),
        }
    }
}

/// Milliseconds from start (or acceptance, when it never started) to the end; `None` until
/// the execution has finished.
fn duration_ms(e: &ExecutionRecord) -> Option<i64> {
    let end = e.completed_at?;
    let start = e.started_at.unwrap_or(e.created_at);
    Some((end - start).num_milliseconds().max(0))
}

/// The flow revision an execution is pinned to.
#[derive(Debug, Serialize)]
pub struct ExecutionRevision {
    /// `rev-…`.
    pub id: String,
    /// 1, 2, …
    pub number: i32,
    /// `metadata.version` of that revision.
    pub version: String,
}

/// `GET /executions/{id}` answer.
#[derive(Debug, Serialize)]
pub struct ExecutionDetail {
    /// `exec-…`.
    pub id: String,
    /// The flow (it may have been deleted since).
    pub flow_id: String,
    /// `queued`, `running`, `completed`, `failed` or `cancelled`.
    pub status: ExecutionStatus,
    /// The input (defaults applied).
    pub input: serde_json::Value,
    /// The flow's output once completed, else `null`.
    pub result: Option<serde_json::Value>,
    /// Why it failed, else `null`.
    pub error: Option<String>,
    /// The node it failed at, else `null`.
    pub node_id: Option<String>,
    /// When it was accepted.
    pub created_at: String,
    /// When it started running, `null` while queued.
    pub started_at: Option<String>,
    /// When it finished, `null` until then.
    pub completed_at: Option<String>,
    /// Milliseconds it ran, `null` until finished.
    pub duration: Option<i64>,
    /// The flow revision it runs.
    pub revision: ExecutionRevision,
}

impl From<ExecutionRecord> for ExecutionDetail {
    fn from(e: ExecutionRecord) -> Self {
        Self {
            id: e.id.to_string(),
            flow_id: e.flow_id.to_string(),
            status: e.status,
            created_at: timestamp(&e.created_at),
            started_at: e.started_at.as_ref().map(timestamp),
            completed_at: e.completed_at.as_ref().map(timestamp),
            duration: duration_ms(&e),
            revision: ExecutionRevision {
                id: e.revision_id.to_string(),
                number: e.revision,
                version: e.flow_version,
            },
            input: e.input,
            result: e.result,
            error: e.error,
            node_id: e.error_node,
        }
    }
}

/// An execution in `GET /executions`.
#[derive(Debug, Serialize)]
pub struct ExecutionSummary {
    /// `exec-…`.
    pub id: String,
    /// The flow.
    pub flow_id: String,
    /// Status.
    pub status: ExecutionStatus,
    /// When it started running, `null` while queued.
    pub started_at: Option<String>,
    /// When it finished.
    pub completed_at: Option<String>,
    /// Milliseconds it ran, `null` until finished.
    pub duration: Option<i64>,
    /// Why it failed (only present for failed executions).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl From<&ExecutionRecord> for ExecutionSummary {
    fn from(e: &ExecutionRecord) -> Self {
        Self {
            id: e.id.to_string(),
            flow_id: e.flow_id.to_string(),
            status: e.status,
            started_at: e.started_at.as_ref().map(timestamp),
            completed_at: e.completed_at.as_ref().map(timestamp),
            duration: duration_ms(e),
            error: e.error.clone(),
        }
    }
}

/// `GET /executions` answer.
#[derive(Debug, Serialize)]
pub struct ExecutionList {
    /// The page, newest first.
    pub executions: Vec<ExecutionSummary>,
    /// All matches.
    pub total: i64,
    /// Page size used.
    pub limit: u32,
    /// Offset used.
    pub offset: u64,
}

/// One line of `GET /executions/{id}/logs`.
#[derive(Debug, Serialize)]
pub struct LogEntry {
    /// When it was written.
    pub timestamp: String,
    /// `debug`, `info`, `warn` or `error`.
    pub level: LogLevel,
    /// Text.
    pub message: String,
    /// The node concerned, `null` for execution-level lines.
    pub node_id: Option<String>,
    /// The type of that node, `null` when there is no node.
    pub node_type: Option<String>,
    /// Structured details, omitted when none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
}

impl From<LogLine> for LogEntry {
    fn from(l: LogLine) -> Self {
        Self {
            timestamp: timestamp(&l.timestamp),
            level: l.level,
            message: l.message,
            node_id: l.node_id,
            node_type: l.node_type,
            data: l.data,
        }
    }
}

/// `GET /executions/{id}/logs` answer.
#[derive(Debug, Serialize)]
pub struct LogList {
    /// The page, oldest first.
    pub logs: Vec<LogEntry>,
    /// All matching lines.
    pub total: i64,
    /// Page size used.
    pub limit: u32,
    /// Offset used.
    pub offset: u64,
}
