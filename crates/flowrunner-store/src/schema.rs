//! Diesel table definitions, written by hand to match `migrations/{sqlite,postgres}`.

diesel::table! {
    accounts (id) {
        id -> Text,
        email -> Text,
        name -> Text,
        role -> Text,
        password_hash -> Text,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        tokens_valid_after -> Nullable<Timestamp>,
    }
}

diesel::table! {
    flows (id) {
        id -> Text,
        owner_id -> Text,
        name -> Text,
        description -> Nullable<Text>,
        version -> Text,
        tags -> Text,
        current_revision -> Integer,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        deleted_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    flow_revisions (id) {
        id -> Text,
        flow_id -> Text,
        revision -> Integer,
        definition -> Text,
        version -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    flow_tags (flow_id, tag) {
        flow_id -> Text,
        tag -> Text,
    }
}

diesel::table! {
    secrets (account_id, key) {
        account_id -> Text,
        key -> Text,
        nonce -> Binary,
        ciphertext -> Binary,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    revoked_tokens (jti) {
        jti -> Text,
        expires_at -> Timestamp,
    }
}

diesel::table! {
    settings (key) {
        key -> Text,
        value -> Text,
    }
}

diesel::table! {
    executions (id) {
        id -> Text,
        flow_id -> Text,
        revision_id -> Text,
        revision -> Integer,
        flow_version -> Text,
        account_id -> Text,
        status -> Text,
        input -> Text,
        result -> Nullable<Text>,
        error -> Nullable<Text>,
        error_node -> Nullable<Text>,
        snapshot -> Nullable<Text>,
        idempotency_key -> Nullable<Text>,
        owner -> Nullable<Text>,
        lease_until -> Nullable<Timestamp>,
        created_at -> Timestamp,
        started_at -> Nullable<Timestamp>,
        completed_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    idempotency_keys (account_id, flow_id, key) {
        account_id -> Text,
        flow_id -> Text,
        key -> Text,
        execution_id -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    execution_events (execution_id, seq) {
        execution_id -> Text,
        seq -> BigInt,
        kind -> Text,
        node_id -> Nullable<Text>,
        node_type -> Nullable<Text>,
        level -> Nullable<Text>,
        message -> Nullable<Text>,
        data -> Nullable<Text>,
        created_at -> Timestamp,
    }
}

diesel::joinable!(flows -> accounts (owner_id));
diesel::joinable!(flow_revisions -> flows (flow_id));
diesel::joinable!(flow_tags -> flows (flow_id));
diesel::joinable!(secrets -> accounts (account_id));
diesel::joinable!(execution_events -> executions (execution_id));

diesel::allow_tables_to_appear_in_same_query!(
    accounts,
    flows,
    flow_revisions,
    flow_tags,
    secrets,
    revoked_tokens,
    settings,
    executions,
    idempotency_keys,
    execution_events,
);
