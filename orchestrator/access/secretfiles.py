"""Secrets read from files (``PIPELINE_*_FILE``), the way containers and systemd pass them.

Docker and Compose mount each secret as a file under ``/run/secrets/``; systemd's
``LoadCredential=`` puts them under ``$CREDENTIALS_DIRECTORY``. A file keeps the secret out of
the environment of every process (``/proc/<pid>/environ``, ``docker inspect``) and out of
shell history. For each name in :data:`SECRET_FILES`, ``PIPELINE_<NAME>_FILE`` names a file
whose content (one trailing newline removed) becomes ``PIPELINE_<NAME>``. Setting both is
refused: which one wins would be a guess.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import SecretStr

#: Settings that may come from a file; the setting ``<name>_file`` names it.
SECRET_FILES = ("broker_url", "result_backend", "database_url", "flower_password",
                "security_key_password")


def check_readable(path: Path | None) -> Path | None:
    """A ``*_FILE`` setting names a readable regular file (checked when settings load)."""
    if path is None:
        return None
    path = path.expanduser().absolute()
    if not path.exists():
        raise ValueError(f"no such file: {path}")
    if not path.is_file():
        raise ValueError(f"not a regular file: {path}")
    try:
        with open(path, "rb"):
            pass
    except OSError as error:
        raise ValueError(f"cannot read {path}: {error.strerror}") from None
    return path


def read_secret(path: Path) -> str:
    """The file's text without the one newline editors and ``echo`` leave at the end."""
    text = path.read_text(encoding="utf-8")
    if text.endswith("\n"):
        text = text[:-2] if text.endswith("\r\n") else text[:-1]
    if not text:
        raise ValueError(f"the secret file {path} is empty")
    return text


def fill_from_files(settings: Any) -> None:
    """Set each secret from its ``*_file`` setting; refuse a secret given both ways."""
    for name in SECRET_FILES:
        path: Path | None = getattr(settings, f"{name}_file")
        if path is None:
            continue
        variable = f"PIPELINE_{name.upper()}"
        if getattr(settings, name) is not None:
            raise ValueError(f"{variable} and {variable}_FILE are both set: set one")
        text = read_secret(path)
        current = type(settings).model_fields[name].annotation
        secret = "SecretStr" in str(current)
        setattr(settings, name, SecretStr(text) if secret else text)


def reveal(value: SecretStr | str | None) -> str | None:
    """The plain text of a secret setting, for the one place that must pass it on."""
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    return value
