"""Signed task messages and TLS to the broker, as Celery settings built from ours.

Signing (Celery's ``auth`` serializer): every task and remote-control message is signed with
the sending role's RSA key, and workers accept only messages whose signature verifies against a
certificate in ``PIPELINE_SECURITY_CERT_STORE``. Anyone who reaches the broker but holds no key
(a plain kombu producer, a stolen broker password) cannot make a worker run anything: the
message is refused and logged. Signing covers the body only, not the headers, and does not hide
anything: pair it with TLS to the broker and the broker's own authentication.

Results stay JSON (``result_accept_content``): the pipeline reads only chord results, which
workers write, and the status store is the record of every job.
"""

from __future__ import annotations

import ssl
from typing import Any

from celery import Celery

from orchestrator.access.secretfiles import reveal
from orchestrator.errors import ConfigError
from orchestrator.settings import Settings

DIGEST = "sha256"


def signing_conf(s: Settings) -> dict[str, Any]:
    """Celery settings that make every task message signed, and only signed ones accepted."""
    if not s.signing:
        return {}
    password = reveal(s.security_key_password)
    return {
        "task_serializer": "auth",
        "accept_content": ["auth"],
        "security_key": str(s.security_key),
        "security_certificate": str(s.security_certificate),
        "security_cert_store": str(s.security_cert_store),
        "security_key_password": password.encode() if password else None,
        "security_digest": DIGEST,
    }


def tls_conf(s: Settings) -> dict[str, Any]:
    """Certificate checks for ``rediss://`` and ``amqps://``: always required, with our CA
    bundle when one is set (else the system's) and a client certificate when one is set."""
    conf: dict[str, Any] = {}
    if s.broker.startswith("rediss://"):
        conf["broker_use_ssl"] = redis_ssl_options(s)
    elif s.broker.startswith("amqps://"):
        conf["broker_use_ssl"] = _amqp_ssl(s)
    if s.results.startswith("rediss://"):
        conf["redis_backend_use_ssl"] = redis_ssl_options(s)
    return conf


def redis_ssl_options(s: Settings) -> dict[str, Any]:
    """For kombu, Celery's Redis backend, and ``redis.Redis.from_url(url, **options)``."""
    options: dict[str, Any] = {"ssl_cert_reqs": ssl.CERT_REQUIRED}
    for key, path in (("ssl_ca_certs", s.tls_ca_file), ("ssl_certfile", s.tls_cert_file),
                      ("ssl_keyfile", s.tls_key_file)):
        if path is not None:
            options[key] = str(path)
    return options


def _amqp_ssl(s: Settings) -> dict[str, Any]:
    options: dict[str, Any] = {"cert_reqs": ssl.CERT_REQUIRED}
    for key, path in (("ca_certs", s.tls_ca_file), ("certfile", s.tls_cert_file),
                      ("keyfile", s.tls_key_file)):
        if path is not None:
            options[key] = str(path)
    return options


def enable_signing(app: Celery) -> None:
    """Register the ``auth`` serializer with this process's key and trusted certificates.

    kombu's serializer registry is global to the process: after this, the JSON decoder stays
    enabled only for results and events, which ``accept_content`` does not govern.
    """
    try:
        app.setup_security(allowed_serializers=["json"], digest=DIGEST)
    except Exception as error:  # SecurityError, OSError, ImproperlyConfigured, ValueError
        raise ConfigError(f"message signing cannot start: {error} (check "
                          "PIPELINE_SECURITY_KEY, PIPELINE_SECURITY_CERTIFICATE, "
                          "PIPELINE_SECURITY_CERT_STORE and the key's passphrase)") from None
