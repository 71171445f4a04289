//! The flow model `parse` builds: defaults, start selection, edges, retry, inputs.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use flowrunner_dsl::template::json_to_value;
use flowrunner_dsl::*;
use serde_json::json;

fn flow(src: &str) -> Flow {
    match parse(src, &BuiltinCatalog) {
        Ok(p) => p.flow,
        Err(d) => panic!("{d}"),
    }
}

#[test]
fn defaults_and_metadata() {
    let f = flow(
        "metadata: {name: n, version: 2.0, concurrency: 3, tags: [a, b]}\nnodes:\n  x: {type: log, params: {message: hi}}\n",
    );
    assert_eq!(f.metadata.name, "n");
    assert_eq!(f.metadata.version, "2.0");
    assert_eq!(f.metadata.max_steps, 1000);
    assert_eq!(f.metadata.concurrency, Some(3));
    assert_eq!(f.metadata.tags, ["a", "b"]);
    assert!(f.output.is_none());
    let f = flow("metadata: {name: n}\nnodes:\n  x: {type: log, params: {message: hi}}\n");
    assert_eq!(f.metadata.version, "1.0.0");
    assert_eq!(f.metadata.concurrency, None);
    let x = &f.nodes["x"];
    assert_eq!(x.node_type, "log");
    assert_eq!(x.position, Position { line: 3, column: 3 });
    assert_eq!(x.raw_params, json!({"message": "hi"}));
    assert!(x.retry.is_none() && x.timeout.is_none() && x.next.is_empty());
}

#[test]
fn start_selection() {
    let two = "  a: {type: log, params: {message: a}, next: start}\n  start: {type: log, params: {message: s}, next: a}\n";
    assert_eq!(
        flow(&format!("metadata: {{name: n}}\nnodes:\n{two}")).start,
        "start"
    );
    assert_eq!(
        flow(&format!("metadata: {{name: n}}\nstart: a\nnodes:\n{two}")).start,
        "a"
    );
    let f = flow(
        "metadata: {name: n}\nnodes:\n  b: {type: log, params: {message: a}, next: c}\n  c: {type: log, params: {message: s}}\n",
    );
    assert_eq!(f.start, "b");
    assert_eq!(f.nodes.keys().collect::<Vec<_>>(), ["b", "c"]);
}

#[test]
fn edges_retry_timeout() {
    let f = flow(
        r#"
metadata: {name: n}
nodes:
  a:
    type: http.request
    params: {url: "http://127.0.0.1:1/"}
    timeout: 1m30s
    retry: {max_attempts: 5, backoff: fixed, initial_delay: 100ms, max_delay: 1s, jitter: true}
    next: {default: c, error: e}
  c:
    type: condition
    params: {if: "input.x > 1"}
    next: {true: e, "false": e}
  e:
    type: delay
    params: {duration: 1s}
    retry: {}
    next: a
"#,
    );
    let a = &f.nodes["a"];
    assert_eq!(a.timeout, Some(Duration::from_secs(90)));
    assert_eq!(
        a.retry,
        Some(RetryPolicy {
            max_attempts: 5,
            backoff: Backoff::Fixed,
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            jitter: true
        })
    );
    assert_eq!(a.next.get(OUTCOME_DEFAULT).map(String::as_str), Some("c"));
    assert_eq!(a.next.get(OUTCOME_ERROR).map(String::as_str), Some("e"));
    assert_eq!(
        f.nodes["c"].next.keys().collect::<Vec<_>>(),
        ["true", "false"]
    );
    let e = &f.nodes["e"];
    assert_eq!(
        e.retry,
        Some(RetryPolicy {
            max_attempts: 3,
            backoff: Backoff::Exponential,
            initial_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
            jitter: false
        })
    );
    assert_eq!(e.next.get("default").map(String::as_str), Some("a"));
    // The condition's `if` is a compiled bare expression.
    let ctx = json_to_value(&json!({"input": {"x": 2}}));
    assert_eq!(
        f.nodes["c"]
            .params
            .field("if")
            .unwrap()
            .render(&ctx)
            .unwrap(),
        json!(true)
    );
}

#[test]
fn output_template_and_lazy_fields() {
    let f = flow(
        r#"
metadata: {name: n}
nodes:
  t: {type: transform, params: {value: {sum: "{{ input.a + input.b }}", label: "x={{ input.a }}"}}}
output: {result: "{{ nodes.t.output.sum }}"}
"#,
    );
    let ctx =
        json_to_value(&json!({"input": {"a": 1, "b": 2}, "nodes": {"t": {"output": {"sum": 3}}}}));
    let value = f.nodes["t"].params.field("value").unwrap();
    assert_eq!(
        value.render(&ctx).unwrap(),
        json!({"sum": 3, "label": "x=1"})
    );
    assert_eq!(
        f.output.unwrap().render(&ctx).unwrap(),
        json!({"result": 3})
    );
}

#[test]
fn check_input() {
    let f = flow(
        r#"
metadata: {name: n}
inputs:
  name: {type: string, required: true}
  count: {type: integer, default: 3}
  ratio: {type: number}
  tags: {type: array}
  opts: {type: object, required: true, default: {a: 1}}
  flag: {type: boolean}
nodes:
  t: {type: transform, params: {value: 1}}
"#,
    );
    assert_eq!(f.inputs["count"].default, Some(json!(3)));
    assert_eq!(f.inputs["name"].ty, InputType::String);
    let ok = f
        .check_input(&json!({"name": "x", "extra": true, "ratio": 1}))
        .unwrap();
    assert_eq!(
        ok,
        json!({"name": "x", "extra": true, "ratio": 1, "count": 3, "opts": {"a": 1}})
    );
    assert_eq!(
        f.check_input(&json!({"name": "x", "count": 2.0})).unwrap()["count"],
        json!(2.0)
    );
    let errs = f
        .check_input(&json!({"count": 1.5, "tags": "no", "flag": 1, "ratio": "1"}))
        .unwrap_err();
    let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(fields, ["name", "count", "ratio", "tags", "flag"]);
    assert_eq!(errs[0].to_string(), "input `name`: is required");
    assert_eq!(errs[1].reason, "expected an integer, found a number");
    assert!(f.check_input(&json!([1])).is_err());
    assert!(f.check_input(&json!(null)).unwrap_err()[0].field == "name");
}

#[test]
fn warnings_do_not_fail_parse() {
    let p = parse(
        "metadata: {name: n}\nnodes:\n  a: {type: log, params: {message: a}}\n  b: {type: log, params: {message: b}}\n",
        &BuiltinCatalog,
    )
    .unwrap();
    assert_eq!(p.warnings.len(), 1);
    assert_eq!(
        p.warnings[0].to_string(),
        "4:3: warning[unreachable_node] node `b`: not reachable from the start node `a`"
    );
    assert_eq!(
        p.warnings[0].render_with_file("f.yaml"),
        "f.yaml:4:3: warning[unreachable_node] node `b`: not reachable from the start node `a`"
    );
}

#[test]
fn errors_sorted_and_rendered() {
    let err = parse(
        "nodes:\n  a: {type: nope}\n  b: {type: log}\n",
        &BuiltinCatalog,
    )
    .unwrap_err();
    let text = err.to_string();
    assert_eq!(
        text,
        "1:1: error[missing_field] missing `metadata` (with at least `name`)\n\
         2:13: error[unknown_node_type] node `a`: unknown node type `nope`; known types: http.request, webhook, transform, condition, switch, delay, log, fail\n\
         3:3: error[missing_param] node `b`: `log` requires param `message` (a string)\n\
         3:3: warning[unreachable_node] node `b`: not reachable from the start node `a`"
    );
    assert_eq!(err.error_count(), 3);
}

/// A catalog with an embedder type that accepts extra params.
struct Custom(Vec<NodeSpec>);
impl NodeCatalog for Custom {
    fn spec(&self, t: &str) -> Option<&NodeSpec> {
        self.0
            .iter()
            .find(|s| s.node_type == t)
            .or_else(|| BuiltinCatalog.spec(t))
    }
}

#[test]
fn custom_catalog() {
    let mut spec = NodeSpec::new("acme.thing", "custom")
        .param(ParamSpec::required("target", ParamKind::String, "where"))
        .outcomes(Outcomes::Fixed(vec!["hit".into(), "miss".into()]));
    spec.allow_extra_params = true;
    let cat = Custom(vec![spec]);
    let src = "metadata: {name: n}\nnodes:\n  a: {type: acme.thing, params: {target: x, anything: 1}, next: {hit: b, miss: b}}\n  b: {type: log, params: {message: m}}\n";
    assert!(parse(src, &cat).is_ok());
    let d = validate(&src.replace("hit: b", "default: b"), &cat);
    assert_eq!(d[0].code, "unknown_outcome");
}
