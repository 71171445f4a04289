//! `flowrunner`: the FlowRunner command line: run the server, administer it, and
//! validate or run flow files locally without a server.
//!
//! This binary only parses arguments and configuration and wires the library crates
//! together; the behaviour lives in the crates.

mod local;
mod server_cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc instead of glibc's allocator: the server allocates and frees many small objects
/// per request and per step from several threads, where glibc's malloc took about a sixth of
/// the CPU in profiles (docs/benchmarks.md). Built with `no_thp`: with transparent huge pages
/// its arenas were backed in 2 MiB pages and the RSS of 10,000 waiting executions rose past
/// the 256 MB goal.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// FlowRunner: a self-hosted workflow engine.
#[derive(Debug, Parser)]
#[command(name = "flowrunner", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the HTTP/WebSocket server.
    Serve(server_cmd::ServeArgs),
    /// Apply pending database migrations and exit.
    Migrate(server_cmd::MigrateArgs),
    /// Manage accounts directly in the database.
    #[command(subcommand)]
    Account(server_cmd::AccountCommand),
    /// Check flow files and report every problem with its position.
    Validate(local::ValidateArgs),
    /// Run a flow file locally, printing each event as it happens.
    Run(local::RunArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(
        match cli.command {
            Command::Run(_) | Command::Validate(_) => "warn",
            _ => "info",
        },
    ))
    .format_timestamp_millis()
    .init();

    if let Command::Validate(args) = &cli.command {
        return local::validate(args);
    }
    let tokio = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = tokio.block_on(async {
        match cli.command {
            Command::Serve(args) => server_cmd::run_serve(args)
                .await
                .map(|()| ExitCode::SUCCESS),
            Command::Migrate(args) => server_cmd::run_migrate(args)
                .await
                .map(|()| ExitCode::SUCCESS),
            Command::Account(cmd) => server_cmd::run_account(cmd)
                .await
                .map(|()| ExitCode::SUCCESS),
            Command::Run(args) => local::run(args).await,
            Command::Validate(_) => Ok(ExitCode::SUCCESS),
        }
    });
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
