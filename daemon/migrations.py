"""Ordered schema migrations from sql/migrations, safe when several replicas start at once.

The pending list is computed only after taking an advisory lock that is polled, never
waited on (a blocked pg_advisory_lock can deadlock with CREATE INDEX CONCURRENTLY). Each
file runs in its own transaction together with its row in maintenance.schema_migrations.
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import structlog

from daemon.db import LOCK_CLASS, MIGRATION_LOCK_ID, wrap_errors
from daemon.errors import MigrationError
from daemon.sqlfiles import sql_root

log = structlog.get_logger("gth_maintd.migrations")

_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

_BOOTSTRAP = """
CREATE SCHEMA IF NOT EXISTS maintenance;
CREATE TABLE IF NOT EXISTS maintenance.schema_migrations (
    version     integer PRIMARY KEY,
    name        text        NOT NULL,
    checksum    text        NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now(),
    duration_ms integer     NOT NULL,
    applied_by  text        NOT NULL DEFAULT current_user
);
"""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path
    checksum: str

    @property
    def sql(self) -> str:
        return self.path.read_text(encoding="utf-8")


@dataclass(frozen=True)
class MigrationReport:
    applied: list[int]
    version: int


def discover(directory: Path | None = None) -> list[Migration]:
    folder = directory or sql_root() / "migrations"
    found: list[Migration] = []
    for path in sorted(folder.glob("*.sql")):
        match = _FILE.match(path.name)
        if not match:
            raise MigrationError(f"migration file {path.name} is not named NNNN_name.sql")
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        found.append(Migration(int(match.group(1)), match.group(2), path, digest))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError("two migration files share a version number")
    return found


def latest_version(migrations: list[Migration] | None = None) -> int:
    items = discover() if migrations is None else migrations
    return items[-1].version if items else 0


def applied_version(conn: psycopg.Connection[Any]) -> int:
    """The highest applied version, 0 when the schema was never loaded."""
    with wrap_errors("read schema version"):
        row = conn.execute(
            "SELECT to_regclass('maintenance.schema_migrations') IS NOT NULL"
        ).fetchone()
        if not row or not row[0]:
            return 0
        got = conn.execute("SELECT coalesce(max(version), 0) FROM maintenance.schema_migrations")
        value = got.fetchone()
        return int(value[0]) if value else 0


def _take_lock(conn: psycopg.Connection[Any], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    waited_logged = False
    while True:
        row = conn.execute(
            "SELECT pg_try_advisory_lock(%s, %s)", (LOCK_CLASS, MIGRATION_LOCK_ID)
        ).fetchone()
        if row and row[0]:
            return
        if not waited_logged:
            log.info("another process is migrating; waiting for the migration lock")
            waited_logged = True
        if time.monotonic() > deadline:
            raise MigrationError(f"could not take the migration lock within {timeout:.0f} s")
        time.sleep(0.2)


def _check_applied(rows: list[tuple[int, str, str]], known: dict[int, Migration]) -> None:
    newest_known = max(known, default=0)
    for version, name, checksum in rows:
        if version not in known:
            if version > newest_known:
                raise MigrationError(
                    f"database schema is at version {max(r[0] for r in rows)}, newer than this "
                    f"build knows ({newest_known}); refusing to run an older gth-maintd"
                )
            raise MigrationError(f"applied migration {version:04d}_{name} has no file in sql/")
        if known[version].checksum != checksum:
            raise MigrationError(
                f"migration {known[version].path.name} changed after it was applied "
                f"(checksum {checksum[:12]} in the database, {known[version].checksum[:12]} on "
                "disk); add a new migration instead of editing an applied one"
            )


def migrate(
    conn: psycopg.Connection[Any],
    migrations: list[Migration] | None = None,
    lock_wait_seconds: float = 600,
    lock_timeout_ms: int = 30_000,
) -> MigrationReport:
    """Apply pending migrations in order on an autocommit connection; idempotent."""
    items = discover() if migrations is None else migrations
    known = {m.version: m for m in items}
    with wrap_errors("migrate"):
        _take_lock(conn, lock_wait_seconds)
        try:
            conn.execute(_BOOTSTRAP)
            rows = conn.execute(
                "SELECT version, name, checksum FROM maintenance.schema_migrations ORDER BY 1"
            ).fetchall()
            _check_applied(rows, known)
            done = {r[0] for r in rows}
            applied: list[int] = []
            for migration in items:
                if migration.version in done:
                    continue
                _apply_one(conn, migration, lock_timeout_ms)
                applied.append(migration.version)
            return MigrationReport(applied, max([*done, *applied], default=0))
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s, %s)", (LOCK_CLASS, MIGRATION_LOCK_ID))


def _apply_one(conn: psycopg.Connection[Any], migration: Migration, lock_timeout_ms: int) -> None:
    started = time.monotonic()
    try:
        with conn.transaction():
            conn.execute("SELECT set_config('lock_timeout', %s, true)", (str(lock_timeout_ms),))
            conn.execute(migration.sql.encode())  # a trusted file with many statements
            conn.execute(
                "INSERT INTO maintenance.schema_migrations (version, name, checksum, duration_ms)"
                " VALUES (%s, %s, %s, %s)",
                (migration.version, migration.name, migration.checksum,
                 int((time.monotonic() - started) * 1000)),
            )
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MigrationError(f"migration {migration.path.name} failed: {first}") from exc
    log.info("migration applied", version=migration.version, name=migration.name,
             duration_ms=int((time.monotonic() - started) * 1000))
