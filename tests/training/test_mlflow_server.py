"""Against a real `mlflow server` on 127.0.0.1: train, register, alias, load back.

The server is started by the test and always stopped after it, whatever happens.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from features import tracking
from features.vector import FEATURE_COLUMNS
from tests.training.conftest import RUN_TIME
from training.config import TrainConfig
from training.job import train

pytestmark = pytest.mark.slow
MLFLOW = Path(sys.executable).parent / "mlflow"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tmp_path: Path, mlflow_template: Path) -> Iterator[str]:
    backend = tmp_path / "server.db"
    shutil.copy(mlflow_template, backend)  # already migrated: the server starts faster
    artifacts = tmp_path / "server-artifacts"
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "server.log"
    command = [
        str(MLFLOW), "server",
        "--backend-store-uri", f"sqlite:///{backend}",
        "--artifacts-destination", str(artifacts),
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    env.pop("MLFLOW_TRACKING_URI", None)
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"mlflow server exited {proc.returncode}:\n{log.read_text()}")
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass  # not listening yet
            if time.monotonic() > deadline:
                raise AssertionError(f"mlflow server not healthy in 90 s:\n{log.read_text()}")
            time.sleep(0.25)
        yield url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # the server's own workers too
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
    assert proc.returncode is not None


def test_train_and_register_through_a_tracking_server(
    server: str, synth_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("OFFERS_HOME", str(home))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server)
    monkeypatch.chdir(tmp_path)
    assert tracking.tracking_uri(home) == server

    config = TrainConfig(n_estimators=20, early_stopping_rounds=0)
    result = train(
        synth_dir, home=home, erasures_dir=home / "erasures", config=config, run_time=RUN_TIME
    )
    assert result.version == "1"
    assert tracking.alias_version(home, tracking.CHALLENGER) == "1"
    loaded = tracking.load_registered_model(home, tracking.CHALLENGER)
    assert loaded.booster.model_to_string() == result.booster.model_to_string()
    assert loaded.feature_columns == list(FEATURE_COLUMNS)
    with pytest.raises(LookupError, match="champion"):
        tracking.load_registered_model(home, tracking.CHAMPION)

    # the server stored everything: its artifact folder has the model, OFFERS_HOME nothing
    stored = {p.name for p in (tmp_path / "server-artifacts").rglob("*") if p.is_file()}
    assert {"MLmodel", "model.lgb", "model_card.md", "feature_importance_gain.png"} <= stored
    assert not (home / "mlflow.db").exists() and not (home / "mlartifacts").exists()
    run = tracking.client(home).get_run(result.run_id)
    assert run.data.metrics["test_ndcg_at_10"] > run.data.metrics["popularity_test_ndcg_at_10"]
