//! The layering rules of the workspace, checked against `cargo metadata`.
//!
//! Who may depend on whom is written down here once; `cargo xtask tidy` and the
//! `layering_is_respected` test both run it.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// Crates that a workspace crate must not reach, not even transitively.
const TRANSITIVE_BANS: &[(&str, &[&str])] = &[
    (
        "flowrunner-domain",
        &[
            "tokio",
            "diesel",
            "actix-web",
            "actix-ws",
            "ureq",
            "r2d2",
            "flowrunner-dsl",
            "flowrunner-runtime",
            "flowrunner-store",
            "flowrunner-auth",
            "flowrunner-api",
        ],
    ),
    (
        "flowrunner-dsl",
        &[
            "tokio",
            "diesel",
            "actix-web",
            "actix-ws",
            "ureq",
            "r2d2",
            "flowrunner-runtime",
            "flowrunner-store",
            "flowrunner-auth",
            "flowrunner-api",
        ],
    ),
    (
        "flowrunner-runtime",
        &[
            "diesel",
            "actix-web",
            "actix-ws",
            "r2d2",
            "flowrunner-store",
            "flowrunner-auth",
            "flowrunner-api",
        ],
    ),
    (
        "flowrunner-store",
        &[
            "actix-web",
            "actix-ws",
            "flowrunner-runtime",
            "flowrunner-auth",
            "flowrunner-api",
        ],
    ),
    (
        "flowrunner-auth",
        &[
            "actix-web",
            "actix-ws",
            "flowrunner-runtime",
            "flowrunner-api",
        ],
    ),
    (
        "flowrunner-engine",
        &["actix-web", "actix-ws", "flowrunner-api", "flowrunner-auth"],
    ),
];

/// Direct dependencies reserved to one crate: only the owner may name them in its manifest.
const DIRECT_OWNERS: &[(&str, &str)] = &[
    ("diesel", "flowrunner-store"),
    ("diesel_migrations", "flowrunner-store"),
    ("r2d2", "flowrunner-store"),
    ("libsqlite3-sys", "flowrunner-store"),
    ("pq-sys", "flowrunner-store"),
    ("actix-web", "flowrunner-api"),
    ("actix-ws", "flowrunner-api"),
    ("jsonwebtoken", "flowrunner-auth"),
    ("bcrypt", "flowrunner-auth"),
];

/// Runs `cargo metadata` for the workspace.
pub fn metadata() -> Result<Value> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--locked"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .context("running cargo metadata")?;
    if !out.status.success() {
        bail!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    serde_json::from_slice(&out.stdout).context("parsing cargo metadata")
}

/// Returns one line per violated rule; empty when the layering holds.
pub fn check(meta: &Value) -> Result<Vec<String>> {
    let packages = meta["packages"].as_array().context("metadata.packages")?;
    let name_of: BTreeMap<&str, &str> = packages
        .iter()
        .filter_map(|p| Some((p["id"].as_str()?, p["name"].as_str()?)))
        .collect();
    let members: BTreeSet<&str> = meta["workspace_members"]
        .as_array()
        .context("metadata.workspace_members")?
        .iter()
        .filter_map(Value::as_str)
        .collect();

    // Normal and build edges of the resolved graph (dev-dependencies do not ship).
    let mut edges: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for node in meta["resolve"]["nodes"]
        .as_array()
        .context("metadata.resolve.nodes")?
    {
        let Some(id) = node["id"].as_str() else {
            continue;
        };
        let deps = node["deps"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        let shipped = deps.iter().filter(|d| {
            d["dep_kinds"]
                .as_array()
                .is_some_and(|kinds| kinds.iter().any(|k| k["kind"].as_str() != Some("dev")))
        });
        edges.insert(id, shipped.filter_map(|d| d["pkg"].as_str()).collect());
    }

    let mut violations = Vec::new();
    for member in &members {
        let member_name = name_of.get(member).copied().unwrap_or_default();
        for dep in edges.get(member).map(Vec::as_slice).unwrap_or_default() {
            let dep_name = name_of.get(dep).copied().unwrap_or_default();
            if let Some((_, owner)) = DIRECT_OWNERS.iter().find(|(d, _)| *d == dep_name)
                && *owner != member_name
            {
                violations.push(format!(
                    "{member_name} depends directly on {dep_name}, which only {owner} may use"
                ));
            }
        }
        if let Some((_, banned)) = TRANSITIVE_BANS.iter().find(|(c, _)| *c == member_name) {
            let reached = reachable(member, &edges);
            for id in reached {
                let name = name_of.get(id).copied().unwrap_or_default();
                if banned.contains(&name) {
                    violations.push(format!(
                        "{member_name} reaches {name}, which its layer forbids"
                    ));
                }
            }
        }
    }
    Ok(violations)
}

fn reachable<'a>(start: &'a str, edges: &BTreeMap<&'a str, Vec<&'a str>>) -> BTreeSet<&'a str> {
    let mut seen = BTreeSet::new();
    let mut stack = vec![start];
    while let Some(id) = stack.pop() {
        for dep in edges.get(id).map(Vec::as_slice).unwrap_or_default() {
            if seen.insert(*dep) {
                stack.push(dep);
            }
        }
    }
    seen
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layering_is_respected() {
        let meta = metadata().expect("cargo metadata");
        let violations = check(&meta).expect("well-formed metadata");
        assert!(
            violations.is_empty(),
            "layering violations:\n{}",
            violations.join("\n")
        );
    }

    #[test]
    fn a_forbidden_edge_is_reported() {
        // A tiny synthetic graph: the domain crate depending on diesel must be caught.
        let meta = serde_json::json!({
            "packages": [
                {"id": "d", "name": "flowrunner-domain"},
                {"id": "x", "name": "diesel"},
            ],
            "workspace_members": ["d"],
            "resolve": {"nodes": [
                {"id": "d", "deps": [{"pkg": "x", "dep_kinds": [{"kind": null}]}]},
                {"id": "x", "deps": []},
            ]},
        });
        let violations = check(&meta).expect("well-formed metadata");
        assert_eq!(violations.len(), 2, "{violations:?}");
        assert!(
            violations
                .iter()
                .any(|v| v.contains("only flowrunner-store may use"))
        );
        assert!(violations.iter().any(|v| v.contains("reaches diesel")));
    }
}
