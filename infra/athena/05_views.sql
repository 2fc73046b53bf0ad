-- Views with the shape of execvault's own (docs/sql.md).
--
-- A row can sit in two files for the moment a compaction or rebuild replaces parts: the `_once`
-- views return each row once (like execvault's views); the plain tables may count it twice in
-- that window.
CREATE OR REPLACE VIEW execvault.snapshots_once AS
SELECT * FROM (
  SELECT s.*, row_number() OVER (PARTITION BY execution_id ORDER BY object_key) AS rn
  FROM execvault.snapshots AS s
) WHERE rn = 1;

CREATE OR REPLACE VIEW execvault.final_states_once AS
SELECT * FROM (
  SELECT f.*, row_number() OVER (PARTITION BY execution_id ORDER BY recorded_at) AS rn
  FROM execvault.final_states AS f
) WHERE rn = 1;

CREATE OR REPLACE VIEW execvault.node_runs_once AS
SELECT * FROM (
  SELECT r.*,
         row_number() OVER (PARTITION BY execution_id, node_name, run_index ORDER BY object_key)
           AS rn
  FROM execvault.node_runs AS r
) WHERE rn = 1;

-- One row per execution: the snapshot, with its outcome when the final state is known.
CREATE OR REPLACE VIEW execvault.executions AS
SELECT s.execution_id, s.workflow_id, s.snapshot_id, s.snapshot_hash, s.version, s.version_seq,
       s.user_id, s.trigger_type, s.created_at, s.node_count, s.workflow_name, s.object_key,
       s.blob_key, s.stored_bytes, s.raw_bytes, s.format_version, s.replay_of, s.dt,
       f.status, f.started_at, f.finished_at, f.duration_ms,
       f.node_count AS executed_node_count, f.error_count, f.failed_nodes, f.first_failed_node,
       f.object_key AS result_key, f.stored_bytes AS result_stored_bytes, f.recorded_at
FROM execvault.snapshots_once AS s
LEFT JOIN execvault.final_states_once AS f
  ON f.execution_id = s.execution_id AND f.workflow_id = s.workflow_id;
