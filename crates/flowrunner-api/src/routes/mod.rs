//! The route table: auth, flows, executions (`POST /flows/{id}/run`, `/executions…`), accounts,
//! secrets, and the executions' WebSocket stream (`/ws/executions/{id}`).

use actix_web::{HttpRequest, HttpResponse, web};

use crate::error::Error;

mod accounts;
mod auth;
mod executions;
mod flows;
mod health;
mod secrets;
mod ws;

/// A resource that answers 405 (with the error envelope and an `Allow` header) to methods it
/// has no route for.
fn resource(path: &str, allow: &'static str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(move |req: HttpRequest| async move {
        Err::<HttpResponse, _>(Error::MethodNotAllowed {
            method: req.method().to_string(),
            allow,
        })
    }))
}

/// Registers every route of the API.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/healthz", "GET").route(web::get().to(health::healthz)));
    cfg.service(resource("/ws/executions/{id}", "GET").route(web::get().to(ws::stream)));
    cfg.service(
        web::scope("/api/v1")
            .service(resource("/auth/login", "POST").route(web::post().to(auth::login)))
            .service(resource("/auth/refresh", "POST").route(web::post().to(auth::refresh)))
            .service(resource("/auth/logout", "POST").route(web::post().to(auth::logout)))
            .service(
                resource("/flows", "GET, POST")
                    .route(web::get().to(flows::list))
                    .route(web::post().to(flows::create)),
            )
            .service(resource("/flows/validate", "POST").route(web::post().to(flows::validate)))
            .service(
                resource("/flows/{id}", "GET, PUT, DELETE")
                    .route(web::get().to(flows::get))
                    .route(web::put().to(flows::update))
                    .route(web::delete().to(flows::delete)),
            )
            .service(resource("/flows/{id}/versions", "GET").route(web::get().to(flows::versions)))
            .service(resource("/flows/{id}/run", "POST").route(web::post().to(executions::run)))
            .service(resource("/executions", "GET").route(web::get().to(executions::list)))
            .service(
                resource("/executions/{id}", "GET, DELETE")
                    .route(web::get().to(executions::get))
                    .route(web::delete().to(executions::cancel)),
            )
            .service(
                resource("/executions/{id}/logs", "GET").route(web::get().to(executions::logs)),
            )
            .service(
                resource("/accounts", "GET, POST")
                    .route(web::get().to(accounts::list))
                    .route(web::post().to(accounts::create)),
            )
            .service(
                resource("/accounts/{id}", "GET, PUT, DELETE")
                    .route(web::get().to(accounts::get))
                    .route(web::put().to(accounts::update))
                    .route(web::delete().to(accounts::delete)),
            )
            .service(
                resource("/accounts/{id}/secrets", "GET, POST")
                    .route(web::get().to(secrets::list))
                    .route(web::post().to(secrets::put)),
            )
            .service(
                resource("/accounts/{id}/secrets/{key}", "DELETE")
                    .route(web::delete().to(secrets::delete)),
            ),
    );
}

/// Answer for paths no route matches.
pub async fn not_found(req: HttpRequest) -> Result<HttpResponse, Error> {
    Err(Error::NotFound(format!(
        "No route for {} {}",
        req.method(),
        req.path()
    )))
}
