"""Settings selection on time-ordered folds: which objective, which tree size, how many rounds.

Why this shape:
- folds are an expanding window over the development slates (everything before the test
  window): fold k learns from the slates before its boundary, with the labels known then, and
  validates on the next block; later data never teaches an earlier fold;
- folds are cut by counts of informative slates, not by days, so every fold validates on about
  the same number of slates; with few slates there are fewer folds (never one under
  `min_fold_slates`, unless there is only one fold to make);
- rounds come from the folds' pooled curve (NDCG@k averaged over all validation slates, every
  round), not from early stopping on one small window, which stops on noise;
- every candidate runs its folds in lockstep, so the pooled curve is known at every round and
  a candidate stops once that curve has not improved for `early_stopping_rounds`.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd

from features.vector import FEATURE_COLUMNS
from training.config import TrainConfig
from training.model import LambdaRankModel
from training.splits import NEVER, TEST, TRAIN, VALID, Split, TrainingData

POSITION_OBJECTIVES = ("lambdarank",)  # the objectives LightGBM can debias by position
# Columns LightGBM splits as categories: none. The offer's MCC (`o_mcc`, a code the logistic
# baseline one-hot encodes) is split as a number: MCC ranges group industries (ISO 18245), its
# codes span 0-9999 (as categories LightGBM warns they are sparse and bins them per value), and
# as a number it ranked better on both benchmarks (README, "Ranking quality").
TREE_CATEGORICAL: tuple[str, ...] = ()


@dataclass(frozen=True)
class Fold:
    """Learn from slates shown before `start_ns`, validate on [start_ns, end_ns)."""

    start_ns: int
    end_ns: int
    train: Split
    valid: Split

    def describe(self) -> dict[str, Any]:
        return {
            "train_end": _iso(self.start_ns),
            "valid_end": _iso(self.end_ns),
            "train_slates": self.train.n_slates,
            "valid_slates": self.valid.n_slates,
        }


@dataclass
class Selection:
    """The chosen settings and rounds, and the pooled score of every candidate."""

    settings: dict[str, Any]  # objective, num_leaves, min_child_samples
    rounds: int
    score: float  # pooled validation NDCG@k at `rounds`
    folds: list[dict[str, Any]]
    candidates: list[dict[str, Any]] = field(default_factory=list)
    curve: list[float] = field(default_factory=list)  # the chosen candidate's pooled curve

    def params(self) -> dict[str, str]:
        return {f"selected_{k}": str(v) for k, v in self.settings.items()} | {
            "selected_rounds": str(self.rounds)
        }


def _iso(ns: int) -> str:
    return "end" if ns == np.iinfo(np.int64).max else pd.Timestamp(ns, tz="UTC").isoformat()


def fold_starts(slate_ns: np.ndarray, n_folds: int, share: float, min_slates: int) -> list[int]:
    """Fold boundaries (instants) over the informative slates' instants.

    The last `share` of the slates, by time, is cut into up to `n_folds` blocks of equal count,
    each of at least `min_slates` (at least one fold). A boundary is an instant, so slates at
    the same instant stay together; a block left empty by that, or one with nothing before it
    to learn from, is dropped.
    """
    t = np.sort(np.asarray(slate_ns, dtype=np.int64))
    n_valid = int(len(t) * share)
    k = max(1, min(n_folds, n_valid // min_slates))
    size = n_valid // k
    if size == 0:
        return []
    starts = sorted({int(t[len(t) - (k - i) * size]) for i in range(k)})
    return [s for s in starts if s > t[0]]


def make_folds(dev: Split, config: TrainConfig) -> list[Fold]:
    """Expanding-window folds over the development slates (labels as known at the dev end)."""
    informative = dev.informative()
    starts = fold_starts(
        informative.slate_shown_ns(), config.n_folds, config.fold_share, config.min_fold_slates
    )
    ends = [*starts[1:], int(np.iinfo(np.int64).max)][: len(starts)]  # no start: no fold
    slate_ns = dev.slate_shown_ns()
    folds = []
    for start, end in zip(starts, ends, strict=True):
        train = dev.known_at(start).take_slates(slate_ns < start).informative()
        valid = dev.take_slates((slate_ns >= start) & (slate_ns < end)).informative()
        if train.n_slates and valid.n_slates:
            folds.append(Fold(start, end, train, valid))
    return folds


def candidates(config: TrainConfig, objective: str | None = None) -> list[dict[str, Any]]:
    """Stage one (no objective given): every objective at the first tree size. Stage two: the
    other tree sizes of the grid for the winning objective. Fixed order; ties go earlier."""
    sizes = list(itertools.product(config.num_leaves, config.min_child_samples))
    if objective is None:
        pairs = [(o, *sizes[0]) for o in config.objectives]
    else:
        pairs = [(objective, n, m) for n, m in sizes[1:]]
    return [
        {"objective": o, "num_leaves": int(n), "min_child_samples": int(m)} for o, n, m in pairs
    ]


def model_for(
    config: TrainConfig, settings: dict[str, Any], rounds: int, max_slate_size: int
) -> LambdaRankModel:
    """The estimator for a config and chosen settings; cut-offs beyond the largest slate go."""
    eval_at = tuple(k for k in config.eval_at if k <= max_slate_size) or (max(1, max_slate_size),)
    return LambdaRankModel(
        **config.model_params(
            settings, n_estimators=rounds, eval_at=eval_at, early_stopping_rounds=0
        )
    )


def _dataset(split: Split, reference: lgb.Dataset | None, position: bool) -> lgb.Dataset:
    return lgb.Dataset(
        split.X,
        label=split.y,
        group=split.group,
        feature_name=list(FEATURE_COLUMNS),
        categorical_feature=list(TREE_CATEGORICAL),
        position=split.position.astype(np.int64) - 1 if position else None,
        reference=reference,
        params={"verbosity": -1},
        free_raw_data=False,
    )


def fold_datasets(folds: Sequence[Fold], position: bool) -> list[tuple[lgb.Dataset, lgb.Dataset]]:
    """Each fold's training and validation Datasets, binned once and shared by candidates."""
    out = []
    for fold in folds:
        train = _dataset(fold.train, None, position)
        out.append((train, _dataset(fold.valid, train, False)))
    return out


def pooled_curve(
    model: LambdaRankModel,
    folds: Sequence[Fold],
    max_rounds: int,
    patience: int,
    datasets: Sequence[tuple[lgb.Dataset, lgb.Dataset]],
) -> np.ndarray:
    """NDCG@k per round averaged over every fold's validation slates (folds in lockstep)."""
    params = model.lgb_params()
    metric = f"ndcg@{params['eval_at'][0]}"
    boosters = []
    for train, valid in datasets:
        booster = lgb.Booster(params=params, train_set=train)
        booster.add_valid(valid, "valid")
        boosters.append(booster)
    weights = np.array([f.valid.n_slates for f in folds], dtype=np.float64)
    weights /= weights.sum()
    curve: list[float] = []
    best_at = 0
    for r in range(max_rounds):
        value = 0.0
        for booster, weight in zip(boosters, weights, strict=True):
            booster.update()
            scores = {name: v for _, name, v, _ in booster.eval_valid()}
            value += weight * scores[metric]
        curve.append(value)
        if value > curve[best_at]:
            best_at = r
        elif patience and r - best_at >= patience:
            break
    return np.asarray(curve)


def select(dev: Split, config: TrainConfig, max_slate_size: int) -> Selection:
    """The candidate and round count with the best pooled validation NDCG@k.

    Two stages keep the search small: the objectives at the first tree size, then the rest of
    the num_leaves x min_child_samples grid for the best objective.
    """
    folds = make_folds(dev, config)
    if not folds:  # one instant, or too few slates: nothing to validate on
        return Selection(candidates(config)[0], config.n_estimators, float("nan"), [])
    debias = config.position_debias
    if debias and any(np.isnan(f.train.position).any() for f in folds):
        raise ValueError("position_debias needs a logged position on every exposure")
    positions = {debias and o in POSITION_OBJECTIVES for o in config.objectives}
    shared = {p: fold_datasets(folds, p) for p in sorted(positions)}
    best: Selection | None = None
    scored: list[dict[str, Any]] = []
    for stage in (None, "second"):
        grid = candidates(config, None if stage is None else best.settings["objective"])
        for settings in grid:
            model = model_for(config, settings, config.n_estimators, max_slate_size)
            datasets = shared[debias and model.objective in POSITION_OBJECTIVES]
            curve = pooled_curve(
                model, folds, config.n_estimators, config.early_stopping_rounds, datasets
            )
            rounds = int(np.argmax(curve)) + 1
            scored.append({**settings, "rounds": rounds, "score": float(curve[rounds - 1])})
            if best is None or curve[rounds - 1] > best.score:
                best = Selection(
                    settings, rounds, float(curve[rounds - 1]), [], curve=curve.tolist()
                )
    assert best is not None
    best.folds = [f.describe() for f in folds]
    best.candidates = scored
    return best


def fit_selected(
    split: Split, config: TrainConfig, selection: Selection, max_slate_size: int
) -> LambdaRankModel:
    """The chosen settings for exactly the chosen rounds on a split's informative slates."""
    data = split.informative()
    if data.n_slates == 0:
        raise ValueError(f"no {split.name} slate has both a redemption and a non-redemption")
    model = model_for(config, selection.settings, selection.rounds, max_slate_size)
    position = config.position_debias and model.objective in POSITION_OBJECTIVES
    if position and np.isnan(data.position).any():
        raise ValueError("position_debias needs a logged position on every exposure")
    return model.fit(
        data.X,
        data.y,
        data.group,
        feature_name=list(FEATURE_COLUMNS),
        categorical_feature=list(TREE_CATEGORICAL),
        position=data.position if position else None,
    )


# ------------------------------------------------------------------------------- the protocol


@dataclass
class Fitted:
    """Selection, the model it yields before the test window, and the refit that is registered."""

    selection: Selection
    model: LambdaRankModel  # fit on the development slates only: judged on the test window
    refit: LambdaRankModel  # fit on every labelled exposure up to the run's end: registered
    refit_saw: dict[str, Any]  # rows, slates and time range the refit learned from


def development(data: TrainingData) -> Split:
    """Every slate before the test window, with the labels known when the test window opens."""
    parts = [data.splits[name] for name in (TRAIN, VALID) if name in data.splits]
    return Split.concat("development", parts).known_at(data.windows.valid_end.value)


def everything(data: TrainingData) -> Split:
    """Every lawful slate up to the run's end, with every redemption the data holds."""
    parts = [data.splits[name] for name in (TRAIN, VALID, TEST) if name in data.splits]
    return Split.concat("all", parts).known_at(NEVER)


def seen(split: Split) -> dict[str, Any]:
    """What a fit learned from: its informative rows and slates and their time range."""
    data = split.informative()
    shown = data.slate_shown_ns()
    return {
        "rows": data.n_rows,
        "slates": data.n_slates,
        "positives": int(data.y.sum()),
        "first_shown": _iso(int(shown.min())) if len(shown) else "",
        "last_shown": _iso(int(shown.max())) if len(shown) else "",
    }


def fit_models(data: TrainingData, config: TrainConfig) -> Fitted:
    """Select on folds, fit the selection-stage model, refit on everything: one process."""
    dev = development(data)
    if dev.informative().n_slates == 0:
        raise ValueError(
            "no slate before the test window has both a redemption and a non-redemption"
        )
    selection = select(dev, config, data.max_slate_size)
    model = fit_selected(dev, config, selection, data.max_slate_size)
    full = everything(data)
    refit = fit_selected(full, config, selection, data.max_slate_size)
    return Fitted(selection, model, refit, seen(full))
