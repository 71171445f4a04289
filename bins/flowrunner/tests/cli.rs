//! The `flowrunner validate` and `flowrunner run` commands, driven as a user would.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

fn bin() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_flowrunner"));
    cmd.env_remove("RUST_LOG");
    cmd
}

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(name)
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("spawn flowrunner")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn write_flow(dir: &tempfile::TempDir, name: &str, yaml: &str) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, yaml).expect("write flow");
    path.display().to_string()
}

#[test]
fn every_example_validates() {
    let mut files: Vec<String> = std::fs::read_dir(example(""))
        .expect("examples dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .map(|p| p.display().to_string())
        .collect();
    files.sort();
    assert!(
        files.len() >= 8,
        "one example per built-in node type: {files:?}"
    );
    let mut args = vec!["validate"];
    args.extend(files.iter().map(String::as_str));
    let out = run(&args);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert_eq!(text(&out.stdout).matches(": ok").count(), files.len());
}

#[test]
fn validate_reports_every_problem_with_positions_and_fails() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write_flow(
        &dir,
        "bad.yaml",
        "metadata:\n  description: no name\nnodes:\n  a:\n    type: nope\n    next: missing\n",
    );
    let out = run(&["validate", &file]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("error[missing_field]"), "{stdout}");
    assert!(stdout.contains("error[unknown_node_type]"), "{stdout}");
    assert!(
        stdout.contains(&format!("{file}:5:")),
        "positions are reported: {stdout}"
    );

    let json = run(&["validate", "--json", &file]);
    assert_eq!(json.status.code(), Some(1));
    let lines: Vec<Value> = text(&json.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert!(lines.len() >= 2);
    assert!(
        lines
            .iter()
            .all(|d| d["file"] == file.as_str() && d["line"].as_u64().is_some())
    );
}

#[test]
fn validate_a_missing_file_fails_clearly() {
    let out = run(&["validate", "/nonexistent/flow.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("cannot read file"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn run_prints_events_and_the_result() {
    let out = run(&[
        "run",
        example("condition.yaml").to_str().expect("utf8"),
        "--input",
        r#"{"amount": 150}"#,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("is_large: completed"), "{stdout}");
    assert!(stdout.contains("\"category\": \"large\""), "{stdout}");
}

#[test]
fn run_json_emits_one_event_per_line_with_increasing_seq() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("input.json");
    std::fs::write(&input, r#"{"customer": {"first": "Ada", "last": "Lovelace"}, "items": [{"price": 2}, {"price": 3}]}"#)
        .expect("write input");
    let out = run(&[
        "run",
        example("transform.yaml").to_str().expect("utf8"),
        "--json",
        "--input",
        &format!("@{}", input.display()),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let events: Vec<Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    let seqs: Vec<u64> = events
        .iter()
        .map(|e| e["seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!(seqs, (0..events.len() as u64).collect::<Vec<_>>());
    assert_eq!(
        events.first().map(|e| e["type"].clone()),
        Some("started".into())
    );
    let last = events.last().expect("events");
    assert_eq!(last["type"], "completed");
    assert_eq!(last["result"]["customer"], "Ada Lovelace");
    assert_eq!(last["result"]["total"], 5);
}

#[test]
fn failing_flow_exits_non_zero() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write_flow(
        &dir,
        "fails.yaml",
        "metadata:\n  name: f\nnodes:\n  boom:\n    type: fail\n    params:\n      message: nope\n",
    );
    let out = run(&["run", &file]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(
        text(&out.stdout).contains("FAILED"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn secrets_are_redacted_in_printed_events() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write_flow(
        &dir,
        "secret.yaml",
        "metadata:\n  name: s\nnodes:\n  show:\n    type: transform\n    params:\n      value: \"token={{ secrets.API_TOKEN }}\"\n",
    );
    let out = run(&[
        "run",
        &file,
        "--json",
        "--secret",
        "API_TOKEN=hunter2-very-secret",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(!stdout.contains("hunter2-very-secret"), "{stdout}");
    assert!(stdout.contains("token=***"), "{stdout}");
}

#[test]
fn bad_command_line_input_is_a_clear_usage_error() {
    let flow = example("transform.yaml");
    let flow = flow.to_str().expect("utf8");
    let cases: &[(&[&str], &str)] = &[
        (&["--input", "{not json"], "not valid JSON"),
        (&["--input", "[1, 2]"], "must be a JSON object"),
        (
            &["--input", "@/nonexistent/input.json"],
            "cannot read input file",
        ),
        (&["--secret", "novalue"], "KEY=VALUE"),
        (&["--secret", "lower=x"], "must match"),
        (&["--secret", "A=1", "--secret", "A=2"], "given twice"),
        (&["--input", "{}"], "invalid input"),
    ];
    for (extra, expected) in cases {
        let mut args = vec!["run", flow];
        args.extend_from_slice(extra);
        let out = run(&args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{extra:?}: {}",
            text(&out.stderr)
        );
        assert!(
            text(&out.stderr).contains(expected),
            "{extra:?}: {}",
            text(&out.stderr)
        );
    }
    let out = run(&["run", "/nonexistent/flow.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    let dir = tempfile::tempdir().expect("tempdir");
    let broken = write_flow(&dir, "broken.yaml", "metadata: [\n");
    let out = run(&["run", &broken]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("yaml_syntax"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn ctrl_c_cancels_a_waiting_run_cleanly() {
    let mut child = bin()
        .args([
            "run",
            example("delay.yaml").to_str().expect("utf8"),
            "--json",
            "--input",
            r#"{"wait": "1h"}"#,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    // Wait until the delay is durably waiting, then interrupt.
    loop {
        let line = lines
            .next()
            .expect("an event before the end")
            .expect("read");
        if line.contains("node_checkpoint") {
            break;
        }
    }
    let started = Instant::now();
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let rest: Vec<String> = lines.map(|l| l.expect("read")).collect();
    let code = child.wait().expect("wait").code();
    assert_eq!(code, Some(130));
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "cancellation is prompt"
    );
    assert!(rest.iter().any(|l| l.contains("\"cancelled\"")), "{rest:?}");
}

/// The `# Example input:` JSON written at the top of an example file.
fn example_input(path: &Path) -> String {
    let text = std::fs::read_to_string(path).expect("read example");
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("# Example input:"))
        .unwrap_or_else(|| panic!("{} documents its example input", path.display()));
    // The JSON object ends at its closing brace; a remark may follow.
    let line = line.trim();
    let mut depth = 0usize;
    for (i, c) in line.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return line[..=i].to_string();
                }
            }
            _ => {}
        }
    }
    panic!("unterminated example input in {}", path.display())
}

#[test]
fn every_offline_example_runs_with_its_documented_input() {
    for name in ["condition", "delay", "fail", "log", "switch", "transform"] {
        let path = example(&format!("{name}.yaml"));
        let input = example_input(&path);
        let out = run(&[
            "run",
            path.to_str().expect("utf8"),
            "--json",
            "--input",
            &input,
        ]);
        assert!(
            out.status.success(),
            "{name}: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        let last: Value = text(&out.stdout)
            .lines()
            .last()
            .map(|l| serde_json::from_str(l).expect("JSON line"))
            .expect("events");
        assert_eq!(last["type"], "completed", "{name}: {last}");
    }
}
