"""Train: lawful slates -> settings chosen on folds -> test scores beside the baselines -> refit
-> one MLflow run and a new registered version with the alias `challenger`.

- settings and rounds are selected on time-ordered folds (training/selection.py);
- that selection, fit before the test window, and every baseline are scored on the same test
  slates, with the popularity gate's paired bootstrap (training/gate.py);
- the same settings refit on every labelled exposure become the registered model, and the run
  says what the refit saw.

Models reach this module only through `features.tracking` (the registry).
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import lightgbm as lgb
import pandas as pd

from features import tracking
from features.vector import FEATURE_COLUMNS
from policy import policy_version
from training import report
from training.baselines import fit_baselines
from training.config import TrainConfig
from training.dataset import build_dataset
from training.gate import SELECTION_MODEL_ARTIFACT, TAG_GATE, GateResult, popularity_gate
from training.metrics import evaluate
from training.model import LambdaRankModel
from training.selection import Fitted, Selection, development, fit_models
from training.splits import SPLITS, TEST, TRAIN, TrainingData, Windows
from training.steps import Step, noop
from training.versions import PROMOTION_METRIC, TAG_DATA_DIR


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


@dataclass
class Evaluation:
    """The selection-stage model and the baselines on the test slates."""

    results: dict[str, dict[str, float]]  # scorer -> metric -> value
    table: pd.DataFrame  # the same as rows (model first) by headline metrics
    gate: GateResult
    gap_closed: float | None


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


def evaluate_selection(fitted: Fitted, data: TrainingData, config: TrainConfig) -> Evaluation:
    """Test metrics, the popularity gate and the oracle gap closed, each computed once."""
    results = score_all(fitted.model, data, config)
    gate = popularity_gate(fitted.model, data, config)
    table = report.metrics_frame(results)
    return Evaluation(results, table, gate, report.gap_closed(table))


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
    step = on_step or noop
    config = (config or TrainConfig()).with_overrides(experiment=experiment)
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    hygiene = tracking.registry_hygiene(home, config.experiment)  # the CLI prints what it found

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
    scored = evaluate_selection(fitted, data, config)
    seconds["evaluate"] = time.perf_counter() - t

    step("logging the run and registering the refit model in MLflow")
    t = time.perf_counter()
    run_id, version, uri = _log_and_register(data, config, fitted, scored, home, Path(data_dir))
    seconds["mlflow"] = time.perf_counter() - t
    return TrainResult(
        run_id=run_id,
        experiment=config.experiment,
        version=version,
        model_uri=uri,
        metrics=scored.table,
        windows=data.windows,
        exclusions=data.exclusions,
        best_iteration=fitted.selection.rounds,
        booster=fitted.refit.booster_,
        gap_closed=scored.gap_closed,
        seconds={k: round(v, 2) for k, v in seconds.items()},
        hygiene=hygiene,
        selection=fitted.selection,
        gate=scored.gate,
        refit_saw=fitted.refit_saw,
    )


# ------------------------------------------------------------------------------- MLflow


def _log_and_register(
    data: TrainingData,
    config: TrainConfig,
    fitted: Fitted,
    scored: Evaluation,
    home: Path,
    data_dir: Path,
) -> tuple[str, str, str]:
    """One MLflow run with everything a reviewer needs; then a new `challenger` version.

    Test metrics are the selection-stage model's (fit before the test window); the registered
    model is the refit, and the run says what it saw.
    """
    sha = git_sha()
    lineage = _lineage(data, sha)
    params = _params(config, fitted)
    with tracking.start_run(home, config.experiment, tags=lineage) as run:
        run.log_params(params)
        run.set_tags(_run_tags(data, fitted, data_dir))
        run.log_metrics(_run_metrics(data, fitted, scored))
        run.log_metric_history("iter_selection_ndcg_at_10", fitted.selection.curve)
        _log_datasets(run, data, data_dir)
        importance = fitted.refit.feature_importance("gain")
        _log_reports(run, data, fitted, scored.table, importance)
        card = report.model_card(
            run_id=run.run_id,
            experiment=config.experiment,
            windows=data.windows.as_dict(),
            splits={name: data.splits[name].summary() for name in SPLITS},
            exclusions=data.exclusions,
            metrics=scored.table,
            gap=scored.gap_closed,
            best_iteration=fitted.selection.rounds,
            policy_version=policy_version(),
            pairs_id=data.pairs_id,
            git_sha=sha,
            params=params,
            importance=importance,
        )
        run.log_text(card, "model_card.md")
        logged = run.log_ranker(
            fitted.refit.booster_,
            FEATURE_COLUMNS,
            report.synthetic_input_example(FEATURE_COLUMNS),
        )
        run_id = run.run_id
    version_tags = lineage | {
        f"test_{PROMOTION_METRIC}": f"{scored.results[report.MODEL][PROMOTION_METRIC]:.6f}",
        TAG_GATE: scored.gate.to_tag(),
        "experiment": config.experiment,
    }
    version = tracking.register_version(home, logged, run_id, version_tags)
    return run_id, version, f"models:/{tracking.MODEL_NAME}/{version}"


def _lineage(data: TrainingData, sha: str | None) -> dict[str, str]:
    """Tags on both the run and the version: policy, feature rows, code, windows."""
    return {
        tracking.TAG_POLICY_VERSION: policy_version(),
        tracking.TAG_SNAPSHOT_ID: data.pairs_id,
        **({tracking.TAG_GIT_SHA: sha} if sha else {}),
        **data.windows.as_dict(),
    }


def _params(config: TrainConfig, fitted: Fitted) -> dict[str, str]:
    """The whole config, the selected settings, and what the refit was given."""
    return (
        config.as_params()
        | fitted.selection.params()
        | {
            "eval_at_used": ",".join(str(k) for k in fitted.refit.eval_at),
            "feature_count": str(len(FEATURE_COLUMNS)),
        }
    )


def _run_tags(data: TrainingData, fitted: Fitted, data_dir: Path) -> dict[str, str]:
    return {
        TAG_DATA_DIR: str(data_dir.resolve()),
        "run_time": data.run_time.isoformat(),
        "has_oracle": str(data.has_oracle).lower(),
        **{f"digest_{k}": v[:16] for k, v in data.source_digests.items()},
        **{f"refit_{k}": str(v) for k, v in fitted.refit_saw.items()},
    }


def _log_datasets(run: tracking.TrackedRun, data: TrainingData, data_dir: Path) -> None:
    """Each split's digest and summary (never its rows)."""
    for split_name in SPLITS:
        split = data.splits[split_name]
        run.log_dataset(
            name=f"offers-{split_name}",
            context="training" if split_name == TRAIN else split_name,
            digest=split.digest(),
            summary=split.summary(),
            source=str(data_dir.resolve()),
        )


def _log_reports(
    run: tracking.TrackedRun,
    data: TrainingData,
    fitted: Fitted,
    table: pd.DataFrame,
    importance: Mapping[str, float],
) -> None:
    """The plot, the metrics tables, exclusions, timings, the selection and its model."""
    run.log_figure(report.importance_figure(importance), "feature_importance_gain.png")
    run.log_text(table.to_csv(), "metrics/test_metrics.csv")
    run.log_text(report.markdown_table(table) + "\n", "metrics/test_metrics.md")
    run.log_dict(data.exclusions, "data/exclusions.json")
    run.log_dict(dict(data.timings), "data/timings.json")
    selection = fitted.selection
    run.log_dict(
        {"folds": selection.folds, "candidates": selection.candidates, "refit": fitted.refit_saw},
        "selection/selection.json",
    )
    run.log_text(fitted.model.booster_.model_to_string(), SELECTION_MODEL_ARTIFACT)


def _run_metrics(data: TrainingData, fitted: Fitted, scored: Evaluation) -> dict[str, float]:
    """Test metrics of the selection-stage model and baselines; selection; gate; the refit."""
    metrics: dict[str, float] = {}
    for name, values in scored.results.items():
        prefix = "" if name == report.MODEL else f"{name}_"
        metrics.update({f"{prefix}test_{k}": v for k, v in values.items()})
    metrics["best_iteration"] = float(fitted.selection.rounds)
    metrics["selection_pooled_ndcg_at_10"] = fitted.selection.score
    metrics["selection_folds"] = float(len(fitted.selection.folds))
    gate = scored.gate
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
    if scored.gap_closed is not None:
        metrics["oracle_gap_closed_ndcg_at_10"] = scored.gap_closed
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
