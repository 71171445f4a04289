//! Flows: CRUD with tags and pagination, stored revisions, and validation without saving.

use actix_web::{HttpRequest, HttpResponse, web};
use flowrunner_domain::FlowId;
use flowrunner_dsl::{Diagnostic, Metadata};
use flowrunner_store::{FlowChanges, NewFlow, Scope};
use serde_json::json;

use crate::error::{Error, Result};
use crate::extract::{Caller, JsonBody, Page, query_params};
use crate::state::AppState;
use crate::validate;
use crate::wire::{
    FlowDetail, FlowList, FlowRequest, FlowSummary, MessageResponse, RevisionList,
    RevisionResponse, ValidateRequest, ValidateResponse,
};

/// What the caller may see: everything for admins, their own flows otherwise.
pub(crate) fn scope_of(caller: &Caller) -> Scope {
    if caller.is_admin() {
        Scope::All
    } else {
        Scope::Owner(caller.account_id.clone())
    }
}

fn not_found() -> Error {
    Error::NotFound("Flow not found".into())
}

/// An id that is not a flow id cannot name a flow: 404 like any unknown flow.
fn flow_id(raw: &str) -> Result<FlowId> {
    FlowId::parse(raw).map_err(|_| not_found())
}

/// Parses and validates a definition off the reactor. `Ok(metadata)` when it has no errors;
/// warnings do not block.
async fn check_definition(state: &AppState, definition: String) -> Result<Metadata> {
    let catalog = state.shared_catalog();
    let outcome =
        crate::setup::blocking(move || flowrunner_dsl::parse(&definition, catalog.as_ref()))
            .await?;
    match outcome {
        Ok(parsed) => Ok(parsed.flow.metadata),
        Err(diagnostics) => {
            let errors = diagnostics.error_count();
            Err(Error::Validation {
                message: format!("The flow definition has {errors} error(s)"),
                details: Some(json!({ "field": "definition", "diagnostics": diagnostics.0 })),
            })
        }
    }
}

/// The stored fields of a flow: from the body, else from the definition's metadata.
struct FlowFields {
    name: String,
    description: Option<String>,
    tags: Vec<String>,
}

fn resolve_fields(request: FlowRequest, metadata: &Metadata) -> Result<FlowFields> {
    let name = validate::name(
        "name",
        request.name.as_deref().unwrap_or(&metadata.name),
        validate::MAX_NAME_CHARS,
    )?;
    let description = match request.description.or_else(|| metadata.description.clone()) {
        Some(text) if !text.trim().is_empty() => Some(validate::name(
            "description",
            &text,
            validate::MAX_DESCRIPTION_CHARS,
        )?),
        _ => None,
    };
    let tags = validate::tags(request.tags.unwrap_or_else(|| metadata.tags.clone()))?;
    Ok(FlowFields {
        name,
        description,
        tags,
    })
}

/// `GET /flows?tag=&limit=&offset=`.
pub async fn list(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
) -> Result<HttpResponse> {
    let params = query_params(&req)?;
    let page = Page::from_params(&params)?;
    let tag = params
        .get("tag")
        .map(|t| t.trim())
        .filter(|t| !t.is_empty());
    let (flows, total) = state
        .store()
        .list_flows(
            scope_of(&caller),
            tag,
            i64::from(page.limit),
            page.offset as i64,
        )
        .await?;
    Ok(HttpResponse::Ok().json(FlowList {
        flows: flows.iter().map(FlowSummary::from).collect(),
        total,
        limit: page.limit,
        offset: page.offset,
    }))
}

/// `POST /flows`: validates the definition and stores the flow with its first revision.
pub async fn create(
    state: web::Data<AppState>,
    caller: Caller,
    body: JsonBody,
) -> Result<HttpResponse> {
    let mut request: FlowRequest = body.parse()?;
    let definition = request
        .definition
        .take()
        .ok_or_else(|| Error::field("definition", "is required"))?;
    let metadata = check_definition(&state, definition.clone()).await?;
    let fields = resolve_fields(request, &metadata)?;
    let record = state
        .store()
        .create_flow(NewFlow {
            owner_id: caller.account_id.clone(),
            name: fields.name,
            description: fields.description,
            version: metadata.version,
            tags: fields.tags,
            definition,
        })
        .await?;
    log::info!("account {} created flow {}", caller.account_id, record.id);
    Ok(HttpResponse::Created().json(FlowSummary::from(&record)))
}

/// `GET /flows/{id}`: the flow with its current definition.
pub async fn get(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse> {
    let id = flow_id(&path)?;
    let record = state
        .store()
        .get_flow(&id, scope_of(&caller))
        .await?
        .ok_or_else(not_found)?;
    Ok(HttpResponse::Ok().json(FlowDetail::from(record)))
}

/// `PUT /flows/{id}`: replaces the flow's fields; a changed definition becomes a new revision.
pub async fn update(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    body: JsonBody,
) -> Result<HttpResponse> {
    let mut request: FlowRequest = body.parse()?;
    let id = flow_id(&path)?;
    let scope = scope_of(&caller);
    let definition = match request.definition.take() {
        Some(definition) => definition,
        None => {
            state
                .store()
                .get_flow(&id, scope.clone())
                .await?
                .ok_or_else(not_found)?
                .definition
        }
    };
    let metadata = check_definition(&state, definition.clone()).await?;
    let fields = resolve_fields(request, &metadata)?;
    let changes = FlowChanges {
        name: Some(fields.name),
        description: Some(fields.description),
        version: Some(metadata.version),
        definition: Some(definition),
        tags: Some(fields.tags),
    };
    let record = state
        .store()
        .update_flow(&id, scope, changes)
        .await?
        .ok_or_else(not_found)?;
    Ok(HttpResponse::Ok().json(FlowSummary::from(&record)))
}

/// `DELETE /flows/{id}`: soft delete; past executions stay readable.
pub async fn delete(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse> {
    let id = flow_id(&path)?;
    if !state.store().delete_flow(&id, scope_of(&caller)).await? {
        return Err(not_found());
    }
    log::info!("account {} deleted flow {id}", caller.account_id);
    Ok(HttpResponse::Ok().json(MessageResponse {
        message: "Flow deleted successfully",
    }))
}

/// `GET /flows/{id}/versions`: every stored revision, oldest first.
pub async fn versions(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse> {
    let id = flow_id(&path)?;
    let revisions = state
        .store()
        .list_revisions(&id, scope_of(&caller))
        .await?
        .ok_or_else(not_found)?;
    Ok(HttpResponse::Ok().json(RevisionList {
        flow_id: id.to_string(),
        versions: revisions.into_iter().map(RevisionResponse::from).collect(),
    }))
}

/// `POST /flows/validate`: every diagnostic of a definition, nothing saved.
pub async fn validate(
    state: web::Data<AppState>,
    _caller: Caller,
    body: JsonBody,
) -> Result<HttpResponse> {
    let request: ValidateRequest = body.parse()?;
    let catalog = state.shared_catalog();
    let diagnostics: Vec<Diagnostic> = crate::setup::blocking(move || {
        flowrunner_dsl::validate(&request.definition, catalog.as_ref())
    })
    .await?;
    let valid = !diagnostics.iter().any(Diagnostic::is_error);
    Ok(HttpResponse::Ok().json(ValidateResponse { valid, diagnostics }))
}
