"""Telling people a job ended: a webhook (JSON POST) and/or an email, from settings.

When a job ends, :func:`job_ended` publishes one ``pipeline.notify`` task per configured
channel to the maintenance queue and returns: the step that ended the job never waits for a
receiver. The task (tasks/monitoring.py) delivers, retries a failed delivery as the task policy
decides (orchestrator/policy/: backoff capped at 5 minutes, up to PIPELINE_NOTIFY_RETRIES
times), and records the outcome in the job's history as a
remark (the job's state is never changed by a notification).
"""

from __future__ import annotations

import json
import logging
import smtplib
import urllib.error
import urllib.request
from email.message import EmailMessage
from typing import Any

from orchestrator.paths import Share
from orchestrator.settings import Settings, get_settings
from orchestrator.store import jobs as store

log = logging.getLogger(__name__)
WEBHOOK, EMAIL = "webhook", "email"
#: HTTP statuses worth another attempt; any other 4xx is a mistake that retrying won't fix.
RETRY_STATUSES = frozenset({408, 425, 429})
#: Publishing the notify task: one quick retry, so a broker hiccup does not hold up the step.
PUBLISH_RETRY = {"max_retries": 1, "interval_start": 0.1, "interval_step": 0.2}


class DeliveryError(Exception):
    """A delivery failed; ``retry`` says whether another attempt may succeed."""

    def __init__(self, message: str, retry: bool = True) -> None:
        super().__init__(message)
        self.retry = retry

    @property
    def retryable(self) -> bool:
        """What the task policy reads: a retryable error is transient."""
        return self.retry


def channels(settings: Settings) -> list[str]:
    out = [WEBHOOK] if settings.webhook_url else []
    if settings.smtp_host and settings.smtp_to:
        out.append(EMAIL)
    return out


def job_ended(job_id: str) -> None:
    """Publish the notifications of a job that just ended. Never raises, never waits long."""
    try:
        wanted = channels(get_settings())
        if not wanted:
            return
        from orchestrator.celery import app

        for channel in wanted:
            app.send_task("pipeline.notify", args=(job_id, channel),
                          retry_policy=PUBLISH_RETRY, ignore_result=True)
    except Exception as error:  # the job has ended whatever happens to its notification
        log.error("job %s: notification not published: %s", job_id, error)


def payload(job: store.Job, settings: Settings) -> dict[str, Any]:
    """The JSON a webhook receives (and an email carries)."""
    folder = Share(settings.share_dir).locate(job.id)
    duration = ((job.finished_at - job.created_at).total_seconds()
                if job.finished_at and job.created_at else None)
    return {
        "event": f"job.{job.state.value}",
        "id": f"{job.id}.{job.state.value}.{job.attempts}",  # the same on a redelivery
        "job_id": job.id, "state": job.state.value, "input_name": job.input_name,
        "batch_id": job.batch_id, "step": job.step, "attempts": job.attempts,
        "created_at": job.created_at.isoformat(),
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
        "duration_seconds": round(duration, 3) if duration is not None else None,
        "folder": str(folder) if folder else None,
        "result": job.result, "error": job.error,
    }


def deliver(channel: str, body: dict[str, Any], settings: Settings) -> str:
    """Send once; the outcome in a few words, or DeliveryError."""
    if channel == WEBHOOK:
        return post_webhook(str(settings.webhook_url), body, settings.webhook_timeout)
    if channel == EMAIL:
        return send_email(body, settings)
    raise DeliveryError(f"unknown channel {channel!r}", retry=False)


def post_webhook(url: str, body: dict[str, Any], timeout: float) -> str:
    request = urllib.request.Request(
        url, data=json.dumps(body, default=str).encode(), method="POST",
        headers={"Content-Type": "application/json", "User-Agent": "pipeline-orchestrator",
                 "X-Pipeline-Event": body["event"], "Idempotency-Key": body["id"]})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return f"HTTP {response.status}"
    except urllib.error.HTTPError as error:
        retry = error.code >= 500 or error.code in RETRY_STATUSES
        raise DeliveryError(f"HTTP {error.code} {error.reason}", retry=retry) from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise DeliveryError(f"{type(error).__name__}: {reason}") from None


def send_email(body: dict[str, Any], settings: Settings) -> str:
    recipients = [r.strip() for r in str(settings.smtp_to).split(",") if r.strip()]
    message = EmailMessage()
    message["From"] = settings.smtp_from
    message["To"] = ", ".join(recipients)
    message["Subject"] = f"[pipeline] job {body['job_id'][:12]} {body['state']}: " \
                         f"{body['input_name']}"
    message.set_content(_email_text(body))
    try:
        with smtplib.SMTP(str(settings.smtp_host), settings.smtp_port,
                          timeout=settings.webhook_timeout) as smtp:
            if settings.smtp_starttls:
                smtp.starttls()
            if settings.smtp_user:
                smtp.login(settings.smtp_user, settings.smtp_password or "")
            refused = smtp.send_message(message)
    except smtplib.SMTPAuthenticationError as error:
        raise DeliveryError(f"SMTP login refused: {error.smtp_code}", retry=False) from None
    except (smtplib.SMTPException, OSError) as error:
        raise DeliveryError(f"{type(error).__name__}: {error}") from None
    return f"mail to {len(recipients) - len(refused)} of {len(recipients)} recipient(s)"


def _email_text(body: dict[str, Any]) -> str:
    lines = [f"Job {body['job_id']} ({body['input_name']}) ended {body['state']}."]
    if body.get("error"):
        lines.append(f"Error in {body['error'].get('step')}: {body['error'].get('message')}")
    if body.get("folder"):
        lines.append(f"Folder: {body['folder']}")
    return "\n".join([*lines, "", json.dumps(body, indent=2, default=str)])

