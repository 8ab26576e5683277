"""The promotion gate's numbers: honest ones only.

A registered model is refit on every labelled exposure up to its run's end, so it has seen its
own test window and cannot be judged there. The gate therefore judges the *selection-stage*
model (same settings and rounds, fit only on slates before the test window):

- popularity: at training, the selection-stage model and the popularity baseline score the same
  test slates; a paired bootstrap over slates gives the 95% interval of their NDCG@10
  difference; its lower bound must be above 0. The numbers are tags on the version, so
  `offers promote` (the first promotion too) reads them without refitting anything;
- champion: both versions' selection-stage models (logged as text artifacts) score the
  challenger's test window, which neither learned from as long as the champion's test window
  did not start after the challenger's. Otherwise the comparison is refused, not guessed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd

from features import tracking
from training.baselines import POPULARITY, popularity_scores
from training.config import TrainConfig
from training.metrics import per_slate
from training.model import LambdaRankModel
from training.selection import development
from training.splits import TEST, TrainingData

GATE_METRIC = "ndcg_at_10"
GATE_K = 10
LEVEL = 0.95
TAG_GATE = "gate_popularity"  # JSON of GateResult on the version
SELECTION_MODEL_ARTIFACT = "selection/model.txt"  # the selection-stage Booster, as text


@dataclass(frozen=True)
class GateResult:
    """NDCG@10(model) - NDCG@10(baseline) over the same slates, with a paired 95% interval."""

    baseline: str
    model: float
    reference: float
    diff: float
    low: float
    high: float
    n_slates: int
    samples: int

    @property
    def passed(self) -> bool:
        return bool(self.low > 0)

    def format(self) -> str:
        verdict = "passes" if self.passed else "fails"
        return (
            f"gate vs {self.baseline} ({self.n_slates} test slates, selection-stage model): "
            f"{GATE_METRIC} {self.model:.4f} vs {self.reference:.4f}, difference "
            f"{self.diff:+.4f}, {LEVEL:.0%} paired bootstrap interval "
            f"[{self.low:+.4f}, {self.high:+.4f}]: {verdict} (lower bound must be above 0)"
        )

    def to_tag(self) -> str:
        return json.dumps(asdict(self) | {"passed": self.passed}, sort_keys=True)

    @classmethod
    def from_tag(cls, text: str) -> GateResult:
        values: dict[str, Any] = json.loads(text)
        values.pop("passed", None)
        return cls(**values)


def paired_difference(
    a: np.ndarray, b: np.ndarray, samples: int, seed: int, level: float = LEVEL
) -> tuple[float, float, float]:
    """Mean of a - b over paired units and its percentile bootstrap interval (units resampled
    with replacement, the same draw for both): the one bootstrap of the gate and the benchmarks.

    `a` and `b` hold one value per unit (per-slate NDCG of two scorers on the same slates); a
    unit with a NaN in either leaves. No unit left: NaNs.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired values differ in shape: {a.shape} vs {b.shape}")
    diff = (a - b)[~(np.isnan(a) | np.isnan(b))]
    n = len(diff)
    if n == 0:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = np.empty(samples)
    for start in range(0, samples, 256):  # chunks keep memory flat for 100k slates
        stop = min(samples, start + 256)
        means[start:stop] = diff[rng.integers(0, n, size=(stop - start, n))].mean(axis=1)
    low, high = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(diff.mean()), float(low), float(high)


def paired_bootstrap(
    y: np.ndarray,
    model: np.ndarray,
    reference: np.ndarray,
    group: np.ndarray,
    *,
    baseline: str,
    samples: int,
    seed: int,
) -> GateResult:
    """NDCG@10 per slate of both scorers, then `paired_difference` over the slates. Slates
    without a redemption carry no signal and leave."""
    a = per_slate(y, model, group, ks=(GATE_K,), seed=seed)
    b = per_slate(y, reference, group, ks=(GATE_K,), seed=seed)
    keep = a["n_pos"] > 0
    ma, mb = a[GATE_METRIC][keep], b[GATE_METRIC][keep]
    diff, low, high = paired_difference(ma, mb, samples, seed)
    return GateResult(
        baseline,
        float(ma.mean()) if len(ma) else np.nan,
        float(mb.mean()) if len(mb) else np.nan,
        diff,
        low,
        high,
        int(len(ma)),
        int(samples),
    )


def popularity_gate(model: LambdaRankModel, data: TrainingData, config: TrainConfig) -> GateResult:
    """Paired bootstrap of NDCG@10, the selection-stage model vs popularity, on the test slates."""
    test = data.splits[TEST]
    popularity = popularity_scores(development(data), config.popularity_prior)
    return paired_bootstrap(
        test.y,
        model.predict(test.X),
        popularity(test),
        test.group,
        baseline=POPULARITY,
        samples=config.bootstrap_samples,
        seed=config.seed,
    )


def recorded_gate(version_tags: Mapping[str, str]) -> GateResult | None:
    """The popularity gate recorded on a version at training (None: trained without one)."""
    text = version_tags.get(TAG_GATE)
    return GateResult.from_tag(text) if text else None


def gate_refusal(gate: GateResult | None) -> str | None:
    """Why a challenger may not be served at all (None: it beats popularity)."""
    if gate is None:
        return "no popularity gate recorded on this version (trained before the gate): retrain"
    if not gate.passed:
        return (
            f"does not beat the popularity baseline on its {gate.n_slates} test slates: "
            f"{GATE_METRIC} difference {gate.diff:+.4f}, 95% interval lower bound "
            f"{gate.low:+.4f} is not above 0"
        )
    return None


def learned_until(info: Mapping[str, Any]) -> pd.Timestamp:
    """The last instant a version's judged model learned from: its selection-stage model's
    test-window start, or the train end of a model trained before selection existed."""
    tags = info["run_tags"]
    key = "valid_end" if info["run_params"].get("selected_rounds") else "train_end"
    return pd.Timestamp(tags[key])


def judged_booster(home: Path, version: str, info: Mapping[str, Any]) -> lgb.Booster:
    """A version's selection-stage Booster (never the refit, which saw its test window)."""
    text = tracking.load_run_text(home, info["run_id"], SELECTION_MODEL_ARTIFACT)
    if text is not None:
        return lgb.Booster(model_str=text)
    if info["run_params"].get("selected_rounds"):
        raise LookupError(f"v{version}: its selection-stage model is missing from the run")
    # trained before selection existed: the registered model learned only before train_end
    return tracking.load_model_uri(home, f"models:/{tracking.MODEL_NAME}/{version}").booster
