"""payment_expiry: pending crypto payments past `expires_at` become 'expired'.

Each batch is one call of the SQL function expire_pending_payments() in its own short
transaction (the same function an operator calls by hand): it locks up to `batch_size`
due payments with FOR UPDATE SKIP LOCKED and expires them; the audit trigger records each
change. A payment held by a confirming transaction is skipped, and a confirmation that
commits first is seen when the row is locked, so an expiry never overrides a confirmation.
The cutoff is fixed at the start of the run; a keyset cursor carries over between batches.
Audited writes share one chain lock: a batch that times out waiting for it (another
transaction with audited writes still open) is retried a few times with backoff.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from daemon.db import retry_on_lock_timeout
from daemon.jobs._util import job_settings
from daemon.jobs.base import Job, JobContext, JobResult
from daemon.settings import PaymentExpirySettings
from daemon.sqlfiles import query

GROUP = "payment_expiry"
LOCK_RETRIES = 3


class PaymentExpiry(Job):
    name = "payment_expiry"
    supports_dry_run = True

    def run(self, ctx: JobContext) -> JobResult:
        settings = job_settings(ctx, PaymentExpirySettings)
        with ctx.connection() as conn:
            row = conn.execute(query(GROUP, "cutoff")).fetchone()
            assert row is not None
            cutoff: dt.datetime = row[0]
            if ctx.dry_run:
                due = conn.execute(query(GROUP, "count_due"), {"now": cutoff}).fetchone()
                assert due is not None
                count, oldest = int(due[0]), due[1]
                ctx.log.info("dry run: pending payments that would expire", payments=count,
                             oldest_expiry=oldest.isoformat() if oldest else None)
                return JobResult(details={
                    "would_expire": count, "cutoff": cutoff.isoformat(),
                    "oldest_expires_at": oldest.isoformat() if oldest else None,
                })
            expired = picked_total = batches = 0
            after_expires: dt.datetime | None = None
            after_id: uuid.UUID | None = None
            stopped = False
            while True:
                if ctx.should_stop():
                    stopped = True
                    break
                params = {"batch_size": settings.batch_size, "now": cutoff,
                          "after_expires": after_expires, "after_id": after_id}

                def batch(params: dict[str, Any] = params) -> Any:
                    with conn.transaction():
                        return conn.execute(query(GROUP, "expire_batch"), params).fetchone()

                got = retry_on_lock_timeout(batch, LOCK_RETRIES, label="payment expiry batch")
                assert got is not None
                picked, changed = int(got[0]), int(got[1])
                batches += 1
                picked_total += picked
                expired += changed
                ctx.add_rows(changed)
                if picked < settings.batch_size:
                    break
                after_expires, after_id = got[2], got[3]
        ctx.log.info("pending payments expired", expired=expired, batches=batches,
                     cutoff=cutoff.isoformat(), stopped_early=stopped)
        return JobResult(details={"expired": expired, "picked": picked_total,
                                  "batches": batches, "cutoff": cutoff.isoformat(),
                                  "stopped_early": stopped})


JOB = PaymentExpiry
