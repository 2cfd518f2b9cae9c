from typing import Any

import psycopg


def test_template_has_run_history(conn: psycopg.Connection[Any]) -> None:
    row = conn.execute("SELECT to_regclass('maintenance.job_runs') IS NOT NULL").fetchone()
    assert row == (True,)
