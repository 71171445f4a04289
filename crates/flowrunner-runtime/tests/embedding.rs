//! The embedding example and custom node types.

#[allow(dead_code)]
#[path = "../examples/embed.rs"]
mod embed;
mod support;

use std::sync::{Arc, Mutex};

use flowrunner_domain::LogLevel;
use flowrunner_dsl::{NodeSpec, Outcomes};
use flowrunner_runtime::{
    BoxFuture, EventKind, ExecutionOutcome, ExecutionRequest, NodeContext, NodeError, NodeOutput,
    NodeType, Runtime,
};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedding_example_runs() {
    let outcome = embed::run_example(Some("abc déf".into()))
        .await
        .expect("example");
    assert_eq!(
        outcome,
        ExecutionOutcome::Completed {
            result: json!({"reversed": "FÉD CBA", "length": 7})
        }
    );
    let default = embed::run_example(None).await.expect("example");
    assert_eq!(
        default,
        ExecutionOutcome::Completed {
            result: json!({"reversed": "DLROW ,OLLEH", "length": 12})
        }
    );
}

/// Records where its blocking work ran and what the context exposed; branches on `mode`.
struct Probe {
    seen: Arc<Mutex<Vec<Value>>>,
}

impl NodeType for Probe {
    fn spec(&self) -> NodeSpec {
        let mut spec = NodeSpec::new("test.probe", "Probe node.").outcomes(Outcomes::Dynamic);
        spec.allow_extra_params = true;
        spec
    }

    fn execute(
        &self,
        ctx: NodeContext,
        params: Value,
    ) -> BoxFuture<'static, Result<NodeOutput, NodeError>> {
        let seen = Arc::clone(&self.seen);
        Box::pin(async move {
            let thread = ctx
                .run_blocking(|| {
                    std::thread::current()
                        .name()
                        .unwrap_or_default()
                        .to_string()
                })
                .await?;
            ctx.log(LogLevel::Debug, "probing", None).await;
            seen.lock().expect("lock").push(json!({
                "thread": thread,
                "node": ctx.node_id(),
                "type": ctx.node_type(),
                "attempt": ctx.attempt(),
                "previous": ctx.previous_output(),
                "execution": ctx.execution_id().as_str(),
            }));
            if params["mode"] == "flaky" && ctx.attempt() < 2 {
                return Err(NodeError::new("first attempt fails"));
            }
            Ok(NodeOutput::new(json!({"mode": params["mode"]}))
                .with_outcome(params["mode"].as_str().unwrap_or("default")))
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_node_types_run_blocking_work_on_the_runtime_pool() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let runtime = Runtime::builder()
        .blocking_threads(1)
        .register(Probe {
            seen: Arc::clone(&seen),
        })
        .build()
        .expect("rt");
    assert!(runtime.registry().node_types().any(|t| t == "test.probe"));
    let flow = runtime
        .parse(
            r#"
metadata: { name: probing }
nodes:
  first:
    type: test.probe
    params: { mode: flaky }
    retry: { max_attempts: 2, initial_delay: 1ms }
    next: { flaky: second }
  second:
    type: test.probe
    params: { mode: calm }
"#,
        )
        .expect("parse")
        .flow;
    // The builtin-only catalog rejects the custom type: flows are validated against the runtime.
    assert!(
        flowrunner_dsl::parse(
            "metadata: {name: x}\nnodes:\n  a: {type: test.probe}\n",
            &flowrunner_dsl::BuiltinCatalog
        )
        .is_err()
    );
    let mut request = ExecutionRequest::new(Arc::new(flow), json!({}));
    let rx = request.subscribe();
    let outcome = runtime.run(request).await.expect("run");
    assert_eq!(
        outcome,
        ExecutionOutcome::Completed {
            result: json!({"mode": "calm"})
        }
    );
    let seen = seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), 3);
    for entry in &seen {
        assert_eq!(entry["thread"], "flowrunner-blocking-0", "{entry}");
        assert_eq!(entry["type"], "test.probe");
    }
    assert_eq!(seen[0]["attempt"], 1);
    assert_eq!(seen[1]["attempt"], 2);
    assert_eq!(seen[0]["previous"], Value::Null);
    assert_eq!(seen[2]["node"], "second");
    assert_eq!(seen[2]["previous"], json!({"mode": "flaky"}));
    let events = support::collect(rx).await;
    let logs = events
        .iter()
        .filter(|e| {
            matches!(
                &e.kind,
                EventKind::Log {
                    level: LogLevel::Debug,
                    ..
                }
            )
        })
        .count();
    assert_eq!(logs, 3);

    // Running a flow that uses a type this runtime lacks is refused.
    let bare = Runtime::builder().build().expect("rt");
    let parsed = runtime
        .parse("metadata: {name: y}\nnodes:\n  a: {type: test.probe}\n")
        .expect("parse")
        .flow;
    let err = bare
        .start(ExecutionRequest::new(Arc::new(parsed), json!({})))
        .expect_err("unknown type");
    assert!(
        matches!(err, flowrunner_runtime::Error::UnknownNodeType { .. }),
        "{err}"
    );
    let dup = Runtime::builder()
        .register(embed::Reverse)
        .register(embed::Reverse)
        .build();
    assert!(matches!(
        dup,
        Err(flowrunner_runtime::Error::DuplicateNodeType(_))
    ));
}

struct Panics;

impl NodeType for Panics {
    fn spec(&self) -> NodeSpec {
        NodeSpec::new("test.panics", "Always panics.")
    }

    fn execute(
        &self,
        _ctx: NodeContext,
        _params: Value,
    ) -> BoxFuture<'static, Result<NodeOutput, NodeError>> {
        Box::pin(async move { panic!("node bug") })
    }
}

#[tokio::test]
async fn a_panicking_node_is_a_node_failure_not_a_crash() {
    let runtime = Runtime::builder().register(Panics).build().expect("rt");
    let flow = runtime
        .parse(
            "metadata: {name: p}\nnodes:\n  a:\n    type: test.panics\n    next: {error: b}\n  b:\n    type: transform\n    params: {value: \"{{ error.message }}\"}\n",
        )
        .expect("parse")
        .flow;
    let outcome = runtime
        .run(ExecutionRequest::new(Arc::new(flow), json!({})))
        .await
        .expect("run");
    assert_eq!(
        outcome,
        ExecutionOutcome::Completed {
            result: json!("the node panicked")
        }
    );
}
