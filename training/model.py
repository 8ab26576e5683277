"""LightGBM ranking (LambdaRank, XE-NDCG or pointwise binary) behind the scikit-learn estimator
contract, over the native Booster.

Why not `lightgbm.LGBMRanker`: MLflow 3.17 refuses to log it, and the registry, serving and
batch scoring all want the native Booster anyway. This class keeps the sklearn contract
(hyper-parameters in `__init__`, `fit` returns self, learned state in attributes ending in `_`)
so it composes with sklearn tooling, and exposes `booster_` for MLflow.

Determinism: `deterministic=True`, row-wise histograms and one seed for every random stream,
so the same data and seed give a byte-identical model (`booster_.model_to_string()`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightgbm as lgb
import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

VALIDATION = "validation"


class LambdaRankModel(BaseEstimator):
    """Learning to rank slates; validation NDCG@eval_at[0] drives early stopping when given.

    `objective` is one of training.config.OBJECTIVES; all three are scored by NDCG.
    """

    def __init__(
        self,
        objective: str = "lambdarank",
        n_estimators: int = 1000,
        learning_rate: float = 0.05,
        num_leaves: int = 15,
        min_child_samples: int = 100,
        feature_fraction: float = 0.8,
        bagging_fraction: float = 0.8,
        bagging_freq: int = 1,
        lambda_l2: float = 1.0,
        eval_at: Sequence[int] = (10, 5),
        label_gain: Sequence[float] = (0.0, 1.0),
        truncation_level: int | None = None,
        early_stopping_rounds: int = 100,
        seed: int = 0,
        num_threads: int = 2,
    ) -> None:
        self.objective = objective
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.min_child_samples = min_child_samples
        self.feature_fraction = feature_fraction
        self.bagging_fraction = bagging_fraction
        self.bagging_freq = bagging_freq
        self.lambda_l2 = lambda_l2
        self.eval_at = eval_at
        self.label_gain = label_gain
        self.truncation_level = truncation_level
        self.early_stopping_rounds = early_stopping_rounds
        self.seed = seed
        self.num_threads = num_threads

    def lgb_params(self) -> dict[str, Any]:
        """The native parameters, explicit (no LightGBM default is relied upon silently)."""
        eval_at = list(dict.fromkeys(int(k) for k in self.eval_at))  # stopping k stays first
        return {
            "objective": self.objective,
            "metric": "ndcg",
            "eval_at": eval_at,
            "label_gain": [float(g) for g in self.label_gain],
            "lambdarank_truncation_level": int(self.truncation_level or max(eval_at) + 3),
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "min_data_in_leaf": self.min_child_samples,
            "feature_fraction": self.feature_fraction,
            "bagging_fraction": self.bagging_fraction,
            "bagging_freq": self.bagging_freq,
            "lambda_l2": self.lambda_l2,
            "seed": self.seed,
            "objective_seed": self.seed,
            "deterministic": True,
            "force_row_wise": True,
            "num_threads": self.num_threads,
            "verbosity": -1,
        }

    def fit(
        self,
        X: np.ndarray,
        y: np.ndarray,
        group: np.ndarray,
        eval_set: Sequence[tuple[np.ndarray, np.ndarray]] | None = None,
        eval_group: Sequence[np.ndarray] | None = None,
        feature_name: Sequence[str] | None = None,
        categorical_feature: Sequence[str] | None = None,
        position: np.ndarray | None = None,
    ) -> LambdaRankModel:
        """Train on slates (`group`: sizes in row order); the first eval set drives stopping.

        `position` (logged 1-based positions, optional) lets LightGBM learn and remove
        position bias during training; scoring never needs it.
        """
        X = np.asarray(X, dtype=np.float64)
        self.n_features_in_ = X.shape[1]
        self.feature_names_in_ = np.asarray(
            list(feature_name) if feature_name else [f"f{i}" for i in range(X.shape[1])],
            dtype=object,
        )
        names = [str(n) for n in self.feature_names_in_]
        train, valid_sets, valid_names = _datasets(
            X, y, group, eval_set, eval_group, names, categorical_feature, position
        )
        evals_result: dict[str, dict[str, list[float]]] = {}
        callbacks: list[Any] = [lgb.record_evaluation(evals_result)]
        if valid_sets and self.early_stopping_rounds:
            callbacks.append(
                lgb.early_stopping(
                    self.early_stopping_rounds, first_metric_only=True, verbose=False
                )
            )
        booster = lgb.train(
            self.lgb_params(),
            train,
            num_boost_round=self.n_estimators,
            valid_sets=valid_sets,
            valid_names=valid_names,
            callbacks=callbacks,
        )
        if valid_sets and booster.best_iteration > 0:
            # Keep only the trees that early stopping chose: the logged model is that model.
            booster = lgb.Booster(
                model_str=booster.model_to_string(num_iteration=booster.best_iteration)
            )
        self.booster_ = booster
        self.best_iteration_ = int(booster.current_iteration())
        self.evals_result_ = evals_result
        self.best_score_ = {
            name: {
                metric: float(values[self.best_iteration_ - 1]) for metric, values in res.items()
            }
            for name, res in evals_result.items()
            if self.best_iteration_ > 0
        }
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        check_is_fitted(self, "booster_")
        return self.booster_.predict(np.asarray(X, dtype=np.float64), num_threads=self.num_threads)

    def feature_importance(self, importance_type: str = "gain") -> dict[str, float]:
        check_is_fitted(self, "booster_")
        values = self.booster_.feature_importance(importance_type=importance_type)
        return dict(zip(self.booster_.feature_name(), map(float, values), strict=True))


def _datasets(
    X: np.ndarray,
    y: np.ndarray,
    group: np.ndarray,
    eval_set: Sequence[tuple[np.ndarray, np.ndarray]] | None,
    eval_group: Sequence[np.ndarray] | None,
    names: list[str],
    categorical_feature: Sequence[str] | None,
    position: np.ndarray | None,
) -> tuple[lgb.Dataset, list[lgb.Dataset], list[str]]:
    """The training Dataset and the eval sets binned against it, with their names."""
    categorical = list(categorical_feature or [])
    train = lgb.Dataset(
        X,
        label=np.asarray(y, dtype=np.float64),
        group=np.asarray(group, dtype=np.int64),
        feature_name=names,
        categorical_feature=categorical or "auto",
        position=None if position is None else np.asarray(position, dtype=np.int64) - 1,
        params={"verbosity": -1},
        free_raw_data=False,
    )
    valid_sets, valid_names = [], []
    for i, (Xv, yv) in enumerate(eval_set or []):
        if eval_group is None:
            raise ValueError("eval_group is required with eval_set")
        valid_sets.append(
            lgb.Dataset(
                np.asarray(Xv, dtype=np.float64),
                label=np.asarray(yv, dtype=np.float64),
                group=np.asarray(eval_group[i], dtype=np.int64),
                reference=train,
                feature_name=names,
                categorical_feature=categorical or "auto",
            )
        )
        valid_names.append(VALIDATION if i == 0 else f"{VALIDATION}_{i}")
    return train, valid_sets, valid_names
