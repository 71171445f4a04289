//! Integration tests over real HTTP: the server on 127.0.0.1:0, a fresh database per test.

mod common;

mod accounts;
mod auth;
mod auth_cache;
mod errors;
mod executions;
mod flows;
mod matrix;
mod postgres;
mod restart;
mod secrets;
mod startup;
mod ws;
