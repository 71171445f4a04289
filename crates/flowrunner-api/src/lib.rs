//! FlowRunner's HTTP API: the actix-web application, its routes, extractors and the one
//! mapping from errors to the reference's envelope.
//!
//! This is the only crate that knows actix and the JSON wire shapes. Executions are run by
//! `flowrunner_engine`, started in [`setup::prepare`] and shut down with the server. Entry points:
//! [`serve`] (what `flowrunner serve` runs), [`setup::prepare`] + [`start`] (tests: a server on
//! `127.0.0.1:0` that stops on request) and [`build_app`].
#![warn(missing_docs)]

pub mod config;
pub mod error;
pub mod extract;
mod routes;
pub mod server;
pub mod setup;
pub mod state;
pub mod validate;
pub mod wire;

pub use config::{BootstrapAdmin, DatabaseConfig, ExecutionConfig, ServerConfig};
pub use error::{Error, Result};
pub use server::{RunningServer, build_app, serve, start};
pub use state::{AppState, AppStateParts};
