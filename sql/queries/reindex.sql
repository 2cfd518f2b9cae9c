-- Named queries of the reindex job (daemon/jobs/reindex.py).

-- name: btree_estimates
-- Bloat estimate of every valid btree index on a table of a user schema, without
-- pgstattuple (not shipped in every build). Expected size of a freshly built index:
--   leaf tuple = MAXALIGN(8-byte IndexTupleData header + sum of average key widths) plus a
--   4-byte line pointer; a leaf page holds (block_size - 24 page header - 16 btree special)
--   * fillfactor (default 90) of them; plus one internal page per leaf page's worth of
--   leaves and the metapage.
--   expected_pages = ceil(reltuples / per_page) * (1 + 1/per_page) + 1
--   bloat = 1 - expected_pages / actual_pages
-- Widths come from pg_stats (avg_width * (1 - null_frac)) of the table column, or of the
-- index itself for expression columns. No statistics (never analyzed): bloat is NULL and
-- the index is skipped. Deduplicated indexes (many equal keys, PostgreSQL 13+) come out
-- smaller than the estimate, i.e. negative bloat: they are never picked (a false negative,
-- never a useless rebuild). Leaf indexes of partitions are listed; partitioned parent
-- indexes (relkind I) are not, since they have no storage of their own.
WITH idx AS (
    SELECT i.indexrelid,
           ni.nspname            AS schema,
           ci.relname            AS index_name,
           nt.nspname            AS table_schema,
           ct.relname            AS table_name,
           ci.reltuples::float8  AS reltuples,
           pg_relation_size(i.indexrelid) AS bytes,
           current_setting('block_size')::int AS block_size,
           coalesce((SELECT substring(o FROM '^fillfactor=(\d+)$')::int
                       FROM unnest(ci.reloptions) AS o
                      WHERE o LIKE 'fillfactor=%'), 90) AS fillfactor,
           i.indkey::int2[] AS indkey
      FROM pg_index i
      JOIN pg_class ci ON ci.oid = i.indexrelid
      JOIN pg_namespace ni ON ni.oid = ci.relnamespace
      JOIN pg_class ct ON ct.oid = i.indrelid
      JOIN pg_namespace nt ON nt.oid = ct.relnamespace
      JOIN pg_am am ON am.oid = ci.relam
     WHERE am.amname = 'btree'
       AND ci.relkind = 'i'
       AND ct.relpersistence <> 't'
       AND i.indisvalid AND i.indisready AND i.indislive
       AND ni.nspname NOT IN ('pg_catalog', 'information_schema')
       AND ni.nspname !~ '^pg_(toast|temp)'
       AND NOT EXISTS (SELECT 1 FROM pg_constraint x
                        WHERE x.conindid = i.indexrelid AND x.contype = 'x')
), cols AS (
    SELECT idx.indexrelid,
           sum(s.avg_width * (1 - s.null_frac))::float8 AS width,
           count(*) AS ncols,
           count(s.avg_width) AS ncols_with_stats
      FROM idx
      CROSS JOIN LATERAL unnest(idx.indkey) WITH ORDINALITY AS k(attnum, pos)
      LEFT JOIN pg_attribute ta
             ON k.attnum > 0 AND ta.attrelid = (SELECT indrelid FROM pg_index
                                                 WHERE indexrelid = idx.indexrelid)
            AND ta.attnum = k.attnum
      LEFT JOIN pg_attribute ia
             ON k.attnum = 0 AND ia.attrelid = idx.indexrelid AND ia.attnum = k.pos
      LEFT JOIN pg_stats s
             ON (k.attnum > 0 AND s.schemaname = idx.table_schema
                 AND s.tablename = idx.table_name AND s.attname = ta.attname)
             OR (k.attnum = 0 AND s.schemaname = idx.schema
                 AND s.tablename = idx.index_name AND s.attname = ia.attname)
     GROUP BY idx.indexrelid
), est AS (
    SELECT idx.*,
           cols.width,
           cols.ncols = cols.ncols_with_stats AS has_stats,
           greatest(1, ceil(idx.bytes::float8 / idx.block_size)) AS actual_pages,
           floor((idx.block_size - 24 - 16) * idx.fillfactor / 100.0
                 / ((ceil((8 + cols.width) / 8.0) * 8) + 4)) AS per_page
      FROM idx JOIN cols USING (indexrelid)
)
SELECT schema, index_name, table_schema, table_name, bytes, reltuples,
       actual_pages::bigint AS actual_pages,
       CASE WHEN has_stats AND reltuples >= 0 AND per_page >= 1 THEN
           (ceil(reltuples / per_page) * (1 + 1 / per_page) + 1)::bigint END AS expected_pages,
       CASE WHEN has_stats AND reltuples >= 0 AND per_page >= 1 THEN
           round((1 - (ceil(reltuples / per_page) * (1 + 1 / per_page) + 1)
                      / actual_pages)::numeric, 3)::float8 END AS bloat
  FROM est
 ORDER BY bytes DESC, schema, index_name;

-- name: leftovers
-- Invalid indexes left by a failed REINDEX CONCURRENTLY (<name>_ccnew[N]: the half-built
-- copy; <name>_ccold[N]: the old index after the swap). Skipped while any backend is
-- creating or rebuilding an index on that table (it may be that run's own _ccnew).
SELECT n.nspname, c.relname, t.relname AS table_name,
       EXISTS (SELECT 1 FROM pg_stat_progress_create_index p
                WHERE p.relid = i.indrelid) AS build_in_progress
  FROM pg_index i
  JOIN pg_class c ON c.oid = i.indexrelid
  JOIN pg_namespace n ON n.oid = c.relnamespace
  JOIN pg_class t ON t.oid = i.indrelid
 WHERE NOT i.indisvalid
   AND c.relkind = 'i'
   AND c.relname ~ '_cc(new|old)[0-9]*$'
   AND n.nspname NOT IN ('pg_catalog', 'information_schema')
   AND n.nspname !~ '^pg_(toast|temp)'
 ORDER BY n.nspname, c.relname;

-- name: index_state
SELECT pg_relation_size(c.oid), i.indisvalid
  FROM pg_class c
  JOIN pg_namespace n ON n.oid = c.relnamespace
  JOIN pg_index i ON i.indexrelid = c.oid
 WHERE n.nspname = %(schema)s AND c.relname = %(name)s;
