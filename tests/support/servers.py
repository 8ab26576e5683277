"""Real servers for tests: a free loopback port, a started process, a health wait, a clean stop."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running(
    command: Sequence[str],
    env: Mapping[str, str],
    health_url: str,
    log: Path,
    timeout: float = 120,
) -> Iterator[subprocess.Popen]:
    """Start `command` in its own process group, wait for `health_url` to answer 200, and stop
    the whole group afterwards (servers fork workers), whatever the test did."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            list(command),
            env=dict(env),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait_healthy(health_url, proc, log, timeout)
        yield proc
    finally:
        _stop(proc)
    assert proc.returncode is not None


def _wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{url}: server exited with {proc.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.25)  # not listening yet
    raise AssertionError(f"{url}: not healthy after {timeout} s:\n{log.read_text()}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
