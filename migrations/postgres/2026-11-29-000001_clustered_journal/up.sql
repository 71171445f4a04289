-- Kept in step with ../../sqlite/2026-11-29-000001_clustered_journal, which rebuilds the
-- SQLite journal as a WITHOUT ROWID table. PostgreSQL tables have no rowid b-tree and the
-- primary-key index on (execution_id, seq) already exists: nothing to change here.
SELECT 1;
