"""gdpr_purge: erase users soft-deleted longer than the grace period; purge old analytics.

Each user is erased by one call of the SQL function gdpr_erase_user() in its own
transaction, so a crash or an error leaves every user either fully erased or untouched.
The run stops at the first user whose erasure fails (JobFailed names the user; the users
before it stay erased, the ones after it are untouched and retried next run). Users whose
retained legal records (bookings, payments) have all passed the legal retention come back
as 'retention' work: their records and their anonymised users row are deleted.
Then rows of analytics_events and user_behavior_log older than the analytics retention are
deleted partition by partition in committed keyset batches (dropping whole partitions is
the partitions job's business). `--dry-run` lists the users and per-table row counts and
the analytics rows due, and changes nothing. Field-by-field decisions: docs/gdpr.md.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from typing import Any

import psycopg

from daemon.db import one_line
from daemon.errors import JobFailed
from daemon.jobs._util import job_settings
from daemon.jobs.base import Job, JobContext, JobResult
from daemon.settings import GdprPurgeSettings
from daemon.sqlfiles import query

GROUP = "gdpr_purge"


class GdprPurge(Job):
    name = "gdpr_purge"
    supports_dry_run = True

    def run(self, ctx: JobContext) -> JobResult:
        settings = job_settings(ctx, GdprPurgeSettings)
        with ctx.connection() as conn:
            row = conn.execute(query(GROUP, "cutoffs"), {
                "grace_days": settings.grace_days,
                "analytics_days": settings.analytics_retention_days,
            }).fetchone()
            assert row is not None
            deleted_before, analytics_cutoff = row
            users = self._erase_users(ctx, conn, settings, deleted_before)
            analytics = self._purge_analytics(ctx, conn, settings, analytics_cutoff)
        details: dict[str, Any] = {"dry_run": ctx.dry_run, **users, **analytics,
                                   "deleted_before": deleted_before.isoformat(),
                                   "analytics_cutoff": analytics_cutoff.isoformat()}
        ctx.log.info("gdpr purge done" if not ctx.dry_run else "gdpr purge dry run done",
                     users=users["users_erased" if not ctx.dry_run else "users_due"],
                     analytics_rows=analytics["analytics_rows"])
        return JobResult(details=details)

    # -- users ----------------------------------------------------------------------------
    def _erase_users(self, ctx: JobContext, conn: psycopg.Connection[Any],
                     settings: GdprPurgeSettings, deleted_before: dt.datetime) -> dict[str, Any]:
        due = conn.execute(query(GROUP, "due_users"), {
            "grace_days": settings.grace_days,
            "retention_years": settings.legal_retention_years,
            "limit": settings.max_users_per_run,
        }).fetchall()
        deleted: Counter[str] = Counter()
        scrubbed: Counter[str] = Counter()
        listed: list[dict[str, Any]] = []
        erased = redacted = 0
        phases: Counter[str] = Counter()
        for user_id, soft_deleted_at, phase in due:
            if ctx.should_stop():
                ctx.log.warning("gdpr purge stopping early; the remaining users wait for the "
                                "next run", erased=erased, remaining=len(due) - erased)
                break
            try:
                got = conn.execute(query(GROUP, "erase_user"), {
                    "user_id": user_id, "retention_years": settings.legal_retention_years,
                    "deleted_before": deleted_before, "dry_run": ctx.dry_run,
                }).fetchone()
            except psycopg.Error as exc:
                ctx.log.error("erasure of a user failed; it was rolled back completely",
                              user_id=str(user_id), phase=phase, error=one_line(exc),
                              erased_before=erased)
                raise JobFailed(
                    f"erasure of user {user_id} ({phase}) failed and was rolled back: "
                    f"{one_line(exc)}; {erased} users erased before it in this run, the "
                    "rest untouched",
                    {"failed_user_id": str(user_id), "failed_phase": phase,
                     "users_erased": erased, "audit_redacted": redacted,
                     "deleted_rows": dict(deleted), "scrubbed_rows": dict(scrubbed)},
                ) from exc
            assert got is not None
            result: dict[str, Any] = got[0]
            if not result.get("erased") and not ctx.dry_run:
                continue  # restored or re-checked in between: nothing to do
            rows = sum(result.get("deleted", {}).values()) + sum(
                result.get("scrubbed", {}).values())
            deleted.update(result.get("deleted", {}))
            scrubbed.update(result.get("scrubbed", {}))
            phases[phase] += 1
            if ctx.dry_run:
                listed.append({"user_id": str(user_id), "phase": phase,
                               "soft_deleted_at": soft_deleted_at.isoformat(),
                               "user_row": result.get("user_row"),
                               "deleted": result.get("deleted", {}),
                               "scrubbed": result.get("scrubbed", {}),
                               "audit_rows_to_redact": result.get("audit_rows_to_redact", 0)})
                ctx.log.info("dry run: user would be erased", user_id=str(user_id),
                             phase=phase, user_row=result.get("user_row"),
                             deleted=result.get("deleted"), scrubbed=result.get("scrubbed"))
                continue
            erased += 1
            redacted += int(result.get("audit_redacted", 0))
            ctx.add_rows(rows)
            ctx.log.info("user erased", user_id=str(user_id), phase=phase,
                         user_row=result.get("user_row"), deleted=result.get("deleted"),
                         scrubbed=result.get("scrubbed"),
                         audit_redacted=result.get("audit_redacted"))
        summary: dict[str, Any] = {"deleted_rows": dict(deleted),
                                   "scrubbed_rows": dict(scrubbed), "phases": dict(phases)}
        if ctx.dry_run:
            summary.update(users_due=len(listed), users=listed)
        else:
            summary.update(users_erased=erased, audit_redacted=redacted)
        return summary

    # -- analytics retention ---------------------------------------------------------------
    def _purge_analytics(self, ctx: JobContext, conn: psycopg.Connection[Any],
                         settings: GdprPurgeSettings,
                         cutoff: dt.datetime) -> dict[str, Any]:
        parts = conn.execute(query(GROUP, "analytics_partitions"),
                             {"cutoff": cutoff, "count": ctx.dry_run}).fetchall()
        per_partition: dict[str, int] = {}
        if ctx.dry_run:
            for _parent, partition, _key, due in parts:
                per_partition[partition] = int(due)
            ctx.log.info("dry run: analytics rows past retention", partitions=per_partition,
                         cutoff=cutoff.isoformat())
            return {"analytics_rows": sum(per_partition.values()),
                    "analytics_partitions": per_partition}
        batches = 0
        for _parent, partition, _key, _due in parts:
            after: dt.datetime | None = None
            per_partition[partition] = 0
            while not ctx.should_stop():
                row = conn.execute(query(GROUP, "analytics_batch"), {
                    "partition": partition, "cutoff": cutoff,
                    "batch_size": settings.batch_size, "after": after,
                }).fetchone()
                assert row is not None
                picked, deleted, after = int(row[0]), int(row[1]), row[2]
                batches += 1
                per_partition[partition] += deleted
                ctx.add_rows(deleted)
                if picked < settings.batch_size:
                    break
        total = sum(per_partition.values())
        if total:
            ctx.log.info("analytics past retention deleted", rows=total, batches=batches,
                         partitions={k: v for k, v in per_partition.items() if v},
                         cutoff=cutoff.isoformat())
        return {"analytics_rows": total, "analytics_batches": batches,
                "analytics_partitions": {k: v for k, v in per_partition.items() if v}}


JOB = GdprPurge
