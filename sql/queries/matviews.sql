-- Named queries of the matviews job (daemon/jobs/matviews.py).

-- name: describe
-- The configured view resolved through search_path; whether it was ever populated; whether
-- it has the unique index REFRESH ... CONCURRENTLY requires (unique, valid, not partial, on
-- plain columns only); and whether this session may REFRESH it itself (owner, superuser,
-- or MAINTAIN privilege / pg_maintain from PostgreSQL 17). Otherwise the job goes through
-- the SECURITY DEFINER function refresh_materialized_view() of sql/migrations/0007.
SELECT n.nspname,
       c.relname,
       c.relispopulated,
       EXISTS (
           SELECT 1 FROM pg_index i
            WHERE i.indrelid = c.oid
              AND i.indisunique AND i.indisvalid
              AND i.indpred IS NULL
              AND i.indexprs IS NULL
       ) AS has_unique_index,
       pg_has_role(c.relowner, 'USAGE')
         OR coalesce(CASE WHEN current_setting('server_version_num')::int >= 170000
                          THEN has_table_privilege(c.oid, 'MAINTAIN') END, false)
         AS may_refresh
  FROM pg_class c
  JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.oid = to_regclass(%(name)s)
   AND c.relkind = 'm';

-- name: refresh_via_function
SELECT refresh_materialized_view(%(view)s::regclass, %(concurrently)s);
