-- Named queries of the vacuum_analyze job (daemon/jobs/vacuum_analyze.py).

-- name: public_tables
-- Every table of schema public that is not a partition: plain tables and partitioned
-- parents (their partitions are reached through the parent). Temporary tables excluded.
SELECT c.oid, n.nspname, c.relname, c.relkind
  FROM pg_class c
  JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = 'public'
   AND c.relkind IN ('r', 'p')
   AND NOT c.relispartition
   AND c.relpersistence <> 't'
 ORDER BY c.relname;

-- name: resolve
SELECT c.oid, n.nspname, c.relname, c.relkind
  FROM pg_class c
  JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.oid = to_regclass(%(name)s);

-- name: leaves
-- Leaf partitions (plain heaps, not foreign tables) of a partitioned table, any depth.
SELECT n.nspname, c.relname
  FROM pg_partition_tree(%(parent)s::oid::regclass) t
  JOIN pg_class c ON c.oid = t.relid
  JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE t.isleaf AND c.relkind = 'r'
 ORDER BY c.relname;
