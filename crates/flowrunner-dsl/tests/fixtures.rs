//! Data-driven parser tests: every `tests/fixtures/*.yaml` has a sibling `*.expected` with
//! the expected diagnostics, one per line in their Display form (empty for a valid flow).
//! Run with `UPDATE_EXPECT=1` to rewrite the expectations from the current output.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use flowrunner_dsl::{BuiltinCatalog, codes, parse, validate};

fn fixtures() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
}

/// A minimal line diff (longest common subsequence) for readable failures.
fn diff(expected: &[&str], actual: &[&str]) -> String {
    let (n, m) = (expected.len(), actual.len());
    let mut lcs = vec![vec![0usize; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if expected[i] == actual[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, String::new());
    while i < n || j < m {
        if i < n && j < m && expected[i] == actual[j] {
            out += &format!("  {}\n", expected[i]);
            i += 1;
            j += 1;
        } else if j < m && (i == n || lcs[i][j + 1] >= lcs[i + 1][j]) {
            out += &format!("+ {}\n", actual[j]);
            j += 1;
        } else {
            out += &format!("- {}\n", expected[i]);
            i += 1;
        }
    }
    out
}

#[test]
fn fixtures_match_expectations() {
    let update = std::env::var("UPDATE_EXPECT").is_ok_and(|v| v == "1");
    let files = fixtures();
    assert!(!files.is_empty(), "no fixtures found");
    let mut failures = Vec::new();
    for file in &files {
        let source = std::fs::read_to_string(file).expect("read fixture");
        let diags = validate(&source, &BuiltinCatalog);
        // parse and validate agree: errors <=> Err.
        let has_errors = diags.iter().any(|d| d.is_error());
        assert_eq!(
            parse(&source, &BuiltinCatalog).is_err(),
            has_errors,
            "{}",
            file.display()
        );
        let actual: String = diags.iter().map(|d| format!("{d}\n")).collect();
        let expected_path = file.with_extension("expected");
        if update {
            std::fs::write(&expected_path, &actual).expect("write expectation");
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if expected != actual {
            let e: Vec<&str> = expected.lines().collect();
            let a: Vec<&str> = actual.lines().collect();
            failures.push(format!("--- {}\n{}", expected_path.display(), diff(&e, &a)));
        }
    }
    assert!(
        failures.is_empty(),
        "fixture expectations differ (- expected, + actual; rerun with UPDATE_EXPECT=1 to accept):\n{}",
        failures.join("\n")
    );
}

#[test]
fn every_code_is_covered_by_a_fixture() {
    let mut seen = BTreeSet::new();
    for file in fixtures() {
        let expected = std::fs::read_to_string(file.with_extension("expected")).unwrap_or_default();
        for line in expected.lines() {
            if let Some(code) = line
                .split_once('[')
                .and_then(|(_, r)| r.split_once(']'))
                .map(|(c, _)| c.to_string())
            {
                seen.insert(code);
            }
        }
    }
    let missing: Vec<&str> = codes::ALL
        .iter()
        .copied()
        .filter(|c| !seen.contains(*c))
        .collect();
    assert!(missing.is_empty(), "codes without a fixture: {missing:?}");
}

#[test]
fn diagnostics_serialize_for_http() {
    let diags = validate(
        "metadata: {name: x}\nnodes:\n  a: {type: log, params: {}}\n",
        &BuiltinCatalog,
    );
    let json = serde_json::to_value(&diags).expect("serialize");
    assert_eq!(
        json,
        serde_json::json!([{"severity": "error", "code": "missing_param",
            "message": "`log` requires param `message` (a string)", "line": 3, "column": 18, "node": "a"}])
    );
}
