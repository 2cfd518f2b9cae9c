"""A JobContext outside the daemon: direct connections (no pool) that carry the job's own
statement and lock timeouts, as the runner's do. Used by the job tests (the `job_ctx`
fixture) and by the benchmarks (bench.common.run_job)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import structlog
from pydantic import SecretStr

from daemon.db import set_timeouts
from daemon.jobs.base import JobContext
from daemon.settings import Settings


def job_context(url: str, state_dir: Path, task: str, *, dry_run: bool = False,
                options: dict[str, Any] | None = None,
                stop_event: threading.Event | None = None, **overrides: Any) -> JobContext:
    """The context of one run of `task` on `url`, with some of its settings overridden."""
    app = Settings(database_url=SecretStr(url), state_dir=state_dir)
    app.state_dir.mkdir(parents=True, exist_ok=True)
    job_settings = app.jobs.get(task).model_copy(update=overrides)
    setattr(app.jobs, task, job_settings)

    @contextlib.contextmanager
    def factory() -> Iterator[psycopg.Connection[Any]]:
        with psycopg.connect(url, autocommit=True) as connection:
            set_timeouts(connection, job_settings.statement_timeout_ms,
                         job_settings.lock_timeout_ms)
            yield connection

    return JobContext(task=task, settings=job_settings, app_settings=app,
                      connection_factory=factory, log=structlog.get_logger(task=task),
                      stop_event=stop_event or threading.Event(), dry_run=dry_run,
                      options=options or {})
