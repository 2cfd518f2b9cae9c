-- Named queries of the cache_cleanup job (daemon/jobs/cache_cleanup.py).

-- name: resolve_table
-- A configured table name resolved like psql would (search_path), with its kind.
SELECT c.oid::regclass::text AS regclass, n.nspname, c.relname, c.relkind
  FROM pg_class c
  JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.oid = to_regclass(%(name)s);

-- name: cleanup_step
-- One committed batch: the same function CALL cleanup_expired_cache() loops over.
SELECT deleted, done, state
  FROM cache_cleanup_step(%(table)s::regclass, %(batch_size)s::integer, %(cutoff)s,
                          %(state)s::jsonb,
                          %(sweep_threshold)s::real);

-- name: count_expired
SELECT count(*) FROM {table} WHERE expires_at < %(cutoff)s;
