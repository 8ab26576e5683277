"""What `train` records on a registered version and `promote`/`predict` read back from it.

A version is scored with the feature half-life it was trained with, on the feature columns it
expects, in its own order: an older model keeps working after the feature list grows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from features import tracking
from features.definitions import HALF_LIFE_PARAM
from features.vector import FEATURE_COLUMNS
from training.config import TrainConfig

PROMOTION_METRIC = "ndcg_at_10"
TAG_DATA_DIR = "data_dir"  # the run's data folder, where `promote` finds the test window again


def run_half_life(home: Path, version: str, config: TrainConfig) -> float:
    """A model is scored with the feature half-life it was trained with."""
    params = tracking.version_info(home, version)["run_params"]
    value = params.get(HALF_LIFE_PARAM)
    return float(value) if value else config.half_life_days


def columns_for(X: np.ndarray, columns: list[str]) -> np.ndarray:
    """Assembled columns in the order a (possibly older) model expects them."""
    missing = [c for c in columns if c not in FEATURE_COLUMNS]
    if missing:
        raise ValueError(f"the model needs features this code does not build: {missing}")
    if list(columns) == list(FEATURE_COLUMNS):
        return X
    return X[:, [FEATURE_COLUMNS.index(c) for c in columns]]
