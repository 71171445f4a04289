//! Compiled templates for node params and the flow `output`.
//!
//! Every string of a flow's `params` (and of `output`) is a [minijinja] template, compiled
//! once when the flow is parsed. A [`ValueTemplate`] mirrors the JSON value it was compiled
//! from:
//!
//! * a string without `{{` or `{%` is a **constant** and renders to itself without touching
//!   minijinja;
//! * a string that is exactly one `{{ expr }}` (surrounding whitespace allowed) is a **typed
//!   expression**: it renders to the expression's value with its JSON type kept (number,
//!   boolean, object, list, null);
//! * any other string is **interpolated** and renders to a string;
//! * arrays and objects render element by element (fully constant ones by a single clone).
//!
//! All templates of one flow share one `minijinja::Environment` with
//! [`UndefinedBehavior::Strict`]: using an undefined variable or attribute is a render
//! error, so optional values need `| default(...)` or an `is defined` test. Auto-escaping is
//! off.
//!
//! ```
//! use flowrunner_dsl::template::{ValueTemplate, json_to_value};
//! let t = ValueTemplate::compile(&serde_json::json!({
//!     "total": "{{ input.amount * 2 }}",
//!     "text": "Amount: {{ input.amount }}",
//!     "fixed": "plain",
//! })).unwrap();
//! let ctx = json_to_value(&serde_json::json!({"input": {"amount": 21}}));
//! let out = t.render(&ctx).unwrap();
//! assert_eq!(out, serde_json::json!({"total": 42, "text": "Amount: 21", "fixed": "plain"}));
//! ```

use std::collections::{BTreeSet, HashSet};
use std::fmt;
use std::sync::{Arc, OnceLock};

use indexmap::IndexMap;
use minijinja::{Environment, Expression, Template, UndefinedBehavior, Value};

/// The root variables a template may use (besides minijinja's globals such as `range`).
pub const CONTEXT_ROOTS: &[&str] = &["input", "nodes", "secrets", "execution", "flow", "error"];

/// A template failed to render.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("template `{template}`: {message}")]
pub struct RenderError {
    /// The template source that failed.
    pub template: String,
    /// Why it failed (e.g. "undefined value `nodes.fetch`").
    pub message: String,
}

/// A template failed to compile.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct TemplateError {
    /// Human description, including minijinja's reason.
    pub message: String,
    /// 1-based line inside the template source, when known.
    pub line: Option<usize>,
    /// Byte offset of the problem inside the compiled string, when known.
    pub offset: Option<usize>,
}

self_cell::self_cell!(
    struct CompiledCell {
        owner: Environment<'static>,
        #[covariant]
        dependent: Compiled,
    }
);

struct Compiled<'env> {
    templates: Vec<Template<'env, 'env>>,
    exprs: Vec<Expression<'env, 'static>>,
}

/// The compiled templates of one flow, shared by all its [`ValueTemplate`]s.
struct TemplateSet {
    cell: OnceLock<CompiledCell>,
}

impl fmt::Debug for TemplateSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TemplateSet")
            .field("finished", &self.cell.get().is_some())
            .finish()
    }
}

#[derive(Clone)]
enum Node {
    Const(serde_json::Value),
    Expr {
        set: Arc<TemplateSet>,
        index: usize,
        source: Arc<str>,
        vars: Arc<[String]>,
    },
    Interp {
        set: Arc<TemplateSet>,
        index: usize,
        source: Arc<str>,
        vars: Arc<[String]>,
    },
    Array {
        items: Vec<ValueTemplate>,
        constant: Option<serde_json::Value>,
    },
    Object {
        fields: IndexMap<String, ValueTemplate>,
        constant: Option<serde_json::Value>,
    },
}

/// A compiled tree mirroring a JSON value: constants, typed single expressions, interpolated
/// strings, arrays and objects. Cheap to clone (compiled templates are shared).
#[derive(Clone)]
pub struct ValueTemplate {
    node: Node,
}

impl fmt::Debug for ValueTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.node {
            Node::Const(v) => f.debug_tuple("Const").field(v).finish(),
            Node::Expr { source, .. } => f.debug_tuple("Expr").field(source).finish(),
            Node::Interp { source, .. } => f.debug_tuple("Interp").field(source).finish(),
            Node::Array { items, .. } => f.debug_tuple("Array").field(items).finish(),
            Node::Object { fields, .. } => f.debug_tuple("Object").field(fields).finish(),
        }
    }
}

impl Default for ValueTemplate {
    fn default() -> Self {
        ValueTemplate::constant(serde_json::Value::Null)
    }
}

impl ValueTemplate {
    /// Compiles every string of `value` as a template, in a fresh environment of its own.
    ///
    /// The parser compiles a whole flow with one [`TemplateCompiler`]; this is a shortcut
    /// for tests and ad-hoc templates.
    pub fn compile(value: &serde_json::Value) -> Result<ValueTemplate, TemplateError> {
        let mut c = TemplateCompiler::new();
        let t = c.compile_value(value)?;
        c.finish()?;
        Ok(t)
    }

    /// A template that always renders to `value`.
    pub fn constant(value: serde_json::Value) -> ValueTemplate {
        ValueTemplate {
            node: Node::Const(value),
        }
    }

    /// An array template from compiled items.
    pub fn array(items: Vec<ValueTemplate>) -> ValueTemplate {
        let constant = if items.iter().all(|i| i.is_constant()) {
            Some(serde_json::Value::Array(
                items
                    .iter()
                    .map(|i| i.constant_value().cloned().unwrap_or_default())
                    .collect(),
            ))
        } else {
            None
        };
        ValueTemplate {
            node: Node::Array { items, constant },
        }
    }

    /// An object template from compiled fields (order kept).
    pub fn object(fields: IndexMap<String, ValueTemplate>) -> ValueTemplate {
        let constant = if fields.values().all(|i| i.is_constant()) {
            Some(serde_json::Value::Object(
                fields
                    .iter()
                    .map(|(k, v)| (k.clone(), v.constant_value().cloned().unwrap_or_default()))
                    .collect(),
            ))
        } else {
            None
        };
        ValueTemplate {
            node: Node::Object { fields, constant },
        }
    }

    /// Renders against `ctx`, the root object (`input`, `nodes`, `secrets`, `execution`,
    /// `flow`, `error`). See [`json_to_value`] to build it from JSON.
    pub fn render(&self, ctx: &Value) -> Result<serde_json::Value, RenderError> {
        match &self.node {
            Node::Const(v) => Ok(v.clone()),
            Node::Expr {
                set,
                index,
                source,
                vars,
            } => {
                let cell = finished(set, source)?;
                let value = cell
                    .borrow_dependent()
                    .exprs
                    .get(*index)
                    .ok_or_else(|| internal(source))?
                    .eval(ctx.clone())
                    .map_err(|e| render_error(source, vars, ctx, &e))?;
                value_to_json(&value).map_err(|message| RenderError {
                    template: source.to_string(),
                    message,
                })
            }
            Node::Interp {
                set,
                index,
                source,
                vars,
            } => {
                let cell = finished(set, source)?;
                let text = cell
                    .borrow_dependent()
                    .templates
                    .get(*index)
                    .ok_or_else(|| internal(source))?
                    .render(ctx.clone())
                    .map_err(|e| render_error(source, vars, ctx, &e))?;
                Ok(serde_json::Value::String(text))
            }
            Node::Array {
                constant: Some(v), ..
            }
            | Node::Object {
                constant: Some(v), ..
            } => Ok(v.clone()),
            Node::Array {
                items,
                constant: None,
            } => Ok(serde_json::Value::Array(
                items
                    .iter()
                    .map(|i| i.render(ctx))
                    .collect::<Result<_, _>>()?,
            )),
            Node::Object {
                fields,
                constant: None,
            } => {
                let mut map = serde_json::Map::with_capacity(fields.len());
                for (k, v) in fields {
                    map.insert(k.clone(), v.render(ctx)?);
                }
                Ok(serde_json::Value::Object(map))
            }
        }
    }

    /// Renders and returns the JSON truthiness of the result ([`json_truthy`]: `false`,
    /// `null`, `0`, `""`, `[]` and `{}` are false), as `condition` uses it.
    pub fn render_truthy(&self, ctx: &Value) -> Result<bool, RenderError> {
        Ok(json_truthy(&self.render(ctx)?))
    }

    /// Whether rendering never evaluates a template (the result is always the same).
    pub fn is_constant(&self) -> bool {
        match &self.node {
            Node::Const(_) => true,
            Node::Expr { .. } | Node::Interp { .. } => false,
            Node::Array { constant, .. } | Node::Object { constant, .. } => constant.is_some(),
        }
    }

    /// The value this template always renders to, if it is constant.
    pub fn constant_value(&self) -> Option<&serde_json::Value> {
        match &self.node {
            Node::Const(v) => Some(v),
            Node::Array { constant, .. } | Node::Object { constant, .. } => constant.as_ref(),
            Node::Expr { .. } | Node::Interp { .. } => None,
        }
    }

    /// For an object template, the sub-template of field `name` (so a node can render one
    /// param lazily). Also works on constant objects.
    pub fn field(&self, name: &str) -> Option<&ValueTemplate> {
        match &self.node {
            Node::Object { fields, .. } => fields.get(name),
            _ => None,
        }
    }

    /// For an object template, its field names in document order.
    pub fn field_names(&self) -> impl Iterator<Item = &str> {
        let fields = match &self.node {
            Node::Object { fields, .. } => Some(fields),
            _ => None,
        };
        fields
            .into_iter()
            .flat_map(|f| f.keys().map(String::as_str))
    }

    /// The template source when this is a single string template (typed or interpolated).
    pub fn source(&self) -> Option<&str> {
        match &self.node {
            Node::Expr { source, .. } | Node::Interp { source, .. } => Some(source),
            _ => None,
        }
    }
}

fn finished<'a>(set: &'a TemplateSet, source: &str) -> Result<&'a CompiledCell, RenderError> {
    set.cell.get().ok_or_else(|| RenderError {
        template: source.to_string(),
        message: "template set was not finished (TemplateCompiler::finish not called)".into(),
    })
}

fn internal(source: &str) -> RenderError {
    RenderError {
        template: source.to_string(),
        message: "internal error: template missing".into(),
    }
}

#[cold]
fn render_error(source: &str, vars: &[String], ctx: &Value, err: &minijinja::Error) -> RenderError {
    let mut message = match err.detail() {
        Some(d) => format!("{}: {d}", kind_text(err)),
        None => kind_text(err),
    };
    if err.kind() == minijinja::ErrorKind::UndefinedError {
        if let Some(path) = vars.iter().find_map(|v| first_undefined(ctx, v)) {
            message = format!("undefined value `{path}`");
        }
        message.push_str(" (use `| default(...)` for optional values)");
    }
    RenderError {
        template: source.to_string(),
        message,
    }
}

/// The shortest prefix of the dotted `path` that is undefined in `ctx`, if any.
fn first_undefined(ctx: &Value, path: &str) -> Option<String> {
    let mut cur = ctx.clone();
    let mut end = 0;
    for (i, part) in path.split('.').enumerate() {
        end += if i == 0 { part.len() } else { part.len() + 1 };
        let next = cur.get_attr(part).ok()?;
        if next.is_undefined() {
            return Some(path[..end].to_string());
        }
        if next.is_none() {
            return None;
        }
        cur = next;
    }
    None
}

fn kind_text(err: &minijinja::Error) -> String {
    match err.kind() {
        minijinja::ErrorKind::UndefinedError => "undefined value".to_string(),
        k => k.to_string(),
    }
}

/// JSON truthiness as used by `condition`: `false`, `null`, `0`, `""`, `[]`, `{}` are false.
pub fn json_truthy(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::Null => false,
        serde_json::Value::Bool(b) => *b,
        serde_json::Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        serde_json::Value::String(s) => !s.is_empty(),
        serde_json::Value::Array(a) => !a.is_empty(),
        serde_json::Value::Object(o) => !o.is_empty(),
    }
}

/// Converts a JSON value to a minijinja value (object key order kept).
pub fn json_to_value(v: &serde_json::Value) -> Value {
    match v {
        serde_json::Value::Null => Value::from(()),
        serde_json::Value::Bool(b) => Value::from(*b),
        serde_json::Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                Value::from(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        serde_json::Value::String(s) => Value::from(s.as_str()),
        serde_json::Value::Array(a) => Value::from(a.iter().map(json_to_value).collect::<Vec<_>>()),
        serde_json::Value::Object(o) => Value::from_pairs(
            o.iter()
                .map(|(k, v)| (Value::from(k.as_str()), json_to_value(v))),
        ),
    }
}

/// Converts a minijinja value to JSON. Undefined becomes `null`; non-finite floats are an error.
pub fn value_to_json(v: &Value) -> Result<serde_json::Value, String> {
    if v.is_undefined() {
        return Ok(serde_json::Value::Null);
    }
    serde_json::to_value(v).map_err(|e| format!("result cannot be converted to JSON: {e}"))
}

/// How a string is compiled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StringMode {
    /// Normal param string: constant, typed `{{ expr }}` or interpolated template.
    Template,
    /// `ParamKind::Expression`: a string without `{{` is a bare minijinja expression
    /// (`input.amount > 100`); a `{{ ... }}` string is compiled as in `Template` mode.
    Expression,
}

/// Compiles the templates of one flow into one shared environment.
///
/// Call [`compile_value`](Self::compile_value) / [`compile_string`](Self::compile_string) for
/// every template, then [`finish`](Self::finish) exactly once; the returned templates render
/// only after `finish`.
pub struct TemplateCompiler {
    env: Environment<'static>,
    template_names: Vec<String>,
    expr_sources: Vec<String>,
    set: Arc<TemplateSet>,
}

impl fmt::Debug for TemplateCompiler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TemplateCompiler")
            .field("templates", &self.template_names.len())
            .field("expressions", &self.expr_sources.len())
            .finish()
    }
}

impl Default for TemplateCompiler {
    fn default() -> Self {
        Self::new()
    }
}

/// A compiled string plus the variables it reads (nested paths such as `nodes.fetch.output`).
#[derive(Debug, Clone)]
pub struct CompiledString {
    /// The template.
    pub template: ValueTemplate,
    /// Undeclared variables (nested dotted paths), empty for constants.
    pub variables: BTreeSet<String>,
}

/// Builds the environment every flow uses: strict undefined, no auto-escape.
pub fn new_environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
    env.set_recursion_limit(100);
    env
}

/// Names of minijinja globals (functions such as `range`, `dict`, `namespace`) that templates
/// may use besides [`CONTEXT_ROOTS`].
pub fn global_names() -> HashSet<String> {
    new_environment()
        .globals()
        .map(|(k, _)| k.to_string())
        .collect()
}

/// Whether `s` must be compiled (contains `{{` or `{%`).
pub fn is_template(s: &str) -> bool {
    s.contains("{{") || s.contains("{%")
}

/// If `s` is exactly one `{{ expr }}` (surrounding whitespace allowed), the inner expression.
pub fn single_expression(s: &str) -> Option<&str> {
    let t = s.trim();
    let inner = t.strip_prefix("{{")?.strip_suffix("}}")?;
    let inner = inner.strip_prefix('-').unwrap_or(inner);
    let inner = inner.strip_suffix('-').unwrap_or(inner);
    if inner.contains("{{")
        || inner.contains("}}")
        || inner.contains("{%")
        || inner.contains("%}")
        || inner.contains("{#")
        || inner.contains("#}")
        || inner.trim().is_empty()
    {
        return None;
    }
    Some(inner.trim())
}

impl TemplateCompiler {
    /// A compiler with a fresh environment (see [`new_environment`]).
    pub fn new() -> Self {
        TemplateCompiler {
            env: new_environment(),
            template_names: Vec::new(),
            expr_sources: Vec::new(),
            set: Arc::new(TemplateSet {
                cell: OnceLock::new(),
            }),
        }
    }

    /// Compiles every string inside `value` (in [`StringMode::Template`]).
    pub fn compile_value(
        &mut self,
        value: &serde_json::Value,
    ) -> Result<ValueTemplate, TemplateError> {
        Ok(match value {
            serde_json::Value::String(s) => self.compile_string(s, StringMode::Template)?.template,
            serde_json::Value::Array(a) => ValueTemplate::array(
                a.iter()
                    .map(|v| self.compile_value(v))
                    .collect::<Result<_, _>>()?,
            ),
            serde_json::Value::Object(o) => {
                let mut fields = IndexMap::with_capacity(o.len());
                for (k, v) in o {
                    fields.insert(k.clone(), self.compile_value(v)?);
                }
                ValueTemplate::object(fields)
            }
            other => ValueTemplate::constant(other.clone()),
        })
    }

    /// Compiles one string.
    pub fn compile_string(
        &mut self,
        s: &str,
        mode: StringMode,
    ) -> Result<CompiledString, TemplateError> {
        if mode == StringMode::Expression && !s.contains("{{") {
            if s.trim().is_empty() {
                return Err(TemplateError {
                    message: "empty expression".into(),
                    line: None,
                    offset: None,
                });
            }
            return self
                .add_expression(s.trim())
                .map_err(|e| shift(e, s, s.trim()));
        }
        if !is_template(s) {
            return Ok(CompiledString {
                template: ValueTemplate::constant(serde_json::Value::String(s.to_string())),
                variables: BTreeSet::new(),
            });
        }
        if let Some(expr) = single_expression(s) {
            // `{{ a }}` with a syntax error inside is reported like a template error.
            return self
                .add_expression(expr)
                .map(|mut c| {
                    if let Node::Expr { source, .. } = &mut c.template.node {
                        *source = Arc::from(s);
                    }
                    c
                })
                .map_err(|e| shift(e, s, expr));
        }
        let name = format!("t{}", self.template_names.len());
        self.env
            .add_template_owned(name.clone(), s.to_string())
            .map_err(|e| compile_error(&e))?;
        let variables: BTreeSet<String> = match self.env.get_template(&name) {
            Ok(t) => t.undeclared_variables(true).into_iter().collect(),
            Err(e) => return Err(compile_error(&e)),
        };
        let index = self.template_names.len();
        self.template_names.push(name);
        Ok(CompiledString {
            template: ValueTemplate {
                node: Node::Interp {
                    set: self.set.clone(),
                    index,
                    source: Arc::from(s),
                    vars: variables.iter().cloned().collect(),
                },
            },
            variables,
        })
    }

    fn add_expression(&mut self, expr: &str) -> Result<CompiledString, TemplateError> {
        let variables: BTreeSet<String> = {
            let compiled = self
                .env
                .compile_expression(expr)
                .map_err(|e| compile_error(&e))?;
            compiled.undeclared_variables(true).into_iter().collect()
        };
        let index = self.expr_sources.len();
        self.expr_sources.push(expr.to_string());
        Ok(CompiledString {
            template: ValueTemplate {
                node: Node::Expr {
                    set: self.set.clone(),
                    index,
                    source: Arc::from(expr),
                    vars: variables.iter().cloned().collect(),
                },
            },
            variables,
        })
    }

    /// Freezes the environment; every template compiled so far becomes renderable.
    pub fn finish(self) -> Result<(), TemplateError> {
        let TemplateCompiler {
            env,
            template_names,
            expr_sources,
            set,
        } = self;
        let cell = CompiledCell::try_new(env, |env| -> Result<Compiled<'_>, minijinja::Error> {
            let mut templates = Vec::with_capacity(template_names.len());
            for name in &template_names {
                templates.push(env.get_template(name)?);
            }
            let mut exprs = Vec::with_capacity(expr_sources.len());
            for src in expr_sources {
                exprs.push(env.compile_expression_owned(src)?);
            }
            Ok(Compiled { templates, exprs })
        })
        .map_err(|e| compile_error(&e))?;
        set.cell.set(cell).map_err(|_| TemplateError {
            message: "template set finished twice".into(),
            line: None,
            offset: None,
        })
    }
}

fn compile_error(e: &minijinja::Error) -> TemplateError {
    let message = match e.detail() {
        Some(d) => d.to_string(),
        None => e.kind().to_string(),
    };
    TemplateError {
        message,
        line: e.line(),
        offset: e.range().map(|r| r.start),
    }
}

/// Shifts the offset of an error in `part` (a subslice of `whole`) to be relative to `whole`.
fn shift(mut e: TemplateError, whole: &str, part: &str) -> TemplateError {
    let base = (part.as_ptr() as usize).saturating_sub(whole.as_ptr() as usize);
    e.offset = e.offset.map(|o| o + base);
    e
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ctx() -> Value {
        json_to_value(&json!({
            "input": {"amount": 150, "name": "Ada", "flag": true, "obj": {"a": 1}, "list": [1, 2], "none": null},
            "nodes": {"fetch": {"output": {"status_code": 200}}},
        }))
    }

    #[test]
    fn basics() {
        let t = ValueTemplate::compile(&json!({
            "n": "{{ input.amount }}",
            "b": " {{ input.flag }} ",
            "o": "{{ input.obj }}",
            "l": "{{ input.list }}",
            "z": "{{ input.none }}",
            "s": "Hi {{ input.name }}!",
            "c": "constant",
            "nested": ["{{ nodes.fetch.output.status_code + 1 }}", 3],
        }))
        .unwrap();
        assert!(!t.is_constant());
        assert_eq!(
            t.render(&ctx()).unwrap(),
            json!({"n": 150, "b": true, "o": {"a": 1}, "l": [1, 2], "z": null, "s": "Hi Ada!",
                   "c": "constant", "nested": [201, 3]})
        );
        assert!(t.field("c").unwrap().is_constant());
        assert_eq!(t.field("n").unwrap().render(&ctx()).unwrap(), json!(150));
    }

    #[test]
    fn strict_and_bare() {
        let t = ValueTemplate::compile(&json!("{{ nodes.missing.output }}")).unwrap();
        let e = t.render(&ctx()).unwrap_err();
        assert!(e.to_string().contains("undefined"), "{e}");
        let mut c = TemplateCompiler::new();
        let b = c
            .compile_string("input.amount > 100", StringMode::Expression)
            .unwrap();
        assert!(b.variables.contains("input.amount"));
        c.finish().unwrap();
        assert_eq!(b.template.render(&ctx()).unwrap(), json!(true));
    }
}
