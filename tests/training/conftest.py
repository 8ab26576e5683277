"""Shared worlds for the training tests: one synthetic data set, one empty MLflow database.

Creating an MLflow SQLite store runs its migrations (~10 s), so one migrated template is made
per session and copied into each test's OFFERS_HOME.
"""

from __future__ import annotations

import os
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before LightGBM loads: 2 cores, no spinning

# A fixed "now" for every build: withdrawals and erasures are judged as of this instant.
RUN_TIME = datetime(2026, 6, 1, tzinfo=UTC)
N_USERS = 1000
SEED = 3


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from offers.synth import write_synthetic

    out = tmp_path_factory.mktemp("synth") / "data"
    write_synthetic(out, n_users=N_USERS, seed=SEED)
    return out


@pytest.fixture(scope="session")
def mlflow_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty, migrated MLflow SQLite database to copy."""
    from features import tracking

    home = tmp_path_factory.mktemp("mlflow-template")
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        tracking.client(home).search_experiments()
    return home / "mlflow.db"


@pytest.fixture
def home(tmp_path: Path, mlflow_template: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh OFFERS_HOME with a ready MLflow store; the environment points at it."""
    root = tmp_path / "home"
    root.mkdir()
    shutil.copy(mlflow_template, root / "mlflow.db")
    monkeypatch.setenv("OFFERS_HOME", str(root))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)  # anything written relative to the working directory stays here
    return root


@pytest.fixture(scope="session")
def synth_data(synth_dir: Path):  # -> training.splits.TrainingData
    """The 1k-user training set, built once (tests must not mutate it)."""
    from training.config import TrainConfig
    from training.dataset import build_dataset

    return build_dataset(synth_dir, TrainConfig(), erasures_dir=None, run_time=RUN_TIME)
