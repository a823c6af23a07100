"""Lab key material: signing keys per role, and a small CA for TLS to Redis and PostgreSQL.

For a lab or a test only: the certificates are self-signed (signing) or signed by a CA made
on the spot (TLS). In production use certificates from your own CA (deploy/README.md says how);
the pipeline only reads PEM files, wherever they come from.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

ROLES = ("worker", "beat", "watcher", "flower", "cli")
KEY_BITS = 3072


@dataclass(frozen=True)
class Pair:
    key: Path
    certificate: Path


def signing_keys(folder: Path, roles: tuple[str, ...] = ROLES, days: int = 365,
                 force: bool = False) -> dict[str, Pair]:
    """``<role>.key`` and ``<role>.crt`` per role, and ``certs/`` holding every certificate:
    the store that every role's ``PIPELINE_SECURITY_CERT_STORE`` points at."""
    folder.mkdir(parents=True, exist_ok=True)
    store = folder / "certs"
    store.mkdir(exist_ok=True)
    pairs = {role: Pair(folder / f"{role}.key", folder / f"{role}.crt") for role in roles}
    _refuse_overwrite([p for pair in pairs.values() for p in (pair.key, pair.certificate)],
                      force)
    for role, pair in pairs.items():
        key = _new_key()
        name = _name(f"pipeline-{role}")
        cert = _build(name, name, key.public_key(), key, days, ca=False)
        _write_key(pair.key, key)
        _write_cert(pair.certificate, cert)
        _write_cert(store / f"{role}.crt", cert)
    return pairs


def tls_files(folder: Path, hosts: tuple[str, ...], days: int = 365,
              force: bool = False) -> dict[str, Path]:
    """A CA (``ca.crt``, ``ca.key``) and a server certificate for ``hosts`` (names or IP
    addresses) signed by it (``server.crt``, ``server.key``), for redis-server's
    ``--tls-*`` options or PostgreSQL's ``ssl_*`` settings."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {name: folder / name for name in ("ca.crt", "ca.key", "server.crt", "server.key")}
    _refuse_overwrite(list(paths.values()), force)
    ca_key = _new_key()
    ca_name = _name("pipeline lab CA")
    ca = _build(ca_name, ca_name, ca_key.public_key(), ca_key, days, ca=True)
    server_key = _new_key()
    server = _build(_name(hosts[0]), ca_name, server_key.public_key(), ca_key, days, ca=False,
                    hosts=hosts)
    _write_key(paths["ca.key"], ca_key)
    _write_cert(paths["ca.crt"], ca)
    _write_key(paths["server.key"], server_key)
    _write_cert(paths["server.crt"], server)
    return paths


def _refuse_overwrite(paths: list[Path], force: bool) -> None:
    existing = [str(p) for p in paths if p.exists()]
    if existing and not force:
        raise FileExistsError(f"would overwrite {', '.join(existing)} (use --force)")


def _new_key() -> rsa.RSAPrivateKey:
    # Celery's auth serializer takes RSA keys only.
    return rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Pipeline Orchestrator"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _build(subject: x509.Name, issuer: x509.Name, public_key: rsa.RSAPublicKey,
           signer: rsa.RSAPrivateKey, days: int, *, ca: bool,
           hosts: tuple[str, ...] = ()) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
               .public_key(public_key).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(minutes=5))
               .not_valid_after(now + dt.timedelta(days=days))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                          content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, encipher_only=False,
                          decipher_only=False), critical=True)
    if hosts:
        builder = builder.add_extension(x509.SubjectAlternativeName([_alt(h) for h in hosts]),
                                        critical=False)
        builder = builder.add_extension(x509.ExtendedKeyUsage(
            [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    return builder.sign(signer, hashes.SHA256())


def _alt(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _write_key(path: Path, key: rsa.RSAPrivateKey) -> None:
    data = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    # Created 0600 from the start: never world-readable, not even for an instant.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(path, 0o600)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
