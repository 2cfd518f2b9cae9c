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


def test_rare_schedules_have_an_interval_too() -> None:
    now = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
    assert longest_interval(cron_trigger("0 0 1 * *"), now) == 31 * 86400
    assert longest_interval(cron_trigger("0 0 1 1 *"), now) == 365 * 86400
    # every 5 minutes on weekdays: the weekend gap is found
    assert longest_interval(cron_trigger("*/5 * * * 1-5"), now) == 2 * 86400 + 300
