//! Embeds the FlowRunner runtime: registers a custom `text.reverse` node type, runs a flow that
//! uses it, and prints the events and the result.
//!
//! Run with `cargo run -p flowrunner-runtime --example embed -- "some text"`.

use std::sync::Arc;

use flowrunner_domain::LogLevel;
use flowrunner_dsl::{NodeSpec, ParamKind, ParamSpec};
use flowrunner_runtime::{
    BoxFuture, ExecutionOutcome, ExecutionRequest, NodeContext, NodeError, NodeOutput, NodeType,
    Runtime,
};
use serde_json::{Value, json};

/// `text.reverse`: reverses the characters of `text`. Output: `{text, length}`.
pub struct Reverse;

impl NodeType for Reverse {
    fn spec(&self) -> NodeSpec {
        NodeSpec::new("text.reverse", "Reverses `text`. Output: {text, length}.").param(
            ParamSpec::required("text", ParamKind::String, "The text to reverse."),
        )
    }

    fn execute(
        &self,
        ctx: NodeContext,
        params: Value,
    ) -> BoxFuture<'static, Result<NodeOutput, NodeError>> {
        Box::pin(async move {
            let text = match params.get("text") {
                Some(Value::String(text)) => text.clone(),
                _ => return Err(NodeError::permanent("param `text` must be a string")),
            };
            // CPU or blocking work belongs on the runtime's pool, not on tokio's threads.
            let reversed: String = ctx
                .run_blocking(move || text.chars().rev().collect())
                .await?;
            ctx.log(
                LogLevel::Info,
                "text reversed",
                Some(json!({"length": reversed.chars().count()})),
            )
            .await;
            let length = reversed.chars().count();
            Ok(NodeOutput::new(json!({"text": reversed, "length": length})))
        })
    }
}

/// The example flow.
pub const FLOW: &str = r#"
metadata:
  name: reverse-greeting
inputs:
  text: { type: string, default: "hello, world" }
start: reverse
nodes:
  reverse:
    type: text.reverse
    params:
      text: "{{ input.text }}"
    next: shout
  shout:
    type: transform
    params:
      value:
        reversed: "{{ nodes.reverse.output.text | upper }}"
        length: "{{ nodes.reverse.output.length }}"
"#;

/// Builds a runtime with the custom node type and runs [`FLOW`] on `text`; prints each event
/// as one JSON line.
pub async fn run_example(
    text: Option<String>,
) -> Result<ExecutionOutcome, Box<dyn std::error::Error>> {
    let runtime = Runtime::builder()
        .blocking_threads(2)
        .register(Reverse)
        .build()?;
    let parsed = runtime.parse(FLOW).map_err(|diags| diags.to_string())?;
    let input = match text {
        Some(text) => json!({ "text": text }),
        None => json!({}),
    };
    let mut request = ExecutionRequest::new(Arc::new(parsed.flow), input);
    let mut events = request.subscribe();
    let handle = runtime.start(request)?;
    while let Ok(event) = events.recv().await {
        println!("{}", serde_json::to_string(&event)?);
        if event.kind.is_terminal() {
            break;
        }
    }
    Ok(handle.wait().await)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let text = std::env::args().nth(1);
    let tokio = tokio::runtime::Runtime::new()?;
    let outcome = tokio.block_on(run_example(text))?;
    match outcome {
        ExecutionOutcome::Completed { result } => {
            println!("result: {result}");
            Ok(())
        }
        other => Err(format!("execution did not complete: {other:?}").into()),
    }
}
