"""The job registry: one module per job, each exporting `JOB`, a Job subclass."""

from __future__ import annotations

import importlib

from daemon.errors import ConfigError
from daemon.jobs.base import Job
from daemon.settings import JOB_NAMES


def job_class(name: str) -> type[Job]:
    if name not in JOB_NAMES:
        raise ConfigError(f"unknown job {name!r}; known jobs: {', '.join(JOB_NAMES)}")
    module = importlib.import_module(f"daemon.jobs.{name}")
    job: type[Job] = module.JOB
    return job


def all_job_classes() -> dict[str, type[Job]]:
    return {name: job_class(name) for name in JOB_NAMES}
