"""history_prune: old finished run history goes in batches; running rows, recent rows and the
newest success of each task stay."""

from __future__ import annotations

from typing import Any

import psycopg

from daemon.jobs.history_prune import JOB


def _add_run(conn: psycopg.Connection[Any], task: str, age_days: float, outcome: str,
             *, dry_run: bool = False) -> int:
    row = conn.execute(
        """
        INSERT INTO maintenance.job_runs
            (task, trigger, scheduled_for, started_at, finished_at, outcome, dry_run, host, pid)
        VALUES (%(task)s, 'schedule',
                now() - make_interval(secs => %(age)s * 86400) + random() * interval '1 ms',
                now() - make_interval(secs => %(age)s * 86400),
                CASE WHEN %(outcome)s = 'running' THEN NULL
                     ELSE now() - make_interval(secs => %(age)s * 86400) + interval '1 s' END,
                %(outcome)s, %(dry)s, 'test', 1)
        RETURNING id
        """,
        {"task": task, "age": age_days, "outcome": outcome, "dry": dry_run},
    ).fetchone()
    assert row is not None
    return int(row[0])


def _ids(conn: psycopg.Connection[Any]) -> set[int]:
    return {r[0] for r in conn.execute("SELECT id FROM maintenance.job_runs").fetchall()}


def _populate(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    old_failures = [_add_run(conn, "cache_cleanup", 40 + i, "failure") for i in range(5)]
    old_successes = [_add_run(conn, "cache_cleanup", 50 + i, "success") for i in range(4)]
    newest_old_success = _add_run(conn, "cache_cleanup", 35, "success")
    old_dry = _add_run(conn, "cache_cleanup", 34, "success", dry_run=True)
    # A task whose only successes are old: the newest of them must survive.
    lonely_old = [_add_run(conn, "reindex", 60, "success"), _add_run(conn, "reindex", 45,
                                                                      "success")]
    old_running = _add_run(conn, "matviews", 90, "running")
    recent = [_add_run(conn, "cache_cleanup", 1, "success"),
              _add_run(conn, "cache_cleanup", 29, "failure")]
    return {
        # cache_cleanup's newest success is 1 day old, so its 35-day-old success goes too.
        "doomed": {*old_failures, *old_successes, newest_old_success, old_dry, lonely_old[0]},
        "kept": {lonely_old[1], old_running, *recent},
    }


def test_prunes_old_finished_runs_in_batches(conn: psycopg.Connection[Any], job_ctx: Any) -> None:
    rows = _populate(conn)
    ctx = job_ctx("history_prune", keep_days=30, batch_size=3)
    result = JOB().run(ctx)

    assert _ids(conn) == rows["kept"]
    assert result.details["deleted"] == len(rows["doomed"])
    assert result.details["batches"] >= 4
    assert ctx.rows == len(rows["doomed"])


def test_running_rows_are_never_pruned(conn: psycopg.Connection[Any], job_ctx: Any) -> None:
    running = _add_run(conn, "gdpr_purge", 400, "running")
    JOB().run(job_ctx("history_prune", keep_days=1, batch_size=10))
    assert running in _ids(conn)


def test_dry_run_counts_and_changes_nothing(conn: psycopg.Connection[Any], job_ctx: Any) -> None:
    rows = _populate(conn)
    before = _ids(conn)
    result = JOB().run(job_ctx("history_prune", keep_days=30, dry_run=True))
    assert _ids(conn) == before
    assert result.details["would_delete"] == len(rows["doomed"])


def test_nothing_to_do(conn: psycopg.Connection[Any], job_ctx: Any) -> None:
    _add_run(conn, "partitions", 2, "success")
    result = JOB().run(job_ctx("history_prune", keep_days=30))
    assert result.details["deleted"] == 0
    assert len(_ids(conn)) == 1


def test_thins_old_incremental_audit_checkpoints(conn: psycopg.Connection[Any],
                                                 job_ctx: Any) -> None:
    def checkpoint(age_days: int, *, full: bool, valid: bool = True) -> int:
        row = conn.execute(
            """
            INSERT INTO maintenance.audit_checkpoints
                (verified_through_position, row_hash, full_pass, valid, from_position,
                 verified_at, reason)
            VALUES (10, sha256('x'::bytea), %s, %s, 1, now() - make_interval(days => %s),
                    CASE WHEN %s THEN NULL ELSE 'row hash mismatch' END)
            RETURNING id
            """, (full, valid, age_days, valid)).fetchone()
        assert row is not None
        return int(row[0])

    old_incremental = [checkpoint(60 - i, full=False) for i in range(5)]
    old_full = checkpoint(50, full=True)
    old_failed = checkpoint(49, full=True, valid=False)
    recent = checkpoint(1, full=False)
    dry = JOB().run(job_ctx("history_prune", keep_days=30, dry_run=True))
    assert dry.details["would_delete_checkpoints"] == 5
    result = JOB().run(job_ctx("history_prune", keep_days=30, batch_size=2))
    assert result.details["audit_checkpoints_deleted"] == 5
    left = {r[0] for r in conn.execute("SELECT id FROM maintenance.audit_checkpoints")}
    assert left == {old_full, old_failed, recent}
    assert left.isdisjoint(old_incremental)


def test_the_newest_valid_checkpoint_is_kept_however_old(conn: psycopg.Connection[Any],
                                                         job_ctx: Any) -> None:
    row = conn.execute(
        "INSERT INTO maintenance.audit_checkpoints (verified_through_position, row_hash,"
        " full_pass, valid, from_position, verified_at)"
        " VALUES (3, sha256('y'::bytea), false, true, 1, now() - interval '90 days')"
        " RETURNING id").fetchone()
    assert row is not None
    JOB().run(job_ctx("history_prune", keep_days=30))
    assert conn.execute("SELECT count(*) FROM maintenance.audit_checkpoints").fetchone() == (1,)
