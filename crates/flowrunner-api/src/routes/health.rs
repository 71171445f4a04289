//! `GET /healthz`: liveness and database reachability, without authentication.

use actix_web::{HttpResponse, web};

use crate::error::{Error, Result};
use crate::state::AppState;
use crate::wire::HealthResponse;

/// 200 when the database answers, 503 otherwise.
pub async fn healthz(state: web::Data<AppState>) -> Result<HttpResponse> {
    state
        .store()
        .ping()
        .await
        .map_err(|e| Error::Unavailable(format!("database check failed: {e}")))?;
    Ok(HttpResponse::Ok().json(HealthResponse {
        status: "ok",
        database: state.store().backend().as_str(),
    }))
}
