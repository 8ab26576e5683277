"""Every training knob in one dataclass, so a run's params are the whole story of how it was made.

Load from JSON or TOML (`TrainConfig.from_file`); unknown keys are an error, never ignored, so a
typo cannot silently fall back to a default.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from features.definitions import DEFAULT_HALF_LIFE_DAYS

DEFAULT_EXPERIMENT = "offer-ranking"
OBJECTIVES = ("lambdarank", "rank_xendcg", "binary")
GRID_FIELDS = ("objectives", "num_leaves", "min_child_samples")
# LightGBM settings handed from the config to training.model.LambdaRankModel as they are; the
# grid's point (objective, num_leaves, min_child_samples), the rounds and the cut-offs in use
# come from the selection (training/selection.py `model_for`).
MODEL_FIELDS = (
    "learning_rate",
    "feature_fraction",
    "bagging_fraction",
    "bagging_freq",
    "lambda_l2",
    "label_gain",
    "truncation_level",
    "seed",
    "num_threads",
)


@dataclass(frozen=True)
class TrainConfig:
    # --- data windows (by shown_at; counted back from the last kept exposure) ---
    test_days: int = 56  # length of the test window, ending just after the last exposure
    valid_days: int = 56  # length of the validation window, right before the test window
    train_days: int | None = None  # length of the train window; None: everything before validation
    train_end: str | None = None  # explicit ISO instant ending the train window (overrides days)
    valid_end: str | None = None  # explicit ISO instant ending the validation window
    test_end: str | None = None  # explicit ISO instant ending the test window (exclusive)
    censor_validation: bool = True  # validation labels after the validation end count as unknown
    new_user_days: int = 30  # users with less history than this at shown_at form the "new" segment
    half_life_days: float = (
        DEFAULT_HALF_LIFE_DAYS  # half-life of the decayed-spend features (feature engine)
    )
    feature_threads: int = 1  # DuckDB threads; 1 sums floats in one order: same data, same bytes

    # --- LightGBM; the settings grid is searched on time-ordered folds (training/selection.py) ---
    n_estimators: int = (
        1000  # maximum boosting rounds a fold may run (the pooled curve stops sooner)
    )
    learning_rate: float = 0.05  # shrinkage per round
    objectives: tuple[str, ...] = OBJECTIVES  # grid: LightGBM objectives tried
    num_leaves: tuple[int, ...] = (15, 31)  # grid: leaves per tree (an int is a grid of one)
    min_child_samples: tuple[int, ...] = (100,)  # grid: minimum rows in a leaf
    n_folds: int = 3  # expanding-window validation folds before the test window
    fold_share: float = 0.45  # share of the development slates the folds validate on, together
    min_fold_slates: int = 200  # fewer folds when a fold would validate on fewer slates than this
    feature_fraction: float = 0.8  # share of features sampled per tree
    bagging_fraction: float = 0.8  # share of rows sampled per bagging round
    bagging_freq: int = 1  # bag every this many rounds (0: no bagging)
    lambda_l2: float = 1.0  # L2 regularisation of leaf values
    eval_at: tuple[int, ...] = (10, 5)  # NDCG cut-offs; the first one drives selection
    label_gain: tuple[float, ...] = (0.0, 1.0)  # gain per label value (binary: redeemed or not)
    truncation_level: int | None = None  # lambdarank_truncation_level; None: max(eval_at) + 3
    early_stopping_rounds: int = 100  # stop once the folds' pooled NDCG@k stalls this long
    position_debias: bool = False  # learn position bias from logged positions (LightGBM >= 4.1)
    seed: int = 0  # one seed for LightGBM, baselines and tie-breaking: same seed, same model
    num_threads: int = 2  # LightGBM threads (this machine has 2 cores)

    # --- baselines ---
    popularity_prior: float = 20.0  # pseudo-exposures at the global rate smoothing each merchant
    logistic_c: float = 1.0  # inverse regularisation of the logistic-regression baseline
    logistic_max_iter: int = 300  # iterations of the logistic-regression solver
    logistic_max_rows: int = 300_000  # fit the logistic baseline on a seeded sample this large

    # --- promotion gate and tracking ---
    promote_tolerance: float = 0.005  # challenger may trail the champion's NDCG@10 by this much
    bootstrap_samples: int = 2000  # paired bootstrap resamples over test slates (gate interval)
    experiment: str = DEFAULT_EXPERIMENT  # MLflow experiment name

    def __post_init__(self) -> None:
        for name in GRID_FIELDS:  # a single value is a grid of one
            value = getattr(self, name)
            grid = (value,) if isinstance(value, str | int) else tuple(value)
            if not grid:
                raise ValueError(f"{name} must name at least one value")
            object.__setattr__(self, name, grid)
        unknown = sorted(set(self.objectives) - set(OBJECTIVES))
        if unknown:
            raise ValueError(f"objectives {unknown} unknown; choose among {list(OBJECTIVES)}")
        if self.n_folds < 1 or self.min_fold_slates < 1 or not 0 < self.fold_share < 1:
            raise ValueError("n_folds and min_fold_slates must be >= 1 and fold_share in (0, 1)")
        if any(k < 1 for k in self.eval_at) or not self.eval_at:
            raise ValueError(f"eval_at must be positive cut-offs, got {self.eval_at}")
        if min(self.test_days, self.valid_days) < 1:
            raise ValueError("test_days and valid_days must be at least 1")
        if self.train_days is not None and self.train_days < 1:
            raise ValueError("train_days must be at least 1 (or None)")

    @property
    def stopping_k(self) -> int:
        return self.eval_at[0]

    @property
    def resolved_truncation_level(self) -> int:
        return self.truncation_level or max(self.eval_at) + 3

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown config keys {unknown}; known: {sorted(known)}")
        listed = ("eval_at", "label_gain", *GRID_FIELDS)
        tuples = {k: tuple(v) for k, v in values.items() if k in listed and isinstance(v, list)}
        return cls(**{**values, **tuples})

    @classmethod
    def from_file(cls, path: str | Path) -> TrainConfig:
        """JSON (.json) or TOML (.toml); a TOML file may keep the keys under [train]."""
        path = Path(path)
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".toml":
            values = tomllib.loads(text)
            values = values.get("train", values)
        elif path.suffix == ".json":
            values = json.loads(text)
        else:
            raise ValueError(f"{path}: config must be .json or .toml")
        return cls.from_dict(values)

    def with_overrides(self, **changes: Any) -> TrainConfig:
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def model_params(
        self, settings: Mapping[str, Any] | None = None, **chosen: Any
    ) -> dict[str, Any]:
        """Keyword arguments of `LambdaRankModel`: the config's settings, then the chosen ones."""
        return {name: getattr(self, name) for name in MODEL_FIELDS} | dict(settings or {}) | chosen

    def as_params(self) -> dict[str, str]:
        """Flat strings for MLflow params, with the derived values resolved."""
        params = {k: _param(v) for k, v in asdict(self).items()}
        params["truncation_level"] = str(self.resolved_truncation_level)
        return params


def _param(value: Any) -> str:
    if isinstance(value, tuple | list):
        return ",".join(str(v) for v in value)
    return "" if value is None else str(value)
