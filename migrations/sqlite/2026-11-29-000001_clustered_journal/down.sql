CREATE TABLE execution_events_rowid (
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

INSERT INTO execution_events_rowid
    (execution_id, seq, kind, node_id, node_type, level, message, data, created_at)
SELECT execution_id, seq, kind, node_id, node_type, level, message, data, created_at
FROM execution_events;

DROP TABLE execution_events;
ALTER TABLE execution_events_rowid RENAME TO execution_events;
