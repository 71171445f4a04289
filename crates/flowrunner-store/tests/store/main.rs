//! Integration tests of the store, each run on SQLite and (when reachable) on PostgreSQL.

/// Every store test is written once and run on both backends by
/// [`flowrunner_store::backend_tests!`].
macro_rules! store_tests {
    ($($name:ident),* $(,)?) => {
        flowrunner_store::backend_tests!($($name),*);
    };
}

mod accounts;
mod common;
mod executions;
mod flows;
mod open;
mod parity;
mod secrets;
mod settings_tokens;
mod writer;
