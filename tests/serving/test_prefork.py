"""`offers serve --workers N`: one load, N forked workers sharing its memory, supervised.

The supervisor itself is first tried on a tiny ASGI app (fast: no model), then a real
`offers serve --workers 2` on the serving world: the workers share the supervisor's heap, and a
worker forked again after an erasure reloads before its first request.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import psutil
import pytest
from registered import register_champion
from servers import free_port, running
from serving_world import NOW, USERS_BY_REASON, World

from serving.prefork import MIN_UPTIME_S

TOKEN = "t-prefork-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
BIN = Path(sys.executable).parent

TINY_SERVER = """
import os, sys, uvicorn
from serving.prefork import serve_forked

async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        message = await receive()
        if os.environ.get("FAIL_AT_START"):
            await send({"type": "lifespan.startup.failed", "message": "told to fail"})
            return
        await send({"type": "lifespan.startup.complete"})
        await receive()
        await send({"type": "lifespan.shutdown.complete"})
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": str(os.getpid()).encode()})

config = uvicorn.Config(app, host="127.0.0.1", port=int(sys.argv[1]), lifespan="on")
serve_forked(config, workers=int(sys.argv[2]))
"""


def _tiny(port: int, workers: int) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(TINY_SERVER), str(port), str(workers)]


def _workers(supervisor: int) -> set[int]:
    """The supervisor's forked workers: children running its own command line (a background
    compile of the forest is a child too, with another one)."""
    parent = psutil.Process(supervisor)
    return {c.pid for c in parent.children() if _command(c) == parent.cmdline()}


def _command(process: psutil.Process) -> list[str]:
    """Its command line; none for a child that exited and is not reaped yet."""
    try:
        return process.cmdline()
    except (psutil.ZombieProcess, psutil.NoSuchProcess):
        return []


def _pids(base: str, path: str = "/", rounds: int = 40, **kw) -> set[int]:
    """Which processes answered, over fresh connections (the kernel spreads them)."""
    seen = set()
    for _ in range(rounds):
        with httpx.Client(base_url=base, timeout=10) as http:
            response = http.get(path, **kw)
            seen.add(int(response.json()["worker"] if path != "/" else response.text))
    return seen


def test_the_supervisor_forks_its_workers_and_stops_them_all(tmp_path: Path) -> None:
    port = free_port()
    with running(_tiny(port, 3), os.environ, f"http://127.0.0.1:{port}/", tmp_path / "log") as p:
        workers = _workers(p.pid)
        assert len(workers) == 3
        assert _pids(f"http://127.0.0.1:{port}", rounds=60) <= workers
        os.kill(p.pid, signal.SIGTERM)
        assert p.wait(timeout=30) == 0
    assert not any(psutil.pid_exists(w) for w in workers)


def test_a_worker_failing_at_start_stops_the_server_instead_of_looping(tmp_path: Path) -> None:
    port = free_port()
    done = subprocess.run(
        _tiny(port, 2), env={**os.environ, "FAIL_AT_START": "1"},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode != 0
    assert "s after it started: not restarting" in done.stderr
    assert "exited with status 3" in done.stderr


# ------------------------------------------------------------------ the real server


@pytest.fixture
def served_world(_world_template: World, tmp_path: Path) -> tuple[Path, Path, dict[str, str]]:
    home, data = tmp_path / "home", tmp_path / "data"
    shutil.copytree(_world_template.home, home)
    shutil.copytree(_world_template.data, data)
    env = {**os.environ, "OFFERS_HOME": str(home), "OMP_WAIT_POLICY": "PASSIVE",
           "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}",
           "OFFERS_API_TOKENS": TOKEN}  # fmt: skip
    register_champion(_world_template.booster, home, tmp_path, env)
    return home, data, env


def _serve(data: Path, port: int) -> list[str]:
    return [str(BIN / "offers"), "serve", "--data", str(data), "--port", str(port),
            "--workers", "2", "--allow-past-now"]  # fmt: skip


def _anon_kb(pid: int) -> tuple[int, int]:
    """(Anonymous, Pss_Anon) in kB: heap pages, and their share after dividing shared ones."""
    fields = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        key, _, rest = line.partition(":")
        fields[key] = rest.split()[0] if rest.split() else ""
    return int(fields["Anonymous"]), int(fields["Pss_Anon"])


def test_two_workers_share_the_heap_the_supervisor_loaded(served_world, tmp_path: Path) -> None:
    _home, data, env = served_world
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with running(_serve(data, port), env, f"{base}/healthz", tmp_path / "serve.log") as proc:
        workers = _workers(proc.pid)
        assert len(workers) == 2
        assert _pids(base, "/readyz", headers=AUTH) == workers
        for worker in workers:
            anonymous, pss_anon = _anon_kb(worker)
            # spawned workers (uvicorn's own --workers) share no heap: Pss_Anon == Anonymous
            assert pss_anon < 0.75 * anonymous, (worker, anonymous, pss_anon)


def test_a_worker_forked_after_an_erasure_reloads_before_its_first_request(
    served_world, tmp_path: Path
) -> None:
    """Metamorphic: the supervisor loaded before the erasure; replaced workers must not serve
    its old state, even with the periodic watcher far away (an hour)."""
    home, data, env = served_world
    env |= {"OFFERS_RELOAD_WATCH_S": "3600"}
    victim = next(u for u, reason in USERS_BY_REASON.items() if reason == "OK")
    body = {"user_id": victim, "purpose": "offer_ranking", "now": NOW}
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with running(_serve(data, port), env, f"{base}/healthz", tmp_path / "serve.log") as proc:
        first = _workers(proc.pid)
        assert httpx.post(f"{base}/v1/rank", json=body, headers=AUTH).status_code == 200
        subprocess.run(
            [str(BIN / "offers"), "erase", "--user", victim, "--data", str(data)],
            env=env, capture_output=True, text=True, timeout=120, check=True,
        )  # fmt: skip
        time.sleep(MIN_UPTIME_S)  # older than this, a dead worker is replaced, not fatal
        for pid in first:
            os.kill(pid, signal.SIGKILL)
        replaced = _wait_for_workers(proc.pid, 2, exclude=first)
        answers = [
            httpx.post(f"{base}/v1/rank", json=body, headers=AUTH, timeout=30) for _ in range(12)
        ]
        assert _pids(base, "/readyz", headers=AUTH) == replaced
    assert {(a.status_code, a.json()["reason_code"]) for a in answers} == {(403, "CONSENT_REVOKED")}
    assert "starting another" in (tmp_path / "serve.log").read_text()


def _wait_for_workers(supervisor: int, n: int, exclude: set[int]) -> set[int]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        pids = _workers(supervisor) - exclude
        if len(pids) == n:
            return pids
        time.sleep(0.2)
    raise AssertionError(f"the supervisor did not replace its workers: {pids}")
