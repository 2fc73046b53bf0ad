-- The Athena (Glue) database for an execvault archive's index; run the files of this folder in
-- order. Every table is an external table over the Hive-partitioned Parquet manifests that the
-- archive writes under s3://BUCKET/PREFIX/index/<table>/dt=YYYY-MM-DD/ (docs/index.md); nothing
-- is copied or loaded. Timestamps are Parquet TIMESTAMP(MILLIS, UTC): Athena reads them as UTC
-- `timestamp`. `dt` is a string partition: compare it with strings ('2026-11-01').
CREATE DATABASE IF NOT EXISTS execvault
COMMENT 'execvault: index manifests of the execution snapshot archive';
