"""Fixtures of the rotation tests: an isolated installation with its share ready."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from orchestrator.paths import Share


@pytest.fixture
def share(env) -> Iterator[object]:  # type: ignore[no-untyped-def]
    """The ``env`` installation with its share folders made; the CLI's cache forgotten."""
    import cli.main

    Share(env.settings.share_dir).ensure()
    cli.main.orchestrator.cache_clear()
    yield env
    cli.main.orchestrator.cache_clear()
