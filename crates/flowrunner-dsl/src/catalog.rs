//! What each node type accepts: its params, their kinds, and the outcomes it produces.
//!
//! The parser checks every node against a [`NodeCatalog`]. [`BuiltinCatalog`] knows the eight
//! built-in types; the runtime implements [`NodeCatalog`] for its registry (built-ins plus
//! types added by an embedder).

use std::sync::LazyLock;

use serde::Serialize;

/// How a param value is checked. A template string (containing `{{` or `{%`) is accepted for
/// every kind because its value is only known at run time; constants are checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ParamKind {
    /// Any JSON value.
    Any,
    /// A string.
    String,
    /// Any number.
    Number,
    /// A whole number.
    Integer,
    /// `true` / `false`.
    Boolean,
    /// A mapping.
    Object,
    /// A list.
    Array,
    /// A duration string such as `250ms`, `30s`, `5m` (see `flowrunner_domain::parse_duration`).
    Duration,
    /// A condition-like expression: a string without `{{` is a bare minijinja expression
    /// (`input.amount > 100`), a `{{ ... }}` string a template; booleans are accepted as
    /// constants.
    Expression,
    /// One of the listed strings (exact match).
    OneOf(Vec<String>),
    /// A mapping whose values are strings (e.g. HTTP headers).
    StringMap,
    /// HTTP status codes: an integer, a range string `"200-299"`, or a list of these.
    StatusList,
    /// An RFC 3339 timestamp string, e.g. `2030-01-01T00:00:00Z`.
    Timestamp,
    /// A list of scalars (strings, numbers, booleans), e.g. switch `cases`.
    ScalarList,
}

impl ParamKind {
    /// Short human name, used in diagnostics and docs.
    pub fn describe(&self) -> String {
        match self {
            ParamKind::Any => "any value".into(),
            ParamKind::String => "a string".into(),
            ParamKind::Number => "a number".into(),
            ParamKind::Integer => "an integer".into(),
            ParamKind::Boolean => "a boolean".into(),
            ParamKind::Object => "a mapping".into(),
            ParamKind::Array => "a list".into(),
            ParamKind::Duration => "a duration such as `250ms`, `30s` or `5m`".into(),
            ParamKind::Expression => "an expression string".into(),
            ParamKind::OneOf(v) => format!(
                "one of {}",
                v.iter()
                    .map(|s| format!("`{s}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            ParamKind::StringMap => "a mapping of strings".into(),
            ParamKind::StatusList => {
                "a status code, a range such as \"200-299\", or a list of these".into()
            }
            ParamKind::Timestamp => "an RFC 3339 timestamp such as `2030-01-01T00:00:00Z`".into(),
            ParamKind::ScalarList => "a list of strings, numbers or booleans".into(),
        }
    }
}

/// One param a node type accepts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ParamSpec {
    /// Key under `params`.
    pub name: String,
    /// How the value is checked.
    pub kind: ParamKind,
    /// Whether the param must be present.
    pub required: bool,
    /// Human description (also shown by `flowrunner nodes`-style listings).
    pub description: String,
}

impl ParamSpec {
    /// A required param.
    pub fn required(name: &str, kind: ParamKind, description: &str) -> Self {
        ParamSpec {
            name: name.into(),
            kind,
            required: true,
            description: description.into(),
        }
    }

    /// An optional param.
    pub fn optional(name: &str, kind: ParamKind, description: &str) -> Self {
        ParamSpec {
            required: false,
            ..ParamSpec::required(name, kind, description)
        }
    }
}

/// Which outcomes (keys of `next`) a node type produces besides `error`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcomes {
    /// Only `default` (plus `error`).
    Default,
    /// A fixed set, e.g. `true`/`false` for `condition` (plus `error`; no `default`).
    Fixed(Vec<String>),
    /// Decided at run time (e.g. `switch`: the matching case, else `default`); any key allowed.
    Dynamic,
}

/// A relation between several params.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ParamConstraint {
    /// At most one of these params may be given (e.g. `body` / `json`).
    AtMostOne(Vec<String>),
    /// Exactly one of these params must be given (e.g. `duration` / `until`).
    ExactlyOne(Vec<String>),
}

/// What a node type accepts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeSpec {
    /// The `type` string, e.g. `http.request`.
    pub node_type: String,
    /// Human description.
    pub description: String,
    /// Accepted params.
    pub params: Vec<ParamSpec>,
    /// Whether params not listed are accepted (otherwise `unknown_param`).
    pub allow_extra_params: bool,
    /// Outcomes produced.
    pub outcomes: Outcomes,
    /// Relations between params.
    pub constraints: Vec<ParamConstraint>,
    /// For [`Outcomes::Dynamic`]: the param whose constant list names the possible outcomes
    /// (switch: `cases`); `next` keys outside it (and `default`/`error`) are warned about.
    pub dynamic_outcomes_param: Option<String>,
}

impl NodeSpec {
    /// A spec without params, with [`Outcomes::Default`].
    pub fn new(node_type: &str, description: &str) -> Self {
        NodeSpec {
            node_type: node_type.into(),
            description: description.into(),
            params: Vec::new(),
            allow_extra_params: false,
            outcomes: Outcomes::Default,
            constraints: Vec::new(),
            dynamic_outcomes_param: None,
        }
    }

    /// Adds a param.
    pub fn param(mut self, param: ParamSpec) -> Self {
        self.params.push(param);
        self
    }

    /// Sets the outcomes.
    pub fn outcomes(mut self, outcomes: Outcomes) -> Self {
        self.outcomes = outcomes;
        self
    }

    /// Adds a constraint.
    pub fn constraint(mut self, c: ParamConstraint) -> Self {
        self.constraints.push(c);
        self
    }

    /// Looks up a param by name.
    pub fn param_spec(&self, name: &str) -> Option<&ParamSpec> {
        self.params.iter().find(|p| p.name == name)
    }
}

/// Something that knows node types. Implementations should be `Send + Sync`.
pub trait NodeCatalog {
    /// The spec of `node_type`, if known.
    fn spec(&self, node_type: &str) -> Option<&NodeSpec>;

    /// All known type names (for "did you mean" hints); may be empty.
    fn node_types(&self) -> Vec<String> {
        Vec::new()
    }
}

/// The eight built-in node types.
#[derive(Debug, Clone, Copy, Default)]
pub struct BuiltinCatalog;

static BUILTINS: LazyLock<Vec<NodeSpec>> = LazyLock::new(builtin_specs);

impl NodeCatalog for BuiltinCatalog {
    fn spec(&self, node_type: &str) -> Option<&NodeSpec> {
        BUILTINS.iter().find(|s| s.node_type == node_type)
    }

    fn node_types(&self) -> Vec<String> {
        BUILTINS.iter().map(|s| s.node_type.clone()).collect()
    }
}

impl<T: NodeCatalog + ?Sized> NodeCatalog for &T {
    fn spec(&self, node_type: &str) -> Option<&NodeSpec> {
        (**self).spec(node_type)
    }
    fn node_types(&self) -> Vec<String> {
        (**self).node_types()
    }
}

fn one_of(items: &[&str]) -> ParamKind {
    ParamKind::OneOf(items.iter().map(|s| s.to_string()).collect())
}

/// HTTP methods accepted by `http.request` and `webhook`.
pub const HTTP_METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];

/// Log levels accepted by `log`.
pub const LOG_LEVELS: &[&str] = &["debug", "info", "warn", "error"];

/// Specs of the built-in node types: `http.request`, `webhook`, `transform`, `condition`,
/// `switch`, `delay`, `log`, `fail`.
pub fn builtin_specs() -> Vec<NodeSpec> {
    use ParamKind as K;
    use ParamSpec as P;
    vec![
        NodeSpec::new("http.request", "Sends an HTTP request. Output: {status_code, headers, body}; body is parsed JSON when the response is JSON, else a string.")
            .param(P::optional("method", one_of(HTTP_METHODS), "HTTP method (default GET)."))
            .param(P::required("url", K::String, "Absolute http:// or https:// URL."))
            .param(P::optional("headers", K::StringMap, "Request headers."))
            .param(P::optional("query", K::Object, "Query parameters appended to the URL."))
            .param(P::optional("body", K::String, "Raw request body (not with `json`)."))
            .param(P::optional("json", K::Any, "Request body sent as JSON with content-type application/json (not with `body`)."))
            .param(P::optional("timeout", K::Duration, "Request timeout (the node's `timeout` still bounds the attempt)."))
            .param(P::optional("expected_status", K::StatusList, "Statuses that count as success (default 200-299); any other status fails the attempt."))
            .param(P::optional("max_response_bytes", K::Integer, "Largest response body accepted (default 10 MiB)."))
            .constraint(ParamConstraint::AtMostOne(vec!["body".into(), "json".into()])),
        NodeSpec::new("webhook", "Posts a JSON payload to a URL, optionally signed with HMAC-SHA256. Output: {status_code, body}.")
            .param(P::required("url", K::String, "Absolute http:// or https:// URL."))
            .param(P::optional("method", one_of(HTTP_METHODS), "HTTP method (default POST)."))
            .param(P::optional("payload", K::Any, "JSON payload (default: the previous node's output)."))
            .param(P::optional("headers", K::StringMap, "Extra request headers."))
            .param(P::optional("signing_secret", K::String, "When set, the body is signed: header `X-FlowRunner-Signature: sha256=<hex hmac>`."))
            .param(P::optional("timeout", K::Duration, "Request timeout.")),
        NodeSpec::new("transform", "Renders `value`; the result is the node's output.")
            .param(P::required("value", K::Any, "Any value; every string in it is a template.")),
        NodeSpec::new("condition", "Evaluates `if` and takes the `true` or `false` edge. Output: {result}.")
            .param(P::required("if", K::Expression, "Bare expression (`input.amount > 100`) or template; JSON truthiness decides."))
            .outcomes(Outcomes::Fixed(vec!["true".into(), "false".into()])),
        NodeSpec::new("switch", "Evaluates `value` and takes the edge named after the first equal case, else `default`. Output: {value, matched}.")
            .param(P::required("value", K::Expression, "Bare expression or template."))
            .param(P::required("cases", K::ScalarList, "Case values; the outcome is the matching case as a string."))
            .outcomes(Outcomes::Dynamic),
        NodeSpec::new("delay", "Waits for `duration` or until `until`. Output: {waited_ms}.")
            .param(P::optional("duration", K::Duration, "How long to wait."))
            .param(P::optional("until", K::Timestamp, "RFC 3339 time to wait until (no wait if in the past)."))
            .constraint(ParamConstraint::ExactlyOne(vec!["duration".into(), "until".into()])),
        NodeSpec::new("log", "Writes a message to the execution log. Output: {level, message}.")
            .param(P::optional("level", one_of(LOG_LEVELS), "Log level (default info)."))
            .param(P::required("message", K::String, "The message.")),
        NodeSpec::new("fail", "Fails the node with `message` (its `error` edge, if any, is taken).")
            .param(P::required("message", K::String, "The error message.")),
    ]
    .into_iter()
    .map(|mut s| {
        if s.node_type == "switch" {
            s.dynamic_outcomes_param = Some("cases".into());
        }
        s
    })
    .collect()
}
