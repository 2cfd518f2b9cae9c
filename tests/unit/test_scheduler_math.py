from datetime import UTC, datetime

from daemon.scheduler import latest_fire_time, longest_interval
from daemon.settings import cron_trigger


def test_latest_fire_time_is_the_grid_point_not_now() -> None:
    trigger = cron_trigger("*/5 * * * *")
    now = datetime(2026, 11, 22, 10, 7, 31, tzinfo=UTC)
    assert latest_fire_time(trigger, now, 900) == datetime(2026, 11, 22, 10, 5, tzinfo=UTC)


def test_latest_fire_time_none_when_nothing_in_lookback() -> None:
    trigger = cron_trigger("0 3 * * *")
    now = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
    assert latest_fire_time(trigger, now, 600) is None


def test_longest_interval_by_schedule() -> None:
    now = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
    assert longest_interval(cron_trigger("*/5 * * * *"), now) == 300
    assert longest_interval(cron_trigger("5 * * * *"), now) == 3600
    assert longest_interval(cron_trigger("0 4 * * 0"), now) == 7 * 86400
    # irregular: 1:00 and 23:00 daily, the long gap is 22 h
    assert longest_interval(cron_trigger("0 1,23 * * *"), now) == 22 * 3600
