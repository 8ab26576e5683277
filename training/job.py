"""Train, promote, predict: plain functions, read top to bottom, that the CLI and tests call.

- `train`: lawful slates -> settings and rounds selected on time-ordered folds
  (training/selection.py) -> that selection fit before the test window and every baseline
  scored on the same test slates, with the popularity gate's paired bootstrap
  (training/gate.py) -> the same settings refit on every labelled exposure -> one MLflow run
  (params, metrics, digests, plots, card, both Boosters) -> a new registered version (the
  refit) carrying the alias `challenger`.
- `promote`: a challenger that does not beat popularity on its test slates is refused (the
  first promotion too); otherwise the selection-stage models of challenger and champion are
  scored on the challenger's test window, which neither learned from, and `champion` moves
  only if the challenger is not worse than the champion by more than the tolerance.
- `predict`: point-in-time scores for given (user_id, offer_id, shown_at) rows, policy first.

Models reach this module only through `features.tracking` (the registry).
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd

from features import tracking
from features.backend import connect
from features.contract import MCC, OFFER_ID, SHOWN_AT, USER_ID
from features.sources import open_sources
from features.vector import FEATURE_COLUMNS, OfferArrays
from policy import policy_version
from training import report
from training.baselines import fit_baselines
from training.config import TrainConfig
from training.dataset import (
    KEPT,
    SPLITS,
    TEST,
    TRAIN,
    Split,
    Step,
    TrainingData,
    Windows,
    build_dataset,
    feature_matrix,
    load_inputs,
    policy_reasons,
    read_erasures_if_any,
)
from training.gate import (
    SELECTION_MODEL_ARTIFACT,
    TAG_GATE,
    GateResult,
    gate_refusal,
    judged_booster,
    learned_until,
    popularity_gate,
    recorded_gate,
)
from training.metrics import evaluate
from training.model import LambdaRankModel
from training.selection import Fitted, Selection, development, fit_models

REASON_UNKNOWN_OFFER = "UNKNOWN_OFFER"
TAG_DATA_DIR = "data_dir"
PROMOTION_METRIC = "ndcg_at_10"


def _noop(_: str) -> None:
    return None


# ------------------------------------------------------------------------------- train


@dataclass
class TrainResult:
    run_id: str
    experiment: str
    version: str
    model_uri: str  # models:/offer-ranker/<version>
    metrics: pd.DataFrame  # rows: model and baselines; columns: test metrics
    windows: Windows
    exclusions: dict[str, int]
    best_iteration: int
    booster: lgb.Booster
    gap_closed: float | None
    seconds: dict[str, float] = field(default_factory=dict)
    hygiene: tracking.RegistryHygiene | None = None  # dead runs closed, orphan versions found

    selection: Selection | None = None
    gate: GateResult | None = None
    refit_saw: dict[str, Any] = field(default_factory=dict)


def fit_ranker(data: TrainingData, config: TrainConfig) -> LambdaRankModel:
    """The model `train` registers: settings chosen on folds, refit on everything."""
    return fit_models(data, config).refit


def score_all(
    model: LambdaRankModel, data: TrainingData, config: TrainConfig
) -> dict[str, dict[str, float]]:
    """The model and every baseline on the same test slates, through the same metric code.

    Baselines learn from the same slates as the model: everything before the test window.
    """
    target = data.splits[TEST]
    segments = {"new": target.per_slate(target.new_user)}
    segments["established"] = ~segments["new"]
    scorers = {report.MODEL: lambda s: model.predict(s.X)}
    scorers.update(fit_baselines(development(data), config, target.oracle is not None))
    return {
        name: evaluate(target.y, score(target), target.group, segments, seed=config.seed)
        for name, score in scorers.items()
    }


def train(
    data_dir: str | Path,
    *,
    home: Path,
    erasures_dir: Path | None,
    config: TrainConfig | None = None,
    experiment: str | None = None,
    run_time: datetime | None = None,
    on_step: Step | None = None,
) -> TrainResult:
    step = on_step or _noop
    config = (config or TrainConfig()).with_overrides(experiment=experiment)
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    hygiene = _hygiene(home, config.experiment)

    data = build_dataset(
        data_dir, config, erasures_dir=erasures_dir, run_time=run_time, on_step=step
    )
    seconds["dataset"] = time.perf_counter() - started

    step("selecting settings on time-ordered folds, then refitting on every labelled exposure")
    t = time.perf_counter()
    fitted = fit_models(data, config)
    seconds["fit"] = time.perf_counter() - t

    step("scoring the selection-stage model and the baselines on the test slates")
    t = time.perf_counter()
    results = score_all(fitted.model, data, config)
    gate = popularity_gate(fitted.model, data, config)
    table = report.metrics_frame(results)
    gap = report.gap_closed(table)
    seconds["evaluate"] = time.perf_counter() - t

    step("logging the run and registering the refit model in MLflow")
    t = time.perf_counter()
    run_id, version, uri = _log_and_register(
        data, config, fitted, results, gate, table, home, Path(data_dir)
    )
    seconds["mlflow"] = time.perf_counter() - t
    return TrainResult(
        run_id=run_id,
        experiment=config.experiment,
        version=version,
        model_uri=uri,
        metrics=table,
        windows=data.windows,
        exclusions=data.exclusions,
        best_iteration=fitted.selection.rounds,
        booster=fitted.refit.booster_,
        gap_closed=gap,
        seconds={k: round(v, 2) for k, v in seconds.items()},
        hygiene=hygiene,
        selection=fitted.selection,
        gate=gate,
        refit_saw=fitted.refit_saw,
    )


def _hygiene(home: Path, experiment: str) -> tracking.RegistryHygiene:
    """Before anything new: close runs a killed train left RUNNING, report orphan versions."""
    return tracking.registry_hygiene(home, experiment)  # the CLI prints what it found


def _log_and_register(
    data: TrainingData,
    config: TrainConfig,
    fitted: Fitted,
    results: Mapping[str, Mapping[str, float]],
    gate: GateResult,
    table: pd.DataFrame,
    home: Path,
    data_dir: Path,
) -> tuple[str, str, str]:
    """One MLflow run with everything a reviewer needs; then a new `challenger` version.

    Test metrics are the selection-stage model's (fit before the test window); the registered
    model is the refit, and the run says what it saw.
    """
    sha = git_sha()
    windows = data.windows.as_dict()
    lineage = {
        tracking.TAG_POLICY_VERSION: policy_version(),
        tracking.TAG_SNAPSHOT_ID: data.pairs_id,
        **({tracking.TAG_GIT_SHA: sha} if sha else {}),
        **windows,
    }
    selection, model = fitted.selection, fitted.refit
    params = (
        config.as_params()
        | selection.params()
        | {
            "eval_at_used": ",".join(str(k) for k in model.eval_at),
            "feature_count": str(len(FEATURE_COLUMNS)),
        }
    )
    with tracking.start_run(home, config.experiment, tags=lineage) as run:
        run.log_params(params)
        run.set_tags(
            {
                TAG_DATA_DIR: str(data_dir.resolve()),
                "run_time": data.run_time.isoformat(),
                "has_oracle": str(data.has_oracle).lower(),
                **{f"digest_{k}": v[:16] for k, v in data.source_digests.items()},
                **{f"refit_{k}": str(v) for k, v in fitted.refit_saw.items()},
            }
        )
        run.log_metrics(_run_metrics(data, fitted, results, gate, table))
        run.log_metric_history("iter_selection_ndcg_at_10", selection.curve)
        for split_name in SPLITS:
            split = data.splits[split_name]
            run.log_dataset(
                name=f"offers-{split_name}",
                context="training" if split_name == TRAIN else split_name,
                digest=split.digest(),
                summary=split.summary(),
                source=str(data_dir.resolve()),
            )
        importance = model.feature_importance("gain")
        run.log_figure(report.importance_figure(importance), "feature_importance_gain.png")
        run.log_text(table.to_csv(), "metrics/test_metrics.csv")
        run.log_text(report.markdown_table(table) + "\n", "metrics/test_metrics.md")
        run.log_dict(data.exclusions, "data/exclusions.json")
        run.log_dict({k: v for k, v in data.timings.items()}, "data/timings.json")
        run.log_dict(
            {
                "folds": selection.folds,
                "candidates": selection.candidates,
                "refit": fitted.refit_saw,
            },
            "selection/selection.json",
        )
        run.log_text(fitted.model.booster_.model_to_string(), SELECTION_MODEL_ARTIFACT)
        card = report.model_card(
            run_id=run.run_id,
            experiment=config.experiment,
            windows=windows,
            splits={name: data.splits[name].summary() for name in SPLITS},
            exclusions=data.exclusions,
            metrics=table,
            best_iteration=selection.rounds,
            policy_version=policy_version(),
            pairs_id=data.pairs_id,
            git_sha=sha,
            params=params,
            importance=importance,
        )
        run.log_text(card, "model_card.md")
        logged = run.log_ranker(
            model.booster_, FEATURE_COLUMNS, report.synthetic_input_example(FEATURE_COLUMNS)
        )
        run_id = run.run_id
    version_tags = lineage | {
        f"test_{PROMOTION_METRIC}": f"{results[report.MODEL][PROMOTION_METRIC]:.6f}",
        TAG_GATE: gate.to_tag(),
        "experiment": config.experiment,
    }
    version = tracking.register_version(home, logged, run_id, version_tags)
    return run_id, version, f"models:/{tracking.MODEL_NAME}/{version}"


def _run_metrics(
    data: TrainingData,
    fitted: Fitted,
    results: Mapping[str, Mapping[str, float]],
    gate: GateResult,
    table: pd.DataFrame,
) -> dict[str, float]:
    """Test metrics of the selection-stage model and baselines; selection; gate; the refit."""
    metrics: dict[str, float] = {}
    for name, values in results.items():
        prefix = "" if name == report.MODEL else f"{name}_"
        metrics.update({f"{prefix}test_{k}": v for k, v in values.items()})
    metrics["best_iteration"] = float(fitted.selection.rounds)
    metrics["selection_pooled_ndcg_at_10"] = fitted.selection.score
    metrics["selection_folds"] = float(len(fitted.selection.folds))
    metrics.update(
        {
            "gate_popularity_diff": gate.diff,
            "gate_popularity_low": gate.low,
            "gate_popularity_high": gate.high,
        }
    )
    counts = {k: v for k, v in fitted.refit_saw.items() if isinstance(v, int)}
    metrics.update({f"refit_{k}": float(v) for k, v in counts.items()})
    metrics.update({f"excluded_{k.lower()}": float(v) for k, v in data.exclusions.items()})
    gap = report.gap_closed(table)
    if gap is not None:
        metrics["oracle_gap_closed_ndcg_at_10"] = gap
    return metrics


def git_sha() -> str | None:
    """The commit of the code that trained (None outside a git checkout)."""
    repo = Path(__file__).resolve().parents[1]
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    sha = out.stdout.strip()
    if out.returncode != 0 or not sha:
        return None
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no", "--", "training", "features"],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=5,
    )
    return sha + ("-dirty" if dirty.stdout.strip() else "")


# ------------------------------------------------------------------------------- promote


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
    step = on_step or _noop
    config = config or TrainConfig()
    hygiene = _hygiene(home, config.experiment)
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
    gate = recorded_gate(info["tags"])
    refused = gate_refusal(gate)
    if refused:
        return _decide(home, PromoteResult(False, refused, challenger_v, champion_v, gate=gate))
    if champion_v is None:
        reason = "first version becomes champion: it beats the popularity baseline"
        return _decide(home, PromoteResult(True, reason, challenger_v, None, gate=gate))

    windows = Windows.from_dict(info["run_tags"])
    champion = tracking.version_info(home, champion_v)
    seen_until = learned_until(champion)
    if seen_until > windows.valid_end:
        reason = (
            f"champion v{champion_v} learned from slates up to {seen_until.isoformat()}, "
            f"inside the challenger's test window (from {windows.valid_end.isoformat()}): "
            "no honest comparison; retrain the challenger on data that reaches past it"
        )
        return _decide(home, PromoteResult(False, reason, challenger_v, champion_v, gate=gate))
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
    challenger_score, champion_score = scores[challenger_v], scores[champion_v]
    passed = challenger_score >= champion_score - config.promote_tolerance
    result = PromoteResult(
        promoted=passed,
        reason=(
            f"beats popularity, and {PROMOTION_METRIC} within {config.promote_tolerance:g} of "
            "the champion or better"
            if passed
            else f"challenger {PROMOTION_METRIC} trails the champion by more than {config.promote_tolerance:g}"
        ),
        challenger_version=challenger_v,
        champion_version=champion_v,
        challenger_score=challenger_score,
        champion_score=champion_score,
        tolerance=config.promote_tolerance,
        n_slates=n_slates,
        windows=windows.as_dict(),
        gate=gate,
    )
    return _decide(home, result)


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
        half_life = _run_half_life(home, version, config)
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
        X = _columns_for(test.X, booster.feature_name())
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


def _run_half_life(home: Path, version: str, config: TrainConfig) -> float:
    """A model is scored with the feature half-life it was trained with."""
    params = tracking.version_info(home, version)["run_params"]
    value = params.get("half_life_days")
    return float(value) if value else config.half_life_days


def _columns_for(X: np.ndarray, columns: list[str]) -> np.ndarray:
    """Assembled columns in the order a (possibly older) model expects them."""
    missing = [c for c in columns if c not in FEATURE_COLUMNS]
    if missing:
        raise ValueError(f"the model needs features this code does not build: {missing}")
    if list(columns) == list(FEATURE_COLUMNS):
        return X
    return X[:, [FEATURE_COLUMNS.index(c) for c in columns]]


# ------------------------------------------------------------------------------- predict


@dataclass
class PredictResult:
    out: Path
    model: str  # name/version scored with
    n_rows: int
    n_scored: int
    reasons: dict[str, int]


def read_rows(path: str | Path) -> pd.DataFrame:
    """user_id, offer_id, shown_at rows from Parquet or CSV; naive times mean UTC."""
    path = Path(path)
    frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path, dtype=str)
    missing = {USER_ID, OFFER_ID, SHOWN_AT} - set(frame.columns)
    if missing:
        raise ValueError(f"{path}: missing columns {sorted(missing)}")
    raw = frame[SHOWN_AT]
    textual = not pd.api.types.is_datetime64_any_dtype(raw.dtype)
    shown = pd.to_datetime(raw, utc=True, format="ISO8601" if textual else None)
    if shown.isna().any():
        raise ValueError(f"{path}: {int(shown.isna().sum())} rows without a valid {SHOWN_AT}")
    return pd.DataFrame(
        {
            USER_ID: frame[USER_ID].astype(str).to_numpy(dtype=object),
            OFFER_ID: frame[OFFER_ID].astype(str).to_numpy(dtype=object),
            SHOWN_AT: shown.astype("datetime64[us, UTC]").to_numpy(),
        }
    )


def predict(
    data_dir: str | Path,
    exposures_path: str | Path,
    out_path: str | Path,
    *,
    home: Path,
    erasures_dir: Path | None,
    model: str | None = None,
    run_time: datetime | None = None,
) -> PredictResult:
    """Scores as of each shown_at; rows the policy refuses get no score, only their reason."""
    run_time = run_time or datetime.now(UTC)
    ranker = tracking.load_model_uri(home, model or tracking.model_uri(tracking.CHAMPION))
    inputs = load_inputs(data_dir, with_exposures=False)
    rows = read_rows(exposures_path)
    offers = inputs.offers
    oi = pd.Index(offers[OFFER_ID].astype(str)).get_indexer(rows[OFFER_ID])
    known = oi >= 0
    mcc = np.where(
        known, offers[MCC].astype(str).to_numpy(dtype=object)[np.where(known, oi, 0)], ""
    )
    reasons = policy_reasons(
        rows[USER_ID].to_numpy(dtype=object),
        rows[SHOWN_AT],
        mcc,
        inputs.users,
        inputs.consents,
        read_erasures_if_any(erasures_dir),
        run_time,
    )
    reasons = np.where(known, reasons, REASON_UNKNOWN_OFFER)
    ok = np.flatnonzero(reasons == KEPT)
    scores = np.full(len(rows), np.nan)
    if len(ok):
        config = TrainConfig()
        half_life = _run_half_life(home, ranker.version, config)
        con = connect("duckdb", threads=config.feature_threads)
        sources = open_sources(data_dir, erasures_dir, run_time, con=con)
        X = feature_matrix(
            sources,
            rows[USER_ID].to_numpy(dtype=object)[ok].tolist(),
            rows[SHOWN_AT].iloc[ok],
            OfferArrays.from_frame(offers).take(oi[ok]),
            half_life,
        )
        scores[ok] = ranker.booster.predict(_columns_for(X, ranker.feature_columns), num_threads=1)
    out = rows.assign(score=scores, reason=reasons)
    out["rank"] = (
        out.groupby([USER_ID, SHOWN_AT])["score"]
        .rank(ascending=False, method="first")
        .astype("Int64")
    )
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    if out_path.suffix == ".csv":
        out.to_csv(out_path, index=False)
    else:
        out.to_parquet(out_path, index=False)
    counts = pd.Series(reasons).value_counts()
    return PredictResult(
        out=out_path,
        model=f"{ranker.name}/{ranker.version}",
        n_rows=len(rows),
        n_scored=len(ok),
        reasons={str(k): int(v) for k, v in counts.items()},
    )


def describe(result: TrainResult) -> dict[str, Any]:
    """Plain-data view of a training result (for printing or JSON)."""
    return {
        "run_id": result.run_id,
        "version": result.version,
        "model_uri": result.model_uri,
        "best_iteration": result.best_iteration,
        "windows": result.windows.as_dict(),
        "exclusions": result.exclusions,
        "gap_closed": result.gap_closed,
        "seconds": result.seconds,
    }
