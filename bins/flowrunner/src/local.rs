//! `flowrunner validate` and `flowrunner run`: flow files checked and executed in-process.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use flowrunner_runtime::{
    BoxFuture, Event, EventKind, ExecutionOutcome, ExecutionRequest, Journal, JournalError,
    Runtime, Snapshot, StaticSecrets,
};
use serde_json::Value;

/// Exit code of a run that failed (execution failed or could not start).
const EXIT_FAILED: u8 = 1;
/// Exit code for unusable command-line input (bad file, bad JSON, bad `--secret`).
const EXIT_USAGE: u8 = 2;
/// Exit code of a cancelled run (128 + SIGINT, as shells report Ctrl-C).
const EXIT_CANCELLED: u8 = 130;

/// Arguments of `flowrunner validate`.
#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Flow files to check.
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
    /// Print diagnostics as one JSON object per line.
    #[arg(long)]
    json: bool,
}

/// Arguments of `flowrunner run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The flow file to run.
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// Input as a JSON object, or `@path` to read it from a file.
    #[arg(long, value_name = "JSON|@FILE")]
    input: Option<String>,
    /// A secret available to the flow as `secrets.KEY` (repeatable).
    #[arg(long = "secret", value_name = "KEY=VALUE")]
    secrets: Vec<String>,
    /// Print each event as one JSON object per line.
    #[arg(long)]
    json: bool,
}

/// Validates every file; exit status 0 when none has an error (warnings are allowed).
pub fn validate(args: &ValidateArgs) -> ExitCode {
    let runtime = match Runtime::builder().blocking_threads(1).build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::FAILURE;
        }
    };
    let mut failed = false;
    for path in &args.files {
        let name = path.display().to_string();
        let source = match std::fs::read_to_string(path) {
            Ok(source) => source,
            Err(err) => {
                eprintln!("{name}: error: cannot read file: {err}");
                failed = true;
                continue;
            }
        };
        let diagnostics = flowrunner_dsl::validate(&source, runtime.registry());
        let errors = diagnostics.iter().filter(|d| d.is_error()).count();
        failed |= errors > 0;
        for diagnostic in &diagnostics {
            if args.json {
                let mut line = serde_json::to_value(diagnostic).unwrap_or(Value::Null);
                if let Value::Object(map) = &mut line {
                    map.insert("file".into(), Value::String(name.clone()));
                }
                println!("{line}");
            } else {
                println!("{}", diagnostic.render_with_file(&name));
            }
        }
        if !args.json {
            let warnings = diagnostics.len() - errors;
            match (errors, warnings) {
                (0, 0) => println!("{name}: ok"),
                (0, w) => println!("{name}: ok ({w} warning{})", plural(w)),
                (e, w) => println!("{name}: {e} error{}, {w} warning{}", plural(e), plural(w)),
            }
        }
    }
    if failed {
        ExitCode::from(EXIT_FAILED)
    } else {
        ExitCode::SUCCESS
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// Runs one flow file to its end; Ctrl-C cancels it cleanly.
pub async fn run(args: RunArgs) -> Result<ExitCode> {
    let prepared = match prepare(&args) {
        Ok(prepared) => prepared,
        Err(err) => {
            eprintln!("error: {err:#}");
            return Ok(ExitCode::from(EXIT_USAGE));
        }
    };
    let Prepared {
        runtime,
        flow,
        input,
        secrets,
    } = prepared;
    // Listen for Ctrl-C before the execution starts: a signal that arrives as soon as the
    // first events are printed must cancel it, not kill the process.
    let interrupted = interrupt_listener()?;
    let printer = Arc::new(Printer { json: args.json });
    let request = ExecutionRequest::new(Arc::new(flow), input)
        .secrets(Arc::new(secrets))
        .journal(printer);
    let handle = match runtime.start(request) {
        Ok(handle) => handle,
        Err(err) => {
            eprintln!("error: {err}");
            return Ok(ExitCode::from(EXIT_FAILED));
        }
    };
    let cancel = handle.cancellation_token();
    let interrupt = tokio::spawn(async move {
        if interrupted.await {
            eprintln!("\ninterrupted: cancelling the execution…");
            cancel.cancel();
        }
    });
    let outcome = handle.wait().await;
    interrupt.abort();
    Ok(match outcome {
        ExecutionOutcome::Completed { result } => {
            if !args.json {
                println!("result: {}", pretty(&result));
            }
            ExitCode::SUCCESS
        }
        ExecutionOutcome::Failed { .. } => ExitCode::from(EXIT_FAILED),
        ExecutionOutcome::Cancelled => ExitCode::from(EXIT_CANCELLED),
        ExecutionOutcome::Interrupted { reason } => {
            eprintln!("error: execution interrupted: {reason}");
            ExitCode::from(EXIT_FAILED)
        }
    })
}

/// A future that completes with `true` at the first Ctrl-C (SIGINT); the handler is
/// installed by this call, not when the future is first polled.
fn interrupt_listener() -> Result<impl std::future::Future<Output = bool> + Send + 'static> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut sigint =
            signal(SignalKind::interrupt()).context("cannot listen for Ctrl-C (SIGINT)")?;
        Ok(async move { sigint.recv().await.is_some() })
    }
    #[cfg(not(unix))]
    {
        Ok(async { tokio::signal::ctrl_c().await.is_ok() })
    }
}

struct Prepared {
    runtime: Runtime,
    flow: flowrunner_dsl::Flow,
    input: Value,
    secrets: StaticSecrets,
}

fn prepare(args: &RunArgs) -> Result<Prepared> {
    let secrets = parse_secrets(&args.secrets)?;
    let input = parse_input(args.input.as_deref())?;
    let name = args.file.display().to_string();
    let source =
        std::fs::read_to_string(&args.file).with_context(|| format!("cannot read {name}"))?;
    let runtime = Runtime::builder()
        .build()
        .context("cannot start the flow runtime")?;
    let parsed = runtime
        .parse(&source)
        .map_err(|diagnostics| anyhow!("{}", diagnostics.render_with_file(&name)))?;
    for warning in &parsed.warnings {
        eprintln!("{}", warning.render_with_file(&name));
    }
    parsed.flow.check_input(&input).map_err(|errors| {
        let lines: Vec<String> = errors.iter().map(|e| format!("  {e}")).collect();
        anyhow!("invalid input:\n{}", lines.join("\n"))
    })?;
    Ok(Prepared {
        runtime,
        flow: parsed.flow,
        input,
        secrets,
    })
}

fn parse_input(raw: Option<&str>) -> Result<Value> {
    let Some(raw) = raw else {
        return Ok(Value::Object(Default::default()));
    };
    let (text, origin) = match raw.strip_prefix('@') {
        Some(path) => (
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read input file {path}"))?,
            format!("input file {path}"),
        ),
        None => (raw.to_string(), "--input".to_string()),
    };
    let value: Value =
        serde_json::from_str(&text).with_context(|| format!("{origin} is not valid JSON"))?;
    if !value.is_object() {
        bail!("{origin} must be a JSON object, e.g. '{{\"name\": \"Ada\"}}'");
    }
    Ok(value)
}

fn parse_secrets(pairs: &[String]) -> Result<StaticSecrets> {
    let mut seen = BTreeMap::new();
    for pair in pairs {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| anyhow!("--secret `{pair}` must have the form KEY=VALUE"))?;
        if !flowrunner_domain::is_secret_key(key) {
            bail!(
                "--secret key `{key}` must match {}",
                flowrunner_domain::SECRET_KEY_PATTERN
            );
        }
        if seen.insert(key.to_string(), value.to_string()).is_some() {
            bail!("--secret `{key}` is given twice");
        }
    }
    let mut secrets = StaticSecrets::new();
    for (key, value) in seen {
        secrets.insert(key, value);
    }
    Ok(secrets)
}

/// Prints every event as the engine records it (the journal is awaited, so nothing is lost).
struct Printer {
    json: bool,
}

impl Journal for Printer {
    fn record<'a>(
        &'a self,
        event: &'a Event,
        _: Option<&'a Snapshot>,
    ) -> BoxFuture<'a, Result<(), JournalError>> {
        let line = if self.json {
            serde_json::to_string(event).map_err(|e| JournalError::new(e.to_string()))
        } else {
            Ok(human(event))
        };
        Box::pin(async move {
            let line = line?;
            let mut out = std::io::stdout().lock();
            writeln!(out, "{line}")
                .map_err(|e| JournalError::new(format!("cannot write to stdout: {e}")))
        })
    }
}

fn human(event: &Event) -> String {
    let time = event.timestamp.format("%H:%M:%S%.3f");
    let what = match &event.kind {
        EventKind::Started {
            flow_name,
            flow_version,
            input,
        } => {
            format!("started flow `{flow_name}` {flow_version} with input {input}")
        }
        EventKind::Resumed { node_id } => {
            format!("resumed at {}", node_id.as_deref().unwrap_or("the end"))
        }
        EventKind::NodeStarted {
            node_id,
            node_type,
            attempt,
        } if *attempt > 1 => {
            format!("{node_id} ({node_type}): attempt {attempt}")
        }
        EventKind::NodeStarted {
            node_id, node_type, ..
        } => format!("{node_id} ({node_type}): started"),
        EventKind::NodeCompleted {
            node_id,
            outcome,
            output,
            duration_ms,
            ..
        } => {
            format!(
                "{node_id}: completed in {duration_ms} ms -> {outcome}: {}",
                compact(output)
            )
        }
        EventKind::NodeFailed {
            node_id,
            attempt,
            error,
            retry_in_ms,
            ..
        } => match retry_in_ms {
            Some(ms) => {
                format!("{node_id}: attempt {attempt} failed: {error} (retrying in {ms} ms)")
            }
            None => format!("{node_id}: attempt {attempt} failed: {error}"),
        },
        EventKind::NodeCheckpoint { node_id, state, .. } => {
            format!("{node_id}: checkpoint {}", compact(state))
        }
        EventKind::Log {
            level,
            message,
            node_id,
            data,
        } => {
            let node = node_id
                .as_deref()
                .map(|n| format!("{n}: "))
                .unwrap_or_default();
            match data {
                Some(data) => format!("[{level}] {node}{message} {}", compact(data)),
                None => format!("[{level}] {node}{message}"),
            }
        }
        EventKind::Completed { .. } => "execution completed".to_string(),
        EventKind::Failed { error, node_id } => match node_id {
            Some(node) => format!("execution FAILED at {node}: {error}"),
            None => format!("execution FAILED: {error}"),
        },
        EventKind::Cancelled => "execution cancelled".to_string(),
    };
    format!("{time} {what}")
}

fn compact(value: &Value) -> String {
    const MAX: usize = 200;
    let text = value.to_string();
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
}
