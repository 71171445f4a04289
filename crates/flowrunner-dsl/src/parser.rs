//! YAML text -> validated [`Flow`], reporting every problem at once.

use std::collections::{BTreeSet, HashSet, VecDeque};
use std::time::Duration;

use indexmap::IndexMap;

use crate::catalog::{NodeCatalog, NodeSpec, Outcomes, ParamConstraint, ParamKind};
use crate::diagnostics::{Diagnostic, Diagnostics, codes, sort_diagnostics};
use crate::model::*;
use crate::semantics::status_range;
use crate::template::{self, StringMode, TemplateCompiler, ValueTemplate};
use crate::yaml::{Entry, Kind, YNode, parse_yaml};

/// Default `metadata.version`.
pub const DEFAULT_VERSION: &str = "1.0.0";
/// Default `metadata.max_steps`.
pub const DEFAULT_MAX_STEPS: u32 = 1000;
/// Default `retry.max_attempts` when a `retry` block omits it.
pub const DEFAULT_RETRY_ATTEMPTS: u32 = 3;
/// Largest `retry.max_attempts` accepted.
pub const MAX_RETRY_ATTEMPTS: u32 = 100;
/// Default `retry.initial_delay`.
pub const DEFAULT_RETRY_INITIAL_DELAY: Duration = Duration::from_secs(1);
/// Default `retry.max_delay`.
pub const DEFAULT_RETRY_MAX_DELAY: Duration = Duration::from_secs(60);
/// Longest node id accepted.
pub const MAX_NODE_ID_LEN: usize = 128;

/// A successfully parsed flow plus the warnings found on the way.
#[derive(Debug, Clone)]
pub struct Parsed {
    /// The validated flow.
    pub flow: Flow,
    /// Warnings (e.g. unreachable nodes), sorted by position.
    pub warnings: Vec<Diagnostic>,
}

/// Parses and validates a flow. On failure, every diagnostic (errors and warnings) is returned,
/// sorted by position.
pub fn parse(source: &str, catalog: &dyn NodeCatalog) -> Result<Parsed, Diagnostics> {
    let mut p = FlowParser::new(catalog);
    let flow = p.run(source);
    let mut diags = p.diags;
    sort_diagnostics(&mut diags);
    match flow {
        Some(flow) if !diags.iter().any(Diagnostic::is_error) => Ok(Parsed {
            flow,
            warnings: diags,
        }),
        _ => {
            if !diags.iter().any(Diagnostic::is_error) {
                // Defensive: never fail without saying why.
                diags.insert(
                    0,
                    Diagnostic::error(codes::INVALID_VALUE, "the flow could not be built", 1, 1),
                );
            }
            Err(Diagnostics(diags))
        }
    }
}

/// Every diagnostic for `source` (errors and warnings); empty means valid without warnings.
pub fn validate(source: &str, catalog: &dyn NodeCatalog) -> Vec<Diagnostic> {
    match parse(source, catalog) {
        Ok(p) => p.warnings,
        Err(d) => d.0,
    }
}

struct TemplateRef {
    variables: BTreeSet<String>,
    pos: Position,
    node: Option<String>,
}

struct FlowParser<'c> {
    catalog: &'c dyn NodeCatalog,
    source: String,
    diags: Vec<Diagnostic>,
    compiler: TemplateCompiler,
    refs: Vec<TemplateRef>,
    /// Node being parsed, for diagnostics.
    current: Option<String>,
}

const TOP_KEYS: &[&str] = &["metadata", "inputs", "start", "nodes", "output"];
const METADATA_KEYS: &[&str] = &[
    "name",
    "description",
    "version",
    "max_steps",
    "concurrency",
    "tags",
];
const INPUT_KEYS: &[&str] = &["type", "required", "default", "description"];
const NODE_KEYS: &[&str] = &["type", "params", "next", "retry", "timeout", "description"];
const RETRY_KEYS: &[&str] = &[
    "max_attempts",
    "backoff",
    "initial_delay",
    "max_delay",
    "jitter",
];
const INPUT_TYPES: &[&str] = &["string", "number", "integer", "boolean", "object", "array"];

impl<'c> FlowParser<'c> {
    fn new(catalog: &'c dyn NodeCatalog) -> Self {
        FlowParser {
            catalog,
            source: String::new(),
            diags: Vec::new(),
            compiler: TemplateCompiler::new(),
            refs: Vec::new(),
            current: None,
        }
    }

    fn err(&mut self, code: &str, pos: Position, message: impl Into<String>) {
        let d =
            Diagnostic::error(code, message, pos.line, pos.column).in_node(self.current.as_deref());
        self.diags.push(d);
    }

    fn warn(&mut self, code: &str, pos: Position, message: impl Into<String>) {
        let d = Diagnostic::warning(code, message, pos.line, pos.column)
            .in_node(self.current.as_deref());
        self.diags.push(d);
    }

    fn unknown_field(&mut self, e: &Entry, known: &[&str], context: &str) {
        let hint = suggest(&e.key, known.iter().copied())
            .map(|s| format!("; did you mean `{s}`?"))
            .unwrap_or_else(|| format!("; expected one of {}", list(known)));
        self.err(
            codes::UNKNOWN_FIELD,
            e.key_pos,
            format!("unknown field `{}` in {context}{hint}", e.key),
        );
    }

    fn run(&mut self, source: &str) -> Option<Flow> {
        self.source = source.to_string();
        let (root, diags) = parse_yaml(source);
        self.diags.extend(diags);
        let start_pos = Position { line: 1, column: 1 };
        let Some(root) = root else {
            if self.diags.is_empty() {
                self.err(
                    codes::MISSING_FIELD,
                    start_pos,
                    "the flow is empty: `metadata` and `nodes` are required",
                );
            }
            return None;
        };
        let start_pos = Position { line: 1, column: 1 };
        let Some(top) = root.as_map() else {
            if root.is_null() {
                self.err(
                    codes::MISSING_FIELD,
                    start_pos,
                    "the flow is empty: `metadata` and `nodes` are required",
                );
            } else {
                self.err(
                    codes::INVALID_TYPE,
                    root.pos,
                    format!(
                        "a flow must be a mapping with `metadata` and `nodes`, found {}",
                        root.type_name()
                    ),
                );
            }
            return None;
        };

        let get = |k: &str| top.iter().find(|e| e.key == k);
        for e in top {
            if !TOP_KEYS.contains(&e.key.as_str()) {
                self.unknown_field(e, TOP_KEYS, "the flow");
            }
        }

        let metadata = match get("metadata") {
            Some(e) => self.parse_metadata(e),
            None => {
                self.err(
                    codes::MISSING_FIELD,
                    start_pos,
                    "missing `metadata` (with at least `name`)",
                );
                None
            }
        };
        let inputs = match get("inputs") {
            Some(e) => self.parse_inputs(e),
            None => IndexMap::new(),
        };

        // Node ids first: templates and edges may refer to nodes defined later.
        let node_entries: Vec<&Entry> = match get("nodes") {
            None => {
                self.err(
                    codes::MISSING_FIELD,
                    start_pos,
                    "missing `nodes` (at least one node)",
                );
                Vec::new()
            }
            Some(e) => match &e.value.kind {
                Kind::Map(m) if m.is_empty() => {
                    self.err(
                        codes::INVALID_VALUE,
                        e.value.pos,
                        "`nodes` must contain at least one node",
                    );
                    Vec::new()
                }
                Kind::Map(m) => m.iter().collect(),
                Kind::Null => {
                    self.err(
                        codes::INVALID_VALUE,
                        e.key_pos,
                        "`nodes` must contain at least one node",
                    );
                    Vec::new()
                }
                _ => {
                    self.err(
                        codes::INVALID_TYPE,
                        e.value.pos,
                        format!(
                            "`nodes` must be a mapping of node id to node, found {}",
                            e.value.type_name()
                        ),
                    );
                    Vec::new()
                }
            },
        };
        let ids: Vec<String> = node_entries.iter().map(|e| e.key.clone()).collect();
        let id_set: HashSet<&str> = ids.iter().map(String::as_str).collect();

        let mut nodes = IndexMap::new();
        for e in &node_entries {
            self.current = Some(e.key.clone());
            if let Some(node) = self.parse_node(e, &id_set) {
                nodes.insert(e.key.clone(), node);
            }
            self.current = None;
        }

        let start = match get("start") {
            Some(e) => match e.value.as_str() {
                Some(s) if id_set.contains(s) => Some(s.to_string()),
                Some(s) => {
                    let hint = did_you_mean(s, ids.iter().map(String::as_str));
                    self.err(
                        codes::UNKNOWN_NODE,
                        e.value.pos,
                        format!("`start` names node `{s}`, which does not exist{hint}"),
                    );
                    None
                }
                None => {
                    self.err(
                        codes::INVALID_TYPE,
                        e.value.pos,
                        format!("`start` must be a node id, found {}", e.value.type_name()),
                    );
                    None
                }
            },
            None if id_set.contains("start") => Some("start".to_string()),
            None => ids.first().cloned(),
        };

        let output = get("output").map(|e| self.compile_value(&e.value));

        // Reachability (warnings) over the declared edges.
        if let Some(start) = &start {
            let mut seen: HashSet<&str> = HashSet::new();
            let mut queue = VecDeque::from([start.as_str()]);
            while let Some(id) = queue.pop_front() {
                if !seen.insert(id) {
                    continue;
                }
                if let Some(e) = node_entries.iter().find(|e| e.key == id) {
                    for target in next_targets(&e.value) {
                        if let Some(t) = ids.iter().find(|i| *i == target) {
                            queue.push_back(t.as_str());
                        }
                    }
                }
            }
            for e in &node_entries {
                if !seen.contains(e.key.as_str()) {
                    self.current = Some(e.key.clone());
                    self.warn(
                        codes::UNREACHABLE_NODE,
                        e.key_pos,
                        format!("not reachable from the start node `{start}`"),
                    );
                    self.current = None;
                }
            }
        }

        self.check_references(&id_set);

        let has_errors = self.diags.iter().any(Diagnostic::is_error);
        if has_errors {
            return None;
        }
        let compiler = std::mem::take(&mut self.compiler);
        if let Err(e) = compiler.finish() {
            self.err(codes::TEMPLATE_SYNTAX, start_pos, e.message);
            return None;
        }
        Some(Flow {
            metadata: metadata?,
            inputs,
            start: start?,
            nodes,
            output: output.flatten(),
        })
    }

    fn check_references(&mut self, ids: &HashSet<&str>) {
        let globals = template::global_names();
        let refs = std::mem::take(&mut self.refs);
        for r in refs {
            self.current = r.node.clone();
            let mut reported: HashSet<String> = HashSet::new();
            for var in &r.variables {
                let mut parts = var.split('.');
                let root = parts.next().unwrap_or_default();
                if root == "nodes" {
                    if let Some(id) = parts.next()
                        && !ids.contains(id)
                        && reported.insert(format!("nodes.{id}"))
                    {
                        let hint = did_you_mean(id, ids.iter().copied());
                        self.err(
                            codes::UNKNOWN_NODE_REFERENCE,
                            r.pos,
                            format!(
                                "template refers to `nodes.{id}`, but there is no node `{id}`{hint}"
                            ),
                        );
                    }
                } else if !template::CONTEXT_ROOTS.contains(&root)
                    && !globals.contains(root)
                    && reported.insert(root.to_string())
                {
                    let hint = suggest(root, template::CONTEXT_ROOTS.iter().copied())
                        .map(|s| format!("; did you mean `{s}`?"))
                        .unwrap_or_default();
                    self.err(
                        codes::UNKNOWN_VARIABLE,
                        r.pos,
                        format!(
                            "template uses unknown variable `{root}`; available: {}{hint}",
                            list(template::CONTEXT_ROOTS)
                        ),
                    );
                }
            }
        }
        self.current = None;
    }

    // ---------------------------------------------------------------- metadata / inputs

    fn parse_metadata(&mut self, entry: &Entry) -> Option<Metadata> {
        let Some(map) = entry.value.as_map() else {
            self.err(
                codes::INVALID_TYPE,
                entry.value.pos,
                format!(
                    "`metadata` must be a mapping, found {}",
                    entry.value.type_name()
                ),
            );
            return None;
        };
        let mut md = Metadata {
            name: String::new(),
            description: None,
            version: DEFAULT_VERSION.to_string(),
            max_steps: DEFAULT_MAX_STEPS,
            concurrency: None,
            tags: Vec::new(),
        };
        let mut ok = true;
        let mut has_name = false;
        for e in map {
            let v = &e.value;
            match e.key.as_str() {
                "name" => match v.as_str() {
                    Some(s) if !s.trim().is_empty() => {
                        md.name = s.to_string();
                        has_name = true;
                    }
                    Some(_) => {
                        self.err(
                            codes::INVALID_VALUE,
                            v.pos,
                            "`metadata.name` must not be empty",
                        );
                        ok = false;
                        has_name = true;
                    }
                    None => {
                        self.err(
                            codes::INVALID_TYPE,
                            v.pos,
                            format!("`metadata.name` must be a string, found {}", v.type_name()),
                        );
                        ok = false;
                        has_name = true;
                    }
                },
                "description" => md.description = self.opt_string(v, "metadata.description"),
                "version" => match &v.kind {
                    Kind::Str(s) if !s.trim().is_empty() => md.version = s.clone(),
                    Kind::Int(_) | Kind::UInt(_) | Kind::Float(_) => {
                        md.version = v
                            .raw
                            .as_deref()
                            .map(str::to_string)
                            .or_else(|| v.scalar_text())
                            .unwrap_or_default();
                    }
                    _ => {
                        self.err(
                            codes::INVALID_VALUE,
                            v.pos,
                            "`metadata.version` must be a non-empty string such as \"1.2.0\"",
                        );
                        ok = false;
                    }
                },
                "max_steps" => match positive_u32(v) {
                    Some(n) => md.max_steps = n,
                    None => {
                        self.err(
                            codes::INVALID_VALUE,
                            v.pos,
                            "`metadata.max_steps` must be a positive integer",
                        );
                        ok = false;
                    }
                },
                "concurrency" => match positive_u32(v) {
                    Some(n) => md.concurrency = Some(n),
                    None if v.is_null() => {}
                    None => {
                        self.err(
                            codes::INVALID_VALUE,
                            v.pos,
                            "`metadata.concurrency` must be a positive integer",
                        );
                        ok = false;
                    }
                },
                "tags" => match &v.kind {
                    Kind::Seq(items) => {
                        for item in items {
                            match item.as_str() {
                                Some(s) => md.tags.push(s.to_string()),
                                None => {
                                    self.err(
                                        codes::INVALID_TYPE,
                                        item.pos,
                                        format!("tags must be strings, found {}", item.type_name()),
                                    );
                                    ok = false;
                                }
                            }
                        }
                    }
                    Kind::Null => {}
                    _ => {
                        self.err(
                            codes::INVALID_TYPE,
                            v.pos,
                            format!(
                                "`metadata.tags` must be a list of strings, found {}",
                                v.type_name()
                            ),
                        );
                        ok = false;
                    }
                },
                _ => self.unknown_field(e, METADATA_KEYS, "`metadata`"),
            }
        }
        if !has_name {
            self.err(
                codes::MISSING_FIELD,
                entry.key_pos,
                "missing `metadata.name`",
            );
            ok = false;
        }
        ok.then_some(md)
    }

    fn opt_string(&mut self, v: &YNode, what: &str) -> Option<String> {
        match &v.kind {
            Kind::Str(s) => Some(s.clone()),
            Kind::Null => None,
            _ => {
                self.err(
                    codes::INVALID_TYPE,
                    v.pos,
                    format!("`{what}` must be a string, found {}", v.type_name()),
                );
                None
            }
        }
    }

    fn parse_inputs(&mut self, entry: &Entry) -> IndexMap<String, InputSpec> {
        let mut out = IndexMap::new();
        let map = match &entry.value.kind {
            Kind::Map(m) => m,
            Kind::Null => return out,
            _ => {
                self.err(
                    codes::INVALID_TYPE,
                    entry.value.pos,
                    format!(
                        "`inputs` must be a mapping of input name to spec, found {}",
                        entry.value.type_name()
                    ),
                );
                return out;
            }
        };
        for e in map {
            if let Some(spec) = self.parse_input(e) {
                out.insert(e.key.clone(), spec);
            }
        }
        out
    }

    fn parse_input(&mut self, e: &Entry) -> Option<InputSpec> {
        let name = &e.key;
        let Some(fields) = e.value.as_map() else {
            self.err(
                codes::INVALID_INPUT,
                e.value.pos,
                format!(
                    "input `{name}` must be a mapping with at least `type`, found {}",
                    e.value.type_name()
                ),
            );
            return None;
        };
        let mut ty = None;
        let mut required = false;
        let mut default = None;
        let mut description = None;
        let mut ok = true;
        for f in fields {
            let v = &f.value;
            match f.key.as_str() {
                "type" => match v.as_str().and_then(input_type) {
                    Some(t) => ty = Some(t),
                    None => {
                        self.err(
                            codes::INVALID_INPUT,
                            v.pos,
                            format!(
                                "input `{name}`: `type` must be one of {}",
                                list(INPUT_TYPES)
                            ),
                        );
                        ok = false;
                    }
                },
                "required" => match v.kind {
                    Kind::Bool(b) => required = b,
                    _ => {
                        self.err(
                            codes::INVALID_INPUT,
                            v.pos,
                            format!("input `{name}`: `required` must be true or false"),
                        );
                        ok = false;
                    }
                },
                "default" => default = Some(v),
                "description" => description = self.opt_string(v, "description"),
                _ => self.unknown_field(f, INPUT_KEYS, &format!("input `{name}`")),
            }
        }
        if ty.is_none() && ok && !fields.iter().any(|f| f.key == "type") {
            self.err(
                codes::INVALID_INPUT,
                e.key_pos,
                format!(
                    "input `{name}` is missing `type` (one of {})",
                    list(INPUT_TYPES)
                ),
            );
            ok = false;
        }
        let default = match (ty, default) {
            (Some(t), Some(d)) => {
                let json = d.to_json();
                if !json.is_null() && !crate::input::matches_type(t, &json) {
                    self.err(
                        codes::INVALID_INPUT,
                        d.pos,
                        format!(
                            "input `{name}`: default must be {}, found {}",
                            crate::input::type_article(t),
                            d.type_name()
                        ),
                    );
                    ok = false;
                }
                (!json.is_null()).then_some(json)
            }
            _ => None,
        };
        if ok {
            ty.map(|ty| InputSpec {
                ty,
                required,
                default,
                description,
            })
        } else {
            None
        }
    }

    // ---------------------------------------------------------------- nodes

    fn parse_node(&mut self, entry: &Entry, ids: &HashSet<&str>) -> Option<Node> {
        let id = entry.key.as_str();
        let mut ok = true;
        if !valid_node_id(id) {
            self.err(
                codes::INVALID_NODE_ID,
                entry.key_pos,
                format!("invalid node id: use letters, digits, `_` and `-` (at most {MAX_NODE_ID_LEN} characters, not starting with `-`)"),
            );
            ok = false;
        }
        let Some(map) = entry.value.as_map() else {
            self.err(
                codes::INVALID_TYPE,
                entry.value.pos,
                format!(
                    "a node must be a mapping with at least `type`, found {}",
                    entry.value.type_name()
                ),
            );
            return None;
        };
        let field = |k: &str| map.iter().find(|e| e.key == k);
        for e in map {
            if !NODE_KEYS.contains(&e.key.as_str()) {
                self.unknown_field(e, NODE_KEYS, "a node");
            }
        }

        // type
        let mut spec: Option<&NodeSpec> = None;
        let node_type = match field("type") {
            None => {
                self.err(codes::MISSING_FIELD, entry.key_pos, "missing `type`");
                ok = false;
                String::new()
            }
            Some(t) => match t.value.as_str() {
                Some(s) => {
                    spec = self.catalog.spec(s);
                    if spec.is_none() {
                        let known = self.catalog.node_types();
                        let hint = did_you_mean(s, known.iter().map(String::as_str));
                        let hint = if hint.is_empty() && !known.is_empty() {
                            format!("; known types: {}", known.join(", "))
                        } else {
                            hint
                        };
                        self.err(
                            codes::UNKNOWN_NODE_TYPE,
                            t.value.pos,
                            format!("unknown node type `{s}`{hint}"),
                        );
                        ok = false;
                    }
                    s.to_string()
                }
                None => {
                    self.err(
                        codes::INVALID_TYPE,
                        t.value.pos,
                        format!("`type` must be a string, found {}", t.value.type_name()),
                    );
                    ok = false;
                    String::new()
                }
            },
        };

        // params
        let params_entry = field("params");
        let params_node = params_entry.map(|e| &e.value).filter(|v| !v.is_null());
        let empty = Vec::new();
        let params_map: &[Entry] = match params_node {
            None => &empty,
            Some(v) => match v.as_map() {
                Some(m) => m,
                None => {
                    self.err(
                        codes::INVALID_TYPE,
                        v.pos,
                        format!("`params` must be a mapping, found {}", v.type_name()),
                    );
                    ok = false;
                    &empty
                }
            },
        };
        let params_pos = params_entry.map_or(entry.key_pos, |e| e.key_pos);
        let params_valid = params_node.is_none_or(|v| v.as_map().is_some());
        let mut fields = IndexMap::new();
        let mut dynamic_cases: Option<Vec<String>> = None;
        for p in params_map {
            let kind = spec
                .and_then(|s| s.param_spec(&p.key))
                .map(|ps| ps.kind.clone());
            if let Some(spec) = spec {
                match &kind {
                    None if !spec.allow_extra_params => {
                        let names: Vec<&str> =
                            spec.params.iter().map(|p| p.name.as_str()).collect();
                        let hint = suggest(&p.key, names.iter().copied())
                            .map(|s| format!("; did you mean `{s}`?"))
                            .unwrap_or_else(|| format!("; accepted: {}", list(&names)));
                        self.err(
                            codes::UNKNOWN_PARAM,
                            p.key_pos,
                            format!(
                                "`{}` does not accept param `{}`{hint}",
                                spec.node_type, p.key
                            ),
                        );
                        ok = false;
                    }
                    None => {}
                    Some(k) if !self.check_param(&p.key, k, &p.value) => ok = false,
                    Some(_) => {}
                }
                if spec.dynamic_outcomes_param.as_deref() == Some(p.key.as_str())
                    && let Kind::Seq(items) = &p.value.kind
                {
                    dynamic_cases = Some(
                        items
                            .iter()
                            .map(|i| crate::semantics::case_name(&i.to_json()))
                            .collect(),
                    );
                }
            }
            let mode = if kind == Some(ParamKind::Expression) {
                StringMode::Expression
            } else {
                StringMode::Template
            };
            let t = match (&p.value.kind, mode) {
                (Kind::Str(s), StringMode::Expression) => self.compile_string(s, mode, p.value.pos),
                _ => self.compile_value(&p.value),
            };
            match t {
                Some(t) => {
                    fields.insert(p.key.clone(), t);
                }
                None => ok = false,
            }
        }
        if let Some(spec) = spec.filter(|_| params_valid) {
            for ps in &spec.params {
                if ps.required && !params_map.iter().any(|p| p.key == ps.name) {
                    self.err(
                        codes::MISSING_PARAM,
                        params_pos,
                        format!(
                            "`{}` requires param `{}` ({})",
                            spec.node_type,
                            ps.name,
                            ps.kind.describe()
                        ),
                    );
                    ok = false;
                }
            }
            for c in &spec.constraints {
                match c {
                    ParamConstraint::AtMostOne(names) | ParamConstraint::ExactlyOne(names) => {
                        let present: Vec<&Entry> = params_map
                            .iter()
                            .filter(|p| names.contains(&p.key))
                            .collect();
                        if present.len() > 1 {
                            let msg = if matches!(c, ParamConstraint::AtMostOne(_)) {
                                format!(
                                    "`{}` accepts at most one of {}",
                                    spec.node_type,
                                    list_owned(names)
                                )
                            } else {
                                format!(
                                    "`{}` accepts exactly one of {}",
                                    spec.node_type,
                                    list_owned(names)
                                )
                            };
                            self.err(codes::INVALID_PARAM, present[1].key_pos, msg);
                            ok = false;
                        } else if present.is_empty() && matches!(c, ParamConstraint::ExactlyOne(_))
                        {
                            self.err(
                                codes::MISSING_PARAM,
                                params_pos,
                                format!(
                                    "`{}` requires one of {}",
                                    spec.node_type,
                                    list_owned(names)
                                ),
                            );
                            ok = false;
                        }
                    }
                }
            }
        }

        // next
        let mut next = IndexMap::new();
        if let Some(n) = field("next") {
            match &n.value.kind {
                Kind::Str(target) => {
                    // Shorthand `next: other` == `next: {default: other}`.
                    self.check_outcome(
                        spec,
                        OUTCOME_DEFAULT,
                        n.value.pos,
                        dynamic_cases.as_deref(),
                    );
                    if self.check_target(target, n.value.pos, ids) {
                        next.insert(OUTCOME_DEFAULT.to_string(), target.clone());
                    } else {
                        ok = false;
                    }
                }
                Kind::Map(edges) => {
                    for edge in edges {
                        if !self.check_outcome(
                            spec,
                            &edge.key,
                            edge.key_pos,
                            dynamic_cases.as_deref(),
                        ) {
                            ok = false;
                        }
                        match edge.value.as_str() {
                            Some(target) => {
                                if self.check_target(target, edge.value.pos, ids) {
                                    next.insert(edge.key.clone(), target.to_string());
                                } else {
                                    ok = false;
                                }
                            }
                            None => {
                                self.err(
                                    codes::INVALID_TYPE,
                                    edge.value.pos,
                                    format!(
                                        "`next.{}` must be a node id, found {}",
                                        edge.key,
                                        edge.value.type_name()
                                    ),
                                );
                                ok = false;
                            }
                        }
                    }
                }
                Kind::Null => {}
                _ => {
                    self.err(
                        codes::INVALID_TYPE,
                        n.value.pos,
                        format!(
                            "`next` must be a mapping of outcome to node id, found {}",
                            n.value.type_name()
                        ),
                    );
                    ok = false;
                }
            }
        }

        let retry = match field("retry") {
            Some(r) if !r.value.is_null() => {
                let parsed = self.parse_retry(&r.value);
                if parsed.is_none() {
                    ok = false;
                }
                parsed
            }
            _ => None,
        };
        let timeout = match field("timeout") {
            Some(t) => match self.duration(&t.value, "timeout", true) {
                Some(d) => Some(d),
                None => {
                    ok = false;
                    None
                }
            },
            None => None,
        };
        let description =
            field("description").and_then(|d| self.opt_string(&d.value, "description"));

        if !ok {
            return None;
        }
        Some(Node {
            id: id.to_string(),
            node_type,
            raw_params: params_node.map_or_else(
                || serde_json::Value::Object(Default::default()),
                YNode::to_json,
            ),
            params: ValueTemplate::object(fields),
            next,
            retry,
            timeout,
            description,
            position: entry.key_pos,
        })
    }

    fn check_target(&mut self, target: &str, pos: Position, ids: &HashSet<&str>) -> bool {
        if ids.contains(target) {
            return true;
        }
        let hint = did_you_mean(target, ids.iter().copied());
        self.err(
            codes::UNKNOWN_NODE,
            pos,
            format!("`next` points at node `{target}`, which does not exist{hint}"),
        );
        false
    }

    /// Returns false when the outcome is an error (warnings return true).
    fn check_outcome(
        &mut self,
        spec: Option<&NodeSpec>,
        outcome: &str,
        pos: Position,
        cases: Option<&[String]>,
    ) -> bool {
        let Some(spec) = spec else { return true };
        if outcome == OUTCOME_ERROR {
            return true;
        }
        match &spec.outcomes {
            Outcomes::Default => {
                if outcome != OUTCOME_DEFAULT {
                    self.err(codes::UNKNOWN_OUTCOME, pos, format!("`{}` nodes only produce the outcomes `default` and `error`, not `{outcome}`", spec.node_type));
                    return false;
                }
            }
            Outcomes::Fixed(list) => {
                if !list.iter().any(|o| o == outcome) {
                    let mut all: Vec<&str> = list.iter().map(String::as_str).collect();
                    all.push(OUTCOME_ERROR);
                    self.err(
                        codes::UNKNOWN_OUTCOME,
                        pos,
                        format!(
                            "`{}` nodes only produce the outcomes {}, not `{outcome}`",
                            spec.node_type,
                            list_of(&all)
                        ),
                    );
                    return false;
                }
            }
            Outcomes::Dynamic => {
                if let Some(cases) = cases
                    && outcome != OUTCOME_DEFAULT
                    && !cases.iter().any(|c| c == outcome)
                {
                    self.warn(codes::UNKNOWN_CASE, pos, format!("outcome `{outcome}` is not one of the cases {}; this edge is never taken", list_owned(cases)));
                }
            }
        }
        true
    }

    fn parse_retry(&mut self, v: &YNode) -> Option<RetryPolicy> {
        let Some(map) = v.as_map() else {
            self.err(codes::INVALID_RETRY, v.pos, format!("`retry` must be a mapping (max_attempts, backoff, initial_delay, max_delay, jitter), found {}", v.type_name()));
            return None;
        };
        let mut r = RetryPolicy {
            max_attempts: DEFAULT_RETRY_ATTEMPTS,
            backoff: Backoff::Exponential,
            initial_delay: DEFAULT_RETRY_INITIAL_DELAY,
            max_delay: DEFAULT_RETRY_MAX_DELAY,
            jitter: false,
        };
        let mut ok = true;
        let mut max_delay_pos = None;
        for e in map {
            let v = &e.value;
            match e.key.as_str() {
                "max_attempts" => match positive_u32(v) {
                    Some(n) if n <= MAX_RETRY_ATTEMPTS => r.max_attempts = n,
                    _ => {
                        self.err(codes::INVALID_RETRY, v.pos, format!("`retry.max_attempts` must be an integer from 1 to {MAX_RETRY_ATTEMPTS} (attempts including the first)"));
                        ok = false;
                    }
                },
                "backoff" => match v.as_str() {
                    Some("fixed") => r.backoff = Backoff::Fixed,
                    Some("exponential") => r.backoff = Backoff::Exponential,
                    _ => {
                        self.err(
                            codes::INVALID_RETRY,
                            v.pos,
                            "`retry.backoff` must be `fixed` or `exponential`",
                        );
                        ok = false;
                    }
                },
                "initial_delay" => match self.duration(v, "retry.initial_delay", false) {
                    Some(d) => r.initial_delay = d,
                    None => ok = false,
                },
                "max_delay" => match self.duration(v, "retry.max_delay", false) {
                    Some(d) => {
                        r.max_delay = d;
                        max_delay_pos = Some(v.pos);
                    }
                    None => ok = false,
                },
                "jitter" => match v.kind {
                    Kind::Bool(b) => r.jitter = b,
                    _ => {
                        self.err(
                            codes::INVALID_RETRY,
                            v.pos,
                            "`retry.jitter` must be true or false",
                        );
                        ok = false;
                    }
                },
                _ => {
                    self.unknown_field(e, RETRY_KEYS, "`retry`");
                    ok = false;
                }
            }
        }
        if ok && r.max_delay < r.initial_delay {
            match max_delay_pos {
                Some(p) => {
                    self.err(
                        codes::INVALID_RETRY,
                        p,
                        "`retry.max_delay` must not be shorter than `retry.initial_delay`",
                    );
                    ok = false;
                }
                // Only initial_delay given and it exceeds the default cap: raise the cap.
                None => r.max_delay = r.initial_delay,
            }
        }
        ok.then_some(r)
    }

    fn duration(&mut self, v: &YNode, what: &str, positive: bool) -> Option<Duration> {
        match &v.kind {
            Kind::Str(s) => match flowrunner_domain::parse_duration(s) {
                Ok(d) if positive && d.is_zero() => {
                    self.err(
                        codes::INVALID_DURATION,
                        v.pos,
                        format!("`{what}` must be greater than zero"),
                    );
                    None
                }
                Ok(d) => Some(d),
                Err(e) => {
                    self.err(codes::INVALID_DURATION, v.pos, format!("`{what}`: {e}"));
                    None
                }
            },
            _ => {
                self.err(codes::INVALID_DURATION, v.pos, format!("`{what}` must be a duration string such as `250ms`, `30s` or `5m`, found {}", v.type_name()));
                None
            }
        }
    }

    // ---------------------------------------------------------------- params

    /// Checks a constant param value against its kind; template strings are accepted.
    fn check_param(&mut self, name: &str, kind: &ParamKind, v: &YNode) -> bool {
        if let Kind::Str(s) = &v.kind
            && template::is_template(s)
            && *kind != ParamKind::ScalarList
        {
            return true;
        }
        let found = v.type_name();
        let bad = |this: &mut Self, msg: String| {
            this.err(
                codes::INVALID_PARAM,
                v.pos,
                format!("param `{name}` must be {msg}"),
            );
            false
        };
        match kind {
            ParamKind::Any => true,
            ParamKind::String => {
                matches!(v.kind, Kind::Str(_)) || bad(self, format!("a string, found {found}"))
            }
            ParamKind::Number => {
                matches!(v.kind, Kind::Int(_) | Kind::UInt(_) | Kind::Float(_))
                    || bad(self, format!("a number, found {found}"))
            }
            ParamKind::Integer => {
                matches!(v.kind, Kind::Int(_) | Kind::UInt(_))
                    || bad(self, format!("an integer, found {found}"))
            }
            ParamKind::Boolean => {
                matches!(v.kind, Kind::Bool(_))
                    || bad(self, format!("true or false, found {found}"))
            }
            ParamKind::Object => {
                matches!(v.kind, Kind::Map(_)) || bad(self, format!("a mapping, found {found}"))
            }
            ParamKind::Array => {
                matches!(v.kind, Kind::Seq(_)) || bad(self, format!("a list, found {found}"))
            }
            ParamKind::Duration => self.duration(v, &format!("params.{name}"), false).is_some(),
            ParamKind::Expression => match &v.kind {
                Kind::Str(_) | Kind::Bool(_) => true,
                _ => bad(
                    self,
                    format!("an expression string (e.g. \"input.amount > 100\"), found {found}"),
                ),
            },
            ParamKind::OneOf(options) => match &v.kind {
                Kind::Str(s) if options.contains(s) => true,
                Kind::Str(s) => {
                    let hint = suggest_ci(s, options)
                        .map(|o| format!(" (did you mean `{o}`?)"))
                        .unwrap_or_default();
                    bad(self, format!("{}, found `{s}`{hint}", kind.describe()))
                }
                _ => bad(self, format!("{}, found {found}", kind.describe())),
            },
            ParamKind::StringMap => match &v.kind {
                Kind::Map(entries) => {
                    let mut ok = true;
                    for e in entries {
                        if !matches!(e.value.kind, Kind::Str(_)) {
                            self.err(
                                codes::INVALID_PARAM,
                                e.value.pos,
                                format!(
                                    "`{name}.{}` must be a string, found {} (quote it)",
                                    e.key,
                                    e.value.type_name()
                                ),
                            );
                            ok = false;
                        }
                    }
                    ok
                }
                _ => bad(self, format!("a mapping of strings, found {found}")),
            },
            ParamKind::StatusList => {
                let items: Vec<&YNode> = match &v.kind {
                    Kind::Seq(items) => items.iter().collect(),
                    _ => vec![v],
                };
                let mut ok = true;
                for item in items {
                    let valid = match &item.kind {
                        Kind::Int(n) => (100..=599).contains(n),
                        Kind::Str(s) if template::is_template(s) => true,
                        Kind::Str(s) => status_range(s).is_some(),
                        _ => false,
                    };
                    if !valid {
                        self.err(codes::INVALID_PARAM, item.pos, format!("param `{name}`: expected a status code 100-599 or a range such as \"200-299\", found {}", describe_value(item)));
                        ok = false;
                    }
                }
                ok
            }
            ParamKind::Timestamp => match &v.kind {
                Kind::Str(s) if chrono::DateTime::parse_from_rfc3339(s).is_ok() => true,
                _ => bad(
                    self,
                    format!(
                        "an RFC 3339 timestamp such as \"2030-01-01T00:00:00Z\", found {}",
                        describe_value(v)
                    ),
                ),
            },
            ParamKind::ScalarList => match &v.kind {
                Kind::Str(s) if template::is_template(s) => true,
                Kind::Seq(items) => {
                    let mut ok = true;
                    let mut seen = HashSet::new();
                    for item in items {
                        match &item.kind {
                            Kind::Str(s) if template::is_template(s) => {
                                self.err(
                                    codes::INVALID_PARAM,
                                    item.pos,
                                    format!("`{name}` entries must be constants, not templates"),
                                );
                                ok = false;
                            }
                            Kind::Str(_)
                            | Kind::Int(_)
                            | Kind::UInt(_)
                            | Kind::Float(_)
                            | Kind::Bool(_) => {
                                if !seen.insert(crate::semantics::case_name(&item.to_json())) {
                                    self.err(
                                        codes::INVALID_PARAM,
                                        item.pos,
                                        format!(
                                            "duplicate `{name}` entry {}",
                                            describe_value(item)
                                        ),
                                    );
                                    ok = false;
                                }
                            }
                            _ => {
                                self.err(codes::INVALID_PARAM, item.pos, format!("`{name}` entries must be strings, numbers or booleans, found {}", item.type_name()));
                                ok = false;
                            }
                        }
                    }
                    ok
                }
                _ => bad(
                    self,
                    format!("a list of strings, numbers or booleans, found {found}"),
                ),
            },
        }
    }

    // ---------------------------------------------------------------- templates

    fn compile_string(
        &mut self,
        s: &str,
        mode: StringMode,
        pos: Position,
    ) -> Option<ValueTemplate> {
        match self.compiler.compile_string(s, mode) {
            Ok(c) => {
                if !c.variables.is_empty() {
                    self.refs.push(TemplateRef {
                        variables: c.variables,
                        pos,
                        node: self.current.clone(),
                    });
                }
                Some(c.template)
            }
            Err(e) => {
                let at = match e.line {
                    Some(l) if s.contains('\n') => format!(" (template line {l})"),
                    _ => String::new(),
                };
                let what = if mode == StringMode::Expression && !s.contains("{{") {
                    "expression"
                } else {
                    "template"
                };
                let pos = e.offset.and_then(|o| self.locate(s, o, pos)).unwrap_or(pos);
                self.err(
                    codes::TEMPLATE_SYNTAX,
                    pos,
                    format!("invalid {what} `{}`: {}{at}", abbreviate(s), e.message),
                );
                None
            }
        }
    }

    /// The source position of byte `offset` of string scalar `s` that starts at `pos`, when the
    /// string appears verbatim on that line (plain or quoted without escapes before `offset`).
    fn locate(&self, s: &str, offset: usize, pos: Position) -> Option<Position> {
        let prefix = s.get(..offset)?;
        if prefix.contains('\n') {
            return None;
        }
        let line = self.source.lines().nth(pos.line.checked_sub(1)?)?;
        let chars: Vec<char> = line.chars().collect();
        for skip in [0usize, 1] {
            let start = (pos.column - 1) + skip;
            let Some(rest) = chars.get(start..) else {
                continue;
            };
            let rest: String = rest.iter().collect();
            if rest.starts_with(prefix) {
                return Some(Position {
                    line: pos.line,
                    column: start + 1 + prefix.chars().count(),
                });
            }
        }
        None
    }

    /// Compiles every string in `v` as a template. Returns `None` after reporting errors.
    fn compile_value(&mut self, v: &YNode) -> Option<ValueTemplate> {
        match &v.kind {
            Kind::Str(s) => self.compile_string(s, StringMode::Template, v.pos),
            Kind::Seq(items) => {
                let mut out = Vec::with_capacity(items.len());
                let mut ok = true;
                for i in items {
                    match self.compile_value(i) {
                        Some(t) => out.push(t),
                        None => ok = false,
                    }
                }
                ok.then(|| ValueTemplate::array(out))
            }
            Kind::Map(entries) => {
                let mut out = IndexMap::with_capacity(entries.len());
                let mut ok = true;
                for e in entries {
                    match self.compile_value(&e.value) {
                        Some(t) => {
                            out.insert(e.key.clone(), t);
                        }
                        None => ok = false,
                    }
                }
                ok.then(|| ValueTemplate::object(out))
            }
            _ => Some(ValueTemplate::constant(v.to_json())),
        }
    }
}

// -------------------------------------------------------------------- helpers

fn next_targets(node: &YNode) -> Vec<&str> {
    let Some(map) = node.as_map() else {
        return Vec::new();
    };
    let Some(next) = map.iter().find(|e| e.key == "next") else {
        return Vec::new();
    };
    match &next.value.kind {
        Kind::Str(s) => vec![s.as_str()],
        Kind::Map(edges) => edges.iter().filter_map(|e| e.value.as_str()).collect(),
        _ => Vec::new(),
    }
}

fn input_type(s: &str) -> Option<InputType> {
    Some(match s {
        "string" => InputType::String,
        "number" => InputType::Number,
        "integer" => InputType::Integer,
        "boolean" => InputType::Boolean,
        "object" => InputType::Object,
        "array" => InputType::Array,
        _ => return None,
    })
}

fn positive_u32(v: &YNode) -> Option<u32> {
    match v.kind {
        Kind::Int(n) if n >= 1 => u32::try_from(n).ok(),
        _ => None,
    }
}

fn valid_node_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_NODE_ID_LEN
        && !id.starts_with('-')
        && id
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
}

fn describe_value(v: &YNode) -> String {
    match &v.kind {
        Kind::Str(s) => format!("\"{}\"", abbreviate(s)),
        Kind::Seq(_) | Kind::Map(_) | Kind::Null => v.type_name().to_string(),
        _ => format!("`{}`", v.scalar_text().unwrap_or_default()),
    }
}

fn abbreviate(s: &str) -> String {
    let one_line = s.replace('\n', "\\n");
    if one_line.chars().count() > 60 {
        format!("{}...", one_line.chars().take(57).collect::<String>())
    } else {
        one_line
    }
}

fn list(items: &[&str]) -> String {
    list_of(items)
}

fn list_owned(items: &[String]) -> String {
    list_of(&items.iter().map(String::as_str).collect::<Vec<_>>())
}

fn list_of(items: &[&str]) -> String {
    items
        .iter()
        .map(|s| format!("`{s}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn did_you_mean<'a>(word: &str, candidates: impl Iterator<Item = &'a str>) -> String {
    suggest(word, candidates)
        .map(|s| format!(" (did you mean `{s}`?)"))
        .unwrap_or_default()
}

fn suggest_ci<'a>(word: &str, candidates: &'a [String]) -> Option<&'a str> {
    candidates
        .iter()
        .find(|c| c.eq_ignore_ascii_case(word))
        .map(String::as_str)
}

/// The closest candidate within a small edit distance.
fn suggest<'a>(word: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let max = if word.chars().count() <= 3 { 1 } else { 2 };
    candidates
        .filter(|c| *c != word)
        .map(|c| (edit_distance(&word.to_lowercase(), &c.to_lowercase()), c))
        .filter(|(d, _)| *d <= max)
        .min_by(|a, b| a.cmp(b))
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    if a.len().abs_diff(b.len()) > 3 || a.len() > 64 || b.len() > 64 {
        return usize::MAX;
    }
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}
