//! A small position-aware YAML tree built from `yaml-rust2` parser events.
//!
//! Every node and mapping key keeps its 1-based line/column. Duplicate keys are reported
//! (the first occurrence wins) instead of failing the whole document.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, Parser, Tag};
use yaml_rust2::scanner::{Marker, TScalarStyle};

use crate::diagnostics::{Diagnostic, codes};
use crate::model::Position;

/// Largest number of nodes a document may expand to (guards against alias bombs).
const MAX_NODES: usize = 1_000_000;
/// Deepest nesting accepted.
const MAX_DEPTH: usize = 256;

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Kind {
    Null,
    Bool(bool),
    Int(i64),
    /// An integer outside i64 (but inside u64).
    UInt(u64),
    Float(f64),
    Str(String),
    Seq(Vec<YNode>),
    Map(Vec<Entry>),
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct YNode {
    pub kind: Kind,
    pub pos: Position,
    /// For strings: whether the scalar was quoted or a block scalar (`|`, `>`).
    pub quoted: bool,
    /// For plain scalars resolved to a non-string (numbers, booleans, null): the text as written.
    pub raw: Option<Box<str>>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Entry {
    pub key: String,
    pub key_pos: Position,
    pub value: YNode,
}

impl YNode {
    pub fn as_map(&self) -> Option<&[Entry]> {
        match &self.kind {
            Kind::Map(m) => Some(m),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.kind {
            Kind::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self.kind, Kind::Null)
    }

    pub fn type_name(&self) -> &'static str {
        match self.kind {
            Kind::Null => "null",
            Kind::Bool(_) => "a boolean",
            Kind::Int(_) | Kind::UInt(_) => "an integer",
            Kind::Float(_) => "a number",
            Kind::Str(_) => "a string",
            Kind::Seq(_) => "a list",
            Kind::Map(_) => "a mapping",
        }
    }

    /// Scalar rendered as text (for mapping keys and switch cases).
    pub fn scalar_text(&self) -> Option<String> {
        Some(match &self.kind {
            Kind::Null => "null".into(),
            Kind::Bool(b) => b.to_string(),
            Kind::Int(i) => i.to_string(),
            Kind::UInt(u) => u.to_string(),
            Kind::Float(f) => f.to_string(),
            Kind::Str(s) => s.clone(),
            Kind::Seq(_) | Kind::Map(_) => return None,
        })
    }

    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match &self.kind {
            Kind::Null => J::Null,
            Kind::Bool(b) => J::Bool(*b),
            Kind::Int(i) => J::from(*i),
            Kind::UInt(u) => J::from(*u),
            Kind::Float(f) => {
                serde_json::Number::from_f64(*f).map_or_else(|| J::String(f.to_string()), J::Number)
            }
            Kind::Str(s) => J::String(s.clone()),
            Kind::Seq(items) => J::Array(items.iter().map(YNode::to_json).collect()),
            Kind::Map(entries) => J::Object(
                entries
                    .iter()
                    .map(|e| (e.key.clone(), e.value.to_json()))
                    .collect(),
            ),
        }
    }
}

fn pos(m: &Marker) -> Position {
    // yaml-rust2 markers: 1-based line, 0-based column.
    Position {
        line: m.line().max(1),
        column: m.col() + 1,
    }
}

enum Frame {
    Seq {
        items: Vec<YNode>,
        pos: Position,
        anchor: usize,
    },
    Map {
        entries: Vec<Entry>,
        pending_key: Option<(String, Position)>,
        pos: Position,
        anchor: usize,
    },
}

struct Builder {
    stack: Vec<Frame>,
    anchors: HashMap<usize, YNode>,
    root: Option<YNode>,
    diags: Vec<Diagnostic>,
    nodes: usize,
}

/// Parses `source` into a tree. Returns `None` (with at least one diagnostic) when the YAML is
/// malformed; duplicate keys are reported but do not prevent a tree.
pub(crate) fn parse_yaml(source: &str) -> (Option<YNode>, Vec<Diagnostic>) {
    let mut parser = Parser::new_from_str(source);
    let mut b = Builder {
        stack: Vec::new(),
        anchors: HashMap::new(),
        root: None,
        diags: Vec::new(),
        nodes: 0,
    };
    let mut documents = 0usize;
    loop {
        let (event, mark) = match parser.next_token() {
            Ok(x) => x,
            Err(e) => {
                let p = pos(e.marker());
                b.diags.push(Diagnostic::error(
                    codes::YAML_SYNTAX,
                    format!("malformed YAML: {}", e.info()),
                    p.line,
                    p.column,
                ));
                return (None, b.diags);
            }
        };
        let p = pos(&mark);
        let result = match event {
            Event::StreamEnd => break,
            Event::Nothing | Event::StreamStart | Event::DocumentEnd => Ok(()),
            Event::DocumentStart => {
                documents += 1;
                if documents > 1 {
                    Err(Diagnostic::error(
                        codes::YAML_SYNTAX,
                        "a flow file must contain a single YAML document",
                        p.line,
                        p.column,
                    ))
                } else {
                    Ok(())
                }
            }
            Event::Alias(id) => match b.anchors.get(&id).cloned() {
                Some(mut node) => {
                    b.nodes += count(&node);
                    node.pos = p;
                    b.push_value(node)
                }
                None => Err(Diagnostic::error(
                    codes::YAML_SYNTAX,
                    "alias refers to an unknown anchor",
                    p.line,
                    p.column,
                )),
            },
            Event::Scalar(value, style, anchor, tag) => {
                let node = resolve_scalar(value, style, tag.as_ref(), p);
                if anchor > 0 {
                    b.anchors.insert(anchor, node.clone());
                }
                b.nodes += 1;
                b.push_value(node)
            }
            Event::SequenceStart(anchor, _) => {
                b.stack.push(Frame::Seq {
                    items: Vec::new(),
                    pos: p,
                    anchor,
                });
                b.depth_check(p)
            }
            Event::MappingStart(anchor, _) => {
                b.stack.push(Frame::Map {
                    entries: Vec::new(),
                    pending_key: None,
                    pos: p,
                    anchor,
                });
                b.depth_check(p)
            }
            Event::SequenceEnd | Event::MappingEnd => match b.stack.pop() {
                Some(Frame::Seq { items, pos, anchor }) => {
                    let node = YNode {
                        kind: Kind::Seq(items),
                        pos,
                        quoted: false,
                        raw: None,
                    };
                    b.finish_collection(node, anchor)
                }
                Some(Frame::Map {
                    entries,
                    pos,
                    anchor,
                    ..
                }) => {
                    let node = YNode {
                        kind: Kind::Map(entries),
                        pos,
                        quoted: false,
                        raw: None,
                    };
                    b.finish_collection(node, anchor)
                }
                None => Err(Diagnostic::error(
                    codes::YAML_SYNTAX,
                    "malformed YAML: unbalanced collection",
                    p.line,
                    p.column,
                )),
            },
        };
        if let Err(d) = result {
            b.diags.push(d);
            return (None, b.diags);
        }
        if b.nodes > MAX_NODES {
            b.diags.push(Diagnostic::error(
                codes::YAML_SYNTAX,
                "document too large (too many nodes after alias expansion)",
                p.line,
                p.column,
            ));
            return (None, b.diags);
        }
    }
    (b.root, b.diags)
}

fn count(node: &YNode) -> usize {
    match &node.kind {
        Kind::Seq(items) => 1 + items.iter().map(count).sum::<usize>(),
        Kind::Map(entries) => 1 + entries.iter().map(|e| 1 + count(&e.value)).sum::<usize>(),
        _ => 1,
    }
}

impl Builder {
    fn depth_check(&self, p: Position) -> Result<(), Diagnostic> {
        if self.stack.len() > MAX_DEPTH {
            return Err(Diagnostic::error(
                codes::YAML_SYNTAX,
                format!("nesting deeper than {MAX_DEPTH} levels"),
                p.line,
                p.column,
            ));
        }
        Ok(())
    }

    fn finish_collection(&mut self, node: YNode, anchor: usize) -> Result<(), Diagnostic> {
        if anchor > 0 {
            self.anchors.insert(anchor, node.clone());
        }
        self.nodes += 1;
        self.push_value(node)
    }

    fn push_value(&mut self, node: YNode) -> Result<(), Diagnostic> {
        match self.stack.last_mut() {
            None => {
                self.root = Some(node);
                Ok(())
            }
            Some(Frame::Seq { items, .. }) => {
                items.push(node);
                Ok(())
            }
            Some(Frame::Map {
                entries,
                pending_key,
                ..
            }) => match pending_key.take() {
                None => {
                    // Keys keep their text as written (`1.0:` stays "1.0", `true:` is "true").
                    let key = match node
                        .raw
                        .as_deref()
                        .map(str::to_string)
                        .or_else(|| node.scalar_text())
                    {
                        Some(k) => k,
                        None => {
                            return Err(Diagnostic::error(
                                codes::YAML_SYNTAX,
                                "mapping keys must be plain scalars (not lists or mappings)",
                                node.pos.line,
                                node.pos.column,
                            ));
                        }
                    };
                    *pending_key = Some((key, node.pos));
                    Ok(())
                }
                Some((key, key_pos)) => {
                    if let Some(first) = entries.iter().find(|e| e.key == key) {
                        self.diags.push(Diagnostic::error(
                            codes::DUPLICATE_KEY,
                            format!(
                                "duplicate key `{key}` (first defined at line {})",
                                first.key_pos.line
                            ),
                            key_pos.line,
                            key_pos.column,
                        ));
                    } else {
                        entries.push(Entry {
                            key,
                            key_pos,
                            value: node,
                        });
                    }
                    Ok(())
                }
            },
        }
    }
}

fn resolve_scalar(value: String, style: TScalarStyle, tag: Option<&Tag>, p: Position) -> YNode {
    let quoted = style != TScalarStyle::Plain;
    let mk = |kind| YNode {
        kind,
        pos: p,
        quoted,
        raw: None,
    };
    if let Some(tag) = tag
        && (tag.handle == "tag:yaml.org,2002:" || tag.handle == "!!")
        && tag.suffix == "str"
    {
        return mk(Kind::Str(value));
    }
    if quoted {
        return mk(Kind::Str(value));
    }
    let kind = match value.as_str() {
        "" | "~" | "null" | "Null" | "NULL" => Kind::Null,
        "true" | "True" | "TRUE" => Kind::Bool(true),
        "false" | "False" | "FALSE" => Kind::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => Kind::Float(f64::INFINITY),
        "-.inf" | "-.Inf" | "-.INF" => Kind::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => Kind::Float(f64::NAN),
        s => parse_number(s).unwrap_or_else(|| Kind::Str(value.clone())),
    };
    let raw = (!matches!(kind, Kind::Str(_))).then(|| value.clone().into_boxed_str());
    YNode { raw, ..mk(kind) }
}

fn parse_number(s: &str) -> Option<Kind> {
    let b = s.as_bytes();
    let digits_start = usize::from(matches!(b.first(), Some(b'+') | Some(b'-')));
    let body = &s[digits_start..];
    if body.is_empty() {
        return None;
    }
    if let Some(hex) = body.strip_prefix("0x") {
        if digits_start == 0 && !hex.is_empty() && hex.bytes().all(|c| c.is_ascii_hexdigit()) {
            return i64::from_str_radix(hex, 16)
                .ok()
                .map(Kind::Int)
                .or_else(|| u64::from_str_radix(hex, 16).ok().map(Kind::UInt));
        }
        return None;
    }
    if let Some(oct) = body.strip_prefix("0o") {
        if digits_start == 0 && !oct.is_empty() && oct.bytes().all(|c| (b'0'..=b'7').contains(&c)) {
            return i64::from_str_radix(oct, 8)
                .ok()
                .map(Kind::Int)
                .or_else(|| u64::from_str_radix(oct, 8).ok().map(Kind::UInt));
        }
        return None;
    }
    if body.bytes().all(|c| c.is_ascii_digit()) {
        let clean = s.strip_prefix('+').unwrap_or(s);
        return clean
            .parse::<i64>()
            .ok()
            .map(Kind::Int)
            .or_else(|| clean.parse::<u64>().ok().map(Kind::UInt))
            .or_else(|| clean.parse::<f64>().ok().map(Kind::Float));
    }
    // [-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?
    let mut i = 0;
    let bb = body.as_bytes();
    let int_digits = bb.iter().take_while(|c| c.is_ascii_digit()).count();
    i += int_digits;
    let mut frac_digits = 0;
    if i < bb.len() && bb[i] == b'.' {
        i += 1;
        frac_digits = bb[i..].iter().take_while(|c| c.is_ascii_digit()).count();
        i += frac_digits;
    }
    if int_digits == 0 && frac_digits == 0 {
        return None;
    }
    if i < bb.len() && (bb[i] == b'e' || bb[i] == b'E') {
        i += 1;
        if i < bb.len() && (bb[i] == b'+' || bb[i] == b'-') {
            i += 1;
        }
        let exp_digits = bb[i..].iter().take_while(|c| c.is_ascii_digit()).count();
        if exp_digits == 0 {
            return None;
        }
        i += exp_digits;
    }
    if i != bb.len() {
        return None;
    }
    s.parse::<f64>().ok().map(Kind::Float)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn positions_and_scalars() {
        let (root, diags) = parse_yaml("a: 1\nb:\n  c: \"x\"\n  d: [1.5, true, ~, 0x10]\na: 2\n");
        let root = root.unwrap();
        assert_eq!(diags.len(), 1);
        assert_eq!(diags[0].code, "duplicate_key");
        assert_eq!((diags[0].line, diags[0].column), (5, 1));
        let m = root.as_map().unwrap();
        assert_eq!(m[0].key_pos, Position { line: 1, column: 1 });
        assert_eq!(m[0].value.pos, Position { line: 1, column: 4 });
        let b = m[1].value.as_map().unwrap();
        assert_eq!(b[0].key_pos, Position { line: 3, column: 3 });
        assert_eq!(
            root.to_json(),
            serde_json::json!({"a": 1, "b": {"c": "x", "d": [1.5, true, null, 16]}})
        );
    }

    #[test]
    fn syntax_error() {
        let (root, diags) = parse_yaml("a: [1, 2\nb: 3\n");
        assert!(root.is_none());
        assert_eq!(diags[0].code, "yaml_syntax");
    }
}
