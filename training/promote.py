"""Promote: move `champion` to the challenger only if it beats popularity and holds up.

A challenger that does not beat popularity on its test slates (recorded at training by the
gate) is refused, the first promotion too; otherwise the selection-stage models of challenger
and champion are scored on the challenger's test window, which neither learned from, and
`champion` moves only if the challenger is not worse than the champion by more than the
tolerance. Every decision is tagged on the challenger version.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from features import tracking
from training.config import TrainConfig
from training.dataset import build_dataset
from training.gate import GateResult, gate_refusal, judged_booster, learned_until, recorded_gate
from training.metrics import evaluate
from training.splits import TEST, Split, Windows
from training.steps import Step, noop
from training.versions import PROMOTION_METRIC, TAG_DATA_DIR, columns_for, run_half_life


@dataclass
class PromoteResult:
    promoted: bool
    reason: str
    challenger_version: str
    champion_version: str | None  # the champion before the decision
    challenger_score: float | None = None
    champion_score: float | None = None
    tolerance: float = 0.0
    n_slates: int = 0
    windows: dict[str, str] | None = None
    hygiene: tracking.RegistryHygiene | None = None
    gate: GateResult | None = None  # the challenger's recorded popularity gate

    def format(self) -> str:
        champion = f"v{self.champion_version}" if self.champion_version else "(none)"
        lines = [f"challenger v{self.challenger_version} vs champion {champion}"]
        if self.gate is not None:
            lines.append(f"  {self.gate.format()}")
        if self.windows:
            lines.append(
                f"test window {self.windows['valid_end']} .. {self.windows['test_end']}"
                f" ({self.n_slates} slates with a redemption; selection-stage models)"
            )
        if self.challenger_score is not None and self.champion_score is not None:
            lines += [
                f"  challenger {PROMOTION_METRIC} = {self.challenger_score:.4f}",
                f"  champion   {PROMOTION_METRIC} = {self.champion_score:.4f}",
                f"  gate: challenger >= champion - {self.tolerance:g}"
                f" = {self.champion_score - self.tolerance:.4f}",
            ]
        lines.append(("PROMOTED: " if self.promoted else "KEPT: ") + self.reason)
        return "\n".join(lines)


def promote(
    *,
    home: Path,
    erasures_dir: Path | None,
    data_dir: str | Path | None = None,
    config: TrainConfig | None = None,
    run_time: datetime | None = None,
    on_step: Step | None = None,
) -> PromoteResult:
    """Move `champion` to the challenger only if it beats popularity (recorded at training, on
    its test slates) and holds up against the champion on a window neither learned from."""
    step = on_step or noop
    config = config or TrainConfig()
    hygiene = tracking.registry_hygiene(home, config.experiment)  # the CLI prints what it found
    result = _promote(home, erasures_dir, data_dir, config, run_time, step)
    return replace(result, hygiene=hygiene)


def _promote(
    home: Path,
    erasures_dir: Path | None,
    data_dir: str | Path | None,
    config: TrainConfig,
    run_time: datetime | None,
    step: Step,
) -> PromoteResult:
    challenger_v = tracking.alias_version(home, tracking.CHALLENGER)
    if challenger_v is None:
        raise LookupError("no model version has the alias 'challenger': run `offers train` first")
    champion_v = tracking.alias_version(home, tracking.CHAMPION)
    if champion_v is not None and champion_v == challenger_v:
        return PromoteResult(
            True, "the challenger already is the champion", challenger_v, champion_v
        )
    info = tracking.version_info(home, challenger_v)
    champion = None if champion_v is None else tracking.version_info(home, champion_v)
    gate = recorded_gate(info["tags"])
    early = _without_scoring(challenger_v, champion_v, info, champion, gate)
    if early is not None:
        return _decide(home, early)
    assert champion_v is not None and champion is not None  # _without_scoring decided otherwise
    windows = Windows.from_dict(info["run_tags"])
    source = Path(data_dir or info["run_tags"].get(TAG_DATA_DIR, ""))
    if not str(source) or not source.exists():
        raise FileNotFoundError(f"data for the test window not found ({source}); pass --data DIR")

    step(f"scoring the selection-stage models of v{challenger_v} and v{champion_v}")
    scores, n_slates = _score_on_window(
        home,
        {challenger_v: info, champion_v: champion},
        source,
        windows,
        config,
        erasures_dir,
        run_time,
    )
    result = _verdict(challenger_v, champion_v, scores, n_slates, windows, config.promote_tolerance)
    return _decide(home, replace(result, gate=gate))


def _without_scoring(
    challenger_v: str,
    champion_v: str | None,
    info: Mapping[str, Any],
    champion: Mapping[str, Any] | None,
    gate: GateResult,
) -> PromoteResult | None:
    """Decisions that need no scoring: a failed gate, a first champion, an unfair comparison."""
    refused = gate_refusal(gate)
    if refused:
        return PromoteResult(False, refused, challenger_v, champion_v, gate=gate)
    if champion_v is None or champion is None:
        reason = "first version becomes champion: it beats the popularity baseline"
        return PromoteResult(True, reason, challenger_v, None, gate=gate)
    windows = Windows.from_dict(info["run_tags"])
    seen_until = learned_until(champion)
    if seen_until > windows.valid_end:
        reason = (
            f"champion v{champion_v} learned from slates up to {seen_until.isoformat()}, "
            f"inside the challenger's test window (from {windows.valid_end.isoformat()}): "
            "no honest comparison; retrain the challenger on data that reaches past it"
        )
        return PromoteResult(False, reason, challenger_v, champion_v, gate=gate)
    return None


def _verdict(
    challenger_v: str,
    champion_v: str,
    scores: Mapping[str, float],
    n_slates: int,
    windows: Windows,
    tolerance: float,
) -> PromoteResult:
    """Promoted when the challenger trails the champion by no more than the tolerance."""
    challenger_score, champion_score = scores[challenger_v], scores[champion_v]
    passed = challenger_score >= champion_score - tolerance
    reason = (
        f"beats popularity, and {PROMOTION_METRIC} within {tolerance:g} of the champion or better"
        if passed
        else f"challenger {PROMOTION_METRIC} trails the champion by more than {tolerance:g}"
    )
    return PromoteResult(
        promoted=passed,
        reason=reason,
        challenger_version=challenger_v,
        champion_version=champion_v,
        challenger_score=challenger_score,
        champion_score=champion_score,
        tolerance=tolerance,
        n_slates=n_slates,
        windows=windows.as_dict(),
    )


def _score_on_window(
    home: Path,
    versions: Mapping[str, Mapping[str, Any]],
    source: Path,
    windows: Windows,
    config: TrainConfig,
    erasures_dir: Path | None,
    run_time: datetime | None,
) -> tuple[dict[str, float], int]:
    """NDCG@10 of each version's judged model on the same test slates, built as of now."""
    scores: dict[str, float] = {}
    n_slates = 0
    tests: dict[float, Split] = {}  # one build per feature half-life the models were trained with
    for version, info in versions.items():
        booster = judged_booster(home, version, info)
        half_life = run_half_life(home, version, config)
        if half_life not in tests:
            tests[half_life] = build_dataset(
                source,
                config.with_overrides(half_life_days=half_life),
                erasures_dir=erasures_dir,
                run_time=run_time,
                windows=windows,
                splits=(TEST,),
            ).splits[TEST]
        test = tests[half_life]
        X = columns_for(test.X, booster.feature_name())
        values = evaluate(test.y, booster.predict(X), test.group, seed=config.seed)
        scores[version] = values[PROMOTION_METRIC]
        n_slates = int(values["n_slates"])
    return scores, n_slates


def _decide(home: Path, result: PromoteResult) -> PromoteResult:
    """Apply the decision to the registry and tag the challenger version with it."""
    if result.promoted:
        tracking.set_alias(home, tracking.CHAMPION, result.challenger_version)
    detail = {
        "decided_at": datetime.now(UTC).isoformat(),
        "champion_before": result.champion_version,
        "challenger_score": result.challenger_score,
        "champion_score": result.champion_score,
        "tolerance": result.tolerance,
        "metric": PROMOTION_METRIC,
        "window": result.windows,
        "reason": result.reason,
        "popularity_gate": None if result.gate is None else json.loads(result.gate.to_tag()),
    }
    tracking.tag_version(
        home,
        result.challenger_version,
        {
            tracking.TAG_PROMOTION: "promoted" if result.promoted else "kept",
            tracking.TAG_PROMOTION_DETAIL: json.dumps(detail),
        },
    )
    return result
