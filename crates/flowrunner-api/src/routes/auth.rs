//! `POST /auth/login`, `/auth/refresh` and `/auth/logout`.

use actix_web::{HttpResponse, web};
use flowrunner_auth::IssuedToken;

use crate::error::{Error, Result};
use crate::extract::{Caller, JsonBody};
use crate::state::AppState;
use crate::wire::{LoginRequest, MessageResponse, TokenResponse, timestamp};

fn token_response(issued: &IssuedToken) -> TokenResponse {
    TokenResponse {
        token: issued.token.clone(),
        expires_at: timestamp(&issued.expires_at),
        account_id: issued.claims.sub.clone(),
    }
}

/// Exchanges email and password for a token. Unknown email and wrong password get the same
/// answer, after the same amount of hashing work.
pub async fn login(state: web::Data<AppState>, body: JsonBody) -> Result<HttpResponse> {
    let request: LoginRequest = body.parse()?;
    let account = state
        .store()
        .find_account_by_email(request.username.trim())
        .await?;
    let hash = account.as_ref().map(|a| a.password_hash.clone());
    let matched = state.verify_password(request.password, hash).await?;
    let account = match account {
        Some(account) if matched => account,
        _ => return Err(Error::Unauthorized("Invalid username or password".into())),
    };
    let issued = state.auth().login(&account.id, account.role)?;
    log::info!("account {} logged in", account.id);
    Ok(HttpResponse::Ok().json(token_response(&issued)))
}

/// Issues a new token and revokes the one used.
pub async fn refresh(state: web::Data<AppState>, caller: Caller) -> Result<HttpResponse> {
    let issued = state.auth().refresh(&state.sessions(), &caller).await?;
    Ok(HttpResponse::Ok().json(token_response(&issued)))
}

/// Revokes the token used.
pub async fn logout(state: web::Data<AppState>, caller: Caller) -> Result<HttpResponse> {
    state.auth().logout(&state.sessions(), &caller).await?;
    Ok(HttpResponse::Ok().json(MessageResponse {
        message: "Logged out successfully",
    }))
}
