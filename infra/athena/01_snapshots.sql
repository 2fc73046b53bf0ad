-- execvault index table `snapshots`: one row per execution snapshot; dt = UTC day of created_at.
-- Columns: docs/sql.md. Replace BUCKET/PREFIX with the archive's bucket and key prefix (the
-- store URL s3://BUCKET/PREFIX); the database is created by 00_database.sql.
-- Partition projection: new days are visible without MSCK REPAIR TABLE; widen the range start
-- to the archive's first day if it is older.
CREATE EXTERNAL TABLE IF NOT EXISTS execvault.snapshots (
  `execution_id` string,
  `workflow_id` string,
  `snapshot_id` string,
  `snapshot_hash` string,
  `version` string,
  `version_seq` int,
  `user_id` string,
  `trigger_type` string,
  `created_at` timestamp,
  `node_count` int,
  `workflow_name` string,
  `object_key` string,
  `blob_key` string,
  `stored_bytes` bigint,
  `raw_bytes` bigint,
  `format_version` smallint,
  `replay_of` string
)
PARTITIONED BY (`dt` string)
STORED AS PARQUET
LOCATION 's3://BUCKET/PREFIX/index/snapshots/'
TBLPROPERTIES (
  'projection.enabled' = 'true',
  'projection.dt.type' = 'date',
  'projection.dt.format' = 'yyyy-MM-dd',
  'projection.dt.range' = '2020-01-01,NOW',
  'projection.dt.interval' = '1',
  'projection.dt.interval.unit' = 'DAYS',
  'storage.location.template' = 's3://BUCKET/PREFIX/index/snapshots/dt=${dt}/'
);
