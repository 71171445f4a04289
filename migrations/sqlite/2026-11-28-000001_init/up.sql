-- FlowRunner initial schema (SQLite). Keep in step with ../../postgres/2026-11-28-000001_init/up.sql:
-- same tables, same columns, same nullability (checked by flowrunner-store's migration parity test).
-- Ids and JSON are TEXT; timestamps are naive UTC (TIMESTAMP); binary data is BLOB.

CREATE TABLE accounts (
    id TEXT NOT NULL PRIMARY KEY,
    email TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('admin', 'user')),
    password_hash TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    tokens_valid_after TIMESTAMP
);
CREATE INDEX accounts_role_idx ON accounts (role);
CREATE INDEX accounts_created_idx ON accounts (created_at);

CREATE TABLE flows (
    id TEXT NOT NULL PRIMARY KEY,
    owner_id TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    description TEXT,
    version TEXT NOT NULL,
    tags TEXT NOT NULL DEFAULT '[]',
    current_revision INTEGER NOT NULL,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    deleted_at TIMESTAMP
);
CREATE INDEX flows_owner_idx ON flows (owner_id, created_at);
CREATE INDEX flows_created_idx ON flows (created_at);

CREATE TABLE flow_revisions (
    id TEXT NOT NULL PRIMARY KEY,
    flow_id TEXT NOT NULL REFERENCES flows (id) ON DELETE CASCADE,
    revision INTEGER NOT NULL,
    definition TEXT NOT NULL,
    version TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    UNIQUE (flow_id, revision)
);

CREATE TABLE flow_tags (
    flow_id TEXT NOT NULL REFERENCES flows (id) ON DELETE CASCADE,
    tag TEXT NOT NULL,
    PRIMARY KEY (flow_id, tag)
);
CREATE INDEX flow_tags_tag_idx ON flow_tags (tag);

CREATE TABLE secrets (
    account_id TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    key TEXT NOT NULL,
    nonce BLOB NOT NULL,
    ciphertext BLOB NOT NULL,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    PRIMARY KEY (account_id, key)
);

CREATE TABLE revoked_tokens (
    jti TEXT NOT NULL PRIMARY KEY,
    expires_at TIMESTAMP NOT NULL
);
CREATE INDEX revoked_tokens_expires_idx ON revoked_tokens (expires_at);

CREATE TABLE settings (
    key TEXT NOT NULL PRIMARY KEY,
    value TEXT NOT NULL
);

-- Executions keep plain (not foreign-key) references to their flow, revision and account:
-- history stays readable after the flow or the account is deleted.
CREATE TABLE executions (
    id TEXT NOT NULL PRIMARY KEY,
    flow_id TEXT NOT NULL,
    revision_id TEXT NOT NULL,
    revision INTEGER NOT NULL,
    flow_version TEXT NOT NULL,
    account_id TEXT NOT NULL,
    status TEXT NOT NULL,
    input TEXT NOT NULL,
    result TEXT,
    error TEXT,
    error_node TEXT,
    snapshot TEXT,
    idempotency_key TEXT,
    owner TEXT,
    lease_until TIMESTAMP,
    created_at TIMESTAMP NOT NULL,
    started_at TIMESTAMP,
    completed_at TIMESTAMP
);
CREATE INDEX executions_flow_idx ON executions (flow_id, created_at);
CREATE INDEX executions_account_idx ON executions (account_id, created_at);
CREATE INDEX executions_created_idx ON executions (created_at);
CREATE INDEX executions_status_idx ON executions (status, lease_until);
CREATE INDEX executions_owner_idx ON executions (owner, status);

-- The execution an idempotency key started. A key is honoured for 24 hours; an older key is
-- re-pointed at the new execution (the execution keeps its own copy of the key).
CREATE TABLE idempotency_keys (
    account_id TEXT NOT NULL,
    flow_id TEXT NOT NULL,
    key TEXT NOT NULL,
    execution_id TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    PRIMARY KEY (account_id, flow_id, key)
);

CREATE TABLE execution_events (
    execution_id TEXT NOT NULL REFERENCES executions (id) ON DELETE CASCADE,
    seq BIGINT NOT NULL,
    kind TEXT NOT NULL,
    node_id TEXT,
    node_type TEXT,
    level TEXT,
    message TEXT,
    data TEXT,
    created_at TIMESTAMP NOT NULL,
    PRIMARY KEY (execution_id, seq)
);
