"""The rotation's beat entry, from ``PIPELINE_ROTATION_SCHEDULE`` (cron syntax, UTC, or off)."""

from __future__ import annotations

from typing import Any

OFF = ("off", "none", "")


def parse_cron(text: str) -> Any:
    """``minute hour day-of-month month day-of-week`` as a Celery crontab; None for off.

    Raises ValueError naming the problem, so a bad schedule stops the process at start.
    """
    from celery.schedules import crontab

    if text.strip().lower() in OFF:
        return None
    fields = text.split()
    if len(fields) != 5:
        raise ValueError(f"{text!r}: a cron schedule has 5 fields "
                         "(minute hour day-of-month month day-of-week), or use 'off'")
    minute, hour, day_of_month, month, day_of_week = fields
    return crontab(minute=minute, hour=hour, day_of_month=day_of_month, month_of_year=month,
                   day_of_week=day_of_week)


def beat_entries(schedule: str) -> dict[str, Any]:
    """The beat_schedule entry for rotation (empty when switched off)."""
    cron = parse_cron(schedule)
    if cron is None:
        return {}
    return {"rotate-storage": {"task": "pipeline.rotate", "schedule": cron,
                               "kwargs": {"trigger": "beat"}}}
