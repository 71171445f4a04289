//! Per-account secrets: names and dates only; values go in, never out.

use actix_web::{HttpResponse, web};
use flowrunner_domain::AccountId;

use crate::error::{Error, Result};
use crate::extract::{Caller, JsonBody};
use crate::routes::accounts::visible_account_id;
use crate::state::AppState;
use crate::validate;
use crate::wire::{MessageResponse, PutSecretRequest, SecretList, SecretResponse};

/// The account whose secrets the path names; 404 when it does not exist or is not the caller's
/// (for non-admins).
async fn target_account(state: &AppState, caller: &Caller, raw: &str) -> Result<AccountId> {
    let id = visible_account_id(caller, raw)?;
    if id != caller.account_id && state.store().get_account(&id).await?.is_none() {
        return Err(Error::NotFound("Account not found".into()));
    }
    Ok(id)
}

/// `GET /accounts/{account_id}/secrets`.
pub async fn list(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse> {
    let account = target_account(&state, &caller, &path).await?;
    let secrets = state.store().list_secrets(&account).await?;
    Ok(HttpResponse::Ok().json(SecretList {
        secrets: secrets.iter().map(SecretResponse::from).collect(),
    }))
}

/// `POST /accounts/{account_id}/secrets`: 201 for a new key, 200 when an existing key's value
/// was replaced.
pub async fn put(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    body: JsonBody,
) -> Result<HttpResponse> {
    let request: PutSecretRequest = body.parse()?;
    let account = target_account(&state, &caller, &path).await?;
    validate::secret(&request.key, &request.value)?;
    let (meta, created) = state
        .store()
        .put_secret(&account, &request.key, &request.value)
        .await
        .map_err(|e| Error::from_store(e, "Account"))?;
    let mut response = if created {
        HttpResponse::Created()
    } else {
        HttpResponse::Ok()
    };
    Ok(response.json(SecretResponse::from(&meta)))
}

/// `DELETE /accounts/{account_id}/secrets/{key}`.
pub async fn delete(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse> {
    let (raw_account, key) = path.into_inner();
    let account = target_account(&state, &caller, &raw_account).await?;
    let not_found = || Error::NotFound("Secret not found".into());
    if !validate::is_secret_key(&key) {
        return Err(not_found());
    }
    if !state.store().delete_secret(&account, &key).await? {
        return Err(not_found());
    }
    Ok(HttpResponse::Ok().json(MessageResponse {
        message: "Secret deleted successfully",
    }))
}
