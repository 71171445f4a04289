//! Accounts: creation with unique (case-insensitive) email, paging, updates and deletion
//! guarded so that at least one admin always remains.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use flowrunner_domain::{AccountId, Role};

use crate::conn::{DbConn, write_transaction};
use crate::error::{Error, Result};
use crate::models::{Account, AccountChanges, NewAccount};
use crate::schema::accounts;
use crate::store::{BlockingStore, Store};
use crate::time;

#[derive(Queryable, Selectable)]
#[diesel(table_name = accounts)]
struct AccountRow {
    id: String,
    email: String,
    name: String,
    role: String,
    password_hash: String,
    created_at: NaiveDateTime,
    updated_at: NaiveDateTime,
    tokens_valid_after: Option<NaiveDateTime>,
}

impl TryFrom<AccountRow> for Account {
    type Error = Error;

    fn try_from(row: AccountRow) -> Result<Account> {
        let role = row
            .role
            .parse::<Role>()
            .map_err(|e| Error::Corrupt(format!("account {}: {e}", row.id)))?;
        Ok(Account {
            id: AccountId::from_trusted(row.id),
            email: row.email,
            name: row.name,
            role,
            password_hash: row.password_hash,
            created_at: time::from_db(row.created_at),
            updated_at: time::from_db(row.updated_at),
            tokens_valid_after: row.tokens_valid_after.map(time::from_db),
        })
    }
}

#[derive(AsChangeset)]
#[diesel(table_name = accounts)]
struct AccountChangeset {
    email: Option<String>,
    name: Option<String>,
    role: Option<String>,
    password_hash: Option<String>,
    updated_at: NaiveDateTime,
    tokens_valid_after: Option<NaiveDateTime>,
}

/// Emails are unique case-insensitively: stored trimmed and lowercased.
pub(crate) fn normalize_email(email: &str) -> String {
    email.trim().to_lowercase()
}

/// Turns a unique violation on `accounts.email` into a readable conflict.
fn email_conflict(err: diesel::result::Error) -> Error {
    match Error::from(err) {
        Error::Conflict(_) => Error::Conflict("email already in use".into()),
        other => other,
    }
}

/// On PostgreSQL, locks every admin row (in id order, so concurrent callers cannot deadlock)
/// until the transaction ends: two concurrent demotions or deletions of the last two admins are
/// then serialised and the second one sees a single admin. SQLite transactions opened by
/// [`write_transaction`] are already serialised.
fn lock_admins(conn: &mut DbConn) -> Result<()> {
    if let DbConn::Postgres(c) = conn {
        diesel::sql_query("SELECT id FROM accounts WHERE role = 'admin' ORDER BY id FOR UPDATE")
            .execute(c)?;
    }
    Ok(())
}

fn count_admins(conn: &mut DbConn) -> Result<i64> {
    Ok(accounts::table
        .filter(accounts::role.eq(Role::Admin.as_str()))
        .count()
        .get_result(conn)?)
}

fn load(conn: &mut DbConn, id: &str) -> Result<Option<Account>> {
    // `load` rather than `first`: see `conn::unique_row`.
    accounts::table
        .find(id)
        .select(AccountRow::as_select())
        .load::<AccountRow>(conn)
        .map(crate::conn::unique_row)?
        .map(Account::try_from)
        .transpose()
}

impl BlockingStore {
    /// Creates an account. [`Error::Conflict`] if the email is taken (case-insensitively).
    pub fn create_account(&self, new: NewAccount) -> Result<Account> {
        let now = time::now();
        let account = Account {
            id: AccountId::generate(),
            email: normalize_email(&new.email),
            name: new.name,
            role: new.role,
            password_hash: new.password_hash,
            created_at: now,
            updated_at: now,
            tokens_valid_after: None,
        };
        diesel::insert_into(accounts::table)
            .values((
                accounts::id.eq(account.id.as_str()),
                accounts::email.eq(&account.email),
                accounts::name.eq(&account.name),
                accounts::role.eq(account.role.as_str()),
                accounts::password_hash.eq(&account.password_hash),
                accounts::created_at.eq(time::to_db(now)),
                accounts::updated_at.eq(time::to_db(now)),
            ))
            .execute(&mut *self.conn()?)
            .map_err(email_conflict)?;
        Ok(account)
    }

    /// The account with this id.
    pub fn get_account(&self, id: &AccountId) -> Result<Option<Account>> {
        load(&mut *self.conn()?, id.as_str())
    }

    /// The account with this email (compared case-insensitively).
    pub fn find_account_by_email(&self, email: &str) -> Result<Option<Account>> {
        accounts::table
            .filter(accounts::email.eq(normalize_email(email)))
            .select(AccountRow::as_select())
            .first(&mut *self.conn()?)
            .optional()?
            .map(Account::try_from)
            .transpose()
    }

    /// One page of accounts (oldest first), optionally only those with `role`, and the total
    /// number of matching accounts. Negative `limit`/`offset` count as 0.
    pub fn list_accounts(
        &self,
        role: Option<Role>,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<Account>, i64)> {
        let mut conn = self.conn()?;
        let mut page = accounts::table
            .select(AccountRow::as_select())
            .order((accounts::created_at.asc(), accounts::id.asc()))
            .limit(limit.max(0))
            .offset(offset.max(0))
            .into_boxed();
        let mut total = accounts::table.count().into_boxed();
        if let Some(role) = role {
            page = page.filter(accounts::role.eq(role.as_str()));
            total = total.filter(accounts::role.eq(role.as_str()));
        }
        let rows = page.load(&mut *conn)?;
        let total = total.get_result(&mut *conn)?;
        let accounts = rows
            .into_iter()
            .map(Account::try_from)
            .collect::<Result<_>>()?;
        Ok((accounts, total))
    }

    /// Number of accounts.
    pub fn count_accounts(&self) -> Result<i64> {
        Ok(accounts::table.count().get_result(&mut *self.conn()?)?)
    }

    /// Changes an account in one transaction; `Ok(None)` if it does not exist.
    ///
    /// [`Error::LastAdmin`] if it would demote the last admin, [`Error::Conflict`] if the new
    /// email is taken. `updated_at` becomes now; `tokens_valid_after` becomes now when a
    /// password hash is given or the role changes.
    pub fn update_account(
        &self,
        id: &AccountId,
        changes: AccountChanges,
    ) -> Result<Option<Account>> {
        let mut conn = self.conn()?;
        write_transaction(&mut conn, |conn| {
            let demoting = changes.role.is_some_and(|r| r != Role::Admin);
            if demoting {
                lock_admins(conn)?;
            }
            let Some(current) = load(conn, id.as_str())? else {
                return Ok(None);
            };
            if demoting && current.role == Role::Admin && count_admins(conn)? <= 1 {
                return Err(Error::LastAdmin);
            }
            let now = time::to_db(time::now());
            let role_changed = changes.role.is_some_and(|r| r != current.role);
            let revoke_tokens = role_changed || changes.password_hash.is_some();
            let changeset = AccountChangeset {
                email: changes.email.as_deref().map(normalize_email),
                name: changes.name,
                role: changes.role.map(|r| r.as_str().to_string()),
                password_hash: changes.password_hash,
                updated_at: now,
                tokens_valid_after: revoke_tokens.then_some(now),
            };
            diesel::update(accounts::table.find(id.as_str()))
                .set(changeset)
                .execute(conn)
                .map_err(email_conflict)?;
            load(conn, id.as_str())
        })
    }

    /// Deletes an account with its flows (and their revisions) and secrets, in one
    /// transaction; `Ok(false)` if it does not exist, [`Error::LastAdmin`] if it is the last
    /// admin. Executions reference accounts without a foreign key and are kept.
    pub fn delete_account(&self, id: &AccountId) -> Result<bool> {
        let mut conn = self.conn()?;
        let deleted = write_transaction(&mut conn, |conn| {
            lock_admins(conn)?;
            let Some(current) = load(conn, id.as_str())? else {
                return Ok(false);
            };
            if current.role == Role::Admin && count_admins(conn)? <= 1 {
                return Err(Error::LastAdmin);
            }
            let deleted = diesel::delete(accounts::table.find(id.as_str())).execute(conn)?;
            Ok(deleted > 0)
        });
        // Its flows went with it.
        self.bump_flow_changes();
        deleted
    }
}

impl Store {
    /// Creates an account. [`Error::Conflict`] if the email is taken (case-insensitively).
    pub async fn create_account(&self, new: NewAccount) -> Result<Account> {
        self.run(move |s| s.create_account(new)).await
    }

    /// The account with this id.
    pub async fn get_account(&self, id: &AccountId) -> Result<Option<Account>> {
        let id = id.clone();
        self.run(move |s| s.get_account(&id)).await
    }

    /// The account with this email (compared case-insensitively).
    pub async fn find_account_by_email(&self, email: &str) -> Result<Option<Account>> {
        let email = email.to_string();
        self.run(move |s| s.find_account_by_email(&email)).await
    }

    /// One page of accounts (oldest first), optionally only those with `role`, and the total
    /// number of matching accounts.
    pub async fn list_accounts(
        &self,
        role: Option<Role>,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<Account>, i64)> {
        self.run(move |s| s.list_accounts(role, limit, offset))
            .await
    }

    /// Number of accounts.
    pub async fn count_accounts(&self) -> Result<i64> {
        self.run(|s| s.count_accounts()).await
    }

    /// Changes an account in one transaction; see [`BlockingStore::update_account`].
    pub async fn update_account(
        &self,
        id: &AccountId,
        changes: AccountChanges,
    ) -> Result<Option<Account>> {
        let id = id.clone();
        self.run(move |s| s.update_account(&id, changes)).await
    }

    /// Deletes an account; see [`BlockingStore::delete_account`].
    pub async fn delete_account(&self, id: &AccountId) -> Result<bool> {
        let id = id.clone();
        self.run(move |s| s.delete_account(&id)).await
    }
}
