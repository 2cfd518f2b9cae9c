"""One root exception; driver errors are wrapped at the database boundary (daemon.db).

Every error an operator can cause carries a one-line message and an exit code, so the
CLI can print it without a traceback.
"""

from __future__ import annotations

from typing import Any

EXIT_OK = 0
EXIT_JOB_FAILED = 1
EXIT_USAGE = 2
EXIT_FORCED = 143  # second SIGTERM: immediate exit, 128 + SIGTERM


class MaintError(Exception):
    """Root of every error gth-maintd raises on purpose."""

    exit_code = EXIT_JOB_FAILED


class ConfigError(MaintError):
    """Invalid configuration, CLI usage or unusable environment (exit 2)."""

    exit_code = EXIT_USAGE


class DatabaseUnavailable(MaintError):
    """The database cannot be reached (after retries where retries apply)."""

    exit_code = EXIT_USAGE


class DatabaseError(MaintError):
    """A statement failed; wraps psycopg errors with the SQLSTATE kept for callers."""

    def __init__(self, message: str, sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


class MigrationError(MaintError):
    """The schema cannot be brought to this build's version (edited file, newer database)."""

    exit_code = EXIT_USAGE


class JobFailed(MaintError):
    """A job ran and reported a failure (for example a broken audit chain).

    `details` is what the run found before failing (the first bad row, which tables failed):
    the runner records it in the run history as it does a successful run's details, so the
    evidence outlives the log line.
    """

    def __init__(self, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.details: dict[str, Any] = dict(details or {})


class DaemonNotRunning(MaintError):
    """`trigger` found no live daemon behind the pidfile."""
