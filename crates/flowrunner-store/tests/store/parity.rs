//! Both migration folders must describe the same schema: same migration versions, tables,
//! columns (with nullability and portable type) and named indexes.

use std::collections::BTreeSet;
use std::path::Path;

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};
use diesel::{PgConnection, SqliteConnection};
use flowrunner_store::testing::{SKIP_MESSAGE, TestDatabase};

/// `(table, column, nullable, portable type)`.
type Column = (String, String, bool, &'static str);

#[derive(QueryableByName)]
struct ColumnRow {
    #[diesel(sql_type = Text)]
    table_name: String,
    #[diesel(sql_type = Text)]
    column_name: String,
    #[diesel(sql_type = Text)]
    type_name: String,
    #[diesel(sql_type = BigInt)]
    not_null: i64,
}

#[derive(QueryableByName)]
struct NameRow {
    #[diesel(sql_type = Text)]
    name: String,
}

/// Maps a backend's type name onto the portable types the schema may use.
fn portable(type_name: &str) -> &'static str {
    match type_name.to_ascii_lowercase().as_str() {
        "text" => "text",
        "integer" | "int" | "int4" => "integer",
        "bigint" | "int8" => "bigint",
        "blob" | "bytea" => "binary",
        "timestamp" | "timestamp without time zone" => "timestamp",
        "boolean" | "bool" => "bool",
        "double precision" | "double" | "real" => "double",
        _ => "UNPORTABLE",
    }
}

fn columns(rows: Vec<ColumnRow>) -> BTreeSet<Column> {
    rows.into_iter()
        .map(|r| {
            (
                r.table_name,
                r.column_name,
                r.not_null == 0,
                portable(&r.type_name),
            )
        })
        .collect()
}

fn sqlite_schema(path: &Path) -> (BTreeSet<Column>, BTreeSet<String>) {
    let mut conn = SqliteConnection::establish(&path.to_string_lossy()).expect("open sqlite");
    let cols: Vec<ColumnRow> = diesel::sql_query(
        "SELECT m.name AS table_name, p.name AS column_name, p.type AS type_name,
                CAST(p.\"notnull\" AS BIGINT) AS not_null
         FROM sqlite_master m JOIN pragma_table_info(m.name) p
         WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%' AND m.name <> '__diesel_schema_migrations'",
    )
    .load(&mut conn)
    .expect("sqlite columns");
    let indexes: Vec<NameRow> = diesel::sql_query(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND name NOT LIKE 'sqlite_autoindex_%'",
    )
    .load(&mut conn)
    .expect("sqlite indexes");
    (columns(cols), indexes.into_iter().map(|r| r.name).collect())
}

fn postgres_schema(url: &str) -> (BTreeSet<Column>, BTreeSet<String>) {
    let mut conn = PgConnection::establish(url).expect("open postgres");
    let cols: Vec<ColumnRow> = diesel::sql_query(
        "SELECT table_name::text AS table_name, column_name::text AS column_name,
                data_type::text AS type_name,
                CASE WHEN is_nullable = 'NO' THEN 1::bigint ELSE 0::bigint END AS not_null
         FROM information_schema.columns
         WHERE table_schema = 'public' AND table_name <> '__diesel_schema_migrations'",
    )
    .load(&mut conn)
    .expect("postgres columns");
    // Only explicitly created indexes (`*_idx`); primary keys and UNIQUE constraints are
    // covered by the column comparison and named differently by each engine.
    let indexes: Vec<NameRow> = diesel::sql_query(
        "SELECT indexname::text AS name FROM pg_indexes WHERE schemaname = 'public' AND indexname LIKE '%\\_idx'",
    )
    .load(&mut conn)
    .expect("postgres indexes");
    (columns(cols), indexes.into_iter().map(|r| r.name).collect())
}

fn migration_dirs(backend: &str) -> BTreeSet<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../migrations")
        .join(backend);
    std::fs::read_dir(&dir)
        .expect("migrations folder")
        .map(|e| {
            let e = e.expect("dir entry");
            assert!(
                e.path().join("up.sql").is_file(),
                "{}: missing up.sql",
                e.path().display()
            );
            assert!(
                e.path().join("down.sql").is_file(),
                "{}: missing down.sql",
                e.path().display()
            );
            e.file_name().to_string_lossy().into_owned()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migration_folders_define_the_same_schema() -> flowrunner_store::Result<()> {
    assert_eq!(
        migration_dirs("sqlite"),
        migration_dirs("postgres"),
        "same migration versions"
    );

    let sqlite = TestDatabase::sqlite()?;
    drop(sqlite.open().await?);
    let (sqlite_columns, sqlite_indexes) =
        sqlite_schema(sqlite.sqlite_path().expect("sqlite file"));
    assert!(
        sqlite_columns.iter().all(|c| c.3 != "UNPORTABLE"),
        "{sqlite_columns:#?}"
    );
    let tables: BTreeSet<&str> = sqlite_columns.iter().map(|c| c.0.as_str()).collect();
    for expected in [
        "accounts",
        "flows",
        "flow_revisions",
        "flow_tags",
        "secrets",
        "revoked_tokens",
        "settings",
        "executions",
        "execution_events",
    ] {
        assert!(tables.contains(expected), "missing table {expected}");
    }

    let Some(pg) = TestDatabase::postgres()? else {
        println!("{SKIP_MESSAGE}: only the SQLite half of the parity check ran");
        return Ok(());
    };
    drop(pg.open().await?);
    let (pg_columns, pg_indexes) = postgres_schema(pg.url());
    let only_sqlite: Vec<_> = sqlite_columns.difference(&pg_columns).collect();
    let only_pg: Vec<_> = pg_columns.difference(&sqlite_columns).collect();
    assert!(
        only_sqlite.is_empty() && only_pg.is_empty(),
        "schemas differ\n  only in sqlite: {only_sqlite:#?}\n  only in postgres: {only_pg:#?}"
    );
    assert_eq!(sqlite_indexes, pg_indexes, "named indexes differ");
    Ok(())
}
