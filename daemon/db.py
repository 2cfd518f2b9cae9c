"""The database boundary: connections, the pool, timeouts, and wrapping of driver errors."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import structlog
from psycopg import errors as pg_errors
from psycopg_pool import ConnectionPool, PoolTimeout

from daemon.errors import DatabaseError, DatabaseUnavailable, MaintError

log = structlog.get_logger("gth_maintd.db")

APPLICATION_NAME = "gth-maintd"

# Key space of our advisory locks (two-int form): first int "gth", second the lock's hash.
LOCK_CLASS = 0x677468
MIGRATION_LOCK_ID = 1


def connection_kwargs(connect_timeout: float) -> dict[str, Any]:
    return {
        "autocommit": True,
        "application_name": APPLICATION_NAME,
        "connect_timeout": max(1, int(connect_timeout)),
    }


def connect(conninfo: str, connect_timeout: float = 5) -> psycopg.Connection[Any]:
    """A direct autocommit connection (session advisory locks need one, not PgBouncer)."""
    with wrap_errors("connect"):
        return psycopg.connect(conninfo, **connection_kwargs(connect_timeout))


def is_connection_problem(exc: BaseException) -> bool:
    return isinstance(exc, psycopg.OperationalError | PoolTimeout | DatabaseUnavailable)


@contextlib.contextmanager
def wrap_errors(action: str) -> Iterator[None]:
    """Turn driver errors into MaintError subclasses with a one-line message."""
    try:
        yield
    except PoolTimeout as exc:
        raise DatabaseUnavailable(f"{action}: no database connection available ({exc})") from exc
    except psycopg.OperationalError as exc:
        sqlstate = getattr(exc, "sqlstate", None)
        if sqlstate and not sqlstate.startswith("08") and not sqlstate.startswith("57P"):
            raise DatabaseError(f"{action}: {one_line(exc)}", sqlstate) from exc
        raise DatabaseUnavailable(f"{action}: database unreachable: {one_line(exc)}") from exc
    except psycopg.Error as exc:
        raise DatabaseError(f"{action}: {one_line(exc)}", getattr(exc, "sqlstate", None)) from exc


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def error_text(exc: BaseException) -> str:
    """One line for logs and the run history; the type name only for unexpected errors."""
    if isinstance(exc, psycopg.Error | MaintError):
        return one_line(exc)
    return f"{type(exc).__name__}: {one_line(exc)}"


def wait_for_database(
    conninfo: str, retry_seconds: float, connect_timeout: float
) -> psycopg.Connection[Any]:
    """Connect with bounded, logged retries (exponential backoff capped at 5 s)."""
    deadline = time.monotonic() + retry_seconds
    delay = 0.25
    attempt = 0
    while True:
        attempt += 1
        try:
            return connect(conninfo, connect_timeout)
        except DatabaseUnavailable as exc:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DatabaseUnavailable(
                    f"database unreachable after {attempt} attempts: {exc}"
                ) from None
            log.warning("database not reachable yet, retrying", attempt=attempt,
                        retry_in=round(min(delay, remaining), 2), error=str(exc))
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, 5.0)


def _reset(conn: psycopg.Connection[Any]) -> None:
    # A connection goes back clean: no leftover timeouts, roles or advisory locks.
    conn.execute("RESET ALL")
    conn.execute("SELECT pg_advisory_unlock_all()")


def make_pool(
    conninfo: str, max_size: int, connect_timeout: float, name: str = "gth-maintd"
) -> ConnectionPool[psycopg.Connection[Any]]:
    """A pool that checks connections on checkout, so a database restart is survived."""
    return ConnectionPool(
        conninfo,
        min_size=1,
        max_size=max_size,
        kwargs=connection_kwargs(connect_timeout),
        check=ConnectionPool.check_connection,
        reset=_reset,
        open=False,
        name=name,
        timeout=connect_timeout,
    )


def set_timeouts(
    conn: psycopg.Connection[Any], statement_timeout_ms: int, lock_timeout_ms: int
) -> None:
    """Bound every statement and lock wait of this session (set_config quotes the values)."""
    with wrap_errors("set timeouts"):
        conn.execute(
            "SELECT set_config('statement_timeout', %s, false),"
            " set_config('lock_timeout', %s, false),"
            " set_config('idle_in_transaction_session_timeout', %s, false)",
            (str(statement_timeout_ms), str(lock_timeout_ms),
             str(max(statement_timeout_ms, 60_000))),
        )


def retry_on_lock_timeout(
    action: Callable[[], Any], attempts: int, base_delay: float = 0.2, label: str = "ddl"
) -> Any:
    """Run `action` again after a lock_timeout (55P03) or deadlock, with jittered backoff."""
    import random

    for attempt in range(attempts + 1):
        try:
            return action()
        except (pg_errors.LockNotAvailable, pg_errors.DeadlockDetected) as exc:
            if attempt == attempts:
                raise
            pause = base_delay * (2**attempt) * (0.5 + random.random())
            log.info("lock not available, retrying", what=label, attempt=attempt + 1,
                     retry_in=round(pause, 3), error=one_line(exc))
            time.sleep(pause)
    return None
