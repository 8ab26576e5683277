"""A real redis-server for tests: loopback, a free port, a temp dir, no persistence, stopped after.

Debian's `redis-server` package (`.ci/run` installs it when missing); tests skip, saying why,
only when the binary is absent.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from servers import free_port

REDIS_SERVER = "redis-server"


@dataclass(frozen=True)
class RedisServer:
    port: int
    proc: subprocess.Popen

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self):
        import redis

        return redis.Redis.from_url(self.url)


def require_redis() -> str:
    binary = shutil.which(REDIS_SERVER)
    if binary is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server; .ci/run does)")
    return binary


@contextmanager
def redis_server(folder: Path) -> Iterator[RedisServer]:
    """Started and answering PING, or the test fails with its log; always stopped."""
    import redis

    binary = require_redis()
    port = free_port()
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / "redis.log"
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder),
            "--save", "", "--appendonly", "no", "--logfile", str(log)]  # fmt: skip
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    server = RedisServer(port, proc)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if server.client().ping():
                    break
            except redis.ConnectionError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    text = log.read_text() if log.exists() else ""
                    raise AssertionError(f"redis-server did not start:\n{text}") from None
                time.sleep(0.05)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
