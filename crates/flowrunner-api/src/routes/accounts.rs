//! Accounts: admins manage every account; a user reads and edits only their own, and never a role.

use actix_web::{HttpRequest, HttpResponse, web};
use flowrunner_domain::{AccountId, Role};
use flowrunner_store::{AccountChanges, NewAccount};

use crate::error::{Error, Result};
use crate::extract::{Caller, JsonBody, Page, query_params};
use crate::state::AppState;
use crate::validate;
use crate::wire::{
    AccountList, AccountResponse, CreateAccountRequest, MessageResponse, UpdateAccountRequest,
};

fn not_found() -> Error {
    Error::NotFound("Account not found".into())
}

fn require_admin(caller: &Caller, action: &str) -> Result<()> {
    if caller.is_admin() {
        Ok(())
    } else {
        Err(Error::Forbidden(format!(
            "Only administrators can {action}"
        )))
    }
}

/// The account a path names, if the caller may see it: admins see every account, users only
/// their own (another id answers 404 so ids do not leak).
pub(crate) fn visible_account_id(caller: &Caller, raw: &str) -> Result<AccountId> {
    let id = AccountId::parse(raw).map_err(|_| not_found())?;
    if !caller.is_admin() && id != caller.account_id {
        return Err(not_found());
    }
    Ok(id)
}

fn email_taken(err: flowrunner_store::Error) -> Error {
    match err {
        flowrunner_store::Error::Conflict(_) => {
            Error::Conflict("An account with this email already exists".into())
        }
        other => Error::from_store(other, "Account"),
    }
}

/// `GET /accounts?role=&limit=&offset=` (admins).
pub async fn list(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
) -> Result<HttpResponse> {
    require_admin(&caller, "list accounts")?;
    let params = query_params(&req)?;
    let page = Page::from_params(&params)?;
    let role = match params
        .get("role")
        .map(|r| r.trim())
        .filter(|r| !r.is_empty())
    {
        None => None,
        Some(text) => Some(
            text.parse::<Role>()
                .map_err(|_| Error::field("role", "must be admin or user"))?,
        ),
    };
    let (accounts, total) = state
        .store()
        .list_accounts(role, i64::from(page.limit), page.offset as i64)
        .await?;
    Ok(HttpResponse::Ok().json(AccountList {
        accounts: accounts.iter().map(AccountResponse::from).collect(),
        total,
        limit: page.limit,
        offset: page.offset,
    }))
}

/// `POST /accounts` (admins).
pub async fn create(
    state: web::Data<AppState>,
    caller: Caller,
    body: JsonBody,
) -> Result<HttpResponse> {
    require_admin(&caller, "create accounts")?;
    let request: CreateAccountRequest = body.parse()?;
    let name = validate::name("name", &request.name, validate::MAX_NAME_CHARS)?;
    let email = validate::email("email", &request.email)?;
    validate::password(&request.password)?;
    let password_hash = state.hash_password(request.password).await?;
    let account = state
        .store()
        .create_account(NewAccount {
            email,
            name,
            role: request.role.unwrap_or(Role::User),
            password_hash,
        })
        .await
        .map_err(email_taken)?;
    // The id is fresh, so nothing can be cached for it yet; this keeps a cached "no such
    // account" from ever outliving a creation.
    state.invalidate_account(&account.id);
    log::info!(
        "account {} created account {} ({})",
        caller.account_id,
        account.id,
        account.role
    );
    Ok(HttpResponse::Created().json(AccountResponse::from(&account)))
}

/// `GET /accounts/{id}`.
pub async fn get(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse> {
    let id = visible_account_id(&caller, &path)?;
    let account = state
        .store()
        .get_account(&id)
        .await?
        .ok_or_else(not_found)?;
    Ok(HttpResponse::Ok().json(AccountResponse::from(&account)))
}

/// `PUT /accounts/{id}`: name, email, password; role for admins only. A new password
/// invalidates the account's existing tokens.
pub async fn update(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    body: JsonBody,
) -> Result<HttpResponse> {
    let request: UpdateAccountRequest = body.parse()?;
    let id = visible_account_id(&caller, &path)?;
    let current = state
        .store()
        .get_account(&id)
        .await?
        .ok_or_else(not_found)?;
    if let Some(role) = request.role
        && role != current.role
    {
        require_admin(&caller, "change roles")?;
    }
    let mut changes = AccountChanges {
        name: request
            .name
            .as_deref()
            .map(|n| validate::name("name", n, validate::MAX_NAME_CHARS))
            .transpose()?,
        email: request
            .email
            .as_deref()
            .map(|e| validate::email("email", e))
            .transpose()?,
        role: request.role.filter(|r| *r != current.role),
        password_hash: None,
    };
    if let Some(password) = request.password {
        validate::password(&password)?;
        changes.password_hash = Some(state.hash_password(password).await?);
    }
    let account = if changes.is_empty() {
        current
    } else {
        // A role or password change moves the account's token cut-off: this process sees it
        // from the next request on.
        let updated = {
            let _invalidate = state.session_cache().invalidate_account_on_drop(&id);
            state.store().update_account(&id, changes).await
        };
        updated.map_err(email_taken)?.ok_or_else(not_found)?
    };
    Ok(HttpResponse::Ok().json(AccountResponse::from(&account)))
}

/// `DELETE /accounts/{id}` (admins): removes the account with its flows and secrets; its tokens
/// stop working. The last admin cannot be deleted (409).
pub async fn delete(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse> {
    require_admin(&caller, "delete accounts")?;
    let id = AccountId::parse(&path).map_err(|_| not_found())?;
    // Its tokens get 401 from the next request on.
    let deleted = {
        let _invalidate = state.session_cache().invalidate_account_on_drop(&id);
        state.store().delete_account(&id).await
    };
    if !deleted.map_err(|e| Error::from_store(e, "Account"))? {
        return Err(not_found());
    }
    log::info!("account {} deleted account {id}", caller.account_id);
    Ok(HttpResponse::Ok().json(MessageResponse {
        message: "Account deleted successfully",
    }))
}
