"""Small helpers shared by the partitions, matviews, cache_cleanup, vacuum_analyze and reindex
jobs. Not a job module (the registry only imports names listed in daemon.settings.JOB_NAMES)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, TypeVar

import psycopg

from daemon.errors import JobFailed
from daemon.jobs.base import JobContext
from daemon.settings import JobSettings

S = TypeVar("S", bound=JobSettings)


def job_settings(ctx: JobContext, kind: type[S]) -> S:
    """The job's own settings model, typed."""
    if not isinstance(ctx.settings, kind):
        raise JobFailed(f"{ctx.task}: expected {kind.__name__}, got {type(ctx.settings).__name__}")
    return ctx.settings


@contextlib.contextmanager
def session_settings(conn: psycopg.Connection[Any], **values: int | str) -> Iterator[None]:
    """Set session GUCs (e.g. statement_timeout for one VACUUM) and restore them afterwards.

    Must be used outside a transaction block (autocommit), which is where VACUUM, REINDEX
    CONCURRENTLY and REFRESH run anyway.
    """
    previous: dict[str, str] = {}
    for name, value in values.items():
        row = conn.execute("SELECT current_setting(%s)", (name,)).fetchone()
        previous[name] = str(row[0]) if row else ""
        conn.execute("SELECT set_config(%s, %s, false)", (name, str(value)))
    try:
        yield
    finally:
        if not conn.closed and not conn.broken:
            for name, old in previous.items():
                with contextlib.suppress(psycopg.Error):
                    conn.execute("SELECT set_config(%s, %s, false)", (name, old))


def server_version(conn: psycopg.Connection[Any]) -> int:
    """server_version_num, e.g. 150004 or 180001."""
    return int(conn.info.server_version)
