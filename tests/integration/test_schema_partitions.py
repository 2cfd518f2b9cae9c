"""Monthly partitions: premade months, create_month_partition (LIKE + ATTACH, idempotent,
clear error when the default partition holds the month), partition_bounds, retention."""

from __future__ import annotations

import datetime as dt
import threading
from typing import Any

import psycopg
import pytest

PARENTS = {"chat_messages": "created_at", "analytics_events": "occurred_at",
           "user_behavior_log": "timestamp"}


def month_start(offset: int = 0) -> dt.date:
    today = dt.datetime.now(dt.UTC).date().replace(day=1)
    index = today.year * 12 + today.month - 1 + offset
    return dt.date(index // 12, index % 12 + 1, 1)


def bounds(conn: psycopg.Connection[Any], parent: str) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in conn.execute(
        "SELECT partition::text, is_default, range_from, range_to FROM partition_bounds(%s)",
        (parent,)).fetchall()]


@pytest.mark.parametrize("parent", sorted(PARENTS))
def test_current_and_next_three_months_exist(conn: psycopg.Connection[Any], parent: str) -> None:
    rows = bounds(conn, parent)
    utc = dt.UTC
    expected = [
        (f"{parent}_p{m:%Y_%m}", False, dt.datetime(m.year, m.month, 1, tzinfo=utc),
         dt.datetime(n.year, n.month, 1, tzinfo=utc))
        for m, n in ((month_start(i), month_start(i + 1)) for i in range(4))
    ]
    assert rows == [*expected, (f"{parent}_default", True, None, None)]
    key = conn.execute("SELECT pg_get_partkeydef(%s::regclass)", (parent,)).fetchone()
    column = PARENTS[parent] if parent != "user_behavior_log" else '"timestamp"'
    assert key == (f"RANGE ({column})",)
    pk = conn.execute(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = %s::regclass"
        " AND contype = 'p'", (parent,)).fetchone()
    assert pk and PARENTS[parent] in pk[0]


def test_bounds_are_utc_whatever_the_session_timezone(conn: psycopg.Connection[Any]) -> None:
    conn.execute("SET TimeZone = 'Asia/Riyadh'")
    conn.execute("SET DateStyle = 'SQL, DMY'")
    name = conn.execute("SELECT create_month_partition('user_behavior_log', '2030-02-10')")
    assert name.fetchone() == ("user_behavior_log_p2030_02",)
    row = conn.execute(
        "SELECT range_from = '2030-02-01 00:00:00+00', range_to = '2030-03-01 00:00:00+00'"
        " FROM partition_bounds('user_behavior_log')"
        " WHERE partition = 'user_behavior_log_p2030_02'::regclass").fetchone()
    assert row == (True, True)
    definition = conn.execute(
        "SELECT pg_get_expr(relpartbound, oid) FROM pg_class"
        " WHERE relname = 'user_behavior_log_p2030_02'").fetchone()
    assert definition and "2030-02-01" in definition[0].replace("01/02/2030", "2030-02-01")
    # December rolls over into the next year.
    conn.execute("RESET DateStyle")
    conn.execute("SELECT create_month_partition('chat_messages', '2030-12-01')")
    row = conn.execute(
        "SELECT range_to FROM partition_bounds('chat_messages')"
        " WHERE partition = 'chat_messages_p2030_12'::regclass").fetchone()
    assert row == (dt.datetime(2031, 1, 1, tzinfo=dt.UTC),)


def test_create_is_idempotent_and_partition_looks_like_parent(
    conn: psycopg.Connection[Any]
) -> None:
    first = conn.execute("SELECT create_month_partition('analytics_events', '2031-05-17')")
    again = conn.execute("SELECT create_month_partition('analytics_events', '2031-05-01')")
    assert first.fetchone() == again.fetchone() == ("analytics_events_p2031_05",)
    indexes = conn.execute(
        "SELECT count(*) FROM pg_index WHERE indrelid = 'analytics_events_p2031_05'::regclass"
    ).fetchone()
    parent_indexes = conn.execute(
        "SELECT count(*) FROM pg_index WHERE indrelid = 'analytics_events'::regclass").fetchone()
    assert indexes == parent_indexes
    # Every index is attached to the parent's index (no duplicate, unattached ones).
    detached = conn.execute(
        "SELECT count(*) FROM pg_index i WHERE i.indrelid = 'analytics_events_p2031_05'::regclass"
        " AND NOT EXISTS (SELECT 1 FROM pg_inherits h WHERE h.inhrelid = i.indexrelid)"
    ).fetchone()
    assert detached == (0,)
    # The bounds CHECK used to skip the validation scan is gone after ATTACH.
    checks = conn.execute(
        "SELECT conname FROM pg_constraint WHERE conrelid = 'analytics_events_p2031_05'::regclass"
        " AND conname LIKE '%bounds%'").fetchall()
    assert checks == []
    # Foreign keys are cloned and work; rows route into the new month.
    conn.execute("INSERT INTO users (id, email) VALUES ('00000000-0000-4000-8000-00000000000e',"
                 " 'e@example.com')")
    conn.execute("INSERT INTO analytics_events (user_id, event_type, occurred_at) VALUES"
                 " ('00000000-0000-4000-8000-00000000000e', 'x', '2031-05-31 23:59:59+00')")
    with pytest.raises(psycopg.errors.ForeignKeyViolation):
        conn.execute("INSERT INTO analytics_events (user_id, event_type, occurred_at) VALUES"
                     " (gen_random_uuid(), 'x', '2031-05-02')")
    assert conn.execute("SELECT count(*) FROM analytics_events_p2031_05").fetchone() == (1,)


def test_rows_in_default_partition_give_a_clear_error(conn: psycopg.Connection[Any]) -> None:
    conn.execute("INSERT INTO users (id, email) VALUES ('00000000-0000-4000-8000-00000000000d',"
                 " 'd@example.com')")
    conn.execute("INSERT INTO user_behavior_log (user_id, action_type, \"timestamp\") VALUES"
                 " ('00000000-0000-4000-8000-00000000000d', 'search', '2035-07-04 12:00+00')")
    with pytest.raises(psycopg.errors.Error) as caught:
        conn.execute("SELECT create_month_partition('user_behavior_log', '2035-07-01')")
    assert caught.value.sqlstate == "55G01"
    message = str(caught.value)
    assert "user_behavior_log_p2035_07" in message and "2035-07" in message
    assert "default" in message
    # Nothing half-made is left behind; other months still work.
    assert conn.execute("SELECT to_regclass('user_behavior_log_p2035_07')").fetchone() == (None,)
    ok = conn.execute("SELECT create_month_partition('user_behavior_log', '2035-08-01')")
    assert ok.fetchone() == ("user_behavior_log_p2035_08",)


def test_overlap_and_bad_arguments_are_refused(conn: psycopg.Connection[Any]) -> None:
    with pytest.raises(psycopg.errors.WrongObjectType):
        conn.execute("SELECT create_month_partition('users', '2030-01-01')")
    conn.execute("CREATE TABLE public.chat_messages_p2040_01 (id int)")
    with pytest.raises(psycopg.errors.DuplicateTable):
        conn.execute("SELECT create_month_partition('chat_messages', '2040-01-01')")


def test_attach_does_not_wait_for_readers_of_the_parent(db_url: str) -> None:
    """A long reader of this month holds ACCESS SHARE on the parent: PARTITION OF (ACCESS
    EXCLUSIVE on the parent) waits; LIKE + ATTACH (SHARE UPDATE EXCLUSIVE on the parent) goes
    through. lock_timeout turns a wait into an error, so the test needs no timing.
    (ATTACH does take ACCESS EXCLUSIVE on the DEFAULT partition: a reader scanning the default
    partition would delay it; see docs/schema.md.)"""
    holding = threading.Event()
    release = threading.Event()

    def reader() -> None:
        with psycopg.connect(db_url) as c:  # one open transaction
            this, following = month_start(0), month_start(1)
            c.execute("SELECT count(*) FROM chat_messages WHERE created_at >= %s"
                      " AND created_at < %s",  # pruned to this month's partition
                      (dt.datetime(this.year, this.month, 1, tzinfo=dt.UTC),
                       dt.datetime(following.year, following.month, 1, tzinfo=dt.UTC)),
                      ).fetchone()
            holding.set()
            release.wait(30)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        assert holding.wait(30)
        with psycopg.connect(db_url, autocommit=True) as conn:
            conn.execute("SET lock_timeout = '2s'")
            name = conn.execute("SELECT create_month_partition('chat_messages', '2032-03-01')")
            assert name.fetchone() == ("chat_messages_p2032_03",)
            with pytest.raises(psycopg.errors.LockNotAvailable):
                conn.execute("CREATE TABLE chat_messages_p2032_04 PARTITION OF chat_messages"
                             " FOR VALUES FROM ('2032-04-01+00') TO ('2032-05-01+00')")
    finally:
        release.set()
        thread.join()


def test_new_partition_is_protected_like_its_parent(conn: psycopg.Connection[Any]) -> None:
    conn.execute("SELECT create_month_partition('chat_messages', '2033-01-01')")
    flags = conn.execute("SELECT relrowsecurity, relforcerowsecurity FROM pg_class"
                         " WHERE relname = 'chat_messages_p2033_01'").fetchone()
    assert flags == (True, True)
    conn.execute("SET ROLE gth_app")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("SELECT * FROM chat_messages_p2033_01")


def test_maint_creates_and_drops_months(conn: psycopg.Connection[Any]) -> None:
    conn.execute("SET ROLE gth_maint")
    made = conn.execute("SELECT create_month_partition('analytics_events', '2034-04-01')")
    assert made.fetchone() == ("analytics_events_p2034_04",)
    months = conn.execute("SELECT count(*) FROM partition_bounds('analytics_events')").fetchone()
    assert months == (6,)
    kept = conn.execute(
        "SELECT detach_month_partition('analytics_events', '2034-04-01', false)").fetchone()
    assert kept == ("analytics_events_p2034_04",)
    assert conn.execute("SELECT detach_month_partition('analytics_events', '2034-04-01')"
                        ).fetchone() == (None,)
    conn.execute("RESET ROLE")
    assert conn.execute("SELECT relispartition FROM pg_class"
                        " WHERE relname = 'analytics_events_p2034_04'").fetchone() == (False,)
    conn.execute("SELECT create_month_partition('analytics_events', '2034-05-01')")
    conn.execute("SET ROLE gth_maint")
    dropped = conn.execute("SELECT detach_month_partition('analytics_events', '2034-05-01')")
    assert dropped.fetchone() == ("analytics_events_p2034_05",)
    conn.execute("RESET ROLE")
    assert conn.execute("SELECT to_regclass('analytics_events_p2034_05')").fetchone() == (None,)
    # Nobody else may create partitions.
    conn.execute("SET ROLE gth_app")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("SELECT create_month_partition('analytics_events', '2034-06-01')")
