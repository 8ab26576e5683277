"""The spark suite's world (imported by conftest.py and the tests): ~1k synthetic users with a
DuckDB reference snapshot, a Spark snapshot published through `offers features build --engine
spark`, and a champion trained and promoted through the MLflow registry, so batch scoring on
Spark serves Spark-built features.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

CUTOFF = pd.Timestamp("2025-10-01", tz="UTC")
N_USERS = 1000
# The tests run many small queries on a cold JVM: C1 alone compiles faster than C2 would gain.
TEST_CONF = {
    "spark.driver.extraJavaOptions": "-Duser.timezone=UTC -XX:TieredStopAtLevel=1",
    "spark.sql.shuffle.partitions": "4",
}


@dataclass(frozen=True)
class SparkWorld:
    root: Path
    home: Path
    data: Path
    duckdb_features: Path  # the reference snapshot, built by DuckDB

    @property
    def spark_features(self) -> Path:
        return self.home / "features"

    @property
    def tracking_uri(self) -> str:
        return f"sqlite:///{self.home / 'mlflow.db'}"


def build_world(root: Path) -> SparkWorld:
    """Data, both snapshots and a promoted champion under `root` (the Spark session runs)."""
    from features.job import build_snapshot
    from offers.cli import features_build
    from offers.synth import write_synthetic
    from training.config import TrainConfig
    from training.promote import promote
    from training.train import train

    home, data = root / "home", root / "data"
    world = SparkWorld(root, home, data, root / "duckdb-features")
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)  # the default store under OFFERS_HOME
        mp.setenv("OFFERS_HOME", str(home))
        mp.chdir(root)  # anything MLflow writes relative to the working directory stays here
        write_synthetic(data, n_users=N_USERS, seed=1)
        erasures = home / "erasures"
        build_snapshot(
            data, world.duckdb_features, as_of=CUTOFF.to_pydatetime(), erasures_dir=erasures
        )
        features_build(
            data=data,
            as_of=CUTOFF.isoformat(),
            half_life_days=30.0,
            engine="spark",
            spark_master="local[2]",
        )
        train(data, home=home, erasures_dir=erasures, config=TrainConfig(n_estimators=40))
        assert promote(home=home, erasures_dir=erasures).promoted
    return world
