"""`offers ui` starts a real MLflow server on the stores under OFFERS_HOME."""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.request
from pathlib import Path

from offers.cli import mlflow_ui_command


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ui_command_serves_the_sqlite_store(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    port = _free_port()
    command, env = mlflow_ui_command(tmp_path, "127.0.0.1", port)
    assert env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    assert f"sqlite:///{tmp_path / 'mlflow.db'}" in command
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline, status = time.monotonic() + 120, None
        while time.monotonic() < deadline and status != 200:
            assert process.poll() is None, process.stderr.read().decode()[-2000:]
            try:
                status = urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).status
            except OSError:
                time.sleep(0.5)
        assert status == 200
        url = f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/search?max_results=5"
        body = urllib.request.urlopen(url, timeout=10).read().decode()
        assert "Default" in body  # the store under OFFERS_HOME answers through the server
    finally:
        process.terminate()
        process.wait(timeout=30)
