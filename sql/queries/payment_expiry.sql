-- payment_expiry: pending crypto payments past expires_at become expired, in batches.

-- name: expire_batch
SELECT picked, expired, last_expires_at, last_id
FROM public.expire_pending_payments(%(batch_size)s, %(now)s, %(after_expires)s, %(after_id)s);

-- name: cutoff
SELECT now();

-- name: count_due
SELECT count(*), min(expires_at)
FROM public.crypto_payments
WHERE status = 'pending' AND expires_at < %(now)s;
