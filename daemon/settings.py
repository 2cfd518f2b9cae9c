"""Every setting of gth-maintd in one typed model.

Sources, strongest first: environment variables (prefix ``GTH_MAINT_``, nested with ``__``),
then the TOML file named by ``GTH_MAINT_CONFIG`` (or ``--config``), then the defaults below.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from apscheduler.triggers.cron import CronTrigger
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from daemon.errors import ConfigError

ENV_PREFIX = "GTH_MAINT_"


def cron_trigger(expression: str) -> CronTrigger:
    """Parse a schedule: standard 5-field cron in UTC, or 6 fields with a leading seconds field."""
    fields = expression.split()
    if len(fields) == 5:
        return CronTrigger.from_crontab(expression, timezone="UTC")
    if len(fields) == 6:
        second, minute, hour, day, month, dow = fields
        return CronTrigger(
            second=second, minute=minute, hour=hour, day=day, month=month,
            day_of_week=dow, timezone="UTC",
        )
    raise ValueError(f"expected 5 cron fields (minute hour day month weekday), got {len(fields)}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class JobSettings(_Strict):
    """Knobs every job has. Timeouts bound each statement and each lock wait of the job."""

    enabled: bool = True
    schedule: str
    timeout_seconds: float = Field(default=1800, gt=0, description="budget for a whole run")
    statement_timeout_ms: int = Field(default=60_000, gt=0)
    lock_timeout_ms: int = Field(default=1_000, gt=0)

    @field_validator("schedule")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        try:
            cron_trigger(value)
        except ValueError as exc:
            raise ValueError(f"invalid cron {value!r}: {exc}") from None
        return value


class PartitionedTable(_Strict):
    retention_months: int | None = Field(default=None, ge=1, description="None keeps everything")


def _default_partitioned_tables() -> dict[str, PartitionedTable]:
    return {
        "chat_messages": PartitionedTable(retention_months=None),
        "analytics_events": PartitionedTable(retention_months=24),
        "user_behavior_log": PartitionedTable(retention_months=12),
    }


class PartitionsSettings(JobSettings):
    schedule: str = "15 0 * * *"
    run_at_startup: bool = True
    # Every DDL lock wait (ATTACH, DETACH) queues the parent's readers and writers behind it:
    # keep it short and retry with jitter (ddl_retries) instead.
    lock_timeout_ms: int = Field(default=100, gt=0)
    months_ahead: int = Field(default=3, ge=1, le=24)
    max_new_partitions_per_table: int = Field(default=12, ge=1, le=120)
    retention_action: Literal["drop", "archive"] = "archive"
    archive_schema: str = "archive"
    ddl_retries: int = Field(default=5, ge=0, le=50)
    drain_batch_size: int = Field(default=5_000, gt=0)
    export_dir: str = Field(default="default-partition-exports", description="under state_dir")
    tables: dict[str, PartitionedTable] = Field(default_factory=_default_partitioned_tables)


class MatviewsSettings(JobSettings):
    schedule: str = "5 * * * *"
    views: list[str] = Field(default_factory=lambda: ["user_booking_stats", "hotel_social_proof"])
    statement_timeout_ms: int = Field(default=600_000, gt=0)
    lock_retries: int = Field(default=3, ge=0, le=20, description="retries after lock_timeout")


class CacheCleanupSettings(JobSettings):
    schedule: str = "10 * * * *"
    tables: list[str] = Field(
        default_factory=lambda: ["flight_search_cache", "hotel_search_cache"]
    )
    batch_size: int = Field(default=2_000, gt=0, le=50_000)
    vacuum_after_rows: int = Field(default=100_000, ge=0, description="0 disables the VACUUM")
    statement_timeout_ms: int = Field(default=5_000, gt=0)
    vacuum_timeout_ms: int = Field(
        default=1_800_000, gt=0, description="statement_timeout of the VACUUM (ANALYZE) after"
    )
    sweep_threshold: float = Field(
        default=0.2, ge=0, le=1,
        description="sweep the heap in page order when this share of rows is expired; 0: never",
    )


class GdprPurgeSettings(JobSettings):
    schedule: str = "30 2 * * *"
    grace_days: int = Field(default=30, ge=0)
    legal_retention_years: int = Field(default=7, ge=1)
    analytics_retention_days: int = Field(default=730, ge=1)
    max_users_per_run: int = Field(default=1_000, gt=0)
    batch_size: int = Field(default=1_000, gt=0)


class PaymentExpirySettings(JobSettings):
    schedule: str = "*/5 * * * *"
    batch_size: int = Field(default=500, gt=0, le=10_000)
    statement_timeout_ms: int = Field(default=5_000, gt=0)


class AuditVerifySettings(JobSettings):
    schedule: str = "20 * * * *"
    full_every_hours: int = Field(default=24, ge=1, description="how often a run goes full")
    batch_size: int = Field(default=200_000, gt=0)
    statement_timeout_ms: int = Field(default=300_000, gt=0)
    parallel_connections: int = Field(
        default=2, ge=1, le=8, description="connections verifying disjoint ranges at once"
    )
    parallel_min_rows: int = Field(default=100_000, ge=1,
                                   description="fewer rows to verify: one connection")
    seal_block_rows: int = Field(
        default=8192, ge=0, le=1_000_000,
        description="rows per sealed block: full passes re-hash a sealed block once instead "
        "of every row's two hashes; 0 = no seals (every full pass recomputes every row)",
    )


class VacuumAnalyzeSettings(JobSettings):
    schedule: str = "0 3 * * *"
    vacuum_weekday: int = Field(default=6, ge=0, le=6, description="0=Monday; VACUUM ANALYZE day")
    tables: list[str] = Field(default_factory=list, description="empty: every table of public")
    statement_timeout_ms: int = Field(default=3_600_000, gt=0)
    lock_retries: int = Field(default=3, ge=0, le=20, description="retries after lock_timeout")


class ReindexSettings(JobSettings):
    schedule: str = "0 4 * * 0"
    bloat_ratio: float = Field(default=0.3, gt=0, lt=1)
    min_index_bytes: int = Field(default=8 * 1024 * 1024, ge=0)
    statement_timeout_ms: int = Field(default=3_600_000, gt=0)
    concurrent_lock_timeout_ms: int = Field(
        default=600_000, gt=0,
        description="lock_timeout of REINDEX / DROP INDEX CONCURRENTLY, whose lock waits"
        " (for older transactions) block neither reads nor writes",
    )


class HistoryPruneSettings(JobSettings):
    schedule: str = "50 0 * * *"
    keep_days: int = Field(default=30, ge=1)
    batch_size: int = Field(default=5_000, gt=0, le=50_000)


class JobsSettings(_Strict):
    partitions: PartitionsSettings = Field(default_factory=PartitionsSettings)
    matviews: MatviewsSettings = Field(default_factory=MatviewsSettings)
    cache_cleanup: CacheCleanupSettings = Field(default_factory=CacheCleanupSettings)
    gdpr_purge: GdprPurgeSettings = Field(default_factory=GdprPurgeSettings)
    payment_expiry: PaymentExpirySettings = Field(default_factory=PaymentExpirySettings)
    audit_verify: AuditVerifySettings = Field(default_factory=AuditVerifySettings)
    vacuum_analyze: VacuumAnalyzeSettings = Field(default_factory=VacuumAnalyzeSettings)
    reindex: ReindexSettings = Field(default_factory=ReindexSettings)
    history_prune: HistoryPruneSettings = Field(default_factory=HistoryPruneSettings)

    def get(self, name: str) -> JobSettings:
        value = getattr(self, name, None)
        if not isinstance(value, JobSettings):
            raise ConfigError(f"unknown job {name!r}; known: {', '.join(JOB_NAMES)}")
        return value


JOB_NAMES: tuple[str, ...] = tuple(JobsSettings.model_fields)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    database_url: SecretStr | None = Field(
        default=None, description="libpq URL; unset starts the embedded demo PostgreSQL"
    )
    config: Path | None = Field(default=None, description="TOML file (GTH_MAINT_CONFIG)")
    metrics_host: str = "0.0.0.0"  # scraped from outside the pod or host
    metrics_port: int = Field(default=9811, ge=1, le=65535)
    state_dir: Path = Path("state")
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    shutdown_grace_seconds: float = Field(default=20, ge=0)
    connect_timeout_seconds: float = Field(default=5, gt=0)
    startup_retry_seconds: float = Field(default=30, ge=0, description="connect retries at start")
    pool_max_size: int = Field(default=6, ge=2, le=64)
    max_concurrent_jobs: int = Field(default=3, ge=1, le=16)
    heartbeat_seconds: float = Field(default=5, gt=0)
    db_probe_seconds: float = Field(default=5, gt=0)
    demo_scale: Literal["tiny", "small", "medium"] = "small"
    jobs: JobsSettings = Field(default_factory=JobsSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The TOML file arrives as init kwargs; the environment overrides it.
        return (env_settings, init_settings)

    def redacted_database_url(self) -> str | None:
        return redact_url(self.database_url.get_secret_value()) if self.database_url else None

    def redacted(self) -> dict[str, Any]:
        data = self.model_dump(mode="json")
        data["database_url"] = self.redacted_database_url()
        return data


def redact_url(url: str) -> str:
    """Hide the password of a libpq URL or key=value string."""
    if "://" in url:
        parts = urlsplit(url)
        if parts.password is not None:
            host = parts.hostname or ""
            netloc = f"{parts.username or ''}:***@{host}"
            if parts.port:
                netloc += f":{parts.port}"
            parts = parts._replace(netloc=netloc)
        query = "&".join(
            "password=***" if q.lower().startswith("password=") else q
            for q in parts.query.split("&")
        ) if parts.query else ""
        return urlunsplit(parts._replace(query=query))
    words = ["password=***" if w.lower().startswith("password=") else w for w in url.split()]
    return " ".join(words)


def _format_validation_error(exc: ValidationError) -> str:
    problems = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "settings"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown setting"
        problems.append(f"{where}: {msg}")
    return "invalid configuration: " + "; ".join(problems)


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except PermissionError:
        raise ConfigError(f"config file {path} is not readable (permission denied)") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path} is a directory") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not UTF-8 text") from None


def load_settings(config_path: Path | str | None = None) -> Settings:
    """Build the effective settings; every problem becomes one ConfigError line."""
    path_text = str(config_path) if config_path else os.environ.get(f"{ENV_PREFIX}CONFIG")
    file_values: dict[str, Any] = {}
    if path_text:
        file_values = read_toml(Path(path_text))
        file_values["config"] = path_text
    try:
        return Settings(**file_values)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc)) from None
