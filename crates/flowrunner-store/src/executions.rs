//! Executions and their journal (`execution_events`): the rows, the idempotent insert the
//! group-commit writer runs (`create_in`), and the pooled reads (get, list, journal pages).
//! Every write of an execution goes through the writer (`writer.rs`); there is no pooled
//! write path. Executions reference flows, revisions and accounts by id only, so they stay
//! readable after those are deleted.

use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::prelude::*;
use flowrunner_domain::{AccountId, ExecutionId, ExecutionStatus, FlowId, LogLevel, RevisionId};

use crate::conn::{DbConn, on_backend};
use crate::error::{Error, Result};
use crate::models::{
    EventFilter, ExecutionEvent, ExecutionFilter, ExecutionRecord, NewExecution, Scope,
};
use crate::schema::{execution_events, executions, idempotency_keys};
use crate::store::{BlockingStore, Store};
use crate::time::{self, DbTime};

/// Statuses after which an execution never changes again.
pub(crate) const TERMINAL: [&str; 3] = ["completed", "failed", "cancelled"];
/// The statuses of executions not yet finished (a range of `executions_status_idx`).
pub(crate) const UNFINISHED: [&str; 2] = ["queued", "running"];

#[derive(Queryable, Selectable)]
#[diesel(table_name = executions)]
pub(crate) struct ExecutionRow {
    id: String,
    flow_id: String,
    revision_id: String,
    revision: i32,
    flow_version: String,
    account_id: String,
    status: String,
    input: String,
    result: Option<String>,
    error: Option<String>,
    error_node: Option<String>,
    snapshot: Option<String>,
    idempotency_key: Option<String>,
    owner: Option<String>,
    lease_until: Option<NaiveDateTime>,
    created_at: NaiveDateTime,
    started_at: Option<NaiveDateTime>,
    completed_at: Option<NaiveDateTime>,
}

fn parse_json(what: &str, id: &str, text: &str) -> Result<serde_json::Value> {
    serde_json::from_str(text).map_err(|e| Error::Corrupt(format!("{what} of execution {id}: {e}")))
}

pub(crate) fn to_json(value: &serde_json::Value) -> Result<String> {
    serde_json::to_string(value).map_err(|e| Error::Corrupt(format!("json: {e}")))
}

impl TryFrom<ExecutionRow> for ExecutionRecord {
    type Error = Error;

    fn try_from(row: ExecutionRow) -> Result<Self> {
        let status = row
            .status
            .parse::<ExecutionStatus>()
            .map_err(|e| Error::Corrupt(format!("execution {}: {e}", row.id)))?;
        let input = parse_json("input", &row.id, &row.input)?;
        let result = row
            .result
            .as_deref()
            .map(|t| parse_json("result", &row.id, t))
            .transpose()?;
        let snapshot = row
            .snapshot
            .as_deref()
            .map(|t| parse_json("snapshot", &row.id, t))
            .transpose()?;
        Ok(ExecutionRecord {
            id: ExecutionId::from_trusted(row.id),
            flow_id: FlowId::from_trusted(row.flow_id),
            revision_id: RevisionId::from_trusted(row.revision_id),
            revision: row.revision,
            flow_version: row.flow_version,
            account_id: AccountId::from_trusted(row.account_id),
            status,
            input,
            result,
            error: row.error,
            error_node: row.error_node,
            snapshot,
            idempotency_key: row.idempotency_key,
            owner: row.owner,
            lease_until: row.lease_until.map(time::from_db),
            created_at: time::from_db(row.created_at),
            started_at: row.started_at.map(time::from_db),
            completed_at: row.completed_at.map(time::from_db),
        })
    }
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = execution_events)]
struct EventRow {
    execution_id: String,
    seq: i64,
    kind: String,
    node_id: Option<String>,
    node_type: Option<String>,
    level: Option<String>,
    message: Option<String>,
    data: Option<String>,
    created_at: NaiveDateTime,
}

impl TryFrom<EventRow> for ExecutionEvent {
    type Error = Error;

    fn try_from(row: EventRow) -> Result<Self> {
        let level = row
            .level
            .as_deref()
            .map(str::parse::<LogLevel>)
            .transpose()
            .map_err(|e| {
                Error::Corrupt(format!("event {} of {}: {e}", row.seq, row.execution_id))
            })?;
        let data = row
            .data
            .as_deref()
            .map(|t| parse_json("event data", &row.execution_id, t))
            .transpose()?;
        Ok(ExecutionEvent {
            execution_id: ExecutionId::from_trusted(row.execution_id),
            seq: row.seq,
            kind: row.kind,
            node_id: row.node_id,
            node_type: row.node_type,
            level,
            message: row.message,
            data,
            created_at: time::from_db(row.created_at),
        })
    }
}

/// How long an idempotency key keeps returning the execution it started.
pub const IDEMPOTENCY_WINDOW: chrono::TimeDelta = chrono::TimeDelta::hours(24);

/// Creates a queued execution inside the caller's write transaction (the writer's, see
/// [`JournalWriter::create_execution`](crate::JournalWriter::create_execution)). With an
/// idempotency key used by the same account for the same flow within [`IDEMPOTENCY_WINDOW`],
/// returns that execution instead; the flag says whether it was created.
pub(crate) fn create_in(
    conn: &mut DbConn,
    new: NewExecution,
    now: DateTime<Utc>,
) -> Result<(ExecutionRecord, bool)> {
    let id = ExecutionId::generate();
    if let Some(key) = new.idempotency_key.as_deref() {
        let existing = find_key(conn, &new, key)?;
        match existing {
            Some((execution_id, created_at))
                if time::from_db(created_at) + IDEMPOTENCY_WINDOW > now =>
            {
                if let Some(record) = load(conn, &execution_id)? {
                    return Ok((record, false));
                }
                // The execution is gone: the key is free again.
                repoint_key(conn, &new, key, &id, now)?;
            }
            Some(_) => repoint_key(conn, &new, key, &id, now)?,
            None => {
                diesel::insert_into(idempotency_keys::table)
                    .values((
                        idempotency_keys::account_id.eq(new.account_id.as_str()),
                        idempotency_keys::flow_id.eq(new.flow_id.as_str()),
                        idempotency_keys::key.eq(key),
                        idempotency_keys::execution_id.eq(id.as_str()),
                        idempotency_keys::created_at.eq(time::to_db(now)),
                    ))
                    .execute(conn)?;
            }
        }
    }
    let input = to_json(&new.input)?;
    let row = (
        executions::id.eq(id.as_str()),
        executions::flow_id.eq(new.flow_id.as_str()),
        executions::revision_id.eq(new.revision_id.as_str()),
        executions::revision.eq(new.revision),
        executions::flow_version.eq(new.flow_version.as_str()),
        executions::account_id.eq(new.account_id.as_str()),
        executions::status.eq(ExecutionStatus::Queued.as_str()),
        executions::input.eq(&input),
        executions::idempotency_key.eq(new.idempotency_key.as_deref()),
        executions::owner.eq(new.owner.as_deref()),
        executions::lease_until.eq(new.lease_until.map(DbTime::of)),
        executions::created_at.eq(DbTime::of(now)),
    );
    // On the concrete connection: through the multi-backend one, diesel builds the SQL text
    // of every insert again to find its prepared statement (see `writer::EventRows`).
    on_backend!(conn, |c| diesel::insert_into(executions::table)
        .values(row)
        .execute(c))?;
    let record = ExecutionRecord {
        id,
        flow_id: new.flow_id,
        revision_id: new.revision_id,
        revision: new.revision,
        flow_version: new.flow_version,
        account_id: new.account_id,
        status: ExecutionStatus::Queued,
        input: new.input,
        result: None,
        error: None,
        error_node: None,
        snapshot: None,
        idempotency_key: new.idempotency_key,
        owner: new.owner,
        lease_until: new.lease_until.map(|t| time::from_db(time::to_db(t))),
        created_at: time::from_db(time::to_db(now)),
        started_at: None,
        completed_at: None,
    };
    Ok((record, true))
}

/// The execution a key points to and when the key was (re)used; locks the row on PostgreSQL.
fn find_key(
    conn: &mut DbConn,
    new: &NewExecution,
    key: &str,
) -> Result<Option<(String, NaiveDateTime)>> {
    let query = idempotency_keys::table
        .filter(idempotency_keys::account_id.eq(new.account_id.as_str()))
        .filter(idempotency_keys::flow_id.eq(new.flow_id.as_str()))
        .filter(idempotency_keys::key.eq(key))
        .select((idempotency_keys::execution_id, idempotency_keys::created_at));
    // `load` rather than `first`: see `conn::unique_row` (the key is unique).
    let rows: Vec<(String, NaiveDateTime)> = match conn {
        DbConn::Sqlite(c) => query.load(c)?,
        DbConn::Postgres(c) => query.for_update().load(c)?,
    };
    Ok(crate::conn::unique_row(rows))
}

fn repoint_key(
    conn: &mut DbConn,
    new: &NewExecution,
    key: &str,
    id: &ExecutionId,
    now: DateTime<Utc>,
) -> Result<()> {
    diesel::update(
        idempotency_keys::table
            .filter(idempotency_keys::account_id.eq(new.account_id.as_str()))
            .filter(idempotency_keys::flow_id.eq(new.flow_id.as_str()))
            .filter(idempotency_keys::key.eq(key)),
    )
    .set((
        idempotency_keys::execution_id.eq(id.as_str()),
        idempotency_keys::created_at.eq(time::to_db(now)),
    ))
    .execute(conn)?;
    Ok(())
}

/// The execution, if it exists and is visible in `scope` (its account's, or every one).
fn load_visible(
    conn: &mut DbConn,
    id: &ExecutionId,
    scope: &Scope,
) -> Result<Option<ExecutionRecord>> {
    let record = load(conn, id.as_str())?;
    Ok(record.filter(|r| scope.owner().is_none_or(|owner| *owner == r.account_id)))
}

pub(crate) fn load(conn: &mut DbConn, id: &str) -> Result<Option<ExecutionRecord>> {
    // `load` rather than `first`: see `conn::unique_row`.
    executions::table
        .find(id)
        .select(ExecutionRow::as_select())
        .load::<ExecutionRow>(conn)
        .map(crate::conn::unique_row)?
        .map(ExecutionRecord::try_from)
        .transpose()
}

impl BlockingStore {
    /// The execution, if it exists and is visible in `scope` (its starting account).
    pub fn get_execution(&self, id: &ExecutionId, scope: Scope) -> Result<Option<ExecutionRecord>> {
        load_visible(&mut *self.conn()?, id, &scope)
    }

    /// The whole journal of an execution visible in `scope`, in `seq` order (what a live
    /// watcher replays first); `Ok(None)` when it does not exist or is not visible. Both reads
    /// on one pooled connection.
    pub fn execution_journal(
        &self,
        id: &ExecutionId,
        scope: Scope,
    ) -> Result<Option<Vec<ExecutionEvent>>> {
        let mut conn = self.conn()?;
        if load_visible(&mut conn, id, &scope)?.is_none() {
            return Ok(None);
        }
        let rows = execution_events::table
            .filter(execution_events::execution_id.eq(id.as_str()))
            .order(execution_events::seq.asc())
            .select(EventRow::as_select())
            .load(&mut *conn)?;
        rows.into_iter()
            .map(ExecutionEvent::try_from)
            .collect::<Result<_>>()
            .map(Some)
    }

    /// One page of executions visible in `scope`, newest first, and the total matching.
    pub fn list_executions(
        &self,
        scope: Scope,
        filter: ExecutionFilter,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<ExecutionRecord>, i64)> {
        let mut conn = self.conn()?;
        macro_rules! filtered {
            ($query:expr) => {{
                let mut query = $query;
                if let Some(owner) = scope.owner() {
                    query = query.filter(executions::account_id.eq(owner.as_str().to_string()));
                }
                if let Some(flow) = &filter.flow_id {
                    query = query.filter(executions::flow_id.eq(flow.as_str().to_string()));
                }
                if let Some(status) = filter.status {
                    query = query.filter(executions::status.eq(status.as_str()));
                }
                query
            }};
        }
        let rows = filtered!(
            executions::table
                .select(ExecutionRow::as_select())
                .order((executions::created_at.desc(), executions::id.desc()))
                .limit(limit.max(0))
                .offset(offset.max(0))
                .into_boxed()
        )
        .load(&mut *conn)?;
        let total: i64 =
            filtered!(executions::table.count().into_boxed()).get_result(&mut *conn)?;
        let records = rows
            .into_iter()
            .map(ExecutionRecord::try_from)
            .collect::<Result<_>>()?;
        Ok((records, total))
    }

    /// The highest journal sequence number of an execution, if it has any entry.
    pub fn last_event_seq(&self, id: &ExecutionId) -> Result<Option<i64>> {
        Ok(execution_events::table
            .filter(execution_events::execution_id.eq(id.as_str()))
            .select(diesel::dsl::max(execution_events::seq))
            .first::<Option<i64>>(&mut *self.conn()?)?)
    }

    /// One page of an execution's journal in sequence order, and the total matching.
    pub fn list_execution_events(
        &self,
        id: &ExecutionId,
        filter: EventFilter,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<ExecutionEvent>, i64)> {
        let mut conn = self.conn()?;
        macro_rules! filtered {
            ($query:expr) => {{
                let mut query =
                    $query.filter(execution_events::execution_id.eq(id.as_str().to_string()));
                if let Some(after) = filter.after_seq {
                    query = query.filter(execution_events::seq.gt(after));
                }
                if let Some(kind) = &filter.kind {
                    query = query.filter(execution_events::kind.eq(kind.clone()));
                }
                if let Some(level) = filter.level {
                    query = query.filter(execution_events::level.eq(level.as_str()));
                }
                if let Some(min) = filter.min_level {
                    let levels: Vec<&'static str> = LogLevel::ALL
                        .iter()
                        .filter(|l| **l >= min)
                        .map(|l| l.as_str())
                        .collect();
                    query = query.filter(execution_events::level.eq_any(levels));
                }
                if filter.logs_only {
                    query = query.filter(execution_events::level.is_not_null());
                }
                query
            }};
        }
        let rows = filtered!(
            execution_events::table
                .select(EventRow::as_select())
                .order(execution_events::seq.asc())
                .limit(limit.max(0))
                .offset(offset.max(0))
                .into_boxed()
        )
        .load(&mut *conn)?;
        let total: i64 =
            filtered!(execution_events::table.count().into_boxed()).get_result(&mut *conn)?;
        let events = rows
            .into_iter()
            .map(ExecutionEvent::try_from)
            .collect::<Result<_>>()?;
        Ok((events, total))
    }
}

impl Store {
    /// The execution, if it exists and is visible in `scope`.
    pub async fn get_execution(
        &self,
        id: &ExecutionId,
        scope: Scope,
    ) -> Result<Option<ExecutionRecord>> {
        let id = id.clone();
        self.run(move |s| s.get_execution(&id, scope)).await
    }

    /// The whole journal of a visible execution; see [`BlockingStore::execution_journal`].
    pub async fn execution_journal(
        &self,
        id: &ExecutionId,
        scope: Scope,
    ) -> Result<Option<Vec<ExecutionEvent>>> {
        let id = id.clone();
        self.run(move |s| s.execution_journal(&id, scope)).await
    }

    /// One page of executions visible in `scope`, newest first, and the total matching.
    pub async fn list_executions(
        &self,
        scope: Scope,
        filter: ExecutionFilter,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<ExecutionRecord>, i64)> {
        self.run(move |s| s.list_executions(scope, filter, limit, offset))
            .await
    }

    /// The highest journal sequence number of an execution, if it has any entry.
    pub async fn last_event_seq(&self, id: &ExecutionId) -> Result<Option<i64>> {
        let id = id.clone();
        self.run(move |s| s.last_event_seq(&id)).await
    }

    /// One page of an execution's journal in sequence order, and the total matching.
    pub async fn list_execution_events(
        &self,
        id: &ExecutionId,
        filter: EventFilter,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<ExecutionEvent>, i64)> {
        let id = id.clone();
        self.run(move |s| s.list_execution_events(&id, filter, limit, offset))
            .await
    }
}
