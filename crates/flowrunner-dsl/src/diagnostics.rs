//! Problems found while parsing and validating a flow.

use std::fmt;

use serde::{Deserialize, Serialize};

/// How bad a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The flow cannot be used.
    Error,
    /// The flow works but something looks wrong (e.g. an unreachable node).
    Warning,
}

impl Severity {
    /// `error` or `warning`.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Stable diagnostic codes (snake_case). See `docs/dsl.md` for what each means.
pub mod codes {
    /// Malformed YAML.
    pub const YAML_SYNTAX: &str = "yaml_syntax";
    /// A mapping key appears twice.
    pub const DUPLICATE_KEY: &str = "duplicate_key";
    /// A key that the language does not know.
    pub const UNKNOWN_FIELD: &str = "unknown_field";
    /// A required key is missing.
    pub const MISSING_FIELD: &str = "missing_field";
    /// A value has the wrong YAML type (e.g. a list where a mapping is expected).
    pub const INVALID_TYPE: &str = "invalid_type";
    /// A value has the right type but is not allowed (e.g. `max_steps: 0`).
    pub const INVALID_VALUE: &str = "invalid_value";
    /// A node id that is not `[A-Za-z0-9_][A-Za-z0-9_-]*`.
    pub const INVALID_NODE_ID: &str = "invalid_node_id";
    /// `type` names no known node type.
    pub const UNKNOWN_NODE_TYPE: &str = "unknown_node_type";
    /// A param value does not fit the node type.
    pub const INVALID_PARAM: &str = "invalid_param";
    /// A required param is missing.
    pub const MISSING_PARAM: &str = "missing_param";
    /// A param the node type does not accept.
    pub const UNKNOWN_PARAM: &str = "unknown_param";
    /// `next` or `start` names a node that does not exist.
    pub const UNKNOWN_NODE: &str = "unknown_node";
    /// A `next` key that the node type never produces.
    pub const UNKNOWN_OUTCOME: &str = "unknown_outcome";
    /// (warning) A switch `next` key that is not one of its `cases`.
    pub const UNKNOWN_CASE: &str = "unknown_case";
    /// (warning) A node that no path from `start` reaches.
    pub const UNREACHABLE_NODE: &str = "unreachable_node";
    /// A duration that `parse_duration` rejects, or zero where it must be positive.
    pub const INVALID_DURATION: &str = "invalid_duration";
    /// A template or expression that does not compile.
    pub const TEMPLATE_SYNTAX: &str = "template_syntax";
    /// A template reads `nodes.<id>` for a node that does not exist.
    pub const UNKNOWN_NODE_REFERENCE: &str = "unknown_node_reference";
    /// A template reads a root variable that does not exist.
    pub const UNKNOWN_VARIABLE: &str = "unknown_variable";
    /// A bad `inputs` entry (unknown type, default of the wrong type...).
    pub const INVALID_INPUT: &str = "invalid_input";
    /// A bad `retry` block.
    pub const INVALID_RETRY: &str = "invalid_retry";

    /// Every code, for documentation and tests.
    pub const ALL: &[&str] = &[
        YAML_SYNTAX,
        DUPLICATE_KEY,
        UNKNOWN_FIELD,
        MISSING_FIELD,
        INVALID_TYPE,
        INVALID_VALUE,
        INVALID_NODE_ID,
        UNKNOWN_NODE_TYPE,
        INVALID_PARAM,
        MISSING_PARAM,
        UNKNOWN_PARAM,
        UNKNOWN_NODE,
        UNKNOWN_OUTCOME,
        UNKNOWN_CASE,
        UNREACHABLE_NODE,
        INVALID_DURATION,
        TEMPLATE_SYNTAX,
        UNKNOWN_NODE_REFERENCE,
        UNKNOWN_VARIABLE,
        INVALID_INPUT,
        INVALID_RETRY,
    ];
}

/// One problem, with its 1-based position in the source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// Stable snake_case code, see [`codes`].
    pub code: String,
    /// Human explanation.
    pub message: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// Id of the node the problem is in, if any.
    pub node: Option<String>,
}

impl Diagnostic {
    /// An error diagnostic.
    pub fn error(code: &str, message: impl Into<String>, line: usize, column: usize) -> Self {
        Diagnostic {
            severity: Severity::Error,
            code: code.to_string(),
            message: message.into(),
            line,
            column,
            node: None,
        }
    }

    /// A warning diagnostic.
    pub fn warning(code: &str, message: impl Into<String>, line: usize, column: usize) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(code, message, line, column)
        }
    }

    /// Sets the node id.
    pub fn in_node(mut self, node: Option<&str>) -> Self {
        self.node = node.map(str::to_string);
        self
    }

    /// Whether this is an error (not a warning).
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// Renders for a terminal: `file.yaml:12:5: error[unknown_node] node `a`: ...`.
    pub fn render_with_file(&self, file: &str) -> String {
        format!("{file}:{self}")
    }

    fn sort_key(&self) -> (usize, usize, Severity, &str, &str) {
        (
            self.line,
            self.column,
            self.severity,
            &self.code,
            &self.message,
        )
    }
}

impl fmt::Display for Diagnostic {
    /// `line:col: severity[code] node `x`: message` (the node part only when known).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: {}[{}] ",
            self.line, self.column, self.severity, self.code
        )?;
        if let Some(node) = &self.node {
            write!(f, "node `{node}`: ")?;
        }
        f.write_str(&self.message)
    }
}

/// Sorts diagnostics by position (then severity, code, message) and removes exact duplicates.
pub fn sort_diagnostics(diags: &mut Vec<Diagnostic>) {
    diags.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
    diags.dedup();
}

/// All diagnostics of a flow that did not parse: errors and warnings, sorted by position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    /// The errors only.
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.0.iter().filter(|d| d.is_error())
    }

    /// Number of errors (warnings not counted).
    pub fn error_count(&self) -> usize {
        self.errors().count()
    }

    /// One line per diagnostic, each prefixed with `file:`.
    pub fn render_with_file(&self, file: &str) -> String {
        self.0
            .iter()
            .map(|d| d.render_with_file(file) + "\n")
            .collect()
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}
