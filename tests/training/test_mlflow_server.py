"""Against a real `mlflow server` on 127.0.0.1: train, register, alias, load back.

The server is started by the test and always stopped after it, whatever happens.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from servers import free_port, running

from features import tracking
from features.vector import FEATURE_COLUMNS
from offers.cli import mlflow_ui_command
from tests.training.conftest import RUN_TIME
from training.config import TrainConfig
from training.train import train

pytestmark = pytest.mark.slow


@pytest.fixture
def server(tmp_path: Path, mlflow_template: Path) -> Iterator[str]:
    backend = tmp_path / "server.db"
    shutil.copy(mlflow_template, backend)  # already migrated: the server starts faster
    artifacts = tmp_path / "server-artifacts"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command, env = mlflow_ui_command(tmp_path, "127.0.0.1", port)
    command[command.index("--backend-store-uri") + 1] = f"sqlite:///{backend}"
    command[command.index("--artifacts-destination") + 1] = str(artifacts)
    env.pop("MLFLOW_TRACKING_URI", None)
    with running(command, env, f"{url}/health", tmp_path / "server.log"):
        yield url


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
