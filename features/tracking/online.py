"""Online experiment numbers in MLflow, beside the offline metrics of the versions they served.

Why a run in the training experiment: the analyst compares a version's offline NDCG and its
live redemptions in one table of the MLflow UI. The run holds only aggregates (per-arm counts,
rates, lifts and their intervals), never a user id; each served version also gets tags
`online.<experiment>.<metric>` so the registry page shows them next to its own run's metrics.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from features.tracking.names import EXPERIMENT, TAG_ONLINE_EXPERIMENT
from features.tracking.registry import tag_version, version_info
from features.tracking.runs import start_run


def log_online_report(
    home: str | os.PathLike[str] | None,
    name: str,
    metrics: Mapping[str, float],
    params: Mapping[str, str],
    versions: Mapping[str, str],
) -> str:
    """One run named `online-<name>`: the report's metrics, each served version's offline
    metrics as `offline.<arm>.<metric>`, and tags on those versions; returns the run id."""
    offline: dict[str, float] = {}
    for arm, version in versions.items():
        for metric, value in version_info(home, version)["run_metrics"].items():
            offline[f"offline.{arm}.{metric}"] = value
    tags = {TAG_ONLINE_EXPERIMENT: name}
    with start_run(home, EXPERIMENT, run_name=f"online-{name}", tags=tags) as run:
        run.log_params({**params, **{f"version.{a}": v for a, v in versions.items()}})
        run.log_metrics({**metrics, **offline})
        run_id = run.run_id
    for arm, version in versions.items():
        mine = {k: v for k, v in metrics.items() if k.startswith(f"{arm}.")}
        tag_version(home, version, {f"online.{name}.{k}": f"{v:.6g}" for k, v in mine.items()})
    return run_id
