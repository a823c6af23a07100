"""``pipeline keys``: key material for a lab setup (signed messages, TLS to the servers)."""

from __future__ import annotations

from pathlib import Path

import click

from orchestrator.access.keys import ROLES, signing_keys, tls_files


@click.group()
def keys() -> None:
    """Make keys and certificates for a lab (production: use your own CA; deploy/README.md)."""


@keys.command()
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
@click.option("--role", "roles", multiple=True, default=ROLES, show_default=True,
              help="One key pair per role; repeat the option.")
@click.option("--days", default=365, show_default=True, type=click.IntRange(1, 3650))
@click.option("--force", is_flag=True, help="Overwrite existing files.")
def create(folder: Path, roles: tuple[str, ...], days: int, force: bool) -> None:
    """Make a signing key and a self-signed certificate per role, and the certificate store.

    Example: pipeline keys create /etc/pipeline/keys
    """
    try:
        pairs = signing_keys(folder, tuple(roles), days, force)
    except FileExistsError as error:
        raise click.ClickException(str(error)) from None
    for role, pair in pairs.items():
        click.echo(f"{role}: {pair.key} (private, mode 0600), {pair.certificate}")
    click.echo(f"certificate store: {folder / 'certs'}\n")
    click.echo("On each host, for the role it runs (e.g. worker):")
    click.echo(f"  PIPELINE_SECURITY_KEY={folder / 'worker.key'}")
    click.echo(f"  PIPELINE_SECURITY_CERTIFICATE={folder / 'worker.crt'}")
    click.echo(f"  PIPELINE_SECURITY_CERT_STORE={folder / 'certs'}")
    click.echo("Copy only that role's key to the host; every host gets the whole store.")


@keys.command()
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
@click.option("--host", "hosts", multiple=True, required=True,
              help="A name or IP address clients use for the server; repeat the option.")
@click.option("--days", default=365, show_default=True, type=click.IntRange(1, 3650))
@click.option("--force", is_flag=True, help="Overwrite existing files.")
def tls(folder: Path, hosts: tuple[str, ...], days: int, force: bool) -> None:
    """Make a lab CA and a server certificate for Redis, RabbitMQ or PostgreSQL.

    Example: pipeline keys tls /etc/pipeline/tls --host redis.lab --host 10.0.0.5
    """
    try:
        paths = tls_files(folder, hosts, days, force)
    except FileExistsError as error:
        raise click.ClickException(str(error)) from None
    for name, path in paths.items():
        click.echo(f"{name}: {path}")
    click.echo(f"\nClients: PIPELINE_TLS_CA_FILE={paths['ca.crt']}")
