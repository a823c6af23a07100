"""A real ``pipeline api`` (uvicorn) on a free port, tokens of each role, an httpx client."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from orchestrator.access.auth import Role, create_token, set_policy
from orchestrator.settings import get_settings
from tests.conftest import Env, Process
from tests.own_servers import free_port


@dataclass
class Api:
    url: str
    env: Env
    process: Process
    tokens: dict[str, str]

    def client(self, role: str | None = "submitter", **options: Any) -> httpx.Client:
        headers = ({"Authorization": f"Bearer {self.tokens[role]}"}
                   if role and role in self.tokens else {})  # no tokens: auth not in force
        return httpx.Client(base_url=self.url, headers=headers, timeout=60, **options)

    @property
    def staging(self) -> Path:
        return self.env.share / "processing" / ".uploads"

    def staged(self) -> list[Path]:
        """Files left in the upload staging area (there should be none between requests)."""
        return [p for p in self.staging.rglob("*") if p.is_file()] if self.staging.exists() \
            else []


def make_tokens(viewers: str = "open") -> dict[str, str]:
    """A token of each role. Once tokens exist the stored policy decides, not the environment
    (issue 13, item 6): ``viewers="token"`` sets it as an admin would (`pipeline auth set`)."""
    tokens = {role.label: create_token(role, f"test-{role.label}", "tests")[0] for role in Role}
    set_policy(get_settings(), "tests", viewers=viewers)
    return tokens


def start_api(spawn: Callable[..., Process], env: Env, tokens: dict[str, str],
              *extra: str) -> Api:
    port = free_port()
    if "operator" in tokens:
        env.variables["PIPELINE_TOKEN"] = tokens["operator"]  # `pipeline api` is an operator's
    process = spawn([sys.executable, "-m", "cli.main", "api", "--port", str(port), *extra],
                    env, "api")
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(url + "/openapi.json", timeout=5).status_code == 200:
                return Api(url, env, process, tokens)
        except httpx.TransportError:
            pass
        assert process.proc.poll() is None, process.output()
        assert time.monotonic() < deadline, process.output()
        time.sleep(0.1)


@pytest.fixture
def api(env: Env, spawn: Callable[..., Process]) -> Iterator[Api]:
    """The API on the embedded default, with tokens (so auth is in force); no worker."""
    yield start_api(spawn, env, make_tokens())


@pytest.fixture
def api_servers(servers_env: Env, spawn: Callable[..., Process]) -> Iterator[Api]:
    """The API on Redis + PostgreSQL, with tokens; no worker."""
    yield start_api(spawn, servers_env, make_tokens())


def prices(sample: Path, folder: Path, name: str, salt: int = 0) -> Path:
    """The sample price file, its content made unique by ``salt`` (one price nudged), so
    that the share's duplicate rule does not apply across tests' files."""
    lines = sample.read_text().splitlines()
    if salt:
        cells = lines[-1].split(",")
        cells[1] = f"{float(cells[1]) + salt * 1e-6:.9f}"
        lines[-1] = ",".join(cells)
    path = folder / name
    path.write_text("\n".join(lines) + "\n")
    return path
