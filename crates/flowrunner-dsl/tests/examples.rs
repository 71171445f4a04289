//! Every `examples/*.yaml` flow parses without errors or warnings.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use flowrunner_dsl::{BuiltinCatalog, parse};

#[test]
fn all_examples_parse() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 8,
        "expected one example per built-in node type, found {files:?}"
    );
    let mut failures = String::new();
    for file in &files {
        let source = std::fs::read_to_string(file).unwrap_or_default();
        match parse(&source, &BuiltinCatalog) {
            Ok(parsed) if parsed.warnings.is_empty() => {}
            Ok(parsed) => {
                for w in parsed.warnings {
                    failures.push_str(&format!("{}:{w}\n", file.display()));
                }
            }
            Err(diags) => failures.push_str(&diags.render_with_file(&file.display().to_string())),
        }
    }
    assert!(
        failures.is_empty(),
        "examples with diagnostics:\n{failures}"
    );
}

#[test]
fn every_builtin_type_has_an_example() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let mut seen = std::collections::HashSet::new();
    for entry in std::fs::read_dir(&dir).expect("examples dir").flatten() {
        let source = std::fs::read_to_string(entry.path()).unwrap_or_default();
        if let Ok(p) = parse(&source, &BuiltinCatalog) {
            for node in p.flow.nodes.values() {
                seen.insert(node.node_type.clone());
            }
        }
    }
    for spec in flowrunner_dsl::builtin_specs() {
        assert!(
            seen.contains(&spec.node_type),
            "no example uses `{}`",
            spec.node_type
        );
    }
}
