-- gdpr_purge: erase users past the grace period (one transaction each), then delete
-- analytics past their retention in committed batches. The SQL lives in migration 0032
-- (shared with CALL gdpr_purge_old_data()).

-- name: cutoffs
SELECT now() - make_interval(days => %(grace_days)s) AS deleted_before,
       now() - make_interval(days => %(analytics_days)s) AS analytics_cutoff;

-- name: due_users
SELECT user_id, deleted_at, phase
FROM public.gdpr_due_users(make_interval(days => %(grace_days)s),
                           make_interval(years => %(retention_years)s), %(limit)s);

-- name: erase_user
SELECT public.gdpr_erase_user(%(user_id)s, make_interval(years => %(retention_years)s),
                              %(deleted_before)s, %(dry_run)s);

-- name: analytics_partitions
SELECT parent::text, partition::text, key_column, due_rows
FROM public.gdpr_analytics_partitions(%(cutoff)s, %(count)s);

-- name: analytics_batch
SELECT picked, deleted, last_key
FROM public.gdpr_purge_analytics_batch(%(partition)s::regclass, %(cutoff)s, %(batch_size)s,
                                       %(after)s);
