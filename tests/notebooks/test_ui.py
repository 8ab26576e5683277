"""`offers ui` starts a real MLflow server on the stores under OFFERS_HOME."""

from __future__ import annotations

import urllib.request
from pathlib import Path

from servers import free_port, running

from offers.cli import mlflow_ui_command


def test_ui_command_serves_the_sqlite_store(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    port = free_port()
    command, env = mlflow_ui_command(tmp_path, "127.0.0.1", port)
    assert env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    assert f"sqlite:///{tmp_path / 'mlflow.db'}" in command
    with running(command, env, f"http://127.0.0.1:{port}/health", tmp_path / "ui.log"):
        url = f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/search?max_results=5"
        body = urllib.request.urlopen(url, timeout=10).read().decode()
        assert "Default" in body  # the store under OFFERS_HOME answers through the server
