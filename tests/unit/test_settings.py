from pathlib import Path

import pytest

from daemon.errors import ConfigError
from daemon.settings import JOB_NAMES, load_settings, redact_url


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gth.toml"
    path.write_text(text)
    return path


def test_defaults_are_valid_and_cover_every_job(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GTH_MAINT_CONFIG", raising=False)
    settings = load_settings()
    assert set(JOB_NAMES) == {"partitions", "matviews", "cache_cleanup", "gdpr_purge",
                              "payment_expiry", "audit_verify", "vacuum_analyze", "reindex",
                              "history_prune"}
    assert settings.jobs.payment_expiry.schedule == "*/5 * * * *"


def test_environment_overrides_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, 'metrics_port = 9000\n[jobs.cache_cleanup]\nbatch_size = 10\n')
    monkeypatch.setenv("GTH_MAINT_METRICS_PORT", "9100")
    monkeypatch.setenv("GTH_MAINT_JOBS__CACHE_CLEANUP__ENABLED", "false")
    settings = load_settings(path)
    assert settings.metrics_port == 9100
    assert settings.jobs.cache_cleanup.batch_size == 10
    assert settings.jobs.cache_cleanup.enabled is False


def test_config_file_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GTH_MAINT_CONFIG", str(write(tmp_path, "metrics_port = 9001\n")))
    assert load_settings().metrics_port == 9001


@pytest.mark.parametrize(("text", "expected"), [
    ('[jobs.matviews]\nschedule = "61 * * * *"\n', "jobs.matviews.schedule: invalid cron"),
    ('[jobs.no_such_job]\nenabled = true\n', "jobs.no_such_job: unknown setting"),
    ('[jobs.matviews]\nbogus = 1\n', "jobs.matviews.bogus: unknown setting"),
    ("metrics_port = 70000\n", "metrics_port: Input should be less than or equal to 65535"),
    ("metrics_port = [\n", "is not valid TOML"),
])
def test_bad_values_name_the_setting(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, text))
    message = str(caught.value)
    assert expected in message
    assert "\n" not in message


def test_missing_and_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="is a directory"):
        load_settings(tmp_path)


def test_six_field_schedule_has_seconds(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, '[jobs.history_prune]\nschedule = "*/2 * * * * *"\n'))
    assert settings.jobs.history_prune.schedule.startswith("*/2")


@pytest.mark.parametrize(("url", "shown"), [
    ("postgresql://maint:s3cret@db:5432/gth", "postgresql://maint:***@db:5432/gth"),
    ("postgresql://db/gth?user=m&password=s3cret", "postgresql://db/gth?user=m&password=***"),
    ("host=db user=m password=s3cret dbname=gth", "host=db user=m password=*** dbname=gth"),
    ("postgresql://maint@db/gth", "postgresql://maint@db/gth"),
])
def test_passwords_are_redacted(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_redacted_dump_never_contains_the_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GTH_MAINT_DATABASE_URL", "postgresql://u:hunter2@h/db")
    assert "hunter2" not in repr(load_settings().redacted())


def test_example_config_is_valid_and_matches_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    example = Path(__file__).resolve().parents[2] / "config" / "gth-maintd.example.toml"
    monkeypatch.delenv("GTH_MAINT_CONFIG", raising=False)
    defaults = load_settings().jobs
    settings = load_settings(example)
    # The example documents the defaults; it must not silently diverge from them.
    assert settings.jobs == defaults
