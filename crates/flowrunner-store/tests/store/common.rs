//! Helpers shared by the store tests: sample records and raw SQL access to a test database.

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::{PgConnection, SqliteConnection};
use flowrunner_domain::{AccountId, Role};
use flowrunner_store::testing::TestDatabase;
use flowrunner_store::{Account, Backend, FlowRecord, NewAccount, NewExecution, NewFlow, Store};
use serde_json::json;

/// Creates an account with a unique email derived from `name`.
pub async fn account(store: &Store, name: &str, role: Role) -> flowrunner_store::Result<Account> {
    store
        .create_account(NewAccount {
            email: format!("{name}@example.com"),
            name: name.to_string(),
            role,
            password_hash: format!("hash-of-{name}"),
        })
        .await
}

/// A flow owned by `owner` with the given tags.
pub fn new_flow(owner: &Account, name: &str, tags: &[&str]) -> NewFlow {
    NewFlow {
        owner_id: owner.id.clone(),
        name: name.to_string(),
        description: Some(format!("{name} description")),
        version: "1.0.0".to_string(),
        tags: tags.iter().map(|t| t.to_string()).collect(),
        definition: format!("metadata:\n  name: {name}\n  version: 1.0.0\nnodes: {{}}\n"),
    }
}

/// A run of `flow`'s current revision by `account`, without a lease owner.
pub fn new_execution(flow: &FlowRecord, account: &AccountId, key: Option<&str>) -> NewExecution {
    NewExecution {
        flow_id: flow.id.clone(),
        revision_id: flow.revision_id.clone(),
        revision: flow.revision,
        flow_version: flow.version.clone(),
        account_id: account.clone(),
        input: json!({"key": "value", "n": 1}),
        idempotency_key: key.map(str::to_string),
        owner: None,
        lease_until: None,
    }
}

/// A direct connection to the test database, bypassing the store.
pub enum Raw {
    /// SQLite.
    Sqlite(SqliteConnection),
    /// PostgreSQL.
    Postgres(PgConnection),
}

impl Raw {
    pub fn open(db: &TestDatabase) -> Raw {
        match db.backend() {
            Backend::Sqlite => {
                let path = db.sqlite_path().expect("sqlite path");
                Raw::Sqlite(
                    SqliteConnection::establish(&path.to_string_lossy()).expect("raw sqlite"),
                )
            }
            Backend::Postgres => {
                Raw::Postgres(PgConnection::establish(db.url()).expect("raw postgres"))
            }
        }
    }

    pub fn execute(&mut self, sql: &str) {
        match self {
            Raw::Sqlite(c) => c.batch_execute(sql).expect("raw sql"),
            Raw::Postgres(c) => c.batch_execute(sql).expect("raw sql"),
        }
    }

    /// `(key, nonce, ciphertext)` of every stored secret.
    pub fn secret_rows(&mut self) -> Vec<(String, Vec<u8>, Vec<u8>)> {
        diesel::table! {
            secrets (account_id, key) {
                account_id -> Text,
                key -> Text,
                nonce -> Binary,
                ciphertext -> Binary,
            }
        }
        let query = secrets::table
            .select((secrets::key, secrets::nonce, secrets::ciphertext))
            .order(secrets::key);
        match self {
            Raw::Sqlite(c) => query.load(c).expect("secret rows"),
            Raw::Postgres(c) => query.load(c).expect("secret rows"),
        }
    }

    /// Number of rows of `table` matching the SQL condition `filter`.
    pub fn count(&mut self, table: &str, filter: &str) -> i64 {
        #[derive(QueryableByName)]
        struct Count {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        let sql = format!("SELECT COUNT(*) AS n FROM {table} WHERE {filter}");
        let rows: Vec<Count> = match self {
            Raw::Sqlite(c) => diesel::sql_query(sql).load(c).expect("count"),
            Raw::Postgres(c) => diesel::sql_query(sql).load(c).expect("count"),
        };
        rows.first().map(|r| r.n).unwrap_or_default()
    }
}
