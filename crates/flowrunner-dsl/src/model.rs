//! The validated, typed flow graph that the parser produces and the runtime executes.

use std::time::Duration;

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

use crate::template::ValueTemplate;

/// The outcome name taken after a node succeeds.
pub const OUTCOME_DEFAULT: &str = "default";
/// The outcome name taken after a node has failed for good (after its retries).
pub const OUTCOME_ERROR: &str = "error";

/// A parsed and validated flow.
#[derive(Debug, Clone)]
pub struct Flow {
    /// `metadata` block.
    pub metadata: Metadata,
    /// Declared inputs, in document order.
    pub inputs: IndexMap<String, InputSpec>,
    /// Id of the first node to run.
    pub start: String,
    /// Nodes by id, in document order.
    pub nodes: IndexMap<String, Node>,
    /// Template rendered at the end as the execution's result; `None` means the last node's output.
    pub output: Option<ValueTemplate>,
}

/// The `metadata` block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metadata {
    /// Required human name.
    pub name: String,
    /// Optional description.
    pub description: Option<String>,
    /// Version string, default `1.0.0`.
    pub version: String,
    /// Run-time guard against endless loops: the most node runs one execution may make (default 1000).
    pub max_steps: u32,
    /// Optional limit of concurrently running executions of this flow (used by the server).
    pub concurrency: Option<u32>,
    /// Optional tags.
    pub tags: Vec<String>,
}

/// Type of a declared input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InputType {
    /// A JSON string.
    String,
    /// Any JSON number.
    Number,
    /// A JSON number without fractional part.
    Integer,
    /// `true` or `false`.
    Boolean,
    /// A JSON object.
    Object,
    /// A JSON array.
    Array,
}

/// One declared input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputSpec {
    /// Expected JSON type.
    #[serde(rename = "type")]
    pub ty: InputType,
    /// Whether the caller must supply it (ignored when a default exists).
    pub required: bool,
    /// Value used when the caller omits it.
    pub default: Option<serde_json::Value>,
    /// Optional description.
    pub description: Option<String>,
}

/// A node of the graph.
#[derive(Debug, Clone)]
pub struct Node {
    /// The node id (its key under `nodes`).
    pub id: String,
    /// The node type, e.g. `http.request`.
    pub node_type: String,
    /// `params` as written (strings not yet rendered).
    pub raw_params: serde_json::Value,
    /// `params` with every string compiled as a template.
    pub params: ValueTemplate,
    /// Outcome -> next node id.
    pub next: IndexMap<String, String>,
    /// Retry policy; `None` means one attempt.
    pub retry: Option<RetryPolicy>,
    /// Per-attempt timeout.
    pub timeout: Option<Duration>,
    /// Optional description.
    pub description: Option<String>,
    /// Where the node is defined in the source.
    pub position: Position,
}

/// Backoff between retry attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backoff {
    /// Always `initial_delay`.
    Fixed,
    /// `initial_delay * 2^(attempt-1)`, capped at `max_delay`.
    Exponential,
}

/// A node's `retry` block.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Total attempts including the first (>= 1).
    pub max_attempts: u32,
    /// Backoff shape.
    pub backoff: Backoff,
    /// Delay before the second attempt.
    pub initial_delay: Duration,
    /// Upper bound of any delay.
    pub max_delay: Duration,
    /// Whether to randomise each delay (full jitter between 50% and 100%).
    pub jitter: bool,
}

/// 1-based line and column in the source text.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Position {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
}
