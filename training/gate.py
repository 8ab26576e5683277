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
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from training.metrics import per_slate

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
    """Resample slates with replacement (the same draw for both scorers): the interval of the
    mean per-slate NDCG@10 difference. Slates without a redemption carry no signal and leave."""
    a = per_slate(y, model, group, ks=(GATE_K,), seed=seed)
    b = per_slate(y, reference, group, ks=(GATE_K,), seed=seed)
    keep = a["n_pos"] > 0
    ma, mb = a[GATE_METRIC][keep], b[GATE_METRIC][keep]
    n = len(ma)
    if n == 0:
        return GateResult(baseline, np.nan, np.nan, np.nan, np.nan, np.nan, 0, samples)
    diff = ma - mb
    rng = np.random.default_rng(seed)
    means = np.empty(samples)
    for start in range(0, samples, 256):  # chunks keep memory flat for 100k slates
        stop = min(samples, start + 256)
        means[start:stop] = diff[rng.integers(0, n, size=(stop - start, n))].mean(axis=1)
    low, high = np.quantile(means, [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
    return GateResult(
        baseline,
        float(ma.mean()),
        float(mb.mean()),
        float(diff.mean()),
        float(low),
        float(high),
        int(n),
        int(samples),
    )
