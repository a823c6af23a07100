"""The one settings object, read from ``PIPELINE_*`` environment variables.

The same object feeds celeryconfig.py, the CLI, the watcher and the workers. Defaults are the
embedded setup: broker, result backend and status database as local files under ``./var``.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from orchestrator.errors import ConfigError

Objective = Literal["min_volatility", "max_sharpe"]
#: The pipeline's steps, in order (kept here so settings need no other module).
STEPS: tuple[str, ...] = ("validate", "optimize", "archive")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PIPELINE_", extra="ignore")

    share_dir: Path = Field(Path("share"), description="root of the drop share")
    var_dir: Path = Field(Path("var"), description="embedded broker, results and database")
    broker_url: str | None = Field(None, description="Celery broker; default: files in var/")
    result_backend: str | None = Field(None, description="Celery results; default: files in var/")
    database_url: str | None = Field(None, description="status store; default: SQLite in var/")

    broker_polling_interval: float = Field(0.02, gt=0, le=5)
    scan_interval: float = Field(1.0, gt=0, le=3600)
    worker_concurrency: int = Field(2, ge=1, le=256)
    prefetch_multiplier: int = Field(1, ge=1, le=128)
    task_events: bool = False
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    portfolio_size: int = Field(20, ge=10, le=100)
    objective: Objective = "min_volatility"
    max_weight: float = Field(0.25, gt=0, le=1)
    min_weight: float = Field(0.01, gt=0, lt=1)
    risk_free_rate: float = Field(0.02, ge=-0.1, le=0.5)

    max_gap_days: int = Field(5, ge=0, le=60, description="longest gap filled forward")
    max_missing_fraction: float = Field(0.10, ge=0, le=1, description="sparser tickers dropped")
    max_input_bytes: int = Field(200_000_000, gt=0)

    validate_soft_time_limit: int = Field(120, gt=0)
    validate_time_limit: int = Field(150, gt=0)
    optimize_soft_time_limit: int = Field(300, gt=0)
    optimize_time_limit: int = Field(360, gt=0)
    archive_soft_time_limit: int = Field(120, gt=0)
    archive_time_limit: int = Field(150, gt=0)
    lease_grace_seconds: int = Field(30, ge=1, description="added to a step's hard limit")
    visibility_timeout: int | None = Field(None, gt=0, description="Redis; default 2×limit+60")
    max_retries: int = Field(3, ge=0, le=20, description="transient step errors")
    outage_retries: int = Field(30, ge=0, le=1000, description="database or broker away")
    requeue_lost_after: int = Field(120, gt=0, description="embedded: queued, message gone")
    recovery_interval: int = Field(60, gt=0, description="seconds between stuck-job checks")
    worker_max_tasks_per_child: int = Field(1000, ge=1)
    worker_max_memory_per_child: int = Field(1_000_000, ge=10_000, description="KiB")
    result_expires_seconds: int = Field(86_400, gt=0)

    @field_validator("share_dir", "var_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().absolute()

    @model_validator(mode="after")
    def _soft_below_hard(self) -> Settings:
        for step in STEPS:
            soft, hard = self.time_limits(step)
            if soft >= hard:
                raise ValueError(f"PIPELINE_{step.upper()}_SOFT_TIME_LIMIT ({soft}) must be "
                                 f"below PIPELINE_{step.upper()}_TIME_LIMIT ({hard})")
        return self

    def time_limits(self, step: str) -> tuple[int, int]:
        """(soft, hard) seconds for a step."""
        return getattr(self, f"{step}_soft_time_limit"), getattr(self, f"{step}_time_limit")

    @property
    def longest_time_limit(self) -> int:
        return max(self.time_limits(step)[1] for step in STEPS)

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
        """Settings as shown to people: the password of every URL masked."""
        return {key: mask_passwords(str(value)) if isinstance(value, str | Path) else value
                for key, value in self.model_dump().items()}


def mask_passwords(text: str) -> str:
    """``scheme://user:secret@host`` -> ``scheme://user:***@host``, for each URL in ``text``
    (kombu accepts several, separated by ``;``)."""
    return _USERINFO.sub(r"\1***@", text)


_USERINFO = re.compile(r"(://[^/@;:\s]*:)[^@;\s]*@")


def explain(error: ValidationError) -> str:
    """One line per bad value, naming the environment variable and the reason."""
    lines = []
    for item in error.errors():
        field = ".".join(str(p) for p in item["loc"]) or "?"
        lines.append(f"PIPELINE_{field.upper()}={item.get('input')!r}: {item['msg']}")
    return "\n".join(lines)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, validated once; a bad value raises ConfigError."""
    try:
        return Settings()
    except ValidationError as error:
        raise ConfigError("bad settings:\n" + explain(error)) from None


def reset_settings() -> None:
    """Forget cached settings (tests that change the environment)."""
    get_settings.cache_clear()
