"""Signed task messages and TLS, as configuration: ``pipeline keys``, the Celery settings they
turn on, and Celery's own signing serializer fed with our keys (no broker needed here; the
worker-level story is tests/integration/test_signed_messages.py)."""

from __future__ import annotations

import base64
import ssl
import stat
from pathlib import Path

import pytest
from celery.exceptions import SecurityError
from celery.security.certificate import Certificate, FSCertStore
from celery.security.key import PrivateKey
from celery.security.serialization import SecureSerializer
from click.testing import CliRunner

import celeryconfig
from cli.main import pipeline
from orchestrator.access.security import enable_signing, signing_conf, tls_conf
from orchestrator.errors import ConfigError
from orchestrator.settings import Settings


def make_keys(folder: Path, *roles: str) -> None:
    result = CliRunner().invoke(pipeline, ["keys", "create", str(folder),
                                           *[f"--role={r}" for r in roles]])
    assert result.exit_code == 0, result.output


def serializer(folder: Path, role: str, store: Path | None = None) -> SecureSerializer:
    return SecureSerializer(PrivateKey((folder / f"{role}.key").read_text()),
                            Certificate((folder / f"{role}.crt").read_text()),
                            FSCertStore(str(store or folder / "certs")), "sha256")


def test_keys_create_makes_a_private_key_per_role_and_a_shared_store(tmp_path: Path) -> None:
    # when an operator makes lab keys for three roles
    make_keys(tmp_path, "worker", "watcher", "beat")
    # then each role has a key only its owner can read, and a certificate in the store
    for role in ("worker", "watcher", "beat"):
        assert stat.S_IMODE((tmp_path / f"{role}.key").stat().st_mode) == 0o600
        assert (tmp_path / "certs" / f"{role}.crt").read_bytes() == \
            (tmp_path / f"{role}.crt").read_bytes()
    # and running it again does not overwrite them unless asked
    again = CliRunner().invoke(pipeline, ["keys", "create", str(tmp_path), "--role=worker"])
    assert again.exit_code != 0 and "would overwrite" in again.output


def test_a_message_signed_by_one_role_verifies_for_another(tmp_path: Path) -> None:
    make_keys(tmp_path, "worker", "watcher")
    body = {"job_id": "abc", "step": "validate"}
    signed = serializer(tmp_path, "watcher").serialize(body)
    assert serializer(tmp_path, "worker").deserialize(signed) == body


def test_a_signer_outside_the_store_or_a_changed_body_is_refused(tmp_path: Path) -> None:
    # given the installation's keys and a rogue key pair made elsewhere
    make_keys(tmp_path / "lab", "worker", "watcher")
    make_keys(tmp_path / "rogue", "watcher")
    worker = serializer(tmp_path / "lab", "worker")
    # when the rogue signs a message, then the worker refuses it: unknown certificate
    forged = serializer(tmp_path / "rogue", "watcher", tmp_path / "rogue" / "certs")
    with pytest.raises(SecurityError, match="Unknown certificate"):
        worker.deserialize(forged.serialize({"job_id": "abc"}))
    # and a genuine message whose body was changed on the way is refused. (Celery 5.7's
    # reraise_errors catches the module cryptography.exceptions instead of InvalidSignature,
    # so the reason reads as a TypeError rather than "Bad signature"; refused all the same.)
    genuine = serializer(tmp_path / "lab", "watcher").serialize({"job_id": "abc"})
    tampered = base64.b64encode(base64.b64decode(genuine).replace(b'"abc"', b'"xyz"'))
    with pytest.raises(SecurityError, match="Unable to deserialize"):
        worker.deserialize(tampered)


def test_signing_settings_turn_on_the_auth_serializer_for_tasks_only(tmp_path: Path) -> None:
    make_keys(tmp_path, "worker")
    settings = Settings(var_dir=tmp_path / "var", security_key=tmp_path / "worker.key",
                        security_certificate=tmp_path / "worker.crt",
                        security_cert_store=tmp_path / "certs")
    conf = celeryconfig.build(settings)
    # tasks (and remote control) are signed and only signed ones are accepted
    assert conf["task_serializer"] == "auth" and conf["accept_content"] == ["auth"]
    assert conf["security_key"] == str(tmp_path / "worker.key")
    # results stay JSON: the status store, not results, is the record
    assert conf["result_serializer"] == "json" and conf["result_accept_content"] == ["json"]
    # and without the setting nothing changes
    plain = celeryconfig.build(Settings(var_dir=tmp_path / "var"))
    assert plain["task_serializer"] == "json" and "security_key" not in plain


def test_a_key_that_does_not_load_stops_the_start_with_a_clear_message(tmp_path: Path) -> None:
    from celery import Celery

    make_keys(tmp_path, "worker")
    (tmp_path / "bad.key").write_text("not a key")
    settings = Settings(var_dir=tmp_path / "var", security_key=tmp_path / "bad.key",
                        security_certificate=tmp_path / "worker.crt",
                        security_cert_store=tmp_path / "certs")
    app = Celery("t", set_as_current=False)
    app.config_from_object(celeryconfig.build(settings))
    with pytest.raises(ConfigError, match="message signing cannot start"):
        enable_signing(app)


def test_tls_urls_get_certificate_checks_always_required(tmp_path: Path) -> None:
    ca = tmp_path / "ca.crt"
    ca.write_text("x")
    settings = Settings(var_dir=tmp_path, broker_url="rediss://h:6380/0",
                        result_backend="rediss://h:6380/1", tls_ca_file=ca)
    conf = tls_conf(settings)
    assert conf["broker_use_ssl"] == {"ssl_cert_reqs": ssl.CERT_REQUIRED,
                                      "ssl_ca_certs": str(ca)}
    assert conf["redis_backend_use_ssl"]["ssl_cert_reqs"] == ssl.CERT_REQUIRED
    amqps = tls_conf(Settings(var_dir=tmp_path, broker_url="amqps://u@h//"))
    assert amqps["broker_use_ssl"] == {"cert_reqs": ssl.CERT_REQUIRED}
    assert tls_conf(Settings(var_dir=tmp_path, broker_url="redis://h/0")) == {}
    assert signing_conf(Settings(var_dir=tmp_path)) == {}


def test_keys_tls_makes_a_ca_and_a_server_certificate_for_the_names_given(tmp_path: Path,
                                                                         ) -> None:
    from cryptography import x509

    result = CliRunner().invoke(pipeline, ["keys", "tls", str(tmp_path), "--host", "redis.lab",
                                           "--host", "10.0.0.5"])
    assert result.exit_code == 0, result.output
    server = x509.load_pem_x509_certificate((tmp_path / "server.crt").read_bytes())
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["redis.lab"]
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["10.0.0.5"]
    ca = x509.load_pem_x509_certificate((tmp_path / "ca.crt").read_bytes())
    server.verify_directly_issued_by(ca)
    assert stat.S_IMODE((tmp_path / "server.key").stat().st_mode) == 0o600
    assert f"PIPELINE_TLS_CA_FILE={tmp_path / 'ca.crt'}" in result.output
