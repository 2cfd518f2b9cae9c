"""Bad input: every case exits with its documented code and one line, never a traceback."""

from pathlib import Path

import pytest

from tests.acceptance.conftest import cli, free_port


def one_line_error(result: object) -> str:
    stderr = result.stderr  # type: ignore[attr-defined]
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.mark.parametrize(("env_extra", "args", "expected"), [
    ({"GTH_MAINT_JOBS__MATVIEWS__SCHEDULE": "every hour"}, ["check-config"],
     "jobs.matviews.schedule: invalid cron"),
    ({"GTH_MAINT_JOBS__MATVIEWS__SCHEDULE": "0 25 * * *"}, ["run"],
     "jobs.matviews.schedule: invalid cron"),
    ({}, ["run-job", "no_such_job"], "invalid choice: 'no_such_job'"),
    ({}, ["trigger", "no_such_job"], "unknown job(s) no_such_job"),
    ({"GTH_MAINT_METRICS_PORT": "99999"}, ["run"], "metrics_port"),
    ({"GTH_MAINT_METRICS_PORT": "http"}, ["check-config"], "metrics_port"),
    ({"GTH_MAINT_LOG_LEVEL": "loud"}, ["check-config"], "log_level"),
    ({"GTH_MAINT_CONFIG": "/nonexistent/gth.toml"}, ["check-config"], "does not exist"),
    ({"GTH_MAINT_CONFIG": "/"}, ["run"], "is a directory"),
    ({}, ["run-job", "history_prune", "--full"], "--full is not an option of job history_prune"),
    ({}, ["frobnicate"], "invalid choice: 'frobnicate'"),
])
def test_usage_and_config_errors_exit_2(daemon_env: dict[str, str], env_extra: dict[str, str],
                                        args: list[str], expected: str) -> None:
    result = cli(*args, env={**daemon_env, **env_extra})
    assert result.returncode == 2, result.stderr
    assert expected in one_line_error(result)


def test_invalid_toml_and_unknown_sections(daemon_env: dict[str, str], tmp_path: Path) -> None:
    for text, expected in [("metrics_port = ", "not valid TOML"),
                           ("[jobs.nope]\nenabled = true\n", "jobs.nope: unknown setting"),
                           (b"\xff\xfe".decode("latin-1"), "not")]:
        path = tmp_path / "bad.toml"
        path.write_text(text)
        result = cli("check-config", env={**daemon_env, "GTH_MAINT_CONFIG": str(path)})
        assert result.returncode == 2
        assert expected in one_line_error(result)


def test_unreachable_database_exits_2(daemon_env: dict[str, str]) -> None:
    env = {**daemon_env, "GTH_MAINT_DATABASE_URL": f"postgresql://u:pw@127.0.0.1:{free_port()}/x",
           "GTH_MAINT_STARTUP_RETRY_SECONDS": "1"}
    for args in (["run"], ["migrate"], ["run-job", "history_prune"]):
        result = cli(*args, env=env)
        assert result.returncode == 2, (args, result.stderr)
        line = one_line_error(result)
        assert "database unreachable" in line
        assert "pw@" not in result.stderr + result.stdout


def test_metrics_port_in_use_exits_2(daemon_env: dict[str, str]) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = cli("run", env={**daemon_env, "GTH_MAINT_METRICS_PORT": str(port)})
    assert result.returncode == 2
    assert "cannot listen on 127.0.0.1" in one_line_error(result)


def test_trigger_without_a_daemon_exits_1(daemon_env: dict[str, str]) -> None:
    result = cli("trigger", "history_prune", env=daemon_env)
    assert result.returncode == 1
    assert "no running gth-maintd" in one_line_error(result)


def test_check_config_redacts_the_password(daemon_env: dict[str, str]) -> None:
    env = {**daemon_env, "GTH_MAINT_DATABASE_URL": "postgresql://maint:t0psecret@db/gth"}
    result = cli("check-config", env=env)
    assert result.returncode == 0
    assert "t0psecret" not in result.stdout
    assert "postgresql://maint:***@db/gth" in result.stdout


def test_help_everywhere(daemon_env: dict[str, str]) -> None:
    for args in (["--help"], ["run", "--help"], ["run-job", "--help"], ["trigger", "--help"],
                 ["status", "--help"], ["check-config", "--help"], ["migrate", "--help"]):
        result = cli(*args, env=daemon_env)
        assert result.returncode == 0
        assert "usage: gth-maintd" in result.stdout
