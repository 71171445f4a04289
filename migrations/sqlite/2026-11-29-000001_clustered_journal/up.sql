-- The journal becomes a WITHOUT ROWID table clustered on its primary key (execution_id, seq):
-- one b-tree insert per event instead of two (rowid table + primary-key index), and an
-- execution's events stored together, so replaying its history reads neighbouring pages.
-- Same columns, nullability and constraints as before (checked by the migration parity test).

CREATE TABLE execution_events_clustered (
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
) WITHOUT ROWID;

INSERT INTO execution_events_clustered
    (execution_id, seq, kind, node_id, node_type, level, message, data, created_at)
SELECT execution_id, seq, kind, node_id, node_type, level, message, data, created_at
FROM execution_events;

DROP TABLE execution_events;
ALTER TABLE execution_events_clustered RENAME TO execution_events;
