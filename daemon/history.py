"""The run history in maintenance.job_runs: claiming ticks, finishing runs, reading status."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import psycopg

from daemon.sqlfiles import query


@dataclass(frozen=True)
class Claim:
    id: int
    run_id: UUID
    scheduled_for: datetime


def claim(conn: psycopg.Connection[Any], *, task: str, trigger: str,
          scheduled_for: datetime | None, dry_run: bool, host: str, pid: int) -> Claim | None:
    """Insert the run row; None means another replica already ran this tick."""
    row = conn.execute(query("history", "claim"), {
        "task": task, "trigger": trigger, "scheduled_for": scheduled_for,
        "dry_run": dry_run, "host": host, "pid": pid,
    }).fetchone()
    return Claim(*row) if row else None


def finish(conn: psycopg.Connection[Any], run_id: int, *, outcome: str, rows: int,
           error: str | None, details: dict[str, Any] | None) -> None:
    conn.execute(query("history", "finish"), {
        "id": run_id, "outcome": outcome, "rows": rows, "error": error,
        "details": json.dumps(details, default=str) if details else None,
    })


def mark_interrupted(conn: psycopg.Connection[Any], task: str) -> list[tuple[Any, ...]]:
    return conn.execute(query("history", "mark_interrupted"), {"task": task}).fetchall()


def last_success_times(conn: psycopg.Connection[Any]) -> dict[str, float]:
    return {task: ts for task, ts in conn.execute(query("history", "last_success")).fetchall()}


def last_runs(conn: psycopg.Connection[Any]) -> dict[str, tuple[Any, ...]]:
    return {row[0]: row for row in conn.execute(query("history", "last_runs")).fetchall()}


def last_details(conn: psycopg.Connection[Any], task: str) -> dict[str, Any] | None:
    row = conn.execute(query("history", "last_details"), {"task": task}).fetchone()
    return row[0] if row else None
