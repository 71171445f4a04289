//! Flows and their revisions. Every create and every update stores a new revision;
//! deletion is soft (`deleted_at`), so revisions and past executions stay in the database.
//! Tags are kept twice: as JSON on the flow (their order) and in `flow_tags` (exact-match filter).

use chrono::NaiveDateTime;
use diesel::prelude::*;
use flowrunner_domain::{AccountId, FlowId, RevisionId};

use crate::conn::{DbConn, write_transaction};
use crate::error::{Error, Result};
use crate::models::{FlowChanges, FlowRecord, NewFlow, RevisionRecord, Scope};
use crate::schema::{accounts, flow_revisions, flow_tags, flows};
use crate::store::{BlockingStore, Store};
use crate::time;

#[derive(Queryable, Selectable)]
#[diesel(table_name = flows)]
struct FlowRow {
    id: String,
    owner_id: String,
    name: String,
    description: Option<String>,
    version: String,
    tags: String,
    created_at: NaiveDateTime,
    updated_at: NaiveDateTime,
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = flow_revisions)]
struct RevisionRow {
    id: String,
    revision: i32,
    definition: String,
    version: String,
    created_at: NaiveDateTime,
}

impl From<RevisionRow> for RevisionRecord {
    fn from(row: RevisionRow) -> Self {
        RevisionRecord {
            id: RevisionId::from_trusted(row.id),
            revision: row.revision,
            version: row.version,
            created_at: time::from_db(row.created_at),
            definition: row.definition,
        }
    }
}

fn to_record(flow: FlowRow, rev: RevisionRow) -> Result<FlowRecord> {
    let tags: Vec<String> = serde_json::from_str(&flow.tags)
        .map_err(|e| Error::Corrupt(format!("tags of flow {}: {e}", flow.id)))?;
    Ok(FlowRecord {
        id: FlowId::from_trusted(flow.id),
        owner_id: AccountId::from_trusted(flow.owner_id),
        name: flow.name,
        description: flow.description,
        version: flow.version,
        tags,
        definition: rev.definition,
        revision: rev.revision,
        revision_id: RevisionId::from_trusted(rev.id),
        created_at: time::from_db(flow.created_at),
        updated_at: time::from_db(flow.updated_at),
    })
}

/// Drops duplicate tags, keeping the first occurrence's position.
fn dedup_tags(tags: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(tags.len());
    for tag in tags {
        if !out.contains(&tag) {
            out.push(tag);
        }
    }
    out
}

fn tags_json(tags: &[String]) -> Result<String> {
    serde_json::to_string(tags).map_err(|e| Error::Corrupt(format!("tags: {e}")))
}

fn insert_tags(conn: &mut DbConn, flow_id: &str, tags: &[String]) -> Result<()> {
    for tag in tags {
        diesel::insert_into(flow_tags::table)
            .values((flow_tags::flow_id.eq(flow_id), flow_tags::tag.eq(tag)))
            .execute(conn)?;
    }
    Ok(())
}

/// Applies the visibility rules shared by every flow query: not deleted, within `scope`,
/// optionally carrying `tag`.
macro_rules! visible {
    ($query:expr, $scope:expr, $tag:expr) => {{
        let mut query = $query.filter(flows::deleted_at.is_null());
        if let Some(owner) = $scope.owner() {
            query = query.filter(flows::owner_id.eq(owner.as_str().to_string()));
        }
        if let Some(tag) = $tag {
            query = query.filter(
                flows::id.eq_any(
                    flow_tags::table
                        .filter(flow_tags::tag.eq(tag.to_string()))
                        .select(flow_tags::flow_id),
                ),
            );
        }
        query
    }};
}

/// The flow joined with its current revision, if visible in `scope`.
fn load(conn: &mut DbConn, id: &str, scope: &Scope) -> Result<Option<FlowRecord>> {
    let query = flows::table
        .inner_join(
            flow_revisions::table.on(flow_revisions::flow_id
                .eq(flows::id)
                .and(flow_revisions::revision.eq(flows::current_revision))),
        )
        .filter(flows::id.eq(id.to_string()))
        .select((FlowRow::as_select(), RevisionRow::as_select()))
        .into_boxed();
    // `load` rather than `first`: see `conn::unique_row` (at most one row matches the id).
    let row = visible!(query, scope, None::<&str>)
        .load::<(FlowRow, RevisionRow)>(conn)
        .map(crate::conn::unique_row)?;
    row.map(|(flow, rev)| to_record(flow, rev)).transpose()
}

/// On PostgreSQL, locks the flow row until the transaction ends, so concurrent updates number
/// their revisions one after the other (SQLite write transactions are already serialised).
fn lock_flow(conn: &mut DbConn, id: &str) -> Result<()> {
    if let DbConn::Postgres(c) = conn {
        diesel::sql_query("SELECT id FROM flows WHERE id = $1 FOR UPDATE")
            .bind::<diesel::sql_types::Text, _>(id)
            .execute(c)?;
    }
    Ok(())
}

impl BlockingStore {
    /// Creates a flow and its revision 1. [`Error::NotFound`] if the owner does not exist.
    pub fn create_flow(&self, new: NewFlow) -> Result<FlowRecord> {
        let id = FlowId::generate();
        let revision_id = RevisionId::generate();
        let tags = dedup_tags(new.tags);
        let tags_text = tags_json(&tags)?;
        let now = time::now();
        let mut conn = self.conn()?;
        write_transaction(&mut conn, |conn| {
            let owners: i64 = accounts::table
                .find(new.owner_id.as_str())
                .count()
                .get_result(conn)?;
            if owners == 0 {
                return Err(Error::NotFound);
            }
            diesel::insert_into(flows::table)
                .values((
                    flows::id.eq(id.as_str()),
                    flows::owner_id.eq(new.owner_id.as_str()),
                    flows::name.eq(&new.name),
                    flows::description.eq(new.description.as_deref()),
                    flows::version.eq(&new.version),
                    flows::tags.eq(&tags_text),
                    flows::current_revision.eq(1),
                    flows::created_at.eq(time::to_db(now)),
                    flows::updated_at.eq(time::to_db(now)),
                ))
                .execute(conn)?;
            diesel::insert_into(flow_revisions::table)
                .values((
                    flow_revisions::id.eq(revision_id.as_str()),
                    flow_revisions::flow_id.eq(id.as_str()),
                    flow_revisions::revision.eq(1),
                    flow_revisions::definition.eq(&new.definition),
                    flow_revisions::version.eq(&new.version),
                    flow_revisions::created_at.eq(time::to_db(now)),
                ))
                .execute(conn)?;
            insert_tags(conn, id.as_str(), &tags)?;
            Ok(())
        })?;
        Ok(FlowRecord {
            id,
            owner_id: new.owner_id,
            name: new.name,
            description: new.description,
            version: new.version,
            tags,
            definition: new.definition,
            revision: 1,
            revision_id,
            created_at: now,
            updated_at: now,
        })
    }

    /// The flow with its current definition, if it exists, is not deleted and is in `scope`.
    pub fn get_flow(&self, id: &FlowId, scope: Scope) -> Result<Option<FlowRecord>> {
        load(&mut *self.conn()?, id.as_str(), &scope)
    }

    /// One page of visible flows, newest first, optionally only those tagged exactly `tag`,
    /// and the total number of matching flows. Negative `limit`/`offset` count as 0.
    pub fn list_flows(
        &self,
        scope: Scope,
        tag: Option<&str>,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<FlowRecord>, i64)> {
        let mut conn = self.conn()?;
        let page = flows::table
            .inner_join(
                flow_revisions::table.on(flow_revisions::flow_id
                    .eq(flows::id)
                    .and(flow_revisions::revision.eq(flows::current_revision))),
            )
            .select((FlowRow::as_select(), RevisionRow::as_select()))
            .order((flows::created_at.desc(), flows::id.desc()))
            .limit(limit.max(0))
            .offset(offset.max(0))
            .into_boxed();
        let rows = visible!(page, scope, tag).load::<(FlowRow, RevisionRow)>(&mut *conn)?;
        let total: i64 =
            visible!(flows::table.count().into_boxed(), scope, tag).get_result(&mut *conn)?;
        let flows = rows
            .into_iter()
            .map(|(f, r)| to_record(f, r))
            .collect::<Result<_>>()?;
        Ok((flows, total))
    }

    /// Changes a visible flow; `Ok(None)` if it is not found in `scope`. Every update stores a
    /// new revision (the audit trail of `PUT`s, even when only the name or tags changed);
    /// `updated_at` becomes now.
    pub fn update_flow(
        &self,
        id: &FlowId,
        scope: Scope,
        changes: FlowChanges,
    ) -> Result<Option<FlowRecord>> {
        let mut conn = self.conn()?;
        let updated = write_transaction(&mut conn, |conn| {
            lock_flow(conn, id.as_str())?;
            let Some(current) = load(conn, id.as_str(), &scope)? else {
                return Ok(None);
            };
            let now = time::to_db(time::now());
            let definition = changes
                .definition
                .unwrap_or_else(|| current.definition.clone());
            let version = changes.version.unwrap_or_else(|| current.version.clone());
            let revision = current.revision + 1;
            diesel::insert_into(flow_revisions::table)
                .values((
                    flow_revisions::id.eq(RevisionId::generate().as_str()),
                    flow_revisions::flow_id.eq(id.as_str()),
                    flow_revisions::revision.eq(revision),
                    flow_revisions::definition.eq(&definition),
                    flow_revisions::version.eq(&version),
                    flow_revisions::created_at.eq(now),
                ))
                .execute(conn)?;
            let tags = changes
                .tags
                .map(dedup_tags)
                .unwrap_or_else(|| current.tags.clone());
            if tags != current.tags {
                diesel::delete(flow_tags::table.filter(flow_tags::flow_id.eq(id.as_str())))
                    .execute(conn)?;
                insert_tags(conn, id.as_str(), &tags)?;
            }
            let description = changes.description.unwrap_or(current.description);
            diesel::update(flows::table.find(id.as_str()))
                .set((
                    flows::name.eq(changes.name.unwrap_or(current.name)),
                    flows::description.eq(description),
                    flows::version.eq(&version),
                    flows::tags.eq(tags_json(&tags)?),
                    flows::current_revision.eq(revision),
                    flows::updated_at.eq(now),
                ))
                .execute(conn)?;
            load(conn, id.as_str(), &scope)
        });
        self.bump_flow_changes();
        updated
    }

    /// Soft-deletes a visible flow; `false` if it is not found in `scope`. Its revisions stay.
    pub fn delete_flow(&self, id: &FlowId, scope: Scope) -> Result<bool> {
        let now = time::to_db(time::now());
        let live = flows::table
            .filter(flows::id.eq(id.as_str()))
            .filter(flows::deleted_at.is_null());
        let changes = (flows::deleted_at.eq(Some(now)), flows::updated_at.eq(now));
        let mut conn = self.conn()?;
        let n = match scope.owner() {
            None => diesel::update(live).set(changes).execute(&mut *conn)?,
            Some(owner) => diesel::update(live.filter(flows::owner_id.eq(owner.as_str())))
                .set(changes)
                .execute(&mut *conn)?,
        };
        self.bump_flow_changes();
        Ok(n > 0)
    }

    /// Every revision of a visible flow, oldest first; `Ok(None)` if the flow is not found.
    pub fn list_revisions(&self, id: &FlowId, scope: Scope) -> Result<Option<Vec<RevisionRecord>>> {
        let mut conn = self.conn()?;
        if load(&mut conn, id.as_str(), &scope)?.is_none() {
            return Ok(None);
        }
        let rows = flow_revisions::table
            .filter(flow_revisions::flow_id.eq(id.as_str()))
            .order(flow_revisions::revision.asc())
            .select(RevisionRow::as_select())
            .load(&mut *conn)?;
        Ok(Some(rows.into_iter().map(RevisionRecord::from).collect()))
    }

    /// One revision by id, whether or not its flow was deleted (for executions).
    pub fn get_revision(&self, id: &RevisionId) -> Result<Option<RevisionRecord>> {
        Ok(flow_revisions::table
            .find(id.as_str())
            .select(RevisionRow::as_select())
            .first(&mut *self.conn()?)
            .optional()?
            .map(RevisionRecord::from))
    }
}

impl Store {
    /// Creates a flow and its revision 1. [`Error::NotFound`] if the owner does not exist.
    pub async fn create_flow(&self, new: NewFlow) -> Result<FlowRecord> {
        self.run(move |s| s.create_flow(new)).await
    }

    /// The flow with its current definition, if it exists, is not deleted and is in `scope`.
    pub async fn get_flow(&self, id: &FlowId, scope: Scope) -> Result<Option<FlowRecord>> {
        let id = id.clone();
        self.run(move |s| s.get_flow(&id, scope)).await
    }

    /// One page of visible flows, newest first, optionally only those tagged exactly `tag`,
    /// and the total number of matching flows.
    pub async fn list_flows(
        &self,
        scope: Scope,
        tag: Option<&str>,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<FlowRecord>, i64)> {
        let tag = tag.map(str::to_string);
        self.run(move |s| s.list_flows(scope, tag.as_deref(), limit, offset))
            .await
    }

    /// Changes a visible flow; see [`BlockingStore::update_flow`].
    pub async fn update_flow(
        &self,
        id: &FlowId,
        scope: Scope,
        changes: FlowChanges,
    ) -> Result<Option<FlowRecord>> {
        let id = id.clone();
        self.run(move |s| s.update_flow(&id, scope, changes)).await
    }

    /// Soft-deletes a visible flow; `false` if it is not found in `scope`.
    pub async fn delete_flow(&self, id: &FlowId, scope: Scope) -> Result<bool> {
        let id = id.clone();
        self.run(move |s| s.delete_flow(&id, scope)).await
    }

    /// Every revision of a visible flow, oldest first; `Ok(None)` if the flow is not found.
    pub async fn list_revisions(
        &self,
        id: &FlowId,
        scope: Scope,
    ) -> Result<Option<Vec<RevisionRecord>>> {
        let id = id.clone();
        self.run(move |s| s.list_revisions(&id, scope)).await
    }

    /// One revision by id, whether or not its flow was deleted (for executions).
    pub async fn get_revision(&self, id: &RevisionId) -> Result<Option<RevisionRecord>> {
        let id = id.clone();
        self.run(move |s| s.get_revision(&id)).await
    }
}
