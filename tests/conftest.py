"""Shared fixtures: one throwaway cluster per PostgreSQL version per test session (per
xdist worker), a template database with every migration applied, and a fresh clone of
that template for each test."""

from __future__ import annotations

import functools
import itertools
import os
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from tests.pgcluster import PgBinaries, PgCluster, available_binaries

TEMPLATE = "gth_template"
_counter = itertools.count()


def _versions() -> list[PgBinaries]:
    found = available_binaries()
    if not found:
        raise RuntimeError("no PostgreSQL binaries found (install gth-maintd[embedded])")
    return found


@pytest.fixture(scope="session", params=_versions(), ids=lambda b: b.label)
def pg_cluster(request: pytest.FixtureRequest) -> Iterator[PgCluster]:
    """A private cluster the tests may stop, restart or kill; restarted if a test left it down."""
    cluster = PgCluster(request.param).init()
    cluster.start()
    _build_template(cluster)
    yield cluster
    cluster.destroy()


def _build_template(cluster: PgCluster) -> None:
    from daemon.migrations import migrate

    with psycopg.connect(cluster.url(), autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {TEMPLATE}")
    with psycopg.connect(cluster.url(TEMPLATE), autocommit=True) as conn:
        migrate(conn)


@pytest.fixture
def cluster(pg_cluster: PgCluster) -> Iterator[PgCluster]:
    """The session cluster, guaranteed up at the start and at the end of the test."""
    if not pg_cluster.is_running():
        pg_cluster.start()
    yield pg_cluster
    if not pg_cluster.is_running():
        pg_cluster.start()


def _new_database(cluster: PgCluster, template: str | None) -> str:
    name = f"t_{os.getpid()}_{next(_counter)}"
    with psycopg.connect(cluster.url(), autocommit=True) as admin:
        if template:
            admin.execute(f"CREATE DATABASE {name} TEMPLATE {template}")
        else:
            admin.execute(f"CREATE DATABASE {name}")
    return name


@pytest.fixture
def db_url(cluster: PgCluster) -> str:
    """URL of a fresh database with the whole schema applied (cloned from the template)."""
    return cluster.url(_new_database(cluster, TEMPLATE))


@pytest.fixture
def empty_db_url(cluster: PgCluster) -> str:
    """URL of a fresh, empty database (for migration tests)."""
    return cluster.url(_new_database(cluster, None))


@pytest.fixture
def conn(db_url: str) -> Iterator[psycopg.Connection[Any]]:
    """Superuser autocommit connection to the per-test database."""
    with psycopg.connect(db_url, autocommit=True) as connection:
        yield connection


@pytest.fixture
def job_ctx(db_url: str, tmp_path: Any) -> Any:
    """Build a JobContext for a job on the per-test database: job_ctx("cache_cleanup",
    batch_size=10, dry_run=True, options={"full": True}). Connections carry the job's timeouts."""
    from tests.jobcontext import job_context

    return functools.partial(job_context, db_url, tmp_path / "state")
