-- Named queries of the partitions job (daemon/jobs/partitions.py, daemon/partitioning.py).

-- name: describe_parent
-- The configured table resolved through search_path; key is NULL unless it is
-- range-partitioned on one timestamptz column.
SELECT c.oid::regclass::text AS regclass, n.nspname, c.relname, c.relkind,
       (SELECT a.attname
          FROM pg_partitioned_table pt
          JOIN pg_attribute a ON a.attrelid = pt.partrelid AND a.attnum = pt.partattrs[0]
         WHERE pt.partrelid = c.oid AND pt.partstrat = 'r' AND pt.partnatts = 1
           AND a.atttypid = 'timestamptz'::regtype) AS key_column
  FROM pg_class c
  JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.oid = to_regclass(%(name)s);

-- name: partitions
SELECT b.partition::text, n.nspname, c.relname, b.is_default, b.range_from, b.range_to
  FROM partition_bounds(%(parent)s::regclass) b
  JOIN pg_class c ON c.oid = b.partition
  JOIN pg_namespace n ON n.oid = c.relnamespace;

-- name: staged
-- Unattached drain staging tables of this parent (an interrupted --drain-default).
SELECT c.relname
  FROM pg_class c
 WHERE c.relnamespace = %(schema)s::regnamespace
   AND c.relkind = 'r' AND NOT c.relispartition
   AND c.relname LIKE %(prefix)s
   AND obj_description(c.oid, 'pg_class') LIKE 'gth-maintd: staging table draining %%';

-- name: default_months
SELECT month, row_count FROM partition_default_months(%(parent)s::regclass);

-- name: create_month
SELECT create_month_partition(%(parent)s::regclass, %(month)s::date);

-- name: drain_step
SELECT moved, attached, partition_name
  FROM partition_drain_step(%(parent)s::regclass, %(month)s::date, %(batch)s);

-- name: retire
SELECT retire_partition(%(parent)s::regclass, %(partition)s::regclass, %(action)s,
                        %(archive_schema)s);

-- name: export_default
COPY (SELECT * FROM partition_default_rows(NULL::{parent})) TO STDOUT WITH (FORMAT csv, HEADER);
