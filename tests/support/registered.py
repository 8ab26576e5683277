"""A tiny booster registered as champion in a real MLflow store, in a subprocess.

In a subprocess so that the test process's MLflow settings stay untouched; the real-server
tests (test_http_real_server.py, test_online_real_server.py) serve what it registers.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import lightgbm as lgb

REGISTER = """
import sys
import lightgbm as lgb
import pandas as pd
from features import tracking
from features.vector import FEATURE_COLUMNS
from policy import policy_version

home, model = sys.argv[1], sys.argv[2]
booster = lgb.Booster(model_file=model)
example = pd.DataFrame([[0.0] * len(FEATURE_COLUMNS)], columns=list(FEATURE_COLUMNS))
with tracking.start_run(home, run_name="real-server-test") as run:
    uri = run.log_ranker(booster, FEATURE_COLUMNS, example)
    tags = {tracking.TAG_POLICY_VERSION: policy_version()}
    tracking.register_version(home, uri, run.run_id, tags, alias=tracking.CHAMPION)
"""


def register_champion(booster: lgb.Booster, home: Path, root: Path, env: Mapping[str, str]) -> None:
    """Save `booster` under `root` and register it as the champion of `home`."""
    booster.save_model(str(root / "model.txt"))
    subprocess.run(
        [sys.executable, "-c", REGISTER, str(home), str(root / "model.txt")],
        env=dict(env), cwd=root, check=True, capture_output=True,
    )  # fmt: skip
