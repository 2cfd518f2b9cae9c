-- Crypto payment expiry: pending payments past expires_at become 'expired', in batches.
--
-- ONE implementation, two callers: gth-maintd's payment_expiry job calls it once per
-- committed transaction; by hand (psql, pg_cron) call it the same way until it picks fewer
-- rows than the batch size:
--     SELECT * FROM expire_pending_payments(500);
--
-- Never overrides a confirmation:
--   * a payment whose row is locked by a confirming transaction is skipped (SKIP LOCKED)
--     and picked up by a later run if that transaction rolls back;
--   * a confirmation that committed after this statement started is seen when the row is
--     locked (READ COMMITTED re-checks status = 'pending' on the newest row version), so
--     the row is not picked;
--   * once this function has locked a row, a confirmation waits for the expiry to commit
--     and must then find nothing to update: the application confirms with
--     UPDATE crypto_payments SET status = 'confirmed', ... WHERE id = $1 AND status = 'pending'
--     and treats 0 rows as "the payment expired first".
-- Every status change is audited by crypto_payments_audit (one audit row per payment).
-- Keyset cursor on (expires_at, id): each batch starts after the last row picked instead of
-- walking the index entries the previous batches left behind. Invoker rights: gth_maint's
-- column grant (status, updated_at) and its row-level security policy apply.

CREATE FUNCTION public.expire_pending_payments(
    p_batch_size    integer     DEFAULT 500,
    p_now           timestamptz DEFAULT NULL,
    p_after_expires timestamptz DEFAULT NULL,
    p_after_id      uuid        DEFAULT NULL
)
RETURNS TABLE (picked integer, expired integer, last_expires_at timestamptz, last_id uuid)
LANGUAGE sql
VOLATILE
SET search_path = pg_catalog, public
AS $fn$
    WITH due AS MATERIALIZED (
        SELECT p.id, p.expires_at
          FROM public.crypto_payments p
         WHERE p.status = 'pending'
           AND p.expires_at < coalesce(p_now, now())
           AND p.expires_at >= coalesce(p_after_expires, '-infinity'::timestamptz)
           AND (p_after_expires IS NULL
                OR (p.expires_at, p.id) > (p_after_expires, p_after_id))
         ORDER BY p.expires_at, p.id
         LIMIT greatest(p_batch_size, 1)
           FOR UPDATE SKIP LOCKED
    ), changed AS (
        UPDATE public.crypto_payments p
           SET status = 'expired'
          FROM due
         WHERE p.id = due.id
           AND p.status = 'pending'
        RETURNING p.id
    )
    SELECT (SELECT count(*) FROM due)::integer,
           (SELECT count(*) FROM changed)::integer,
           last.expires_at,
           last.id
      FROM (SELECT 1) AS one
      LEFT JOIN LATERAL (
          SELECT d.expires_at, d.id FROM due d ORDER BY d.expires_at DESC, d.id DESC LIMIT 1
      ) AS last ON true
$fn$;

COMMENT ON FUNCTION public.expire_pending_payments(integer, timestamptz, timestamptz, uuid) IS
    'Expire up to p_batch_size pending crypto payments with expires_at < p_now (default '
    'now()) after the keyset cursor; returns rows picked, rows expired and the new cursor. '
    'Shared by gth-maintd payment_expiry and manual runs; skips rows a confirmation holds.';

REVOKE EXECUTE ON FUNCTION public.expire_pending_payments(integer, timestamptz, timestamptz, uuid)
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION public.expire_pending_payments(integer, timestamptz, timestamptz, uuid)
    TO gth_maint;
