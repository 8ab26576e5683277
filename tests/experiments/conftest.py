"""A simulated experiment left by `offers experiment simulate` (models registered in MLflow)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from offers.cli import app

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


@pytest.fixture(scope="session")
def _simulated_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    sim = tmp_path_factory.mktemp("simulated") / "sim"
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.setenv("OFFERS_HOME", str(sim / "unused"))
        result = CliRunner().invoke(
            app, ["experiment", "simulate", "--out", str(sim), "--users", "200",
                  "--seeds", "1", "--weeks", "2"],
        )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "champion_vs_holdout" in result.output and (sim / "coverage.csv").exists()
    return sim


@pytest.fixture
def simulated(_simulated_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private copy (erasure writes to it), OFFERS_HOME pointing at its home."""
    sim = tmp_path / "sim"
    shutil.copytree(_simulated_template, sim)
    monkeypatch.setenv("OFFERS_HOME", str(sim / "home"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return sim
