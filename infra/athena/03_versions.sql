-- execvault index table `versions`: one row per version commit; dt = UTC day of created_at.
-- Columns: docs/sql.md. Replace BUCKET/PREFIX with the archive's bucket and key prefix (the
-- store URL s3://BUCKET/PREFIX); the database is created by 00_database.sql.
-- Partition projection: new days are visible without MSCK REPAIR TABLE; widen the range start
-- to the archive's first day if it is older.
CREATE EXTERNAL TABLE IF NOT EXISTS execvault.versions (
  `workflow_id` string,
  `seq` int,
  `version` string,
  `snapshot_hash` string,
  `parent_seq` int,
  `parent_version` string,
  `parent_hash` string,
  `level` string,
  `summary` string,
  `restores_seq` int,
  `restores_version` string,
  `created_at` timestamp,
  `execution_id` string,
  `user_id` string
)
PARTITIONED BY (`dt` string)
STORED AS PARQUET
LOCATION 's3://BUCKET/PREFIX/index/versions/'
TBLPROPERTIES (
  'projection.enabled' = 'true',
  'projection.dt.type' = 'date',
  'projection.dt.format' = 'yyyy-MM-dd',
  'projection.dt.range' = '2020-01-01,NOW',
  'projection.dt.interval' = '1',
  'projection.dt.interval.unit' = 'DAYS',
  'storage.location.template' = 's3://BUCKET/PREFIX/index/versions/dt=${dt}/'
);
