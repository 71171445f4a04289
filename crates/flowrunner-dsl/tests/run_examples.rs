//! Runs the offline examples (`transform`, `condition`, `switch`, `delay`, `log`, `fail`) with
//! a tiny reference interpreter, using the input from each file's `# Example input:` comment,
//! to catch templates that would fail at run time (strict undefined, wrong paths).
//! The real engine lives in `flowrunner-runtime`; this only mirrors the documented semantics.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use flowrunner_dsl::semantics::{condition_outcome, switch_outcome};
use flowrunner_dsl::template::json_to_value;
use flowrunner_dsl::{BuiltinCatalog, Flow, OUTCOME_DEFAULT, OUTCOME_ERROR, parse};
use serde_json::{Map, Value, json};

/// Returns (result, visited node ids) or the failure message.
fn run(flow: &Flow, input: &Value) -> Result<(Value, Vec<String>), String> {
    let input = flow.check_input(input).map_err(|e| format!("{e:?}"))?;
    let mut nodes = Map::new();
    let mut error = Value::Null;
    let mut visited = Vec::new();
    let mut current = Some(flow.start.clone());
    let mut last_output = Value::Null;
    let mut steps = 0;
    let ctx = |nodes: &Map<String, Value>, error: &Value| {
        json_to_value(&json!({
            "input": input, "nodes": nodes, "secrets": {},
            "execution": {"id": "exe_test", "started_at": "2030-01-01T00:00:00Z"},
            "flow": {"name": flow.metadata.name, "version": flow.metadata.version},
            "error": error,
        }))
    };
    while let Some(id) = current.take() {
        steps += 1;
        assert!(steps <= flow.metadata.max_steps, "max_steps exceeded");
        let node = &flow.nodes[&id];
        visited.push(id.clone());
        let params = node.params.render(&ctx(&nodes, &error));
        let result: Result<(Value, String), String> = match params {
            Err(e) => Err(e.to_string()),
            Ok(p) => match node.node_type.as_str() {
                "transform" => Ok((p["value"].clone(), OUTCOME_DEFAULT.into())),
                "condition" => {
                    let outcome = condition_outcome(&p["if"]);
                    Ok((json!({"result": outcome == "true"}), outcome.into()))
                }
                "switch" => {
                    let cases = p["cases"].as_array().cloned().unwrap_or_default();
                    let matched = switch_outcome(&p["value"], &cases);
                    let outcome = matched.clone().unwrap_or_else(|| OUTCOME_DEFAULT.into());
                    Ok((json!({"value": p["value"], "matched": matched}), outcome))
                }
                "delay" => {
                    if let Some(d) = p.get("duration") {
                        flowrunner_domain::parse_duration(d.as_str().unwrap_or(""))
                            .map_err(|e| e.to_string())?;
                    }
                    Ok((json!({"waited_ms": 0}), OUTCOME_DEFAULT.into()))
                }
                "log" => Ok((
                    json!({"level": p.get("level").cloned().unwrap_or(json!("info")), "message": p["message"]}),
                    OUTCOME_DEFAULT.into(),
                )),
                "fail" => Err(p["message"].as_str().unwrap_or("").to_string()),
                other => panic!("{other} is not offline"),
            },
        };
        match result {
            Ok((output, outcome)) => {
                nodes.insert(id.clone(), json!({ "output": output }));
                last_output = output;
                current = node.next.get(&outcome).cloned();
            }
            Err(message) => {
                error = json!({"message": message, "node": id});
                match node.next.get(OUTCOME_ERROR) {
                    Some(next) => current = Some(next.clone()),
                    None => return Err(message),
                }
            }
        }
    }
    let result = match &flow.output {
        Some(t) => t.render(&ctx(&nodes, &error)).map_err(|e| e.to_string())?,
        None => last_output,
    };
    Ok((result, visited))
}

fn example(name: &str) -> (Flow, Value) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(name);
    let source = std::fs::read_to_string(&path).unwrap();
    let input_line = source
        .lines()
        .find_map(|l| l.strip_prefix("# Example input:"))
        .unwrap_or_else(|| panic!("{name}: no `# Example input:` line"));
    let json_text = input_line.trim().split("   ").next().unwrap();
    let input: Value = serde_json::from_str(json_text)
        .unwrap_or_else(|e| panic!("{name}: bad example input: {e}"));
    (
        parse(&source, &BuiltinCatalog)
            .unwrap_or_else(|d| panic!("{d}"))
            .flow,
        input,
    )
}

#[test]
fn transform_example() {
    let (flow, input) = example("transform.yaml");
    let (out, _) = run(&flow, &input).unwrap();
    assert_eq!(
        out,
        json!({"customer": "Ada Lovelace", "item_count": 2, "total": 15.5, "currency": "EUR", "source": "example"})
    );
}

#[test]
fn condition_example() {
    let (flow, input) = example("condition.yaml");
    assert_eq!(
        run(&flow, &input).unwrap().0,
        json!({"category": "large", "amount": 150})
    );
    assert_eq!(
        run(&flow, &json!({"amount": 50})).unwrap().0,
        json!({"category": "small", "amount": 50})
    );
}

#[test]
fn switch_example() {
    let (flow, input) = example("switch.yaml");
    assert_eq!(run(&flow, &input).unwrap().0, json!("Bonjour"));
    assert_eq!(
        run(&flow, &json!({"country": "de"})).unwrap().0,
        json!("Guten Tag")
    );
    assert_eq!(
        run(&flow, &json!({"country": "US"})).unwrap().0,
        json!("Hello")
    );
}

#[test]
fn delay_example() {
    let (flow, input) = example("delay.yaml");
    assert_eq!(run(&flow, &input).unwrap().0, json!({"waited_ms": 0}));
    assert_eq!(run(&flow, &json!({})).unwrap().1, ["pause", "done"]);
}

#[test]
fn log_example() {
    let (flow, input) = example("log.yaml");
    assert_eq!(
        run(&flow, &input).unwrap().0,
        json!("hello ada from log-example (execution exe_test)")
    );
}

#[test]
fn fail_example() {
    let (flow, input) = example("fail.yaml");
    let (out, visited) = run(&flow, &input).unwrap();
    assert_eq!(visited, ["validate", "reject", "handle"]);
    assert_eq!(
        out["message"],
        json!("node reject failed: quantity must be positive, got 0")
    );
    let (out, _) = run(&flow, &json!({"quantity": 3})).unwrap();
    assert_eq!(out, json!({"accepted": true, "quantity": 3}));
}
