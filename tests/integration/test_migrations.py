"""The migrator against a real server: ordering, concurrency, edits, newer databases."""

import shutil
import threading
from pathlib import Path
from typing import Any

import psycopg
import pytest

from daemon.errors import MigrationError
from daemon.migrations import discover, latest_version, migrate


def test_fresh_database_reaches_latest_version(empty_db_url: str) -> None:
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        report = migrate(conn)
        assert report.version == latest_version()
        assert report.applied == [m.version for m in discover()]
        again = migrate(conn)
        assert again.applied == []
        rows = conn.execute("SELECT version, checksum FROM maintenance.schema_migrations"
                            " ORDER BY 1").fetchall()
    assert rows == [(m.version, m.checksum) for m in discover()]


def test_concurrent_migrators_apply_each_file_once(empty_db_url: str) -> None:
    reports: list[Any] = []
    errors: list[BaseException] = []

    def one() -> None:
        try:
            with psycopg.connect(empty_db_url, autocommit=True) as conn:
                reports.append(migrate(conn))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=one) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not errors
    applied = sorted(v for r in reports for v in r.applied)
    assert applied == [m.version for m in discover()]
    assert {r.version for r in reports} == {latest_version()}


def _copy_migrations(tmp_path: Path) -> Path:
    from daemon.sqlfiles import sql_root

    target = tmp_path / "migrations"
    shutil.copytree(sql_root() / "migrations", target)
    return target


def test_edited_migration_is_refused(db_url: str, tmp_path: Path) -> None:
    folder = _copy_migrations(tmp_path)
    first = sorted(folder.glob("*.sql"))[0]
    first.write_text(first.read_text() + "\n-- edited after release\n")
    with psycopg.connect(db_url, autocommit=True) as conn, \
            pytest.raises(MigrationError, match="changed after it was applied"):
        migrate(conn, discover(folder))


def test_newer_database_is_refused(db_url: str, tmp_path: Path) -> None:
    folder = _copy_migrations(tmp_path)
    newest = sorted(folder.glob("*.sql"))[-1]
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("INSERT INTO maintenance.schema_migrations (version, name, checksum,"
                     " duration_ms) VALUES (9999, 'from_the_future', 'x', 1)")
        with pytest.raises(MigrationError, match="newer than this build knows"):
            migrate(conn, discover(folder))
    assert newest.exists()


def test_failing_migration_leaves_nothing_half_done(db_url: str, tmp_path: Path) -> None:
    folder = _copy_migrations(tmp_path)
    (folder / "9000_broken.sql").write_text(
        "CREATE TABLE half_done (id int);\nSELECT no_such_function();\n")
    with psycopg.connect(db_url, autocommit=True) as conn:
        with pytest.raises(MigrationError, match=r"9000_broken\.sql failed"):
            migrate(conn, discover(folder))
        assert conn.execute("SELECT to_regclass('half_done')").fetchone() == (None,)
        assert conn.execute("SELECT max(version) FROM maintenance.schema_migrations"
                            ).fetchone() == (latest_version(),)
