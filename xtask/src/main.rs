//! Project automation: `cargo xtask ci`, `cargo xtask bench`, `cargo xtask tidy`.
//!
//! Written in Rust so it runs wherever cargo does; see `cargo xtask help`.

mod bench_server;
mod layering;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

const HELP: &str = "\
cargo xtask <task>

Tasks:
  ci              fmt check, clippy -D warnings, tidy (layering), all tests
  test            all tests of the workspace
  tidy            check crate layering from `cargo metadata`
  bench [engine]  criterion benchmark of the in-memory runtime (default)
  bench server    end-to-end benchmark of the release server (see docs/benchmarks.md)
";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = workspace_root();
    std::env::set_current_dir(&root).with_context(|| format!("cd {}", root.display()))?;
    match args.first().map(String::as_str) {
        Some("ci") => ci(),
        Some("test") => cargo(&["test", "--workspace"]),
        Some("tidy") => tidy(),
        Some("bench") => bench(
            args.get(1).map(String::as_str).unwrap_or("engine"),
            &args[args.len().min(2)..],
        ),
        Some("help") | Some("--help") | Some("-h") | None => {
            print!("{HELP}");
            Ok(())
        }
        Some(other) => bail!("unknown task `{other}`\n\n{HELP}"),
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn ci() -> Result<()> {
    cargo(&["fmt", "--all", "--", "--check"])?;
    cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ])?;
    tidy()?;
    cargo(&["test", "--workspace"])?;
    println!("xtask ci: all checks passed");
    Ok(())
}

fn tidy() -> Result<()> {
    let violations = layering::check(&layering::metadata()?)?;
    if violations.is_empty() {
        println!("xtask tidy: crate layering respected");
        Ok(())
    } else {
        bail!("layering violations:\n  {}", violations.join("\n  "))
    }
}

fn bench(which: &str, extra: &[String]) -> Result<()> {
    match which {
        "engine" => {
            let mut args = vec![
                "bench",
                "-p",
                "flowrunner-runtime",
                "--bench",
                "engine",
                "--",
            ];
            args.extend(extra.iter().map(String::as_str));
            cargo(&args)
        }
        "server" => bench_server::run(extra),
        other => bail!("unknown benchmark `{other}`: expected `engine` or `server`"),
    }
}

fn cargo(args: &[&str]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    println!("$ cargo {}", args.join(" "));
    let status = Command::new(&cargo)
        .args(args)
        .status()
        .with_context(|| format!("running cargo {}", args.join(" ")))?;
    if !status.success() {
        bail!("`cargo {}` failed ({status})", args.join(" "));
    }
    Ok(())
}
