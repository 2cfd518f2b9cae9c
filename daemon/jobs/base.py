"""The interface every maintenance job implements.

A job is a small class with a `name` and a `run(ctx)` method. The runner (daemon.runner)
owns everything around it: claiming the tick, the per-task advisory lock, timeouts, run
history, metrics and logging. A job only does its work through `ctx`, in short
transactions, checks `ctx.should_stop()` between batches, and reports rows with
`ctx.add_rows()`. It raises JobFailed (or any MaintError) to fail the run; JobFailed's
`details` (what the job found) are recorded in the run history like a success's.
"""

from __future__ import annotations

import abc
import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import psycopg

if TYPE_CHECKING:
    from structlog.typing import FilteringBoundLogger

    from daemon.settings import JobSettings, Settings


@dataclass(frozen=True)
class JobOption:
    """An extra `run-job` flag, e.g. --full for audit_verify; value lands in ctx.options."""

    flag: str
    help: str


@dataclass
class JobResult:
    details: dict[str, Any] = field(default_factory=dict)


class JobContext:
    def __init__(
        self,
        *,
        task: str,
        settings: JobSettings,
        app_settings: Settings,
        connection_factory: Callable[
            [], contextlib.AbstractContextManager[psycopg.Connection[Any]]
        ],
        log: FilteringBoundLogger,
        stop_event: threading.Event,
        dry_run: bool = False,
        options: Mapping[str, Any] | None = None,
        on_rows: Callable[[int], None] | None = None,
    ) -> None:
        self.task = task
        self.settings = settings
        self.app_settings = app_settings
        self.log = log
        self.dry_run = dry_run
        self.options: Mapping[str, Any] = options or {}
        self.rows = 0
        self._connection_factory = connection_factory
        self._stop_event = stop_event
        self._on_rows = on_rows
        self._deadline = time.monotonic() + settings.timeout_seconds

    @property
    def state_dir(self) -> Path:
        return self.app_settings.state_dir

    @contextlib.contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        """An autocommit connection with this job's statement and lock timeouts applied.

        Use `with conn.transaction():` for each short unit of work.
        """
        with self._connection_factory() as conn:
            yield conn

    def should_stop(self) -> bool:
        """True once shutdown was requested or the run's time budget is spent."""
        return self._stop_event.is_set() or time.monotonic() > self._deadline

    def add_rows(self, count: int) -> None:
        """Count rows processed (deleted, updated, verified...) as the run goes."""
        if count <= 0:
            return
        self.rows += count
        if self._on_rows is not None:
            self._on_rows(count)


class Job(abc.ABC):
    name: ClassVar[str]
    supports_dry_run: ClassVar[bool] = False
    options: ClassVar[tuple[JobOption, ...]] = ()

    @abc.abstractmethod
    def run(self, ctx: JobContext) -> JobResult:
        """Do one run. Raise to fail it; return details for the history and the summary."""
