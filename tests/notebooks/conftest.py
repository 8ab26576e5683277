"""The analyst's world: two training runs, a promotion and a published snapshot."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

RUN_TIME = datetime(2026, 6, 1, tzinfo=UTC)
SNAPSHOT_AS_OF = datetime(2025, 12, 1, tzinfo=UTC)


@pytest.fixture(scope="session")
def analyst_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two training runs, a promotion and a published snapshot on 600 synthetic users."""
    from features.job import build_snapshot
    from offers.synth import write_synthetic
    from training.config import TrainConfig
    from training.promote import promote
    from training.train import train

    root = tmp_path_factory.mktemp("analyst")
    home, data = root / "home", root / "data"
    write_synthetic(data, n_users=600, seed=11)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OFFERS_HOME", str(home))
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        build_snapshot(
            data, home / "features", as_of=SNAPSHOT_AS_OF, erasures_dir=home / "erasures"
        )
        for config in (TrainConfig(n_estimators=60), TrainConfig(n_estimators=60, num_leaves=7)):
            train(data, home=home, erasures_dir=home / "erasures", config=config, run_time=RUN_TIME)
            promote(home=home, erasures_dir=home / "erasures", data_dir=data, run_time=RUN_TIME)
    return home
