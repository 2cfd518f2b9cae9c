"""The `gth-maintd` command. Exit codes: 0 success, 1 a job failed (or the requested
operation could not be carried out), 2 usage or configuration error, 143 forced stop."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, NoReturn

from daemon import __version__, db, history, logs
from daemon.errors import EXIT_JOB_FAILED, EXIT_OK, EXIT_USAGE, ConfigError, MaintError
from daemon.settings import JOB_NAMES, Settings, cron_trigger, load_settings

EPILOG = "exit codes: 0 success, 1 a job failed, 2 usage or configuration error"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="gth-maintd", epilog=EPILOG,
                     description="Maintenance daemon of the Global Travel Hub database.")
    parser.add_argument("--version", action="version", version=f"gth-maintd {__version__}")
    parser.add_argument("--config", metavar="FILE",
                        help="TOML configuration file (default: $GTH_MAINT_CONFIG)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    sub.add_parser("run", help="run the daemon (migrate, then schedule jobs)", epilog=EPILOG)
    sub.add_parser("migrate", help="apply pending schema migrations and exit", epilog=EPILOG)
    run_job = sub.add_parser("run-job", help="run one job now in the foreground", epilog=EPILOG)
    run_job.add_argument("name", choices=JOB_NAMES, metavar="NAME",
                         help=f"one of: {', '.join(JOB_NAMES)}")
    run_job.add_argument("--dry-run", action="store_true",
                         help="report what would change, change nothing")
    for flag, text in _job_flags().items():
        run_job.add_argument(flag, action="store_true", help=text)
    trigger = sub.add_parser("trigger", help="ask the running daemon to run jobs now",
                             epilog=EPILOG)
    trigger.add_argument("names", nargs="+", metavar="NAME", help="job names, or 'all'")
    sub.add_parser("status", help="schedule, next run and last outcome of each job",
                   epilog=EPILOG)
    sub.add_parser("check-config", help="validate and print the effective configuration "
                   "(secrets redacted)", epilog=EPILOG)
    demo = sub.add_parser("demo-data", help="load the demo data set into the database",
                          epilog=EPILOG)
    demo.add_argument("--scale", default="small", help="tiny, small or medium (default small)")
    return parser


def _job_flags() -> dict[str, str]:
    from daemon.jobs import all_job_classes

    flags: dict[str, str] = {}
    for name, cls in all_job_classes().items():
        for option in cls.options:
            flags.setdefault(option.flag, f"{option.help} (job {name})")
    return flags


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        settings = load_settings(args.config)
        if args.command == "run":
            logs.configure(settings.log_format, settings.log_level)
        else:  # one-shot commands: result on stdout, only problems on stderr
            quiet = "error" if settings.log_level == "info" else settings.log_level
            logs.configure(settings.log_format, quiet, sys.stderr)
        handler = _COMMANDS[args.command]
        return handler(settings, args)
    except MaintError as exc:
        print(f"gth-maintd: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("gth-maintd: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug: still one line, the traceback on request
        if os.environ.get("GTH_MAINT_TRACEBACK"):
            raise
        print(f"gth-maintd: internal error: {type(exc).__name__}: {exc} "
              "(set GTH_MAINT_TRACEBACK=1 to see the traceback)", file=sys.stderr)
        return EXIT_JOB_FAILED


def _cmd_run(settings: Settings, _args: argparse.Namespace) -> int:
    from daemon.app import Daemon

    code = Daemon(settings).run()
    # The stop is complete: runs finished or were cancelled, the pool is closed, the pidfile
    # released. Leave now, so that neither a job thread still stuck in the database nor a
    # second stop signal landing in interpreter teardown (where Python restores the default
    # handlers: death by SIGTERM instead of this exit code) can change how the process ends.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


@contextmanager
def _database(settings: Settings) -> Iterator[str]:
    """The configured database, or the embedded one (the demo default) for the CLI's life."""
    if settings.database_url is not None:
        yield settings.database_url.get_secret_value()
        return
    from daemon.embedded import EmbeddedPostgres

    embedded = EmbeddedPostgres(settings.state_dir)
    try:
        yield embedded.start()
    finally:
        embedded.stop()


def _cmd_migrate(settings: Settings, _args: argparse.Namespace) -> int:
    from daemon.migrations import migrate

    with _database(settings) as url, db.wait_for_database(
        url, settings.startup_retry_seconds, settings.connect_timeout_seconds
    ) as conn:
        report = migrate(conn)
    applied = ", ".join(f"{v:04d}" for v in report.applied) or "none"
    print(f"schema at version {report.version} (applied now: {applied})")
    return EXIT_OK


def _cmd_run_job(settings: Settings, args: argparse.Namespace) -> int:
    from daemon.jobs import job_class
    from daemon.runner import Runner

    cls = job_class(args.name)
    allowed = {o.flag for o in cls.options}
    options: dict[str, Any] = {}
    for flag in _job_flags():
        if getattr(args, flag.lstrip("-").replace("-", "_"), False):
            if flag not in allowed:
                raise ConfigError(f"{flag} is not an option of job {args.name}")
            options[flag.lstrip("-").replace("-", "_")] = True
    if args.dry_run and not cls.supports_dry_run:
        raise ConfigError(f"job {args.name} changes nothing it could preview; drop --dry-run")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with _database(settings) as url:
        db.wait_for_database(url, settings.startup_retry_seconds,
                             settings.connect_timeout_seconds).close()
        pool = db.make_pool(url, 4, settings.connect_timeout_seconds, name="run-job")
        with pool:
            outcome = Runner(lambda: settings, url, pool, stop).run(
                args.name, "cli", dry_run=args.dry_run, options=options)
    summary = f"{outcome.task}: {outcome.outcome}, {outcome.rows} rows in {outcome.duration:.2f} s"
    if outcome.run_id:
        summary += f" (run {outcome.run_id})"
    print(summary + (" [dry run]" if args.dry_run else ""))
    if outcome.details:
        print(json.dumps(outcome.details, indent=2, ensure_ascii=False, default=str))
    if outcome.outcome != "success":
        print(f"gth-maintd: {outcome.task} {outcome.outcome}: {outcome.error or outcome.reason}",
              file=sys.stderr)
        return EXIT_JOB_FAILED
    return EXIT_OK


def _cmd_trigger(settings: Settings, args: argparse.Namespace) -> int:
    from daemon.signals import send_trigger

    names = list(dict.fromkeys(args.names))
    if names != ["all"]:
        unknown = [n for n in names if n not in JOB_NAMES]
        if unknown or "all" in names:
            raise ConfigError(f"unknown job(s) {', '.join(unknown) or 'all (use it alone)'}; "
                              f"known: {', '.join(JOB_NAMES)}")
    pid = send_trigger(settings.state_dir, names)
    print(f"asked gth-maintd (pid {pid}) to run: {', '.join(names)}")
    return EXIT_OK


def _cmd_status(settings: Settings, _args: argparse.Namespace) -> int:
    now = datetime.now(UTC)
    with _database(settings) as url, db.connect(url, settings.connect_timeout_seconds) as conn, \
            db.wrap_errors("read run history"):
        runs = history.last_runs(conn)
        successes = history.last_success_times(conn)
    rows = [("JOB", "ENABLED", "SCHEDULE (UTC)", "NEXT RUN", "LAST RUN", "OUTCOME", "ROWS",
             "LAST SUCCESS")]
    for name in JOB_NAMES:
        job = settings.jobs.get(name)
        nxt = cron_trigger(job.schedule).get_next_fire_time(None, now) if job.enabled else None
        last = runs.get(name)
        ok = successes.get(name)
        rows.append((
            name, "yes" if job.enabled else "no", job.schedule, _when(nxt),
            _when(last[2]) if last else "never", last[4] if last else "-",
            str(last[5]) if last else "-",
            _when(datetime.fromtimestamp(ok, UTC)) if ok else "never",
        ))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
    failed = {n: r[6] for n, r in runs.items() if r[4] == "failure" and n in JOB_NAMES}
    for name, error in failed.items():
        print(f"last error of {name}: {error}")
    return EXIT_OK


def _when(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if moment else "-"


def _cmd_check_config(settings: Settings, _args: argparse.Namespace) -> int:
    print(json.dumps(settings.redacted(), indent=2, ensure_ascii=False))
    return EXIT_OK


def _cmd_demo_data(settings: Settings, args: argparse.Namespace) -> int:
    from daemon import demo_data
    from daemon.migrations import migrate

    with _database(settings) as url, db.wait_for_database(
        url, settings.startup_retry_seconds, settings.connect_timeout_seconds
    ) as conn:
        migrate(conn)
        counts = demo_data.generate(conn, scale=args.scale)
    print(json.dumps(counts, indent=2))
    return EXIT_OK


_COMMANDS = {
    "run": _cmd_run, "migrate": _cmd_migrate, "run-job": _cmd_run_job,
    "trigger": _cmd_trigger, "status": _cmd_status, "check-config": _cmd_check_config,
    "demo-data": _cmd_demo_data,
}
