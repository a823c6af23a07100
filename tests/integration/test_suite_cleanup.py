"""The suite leaves the servers as it found them: a test's Redis keys are gone after it."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.conftest import server_url

pytestmark = pytest.mark.redis
ROOT = Path(__file__).resolve().parents[2]
INNER = '''
import os

import redis


def test_a_worker_leaves_keys(redis_url):
    redis.Redis.from_url(redis_url).set(os.environ["CLEANUP_KEY"], "left by a test")
'''


def test_a_tests_redis_keys_are_gone_when_it_ends(tmp_path):
    import redis

    url = server_url("redis")
    client = redis.Redis.from_url(url)
    key = f"cleanup-check-{uuid.uuid4().hex}"
    # Given a test that uses the test Redis database and leaves a key in it (as workers do)
    (tmp_path / "conftest.py").write_text("from tests.conftest import *  # noqa: F403\n")
    (tmp_path / "test_inner.py").write_text(INNER)
    try:
        # When it runs in its own pytest session
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
             f"--basetemp={tmp_path / 'inner'}", str(tmp_path / "test_inner.py")],
            cwd=tmp_path, capture_output=True, text=True, timeout=120,
            env={**os.environ, "PYTHONPATH": str(ROOT), "CLEANUP_KEY": key,
                 "PIPELINE_TEST_REDIS_URL": url})
        assert done.returncode == 0, done.stdout + done.stderr
        # Then the key is gone: the fixture emptied the database at the end
        assert not client.exists(key)
    finally:
        client.delete(key)
        client.close()
