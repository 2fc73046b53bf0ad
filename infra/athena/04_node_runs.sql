-- execvault index table `node_runs`: one row per run of a node; dt = the day of its final state.
-- Columns: docs/sql.md. Replace BUCKET/PREFIX with the archive's bucket and key prefix (the
-- store URL s3://BUCKET/PREFIX); the database is created by 00_database.sql.
-- Partition projection: new days are visible without MSCK REPAIR TABLE; widen the range start
-- to the archive's first day if it is older.
CREATE EXTERNAL TABLE IF NOT EXISTS execvault.node_runs (
  `execution_id` string,
  `workflow_id` string,
  `node_name` string,
  `node_id` string,
  `node_type` string,
  `run_index` int,
  `execution_index` int,
  `status` string,
  `started_at` timestamp,
  `duration_ms` double,
  `input_items` bigint,
  `output_items` bigint,
  `error_class` string,
  `error_message` string,
  `error_http_code` string,
  `object_key` string
)
PARTITIONED BY (`dt` string)
STORED AS PARQUET
LOCATION 's3://BUCKET/PREFIX/index/node_runs/'
TBLPROPERTIES (
  'projection.enabled' = 'true',
  'projection.dt.type' = 'date',
  'projection.dt.format' = 'yyyy-MM-dd',
  'projection.dt.range' = '2020-01-01,NOW',
  'projection.dt.interval' = '1',
  'projection.dt.interval.unit' = 'DAYS',
  'storage.location.template' = 's3://BUCKET/PREFIX/index/node_runs/dt=${dt}/'
);
