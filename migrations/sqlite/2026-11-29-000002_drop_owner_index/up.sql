-- Lease renewal and release find a worker's executions through executions_status_idx (the
-- few unfinished rows), so the owner index only cost two index updates per execution (its
-- owner and status change when it starts and when it ends).
DROP INDEX executions_owner_idx;
