//! Property tests: the parser never panics, and `parse` / `validate` agree.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use flowrunner_dsl::template::json_to_value;
use flowrunner_dsl::{BuiltinCatalog, parse, validate};
use proptest::prelude::*;
use serde_json::{Map, Value};

fn check(source: &str) {
    let diags = validate(source, &BuiltinCatalog);
    match parse(source, &BuiltinCatalog) {
        Ok(parsed) => {
            assert!(
                diags.iter().all(|d| !d.is_error()),
                "parse ok but validate has errors: {diags:?}"
            );
            assert_eq!(parsed.warnings, diags);
            // Rendering with an empty context must not panic either (errors are fine).
            let ctx = json_to_value(&serde_json::json!({"input": {}, "nodes": {}, "secrets": {}}));
            for node in parsed.flow.nodes.values() {
                let _ = node.params.render(&ctx);
            }
            if let Some(out) = &parsed.flow.output {
                let _ = out.render(&ctx);
            }
        }
        Err(errs) => {
            assert!(
                !diags.is_empty(),
                "parse failed but validate returned nothing"
            );
            assert!(
                errs.0.iter().any(|d| d.is_error()),
                "Err without an error diagnostic: {errs:?}"
            );
            assert_eq!(errs.0, diags);
        }
    }
    for d in &diags {
        assert!(d.line >= 1 && d.column >= 1, "bad position in {d}");
        let _ = d.to_string();
    }
}

fn example_sources() -> Vec<String> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let mut v: Vec<(PathBuf, String)> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == "yaml"))
                .filter_map(|e| {
                    std::fs::read_to_string(e.path())
                        .ok()
                        .map(|s| (e.path(), s))
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    let mut out: Vec<String> = v.into_iter().map(|(_, s)| s).collect();
    out.push(include_str!("fixtures/valid_full.yaml").to_string());
    out
}

#[derive(Debug, Clone)]
enum Mutation {
    Insert(usize, u8),
    Delete(usize),
    Replace(usize, u8),
    Duplicate(usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let interesting = prop_oneof![
        any::<u8>(),
        Just(b':'),
        Just(b'-'),
        Just(b' '),
        Just(b'\n'),
        Just(b'{'),
        Just(b'}'),
        Just(b'['),
        Just(b']'),
        Just(b'"'),
        Just(b'\''),
        Just(b'&'),
        Just(b'*'),
        Just(b'!'),
        Just(b'|'),
        Just(b'>'),
        Just(b'%'),
        Just(b'#'),
    ];
    prop_oneof![
        (any::<usize>(), interesting.clone()).prop_map(|(p, b)| Mutation::Insert(p, b)),
        any::<usize>().prop_map(Mutation::Delete),
        (any::<usize>(), interesting).prop_map(|(p, b)| Mutation::Replace(p, b)),
        (any::<usize>(), 1usize..40).prop_map(|(p, n)| Mutation::Duplicate(p, n)),
    ]
}

fn apply(mut bytes: Vec<u8>, muts: &[Mutation]) -> Vec<u8> {
    for m in muts {
        let len = bytes.len().max(1);
        match *m {
            Mutation::Insert(p, b) => bytes.insert(p % (bytes.len() + 1), b),
            Mutation::Delete(p) if !bytes.is_empty() => {
                bytes.remove(p % len);
            }
            Mutation::Replace(p, b) if !bytes.is_empty() => bytes[p % len] = b,
            Mutation::Duplicate(p, n) if !bytes.is_empty() => {
                let start = p % len;
                let end = (start + n).min(bytes.len());
                let chunk = bytes[start..end].to_vec();
                bytes.splice(start..start, chunk);
            }
            _ => {}
        }
    }
    bytes
}

const KEYS: &[&str] = &[
    "metadata",
    "name",
    "nodes",
    "type",
    "params",
    "next",
    "retry",
    "timeout",
    "start",
    "output",
    "inputs",
    "default",
    "error",
    "true",
    "false",
    "value",
    "url",
    "message",
    "if",
    "cases",
    "duration",
    "until",
    "max_attempts",
    "backoff",
    "initial_delay",
    "max_delay",
    "jitter",
    "required",
    "a",
    "b",
    "c",
];
const SCALARS: &[&str] = &[
    "transform",
    "condition",
    "switch",
    "delay",
    "log",
    "fail",
    "http.request",
    "webhook",
    "a",
    "b",
    "c",
    "{{ input.x }}",
    "{{ nodes.a.output }}",
    "{{ nodes.zz }}",
    "x {{ }}",
    "{% if %}",
    "input.x > 1",
    "1s",
    "250ms",
    "0s",
    "nope",
    "string",
    "number",
    "fixed",
    "exponential",
    "GET",
    "info",
    "",
    "2030-01-01T00:00:00Z",
    "200-299",
];

fn json_tree() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        (-1000.0f64..1000.0).prop_map(Value::from),
        proptest::sample::select(SCALARS).prop_map(|s| Value::String(s.to_string())),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(5, 64, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            proptest::collection::vec((proptest::sample::select(KEYS), inner), 0..6).prop_map(
                |kv| Value::Object(
                    kv.into_iter()
                        .map(|(k, v)| (k.to_string(), v))
                        .collect::<Map<_, _>>()
                )
            ),
        ]
    })
}

/// Flow-shaped documents: a valid skeleton with random nodes.
fn flow_doc() -> impl Strategy<Value = Value> {
    let node = (
        proptest::sample::select(SCALARS),
        json_tree(),
        proptest::collection::vec(
            (
                proptest::sample::select(KEYS),
                proptest::sample::select(&["a", "b", "c", "d"][..]),
            ),
            0..3,
        ),
        proptest::option::of(json_tree()),
    )
        .prop_map(|(ty, params, next, retry)| {
            let mut m = Map::new();
            m.insert("type".into(), Value::String(ty.to_string()));
            m.insert("params".into(), params);
            m.insert(
                "next".into(),
                Value::Object(
                    next.into_iter()
                        .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
                        .collect(),
                ),
            );
            if let Some(r) = retry {
                m.insert("retry".into(), r);
            }
            Value::Object(m)
        });
    (
        proptest::collection::vec((proptest::sample::select(&["a", "b", "c"][..]), node), 1..4),
        proptest::option::of(json_tree()),
    )
        .prop_map(|(nodes, output)| {
            let mut doc = Map::new();
            doc.insert("metadata".into(), serde_json::json!({"name": "fuzz"}));
            doc.insert(
                "nodes".into(),
                Value::Object(nodes.into_iter().map(|(k, v)| (k.to_string(), v)).collect()),
            );
            if let Some(o) = output {
                doc.insert("output".into(), o);
            }
            Value::Object(doc)
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_strings_never_panic(s in ".{0,300}") {
        check(&s);
    }

    #[test]
    fn yamlish_strings_never_panic(s in "[a-z:{}\\[\\]\\-\"' \n|>&*!#%.,0-9]{0,200}") {
        check(&s);
    }

    #[test]
    fn mutated_examples_never_panic(
        which in any::<proptest::sample::Index>(),
        muts in proptest::collection::vec(mutation(), 1..8),
    ) {
        let sources = example_sources();
        let src = which.get(&sources);
        let mutated = apply(src.as_bytes().to_vec(), &muts);
        check(&String::from_utf8_lossy(&mutated));
    }

    #[test]
    fn structured_yaml_never_panics(doc in json_tree()) {
        let yaml = serde_yaml::to_string(&doc).unwrap_or_default();
        check(&yaml);
    }

    #[test]
    fn flow_shaped_yaml_never_panics(doc in flow_doc()) {
        let yaml = serde_yaml::to_string(&doc).unwrap_or_default();
        check(&yaml);
    }
}

#[test]
fn pathological_inputs() {
    // Deep nesting, alias bombs, odd scalars, tabs, BOM, NUL, CRLF.
    check(&"[".repeat(10_000));
    check(&format!("a: {}1{}", "[".repeat(300), "]".repeat(300)));
    let mut bomb = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 0..12 {
        let prev = if i == 0 {
            "a".to_string()
        } else {
            format!("l{}", i - 1)
        };
        bomb.push_str(&format!("l{i}: &l{i} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"));
    }
    check(&bomb);
    check("\u{feff}metadata: {name: x}\r\nnodes:\r\n  a: {type: log, params: {message: hi}}\r\n");
    check("metadata:\n\tname: x\n");
    check("\0");
    check("*unknown");
    check("? [complex, key]\n: value\n");
    check("metadata: !!str {name: x}\n");
    check("metadata: {name: x}\nnodes: {a: {type: transform, params: {value: .nan}}}\n");
    check(
        "metadata: {name: x}\nnodes: {a: {type: transform, params: {value: 99999999999999999999999}}}\n",
    );
    check("---\n...\n");
    check("%YAML 1.2\n---\nmetadata: {name: x}\n");
}
