//! Building the actix application and running the HTTP server: on a given listener (tests,
//! port 0) or on the configured address with graceful shutdown on SIGINT and SIGTERM.

use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use actix_web::body::MessageBody;
use actix_web::dev::{ServerHandle, ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::error::{JsonPayloadError, PathError, QueryPayloadError};
use actix_web::middleware::Logger;
use actix_web::{App, HttpServer, web};
use tokio::task::JoinHandle;

use crate::config::ServerConfig;
use crate::error::{Error, Result};
use crate::routes;
use crate::state::AppState;

/// The actix application: state, extractor error handlers, access log, routes and the
/// envelope-shaped 404 for unknown paths.
pub fn build_app(
    state: AppState,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    let max_body = state.max_body_bytes();
    App::new()
        .app_data(web::Data::new(state))
        .app_data(
            web::JsonConfig::default()
                .limit(max_body)
                .error_handler(|err, _req| json_error(err).into()),
        )
        .app_data(web::QueryConfig::default().error_handler(|err, _req| query_error(err).into()))
        .app_data(web::PathConfig::default().error_handler(|err, _req| path_error(err).into()))
        .wrap(access_log())
        .configure(routes::configure)
        .default_service(web::to(routes::not_found))
}

/// actix's default access log line, with the request line's `token` query parameter (the
/// WebSocket's browser authentication) redacted.
fn access_log() -> Logger {
    Logger::new(r#"%a "%{request_line}xi" %s %b "%{Referer}i" "%{User-Agent}i" %T"#)
        .custom_request_replace("request_line", |req| {
            format!(
                "{} {} {:?}",
                req.method(),
                redact_token(req.path(), req.query_string()),
                req.version()
            )
        })
}

/// `path?query` with the value of every `token` parameter replaced.
fn redact_token(path: &str, query: &str) -> String {
    if query.is_empty() {
        return path.to_string();
    }
    let query: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) if name == "token" => format!("{name}=<redacted>"),
            _ => pair.to_string(),
        })
        .collect();
    format!("{path}?{}", query.join("&"))
}

fn json_error(err: JsonPayloadError) -> Error {
    match err {
        JsonPayloadError::OverflowKnownLength { limit, .. }
        | JsonPayloadError::Overflow { limit } => Error::PayloadTooLarge { limit },
        JsonPayloadError::ContentType => {
            Error::UnsupportedMediaType("Content-Type must be application/json".into())
        }
        other => Error::invalid_request(format!("Invalid JSON body: {other}")),
    }
}

fn query_error(err: QueryPayloadError) -> Error {
    Error::Validation {
        message: format!("Invalid query string: {err}"),
        details: None,
    }
}

fn path_error(err: PathError) -> Error {
    Error::NotFound(format!("Not found: {err}"))
}

#[cfg(test)]
mod tests {
    use super::redact_token;

    #[test]
    fn tokens_are_redacted_from_the_access_log() {
        assert_eq!(redact_token("/ws/executions/e", ""), "/ws/executions/e");
        assert_eq!(
            redact_token("/ws/executions/e", "token=secret&x=1"),
            "/ws/executions/e?token=<redacted>&x=1"
        );
        assert_eq!(redact_token("/a", "tokens=1&token"), "/a?tokens=1&token");
    }
}

/// A server running on the current tokio runtime.
#[derive(Debug)]
pub struct RunningServer {
    addr: SocketAddr,
    handle: ServerHandle,
    state: AppState,
    server: JoinHandle<std::io::Result<()>>,
    pruner: JoinHandle<()>,
}

impl RunningServer {
    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The application state it serves with.
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// A handle that can stop the server from elsewhere.
    pub fn handle(&self) -> ServerHandle {
        self.handle.clone()
    }

    /// Shuts the execution engine down (running executions are left to resume on the next
    /// start; WebSocket streams close with 1001), stops accepting connections, lets in-flight
    /// requests finish (up to the configured shutdown timeout) and waits for the server to end.
    pub async fn stop(self) -> Result<()> {
        graceful_stop(&self.state, &self.handle).await;
        self.wait().await
    }

    /// Waits until the server ends (after [`RunningServer::handle`]`.stop(..)`); the engine is
    /// shut down too if that has not happened yet.
    pub async fn wait(self) -> Result<()> {
        let outcome = self.server.await;
        self.pruner.abort();
        self.state.shutdown_engine().await;
        outcome.map_err(Error::internal)??;
        Ok(())
    }
}

/// Starts serving `state` on `listener` (no signal handling: stop it through the returned
/// value). Must be called within a tokio runtime.
pub fn start(
    state: AppState,
    config: &ServerConfig,
    listener: TcpListener,
) -> Result<RunningServer> {
    let addr = listener.local_addr()?;
    let app_state = state.clone();
    let mut server = HttpServer::new(move || build_app(app_state.clone()))
        .disable_signals()
        .shutdown_timeout(config.shutdown_timeout.as_secs())
        .listen(listener)?;
    if let Some(workers) = config.workers {
        server = server.workers(workers.max(1));
    }
    let server = server.run();
    let handle = server.handle();
    let server = tokio::spawn(server);
    let pruner = tokio::spawn(prune_revocations(state.clone(), config.prune_interval));
    Ok(RunningServer {
        addr,
        handle,
        state,
        server,
        pruner,
    })
}

/// The engine first (so live streams end and nothing new starts), then the HTTP server.
async fn graceful_stop(state: &AppState, handle: &ServerHandle) {
    state.shutdown_engine().await;
    handle.stop(true).await;
}

/// Prepares everything (store, migrations, secrets, first admin, the execution engine, which
/// resumes unfinished executions), binds `config.bind`, serves until SIGINT or SIGTERM, then
/// shuts down gracefully: the engine stops (running executions resume on the next start),
/// then the HTTP server.
pub async fn serve(config: ServerConfig) -> Result<()> {
    let state = crate::setup::prepare(&config).await?;
    let listener = TcpListener::bind(config.bind)
        .map_err(|e| Error::Config(format!("cannot listen on {}: {e}", config.bind)))?;
    let running = start(state, &config, listener)?;
    // The actual address (also with port 0), on stderr whatever the log filter.
    eprintln!("listening on {}", running.local_addr());
    log::info!("FlowRunner listening on http://{}", running.local_addr());
    let handle = running.handle();
    let state = running.state().clone();
    let signals = tokio::spawn(async move {
        match shutdown_signal().await {
            Ok(name) => log::info!("{name} received; shutting down gracefully"),
            Err(e) => log::error!("cannot listen for shutdown signals: {e}; stopping"),
        }
        graceful_stop(&state, &handle).await;
    });
    let outcome = running.wait().await;
    signals.abort();
    log::info!("FlowRunner stopped");
    outcome
}

/// Waits for SIGINT (Ctrl-C) or, on Unix, SIGTERM; returns the signal's name.
async fn shutdown_signal() -> std::io::Result<&'static str> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            result = tokio::signal::ctrl_c() => result.map(|()| "SIGINT"),
            _ = term.recv() => Ok("SIGTERM"),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await.map(|()| "Ctrl-C")
    }
}

/// Deletes expired token revocations now and then (a revoked token that expired fails on its
/// expiry anyway).
async fn prune_revocations(state: AppState, every: Duration) {
    let mut interval = tokio::time::interval(every.max(Duration::from_millis(10)));
    loop {
        interval.tick().await;
        match state.store().prune_revoked_tokens(chrono::Utc::now()).await {
            Ok(0) => {}
            Ok(n) => log::debug!("pruned {n} expired token revocation(s)"),
            Err(e) => log::warn!("pruning token revocations failed: {e}"),
        }
    }
}
