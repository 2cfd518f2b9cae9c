"""SQL lives in .sql files: migrations under sql/migrations, named queries under sql/queries.

A query file holds blocks that start with ``-- name: <query_name>``; each file is read once.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

from psycopg import sql

from daemon.errors import ConfigError

_NAME_LINE = re.compile(r"^--\s*name:\s*(\w+)\s*$", re.MULTILINE)


@cache
def sql_root() -> Path:
    """The installed copy (daemon/sql in a wheel) or the source tree's top-level sql/."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "sql", here.parent / "sql"):
        if (candidate / "migrations").is_dir():
            return candidate
    raise ConfigError(f"cannot find the sql/ directory next to {here}")


@cache
def queries(group: str) -> dict[str, sql.SQL]:
    """All named queries of sql/queries/<group>.sql."""
    path = sql_root() / "queries" / f"{group}.sql"
    text = path.read_text(encoding="utf-8")
    found: dict[str, sql.SQL] = {}
    matches = list(_NAME_LINE.finditer(text))
    for index, match in enumerate(matches):
        end = matches[index + 1].start() if index + 1 < len(matches) else len(text)
        body = text[match.end() : end].strip()
        found[match.group(1)] = sql.SQL(body)  # trusted file from the package
    return found


def query(group: str, name: str) -> sql.SQL:
    try:
        return queries(group)[name]
    except KeyError:
        raise KeyError(f"no query {name!r} in sql/queries/{group}.sql") from None
