CREATE INDEX executions_owner_idx ON executions (owner, status);
