//! Executions: running a flow (with idempotency keys), reading, listing, cancelling, and the
//! execution log.

use std::time::Duration;

use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};
use flowrunner_domain::{ExecutionId, ExecutionStatus, FlowId, LogLevel};
use flowrunner_engine::{ExecutionFilter, RunRequest};

use crate::error::{Error, Result};
use crate::extract::{Caller, JsonBody, Page, query_params};
use crate::routes::flows::scope_of;
use crate::state::AppState;
use crate::wire::{
    ExecutionDetail, ExecutionList, ExecutionSummary, LogEntry, LogList, MessageResponse,
    RunFlowRequest, RunFlowResponse, RunWaitResponse,
};

/// The request header that makes `POST /flows/{id}/run` safe to retry.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// The answer header set when an idempotency key found an earlier execution.
pub const IDEMPOTENCY_REPLAYED: &str = "idempotency-replayed";
/// Longest accepted idempotency key.
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 255;

pub(crate) fn not_found() -> Error {
    Error::NotFound("Execution not found".into())
}

/// An id that is not an execution id cannot name one: 404 like any unknown execution.
pub(crate) fn execution_id(raw: &str) -> Result<ExecutionId> {
    ExecutionId::parse(raw).map_err(|_| not_found())
}

/// The `Idempotency-Key` header: 1 to 255 visible ASCII characters, else 422.
fn idempotency_key(req: &HttpRequest) -> Result<Option<String>> {
    let Some(value) = req.headers().get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let bytes = value.as_bytes();
    if bytes.is_empty()
        || bytes.len() > MAX_IDEMPOTENCY_KEY_BYTES
        || !bytes.iter().all(|b| b.is_ascii_graphic())
    {
        return Err(Error::field(
            "Idempotency-Key",
            format!("must be 1 to {MAX_IDEMPOTENCY_KEY_BYTES} visible ASCII characters"),
        ));
    }
    Ok(Some(String::from_utf8_lossy(bytes).into_owned()))
}

/// Longest `wait` of `POST /flows/{id}/run?wait=…`.
pub const MAX_RUN_WAIT: Duration = Duration::from_secs(300);
/// The `wait` of `?wait=true`.
pub const DEFAULT_RUN_WAIT: Duration = Duration::from_secs(60);

/// The optional `wait` query parameter of a run: `true` ([`DEFAULT_RUN_WAIT`]) or a number of
/// seconds above 0 and up to [`MAX_RUN_WAIT`] (fractions allowed); `false` or absent: no wait.
fn run_wait(req: &HttpRequest) -> Result<Option<Duration>> {
    if req.query_string().is_empty() {
        return Ok(None);
    }
    let params = query_params(req)?;
    let Some(text) = params.get("wait").map(|t| t.trim()) else {
        return Ok(None);
    };
    match text {
        "true" => return Ok(Some(DEFAULT_RUN_WAIT)),
        "false" => return Ok(None),
        _ => {}
    }
    match text.parse::<f64>() {
        Ok(secs) if secs > 0.0 && secs <= MAX_RUN_WAIT.as_secs_f64() => {
            Ok(Some(Duration::from_secs_f64(secs)))
        }
        _ => Err(Error::field(
            "wait",
            format!(
                "must be true, false, or a number of seconds above 0 and up to {}",
                MAX_RUN_WAIT.as_secs()
            ),
        )),
    }
}

/// `POST /flows/{id}/run`: checks the input against the flow's `inputs` and queues an
/// execution of the flow's current revision. 202 with the execution's id and status.
///
/// With `?wait=…` the answer waits for the execution to end (at most that long) and carries
/// the whole execution ([`RunWaitResponse`]): 200 once it has ended, 202 while it still runs.
pub async fn run(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    path: web::Path<String>,
    body: JsonBody,
) -> Result<HttpResponse> {
    let flow_id = FlowId::parse(&path).map_err(|_| Error::NotFound("Flow not found".into()))?;
    let request: RunFlowRequest = body.parse_or_default()?;
    let input = match request.input {
        None | Some(serde_json::Value::Null) => serde_json::Value::Object(Default::default()),
        Some(value @ serde_json::Value::Object(_)) => value,
        Some(_) => return Err(Error::field("input", "must be a JSON object")),
    };
    let idempotency_key = idempotency_key(&req)?;
    let wait = run_wait(&req)?;
    let request = RunRequest {
        flow_id,
        scope: scope_of(&caller),
        input,
        idempotency_key,
    };
    let engine = state.engine();
    let submitted = match wait {
        None => engine.submit(request).await,
        Some(wait) => engine.submit_and_wait(request, wait).await,
    }
    .map_err(|e| Error::from_engine(e, "Flow"))?;
    let execution = &submitted.execution;
    let mut response = if wait.is_some() && execution.status.is_terminal() {
        HttpResponse::Ok()
    } else {
        HttpResponse::Accepted()
    };
    if submitted.created {
        log::debug!(
            "account {} started execution {} of flow {}",
            caller.account_id,
            execution.id,
            execution.flow_id
        );
    } else {
        response.insert_header((
            HeaderName::from_static(IDEMPOTENCY_REPLAYED),
            HeaderValue::from_static("true"),
        ));
    }
    if wait.is_some() {
        return Ok(response.json(RunWaitResponse::from(submitted.execution)));
    }
    Ok(response.json(RunFlowResponse::from(execution)))
}

/// `GET /executions/{id}`.
pub async fn get(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse> {
    let id = execution_id(&path)?;
    let record = state
        .engine()
        .get(&id, scope_of(&caller))
        .await
        .map_err(|e| Error::from_engine(e, "Execution"))?
        .ok_or_else(not_found)?;
    Ok(HttpResponse::Ok().json(ExecutionDetail::from(record)))
}

/// `GET /executions?flow_id=&status=&limit=&offset=`: newest first.
pub async fn list(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
) -> Result<HttpResponse> {
    let params = query_params(&req)?;
    let page = Page::from_params(&params)?;
    let flow_id = match params.get("flow_id").map(|v| v.trim()) {
        None | Some("") => None,
        Some(raw) => {
            Some(FlowId::parse(raw).map_err(|_| Error::field("flow_id", "must be a flow id"))?)
        }
    };
    let status = match params.get("status").map(|v| v.trim()) {
        None | Some("") => None,
        Some(raw) => Some(raw.parse::<ExecutionStatus>().map_err(|_| {
            Error::field(
                "status",
                "must be one of queued, running, completed, failed, cancelled",
            )
        })?),
    };
    let (records, total) = state
        .engine()
        .list(
            scope_of(&caller),
            ExecutionFilter { flow_id, status },
            i64::from(page.limit),
            page.offset as i64,
        )
        .await
        .map_err(|e| Error::from_engine(e, "Execution"))?;
    Ok(HttpResponse::Ok().json(ExecutionList {
        executions: records.iter().map(ExecutionSummary::from).collect(),
        total,
        limit: page.limit,
        offset: page.offset,
    }))
}

/// `DELETE /executions/{id}`: cancels a queued or running execution (the running node is
/// interrupted); 409 when it had already finished.
pub async fn cancel(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse> {
    let id = execution_id(&path)?;
    let scope = scope_of(&caller);
    let engine = state.engine();
    let record = engine
        .cancel(&id, scope.clone())
        .await
        .map_err(|e| Error::from_engine(e, "Execution"))?;
    if !record.status.is_terminal() {
        log::warn!("execution {id}: cancellation requested but not yet recorded");
    }
    if record.status.is_terminal() && record.status != ExecutionStatus::Cancelled {
        // It finished on its own while the cancellation was on its way.
        return Err(Error::Conflict(format!(
            "The execution has already finished ({})",
            record.status
        )));
    }
    log::info!("account {} cancelled execution {id}", caller.account_id);
    Ok(HttpResponse::Ok().json(MessageResponse {
        message: "Execution cancelled successfully",
    }))
}

/// `GET /executions/{id}/logs?level=&limit=&offset=`: oldest first; `level` is a minimum.
pub async fn logs(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse> {
    let id = execution_id(&path)?;
    let params = query_params(&req)?;
    let page = Page::from_params(&params)?;
    let level = match params.get("level").map(|v| v.trim()) {
        None | Some("") => None,
        Some(raw) => Some(
            raw.parse::<LogLevel>()
                .map_err(|_| Error::field("level", "must be one of debug, info, warn, error"))?,
        ),
    };
    let (lines, total) = state
        .engine()
        .logs(
            &id,
            scope_of(&caller),
            level,
            i64::from(page.limit),
            page.offset as i64,
        )
        .await
        .map_err(|e| Error::from_engine(e, "Execution"))?
        .ok_or_else(not_found)?;
    Ok(HttpResponse::Ok().json(LogList {
        logs: lines.into_iter().map(LogEntry::from).collect(),
        total,
        limit: page.limit,
        offset: page.offset,
    }))
}
