-- execvault index table `final_states`: one row per final state; dt = UTC day of finished_at, else of the snapshot.
-- Columns: docs/sql.md. Replace BUCKET/PREFIX with the archive's bucket and key prefix (the
-- store URL s3://BUCKET/PREFIX); the database is created by 00_database.sql.
-- Partition projection: new days are visible without MSCK REPAIR TABLE; widen the range start
-- to the archive's first day if it is older.
CREATE EXTERNAL TABLE IF NOT EXISTS execvault.final_states (
  `execution_id` string,
  `workflow_id` string,
  `status` string,
  `started_at` timestamp,
  `finished_at` timestamp,
  `duration_ms` bigint,
  `node_count` int,
  `error_count` int,
  `failed_nodes` array<string>,
  `first_failed_node` string,
  `object_key` string,
  `stored_bytes` bigint,
  `format_version` smallint,
  `recorded_at` timestamp
)
PARTITIONED BY (`dt` string)
STORED AS PARQUET
LOCATION 's3://BUCKET/PREFIX/index/final_states/'
TBLPROPERTIES (
  'projection.enabled' = 'true',
  'projection.dt.type' = 'date',
  'projection.dt.format' = 'yyyy-MM-dd',
  'projection.dt.range' = '2020-01-01,NOW',
  'projection.dt.interval' = '1',
  'projection.dt.interval.unit' = 'DAYS',
  'storage.location.template' = 's3://BUCKET/PREFIX/index/final_states/dt=${dt}/'
);
