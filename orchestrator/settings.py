"""The one settings object, read from ``PIPELINE_*`` environment variables.

The same object feeds celeryconfig.py, the CLI, the watcher and the workers. Defaults are the
embedded setup: broker, result backend and status database as local files under ``./var``.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from orchestrator.access import secretfiles
from orchestrator.errors import ConfigError
from orchestrator.jobs.params import DecimalMark, LateListing, Objective, Separator, setting
from orchestrator.steps import registry
from orchestrator.steps.registry import PIPELINE, StepRegistry

#: The built-in pipeline's step names, in order (declared in orchestrator/steps/registry.py).
STEPS: tuple[str, ...] = PIPELINE.names


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PIPELINE_", extra="ignore")

    share_dir: Path = Field(Path("share"), description="root of the drop share")
    var_dir: Path = Field(Path("var"), description="embedded broker, results and database")
    broker_url: str | None = Field(None, description="Celery broker; default: files in var/")
    result_backend: str | None = Field(None, description="Celery results; default: files in var/")
    database_url: str | None = Field(None, description="status store; default: SQLite in var/")

    broker_polling_interval: float = Field(0.02, gt=0, le=5,
        description="seconds between looks at the embedded broker's folder")
    scan_interval: float = Field(1.0, gt=0, le=3600,
        description="seconds between the watcher's scans of input/")
    watch_mode: Literal["auto", "events", "polling"] = Field(
        "auto", description="auto: polling on network filesystems, else events")
    settle_seconds: float = Field(1.0, ge=0, le=3600, description="still this long = complete")
    job_file_wait: float = Field(60.0, ge=0, le=86_400, description="a job file waits for its CSV")
    dedupe_window: float = Field(7 * 86_400.0, ge=0, description="seconds, or 30m/12h/7d; 0 off")
    max_queued: int = Field(5000, ge=1, description="the watcher stops claiming above this")
    worker_concurrency: int = Field(2, ge=1, le=256,
        description="worker processes (pipeline up, demo; `celery worker -c` overrides)")
    prefetch_multiplier: int = Field(1, ge=1, le=128,
        description="messages each worker process reserves ahead (1: fair on long steps)")
    task_events: bool = Field(False,
        description="workers send task events; turn on where Flower runs")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO",
        description="log level of workers, beat and the watcher")
    db_synchronous_commit: bool = Field(True, description="PostgreSQL: wait for the WAL flush")
    step_work: Literal["real", "noop"] = Field(
        "real", description="noop: steps do no work; for benchmarks of the orchestration itself")

    # Job defaults: default, bounds and meaning declared once, in orchestrator/jobs/params.py
    portfolio_size: int = setting("portfolio_size")
    objective: Objective = setting("objective")
    max_weight: float = setting("max_weight")
    min_weight: float = setting("min_weight")
    risk_free_rate: float = setting("risk_free_rate")

    max_gap_days: int = Field(5, ge=0, le=60, description="longest gap filled forward")
    max_missing_fraction: float = Field(0.10, ge=0, le=1, description="sparser tickers dropped")
    max_input_bytes: int = Field(200_000_000, gt=0,
        description="larger input files are refused unread; also the most a .csv.gz may expand to")
    csv_separator: Separator = setting("separator")
    csv_decimal: DecimalMark = setting("decimal")
    late_listing: LateListing = setting("late_listing")

    step_registry: str = Field(
        "orchestrator.steps.registry:PIPELINE",
        description="the job's steps: module:attribute of a StepRegistry")
    # Overrides of the built-in steps' declared limits (orchestrator/steps/registry.py).
    validate_soft_time_limit: int = Field(PIPELINE["validate"].soft_time_limit, gt=0,
        description="seconds before the validate step is asked to stop")
    validate_time_limit: int = Field(PIPELINE["validate"].time_limit, gt=0,
        description="seconds before the validate step is killed")
    optimize_soft_time_limit: int = Field(PIPELINE["optimize"].soft_time_limit, gt=0,
        description="seconds before the optimize step is asked to stop")
    optimize_time_limit: int = Field(PIPELINE["optimize"].time_limit, gt=0,
        description="seconds before the optimize step is killed")
    archive_soft_time_limit: int = Field(PIPELINE["archive"].soft_time_limit, gt=0,
        description="seconds before the archive step is asked to stop")
    archive_time_limit: int = Field(PIPELINE["archive"].time_limit, gt=0,
        description="seconds before the archive step is killed")
    lease_grace_seconds: int = Field(30, ge=1, description="added to a step's hard limit")
    visibility_timeout: int | None = Field(None, gt=0,
        description="Redis; default 2×the longest task limit+60")
    max_retries: int = Field(3, ge=0, le=20, description="transient step errors")
    outage_retries: int = Field(30, ge=0, le=1000, description="database or broker away")
    requeue_lost_after: int = Field(120, gt=0, description="queued, message gone: republish")
    disk_wait_seconds: int = Field(
        900, ge=0, le=86_400, description="a full/failing share: retry this long, then fail")
    recovery_interval: int = Field(60, gt=0, description="seconds between stuck-job checks")
    worker_max_tasks_per_child: int = Field(1000, ge=1,
        description="a worker process is replaced after this many tasks")
    worker_max_memory_per_child: int = Field(1_000_000, ge=10_000, description="KiB")
    result_expires_seconds: int = Field(86_400, gt=0,
        description="result backend entries expire after this")

    # Storage rotation (orchestrator/rotation/) and tokens (orchestrator/access/auth.py).
    retention_days: int = Field(30, ge=1, le=36_500, description="finished jobs kept this long")
    retention_days_completed: int | None = Field(None, ge=1, le=36_500,
        description="retention of completed jobs; default PIPELINE_RETENTION_DAYS")
    retention_days_failed: int | None = Field(None, ge=1, le=36_500,
        description="retention of failed jobs; default PIPELINE_RETENTION_DAYS")
    retention_days_cancelled: int | None = Field(None, ge=1, le=36_500,
        description="retention of cancelled jobs; default PIPELINE_RETENTION_DAYS")
    rotation_batch_size: int = Field(500, ge=1, le=10_000, description="jobs per archive")
    rotation_concurrency: int = Field(1, ge=1, le=64, description="batches at once (lanes)")
    rotation_bytes_per_second: int = Field(20_000_000, ge=0, description="budget; 0 = none")
    rotation_task_rate_limit: str | None = Field(
        None, pattern=r"^\d+(\.\d+)?/[smh]$", description="Celery rate_limit, e.g. 30/m")
    rotation_schedule: str = Field("0 3 * * *", description="cron (UTC) or 'off'")
    rotation_time_limit: int = Field(3600, ge=10, le=86_400, description="seconds per batch")
    rotation_compress_level: int = Field(6, ge=1, le=9,
        description="gzip level of rotation archives")
    history_retention_days: int | None = Field(
        None, ge=1, description="prune old history of archived jobs and results; off if unset")
    auth: Literal["auto", "on", "off"] = Field(
        "auto", description="only until the first token exists (auto, off: open; on: only "
        "the first admin token may be made); then the stored policy decides (pipeline auth)")
    auth_viewers: Literal["open", "token"] = Field(
        "open", description="read commands, until the first token exists (it stores this)")

    # Many machines (deploy/README.md): message signing, TLS, secrets read from files.
    security_key: Path | None = Field(
        None, description="this role's private key (PEM); with the two below, signs messages")
    security_certificate: Path | None = Field(None, description="this role's certificate (PEM)")
    security_cert_store: Path | None = Field(
        None, description="folder of the certificates allowed to sign (every role's)")
    security_key_password: SecretStr | None = Field(None, description="the key's passphrase")
    tls_ca_file: Path | None = Field(
        None, description="CA bundle for rediss:// and amqps://; default: the system's")
    tls_cert_file: Path | None = Field(None, description="client certificate, if the broker asks")
    tls_key_file: Path | None = Field(None, description="client certificate's key")
    broker_url_file: Path | None = Field(None, description="file holding PIPELINE_BROKER_URL")
    result_backend_file: Path | None = Field(
        None, description="file holding PIPELINE_RESULT_BACKEND")
    database_url_file: Path | None = Field(None, description="file holding PIPELINE_DATABASE_URL")
    flower_password_file: Path | None = Field(
        None, description="file holding PIPELINE_FLOWER_PASSWORD")
    security_key_password_file: Path | None = Field(
        None, description="file holding PIPELINE_SECURITY_KEY_PASSWORD")

    @field_validator("broker_url_file", "result_backend_file", "database_url_file",
                     "flower_password_file", "security_key_password_file", "security_key",
                     "security_certificate", "security_cert_store", "tls_ca_file",
                     "tls_cert_file", "tls_key_file")
    @classmethod
    def _readable(cls, value: Path | None) -> Path | None:
        if value is not None and value.expanduser().is_dir():
            return value.expanduser().absolute()  # the certificate store is a folder
        return secretfiles.check_readable(value)

    @model_validator(mode="after")
    def _secrets(self) -> Settings:
        secretfiles.fill_from_files(self)
        given = [self.security_key, self.security_certificate, self.security_cert_store]
        if any(given) and not all(given):
            raise ValueError("message signing needs all three of PIPELINE_SECURITY_KEY, "
                             "PIPELINE_SECURITY_CERTIFICATE and PIPELINE_SECURITY_CERT_STORE")
        return self

    @property
    def signing(self) -> bool:
        """Task messages are signed and only signed ones are accepted (Celery's auth)."""
        return self.security_key is not None

    def __repr_args__(self) -> Iterator[tuple[str | None, object]]:
        # repr() and str() show settings in logs and tracebacks: never a URL's password.
        for key, value in super().__repr_args__():
            if key in SECRET_FIELDS and value:
                yield key, "***"
            else:
                yield key, mask_passwords(value) if isinstance(value, str) else value

    # Monitoring: logs, Flower, notifications, health (orchestrator/monitoring/, cli/monitor.py).
    log_format: Literal["text", "json"] = Field("text", description="json: one object a line")
    flower_address: str = Field("127.0.0.1", min_length=1, description="Flower binds here")
    flower_port: int = Field(5555, ge=1, le=65_535, description="Flower's port")
    flower_user: str | None = Field(None, pattern=r"^[^:,]+$",
        description="Flower basic auth user (with PIPELINE_FLOWER_PASSWORD)")
    flower_password: str | None = Field(None, min_length=8, pattern=r"^[^,]+$",
        description="Flower basic auth password; prefer PIPELINE_FLOWER_PASSWORD_FILE")
    flower_basic_auth: str | None = Field(
        None, pattern=r"^[^:,]+:[^,]+(,[^:,]+:[^,]+)*$", description="user:password[,...]")
    webhook_url: str | None = Field(None, pattern=r"^https?://\S+$",
        description="notify failures to this URL (Slack, Teams, any JSON endpoint)")
    webhook_timeout: float = Field(5.0, gt=0, le=120, description="seconds per attempt")
    notify_retries: int = Field(5, ge=0, le=50, description="webhook/email attempts after one")
    smtp_host: str | None = Field(None,
        description="mail server for failure notices; unset: no mail")
    smtp_port: int = Field(25, ge=1, le=65_535, description="mail server port")
    smtp_user: str | None = Field(None, description="mail server user")
    smtp_password: str | None = Field(None, description="mail server password")
    smtp_from: str = Field("pipeline@localhost", pattern=r"^\S+@\S+$",
        description="sender of failure notices")
    smtp_to: str | None = Field(None, pattern=r"^\S+@\S+(\s*,\s*\S+@\S+)*$",
        description="recipients of failure notices, comma separated")
    smtp_starttls: bool = Field(False, description="use STARTTLS with the mail server")
    health_min_free_mb: int = Field(500, ge=0, description="share free space below: unhealthy")
    health_min_workers: int = Field(1, ge=0, le=10_000,
        description="`pipeline health` is unhealthy with fewer workers answering")

    # The HTTP API and the jobs page (orchestrator/api/, `pipeline api`, docs/api.md).
    api_enabled: bool = Field(True, description="`pipeline up` also serves the API and page")
    api_host: str = Field("127.0.0.1", min_length=1, description="the API binds here")
    api_port: int = Field(8000, ge=1, le=65_535, description="the API and page port")
    api_workers: int = Field(1, ge=1, le=64, description="uvicorn worker processes")
    api_max_upload_bytes: int = Field(
        200_000_000, gt=0, description="an upload larger than this is refused (413) mid-stream")
    api_max_batch_files: int = Field(500, ge=1, le=100_000, description="files per batch upload")
    api_auth_cache_seconds: float = Field(
        5.0, ge=0, le=300, description="a verified token is trusted this long; 0: every request")

    @field_validator("rotation_schedule")
    @classmethod
    def _cron(cls, value: str) -> str:
        from orchestrator.rotation.schedule import parse_cron

        parse_cron(value)  # raises ValueError with the reason
        return value

    def retention(self) -> dict[str, int]:
        """Days of retention per final state that rotates."""
        return {state: getattr(self, f"retention_days_{state}") or self.retention_days
                for state in ("completed", "failed", "cancelled")}

    @field_validator("dedupe_window", mode="before")
    @classmethod
    def _duration(cls, value: object) -> object:
        return parse_duration(value) if isinstance(value, str) else value

    @field_validator("share_dir", "var_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        folder = value.expanduser().absolute()
        problem = folder_problem(folder)
        if problem:
            raise ValueError(problem)
        return folder

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str | None) -> str | None:
        if value is not None:
            from sqlalchemy.engine import make_url  # the parser that will read it
            from sqlalchemy.exc import ArgumentError

            try:
                make_url(value)
            except (ArgumentError, ValueError) as error:
                raise ValueError(f"not a database URL ({_first_line(error)}); expected e.g. "
                                 "postgresql+psycopg://user:password@host:5432/name") from None
        return value

    @model_validator(mode="after")
    def _weights_in_order(self) -> Settings:
        if self.min_weight > self.max_weight:
            raise ValueError(f"PIPELINE_MIN_WEIGHT ({self.min_weight}) must not exceed "
                             f"PIPELINE_MAX_WEIGHT ({self.max_weight}): no holding could "
                             "satisfy both")
        return self

    @model_validator(mode="after")
    def _soft_below_hard(self) -> Settings:
        try:
            steps = self.steps
        except (ImportError, ValueError, AttributeError) as error:
            raise ValueError(f"PIPELINE_STEP_REGISTRY={self.step_registry}: {error}") from None
        for step in steps.names:
            soft, hard = self.time_limits(step)
            if soft >= hard:
                raise ValueError(f"PIPELINE_{step.upper()}_SOFT_TIME_LIMIT ({soft}) must be "
                                 f"below PIPELINE_{step.upper()}_TIME_LIMIT ({hard})")
        return self

    @property
    def steps(self) -> StepRegistry:
        """The job's steps (PIPELINE_STEP_REGISTRY; default: orchestrator/steps/registry.py)."""
        return _registry(self.step_registry)

    def time_limits(self, step: str) -> tuple[int, int]:
        """(soft, hard) seconds for a step: as declared, unless PIPELINE_<STEP>_* is set."""
        declared = self.steps[step]
        soft, hard = f"{step}_soft_time_limit", f"{step}_time_limit"
        return (getattr(self, soft) if soft in self.model_fields_set else declared.soft_time_limit,
                getattr(self, hard) if hard in self.model_fields_set else declared.time_limit)

    @property
    def longest_step_limit(self) -> int:
        """The longest hard limit of a step."""
        return max(self.time_limits(step)[1] for step in self.steps.names)

    @property
    def longest_time_limit(self) -> int:
        """The longest hard limit of any task that holds its message while it runs (acks late):
        every step's, and a rotation batch's. Redis redelivers a message held longer than its
        visibility timeout, which is derived from this (celery 5935)."""
        return max(self.longest_step_limit, self.rotation_time_limit)

    def lease_seconds(self, step: str) -> int:
        return self.time_limits(step)[1] + self.lease_grace_seconds

    @property
    def broker(self) -> str:
        return self.broker_url or "atomicfs://localhost"

    @property
    def results(self) -> str:
        return self.result_backend or f"atomicfile://{self.var_dir}/results"

    @property
    def database(self) -> str:
        return self.database_url or f"sqlite:///{self.var_dir}/pipeline.db"

    @property
    def embedded_broker(self) -> bool:
        return self.broker.startswith("atomicfs://")

    @property
    def broker_folder(self) -> Path:
        return self.var_dir / "broker"

    def public_dict(self) -> dict[str, object]:
        """Settings as shown to people: the password of every URL masked, secrets hidden."""
        shown = {key: mask_passwords(str(value)) if isinstance(value, str | Path) else value
                 for key, value in self.model_dump().items()}
        for key in SECRET_FIELDS:
            if shown.get(key):
                shown[key] = "***"
        if self.webhook_url:  # a webhook's path is often its secret (Slack, Teams)
            shown["webhook_url"] = re.sub(r"^(https?://[^/]+).*$", r"\1/***", self.webhook_url)
        return shown


SECRET_FIELDS = ("flower_password", "flower_basic_auth", "smtp_password", "security_key_password")


def mask_passwords(text: str) -> str:
    """``scheme://user:secret@host`` -> ``scheme://user:***@host``, for each URL in ``text``
    (kombu accepts several, separated by ``;``); also ``?password=secret`` (libpq, psycopg).

    People paste passwords unencoded: with ``;``, spaces, ``@``, ``/`` or ``#`` in them.
    ``urllib.parse.urlsplit`` ends the authority at the first ``/``, ``?`` or ``#`` and splits
    user from host at the last ``@`` before it, so such a password would be shown in part.
    Masking must fail safe, so the user information of each URL here runs to the last ``@``
    before the next URL; ``urlsplit`` then reads the user name from it.
    """
    return _QUERY_PASSWORD.sub(r"\1***", "".join(
        _mask_one(part) for part in _URL_START.split(text)))


def _mask_one(part: str) -> str:
    """One URL (and what follows it up to the next URL): its password, if any, masked."""
    scheme, sep, rest = part.partition("://")
    if not sep or "@" not in rest:
        return part
    userinfo, _, host = rest.rpartition("@")
    if ":" not in userinfo:
        return part  # a user name alone
    user = urlsplit(f"x://{userinfo.split(':', 1)[0]}@h").username or ""
    return f"{scheme}://{user}:***@{host}"


#: Where a URL starts: a scheme and ``://`` at the start or after ``;``, ``,`` or a space.
_URL_START = re.compile(r"(?:(?<=^)|(?<=[;,\s]))(?=[A-Za-z][A-Za-z0-9+.-]*://)")
_QUERY_PASSWORD = re.compile(r"([?&](?:password|passwd|pass)=)[^&;\s]*", re.IGNORECASE)


def folder_problem(folder: Path) -> str | None:
    """Why ``folder`` cannot serve as a folder we write to (None: it can, or may be made).

    Checked at start, so that a file, a path under /proc or a read-only place is one clear
    line, not a traceback from the first mkdir. A missing folder is fine if its nearest
    existing parent is a writable folder on a real filesystem (not proc or sysfs, which
    report no blocks), since the pipeline creates it. An existing folder is not probed
    further: a share mounted read-only for one user may still serve read commands.
    """
    if folder.exists():
        return None if folder.is_dir() else "is a file, not a folder"
    parent = folder.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        return f"cannot be created: {parent} is a file, not a folder"
    try:
        fs = os.statvfs(parent)
    except OSError as error:
        return f"cannot be created: {parent}: {error.strerror}"
    if fs.f_blocks == 0 or fs.f_flag & os.ST_RDONLY or not os.access(parent, os.W_OK):
        return f"cannot be created: {parent} is read-only or not a real filesystem"
    return None


def _first_line(error: BaseException) -> str:
    return (str(error).splitlines() or [type(error).__name__])[0]


def parse_duration(text: str) -> float | str:
    """``90``, ``90s``, ``30m``, ``12h``, ``7d`` as seconds; anything else is left for the
    field's own validation to refuse with its message."""
    text = text.strip().lower()
    units = {"s": 1, "m": 60, "h": 3600, "d": 86_400}
    number, unit = (text[:-1], text[-1]) if text[-1:] in units else (text, "s")
    try:
        return float(number) * units[unit]
    except ValueError:
        return text


def explain(error: ValidationError) -> str:
    """One line per bad value, naming the environment variable and the reason."""
    lines = []
    for item in error.errors():
        if not item["loc"]:  # a rule across settings: its input is every value, secrets too
            lines.append(item["msg"].removeprefix("Value error, "))
            continue
        field = ".".join(str(p) for p in item["loc"])
        shown = "***" if field in SECRET_FIELDS else mask_passwords(repr(item.get("input")))
        reason = item["msg"].removeprefix("Value error, ")
        lines.append(f"PIPELINE_{field.upper()}={shown}: {reason}")
    return "\n".join(lines)


#: ``PIPELINE_*`` variables that are read, but are not settings: the CLI's token, the API
#: address of the CLI's remote mode, fault points and knobs of the tests and benchmarks.
NOT_SETTINGS = ("PIPELINE_TOKEN", "PIPELINE_API_URL", "PIPELINE_FAULTS",
                "PIPELINE_SQL_STATS_DIR", "PIPELINE_TEST_",
                "PIPELINE_REQUIRE_SERVERS", "PIPELINE_FUZZ_SECONDS", "PIPELINE_MULTIHOST_JOBS")


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """``PIPELINE_*`` names in ``environ`` that no setting reads: most often a typo, or a
    setting documented somewhere it never existed, which pydantic would ignore in silence."""
    known = {f"PIPELINE_{name.upper()}" for name in Settings.model_fields}
    known |= {f"{name}_FILE" for name in known}
    return sorted(key for key in environ if key.startswith("PIPELINE_") and key not in known
                  and not key.startswith(NOT_SETTINGS))


@lru_cache(maxsize=8)
def _registry(path: str) -> StepRegistry:
    return registry.load(path)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, validated once; a bad value raises ConfigError, an unknown
    ``PIPELINE_*`` variable is logged as a warning."""
    try:
        settings = Settings()
    except ValidationError as error:
        reasons = explain(error)
        one = "\n" not in reasons  # one bad value: one line
        raise ConfigError(("bad setting: " if one else "bad settings:\n") + reasons) from None
    for name in unknown_variables(os.environ):
        logging.getLogger(__name__).warning(
            "%s is not a setting and is ignored (every setting: docs/reference.md)", name)
    return settings


def reset_settings() -> None:
    """Forget cached settings (tests that change the environment)."""
    get_settings.cache_clear()
