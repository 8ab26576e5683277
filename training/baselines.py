"""Baselines scored on the same test slates as the model, so its numbers mean something.

- random: the floor (seeded);
- popularity: smoothed redemption rate of the offer's merchant in the train window, what a
  ranker without any personal data would do;
- affinity: the user's decayed spend at the offer's merchant, then in its category, the obvious
  hand-written heuristic (read from the assembled matrix by column name);
- logistic: a scikit-learn logistic regression on the same assembled features (NaN imputed);
- oracle: the hidden p_redeem of synthetic data, the ceiling (only when oracle.parquet exists).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.stats import rankdata
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from features import definitions as fd
from features.vector import CATEGORICAL_COLUMNS, FEATURE_COLUMNS
from training.config import TrainConfig
from training.splits import Split

RANDOM, POPULARITY, AFFINITY, LOGISTIC, ORACLE = (
    "random",
    "popularity",
    "affinity",
    "logistic",
    "oracle",
)
UM_DECAYED = f"{fd.USER_MERCHANT_PREFIX}decayed_spend"
UC_DECAYED = f"{fd.USER_MCC_PREFIX}decayed_spend"

Scorer = Callable[[Split], np.ndarray]


def random_scores(seed: int) -> Scorer:
    def score(split: Split) -> np.ndarray:
        return np.random.default_rng(seed).random(split.n_rows)

    return score


def popularity_scores(train: Split, prior: float) -> Scorer:
    """(redemptions + prior * global rate) / (exposures + prior) of the merchant, train window."""
    rate = float(np.mean(train.y)) if train.n_rows else 0.0
    merchants, inverse = np.unique(train.merchant_id, return_inverse=True)
    shown = np.bincount(inverse, minlength=len(merchants)).astype(np.float64)
    redeemed = np.bincount(inverse, weights=train.y, minlength=len(merchants))
    smoothed = dict(zip(merchants, (redeemed + prior * rate) / (shown + prior), strict=True))

    def score(split: Split) -> np.ndarray:
        return np.array([smoothed.get(m, rate) for m in split.merchant_id], dtype=np.float64)

    return score


def affinity_scores(split: Split) -> np.ndarray:
    """Lexicographic: decayed spend at the merchant first, decayed spend in the category second."""
    merchant = np.nan_to_num(split.column(UM_DECAYED), nan=0.0)
    category = np.nan_to_num(split.column(UC_DECAYED), nan=0.0)
    n = len(merchant)
    return rankdata(merchant, method="dense") * (n + 1.0) + rankdata(category, method="dense")


def logistic_scores(train: Split, config: TrainConfig) -> Scorer:
    """Pointwise logistic regression on the same features: the simple learned baseline."""
    categorical = [FEATURE_COLUMNS.index(c) for c in CATEGORICAL_COLUMNS]
    numeric = [i for i in range(len(FEATURE_COLUMNS)) if i not in categorical]
    prep = ColumnTransformer(
        [
            (
                "num",
                Pipeline(
                    [("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())]
                ),
                numeric,
            ),
            ("cat", OneHotEncoder(handle_unknown="ignore", min_frequency=20), categorical),
        ]
    )
    model = Pipeline(
        [
            ("prep", prep),
            (
                "clf",
                LogisticRegression(
                    C=config.logistic_c, max_iter=config.logistic_max_iter, random_state=config.seed
                ),
            ),
        ]
    )
    rows = np.arange(train.n_rows)
    if train.n_rows > config.logistic_max_rows:
        rng = np.random.default_rng(config.seed)
        rows = np.sort(rng.choice(train.n_rows, config.logistic_max_rows, replace=False))
    X, y = np.where(np.isinf(train.X[rows]), np.nan, train.X[rows]), train.y[rows]
    if len(np.unique(y)) < 2:
        return lambda split: np.zeros(split.n_rows)
    model.fit(_signed_log(X, numeric), y.astype(int))

    def score(split: Split) -> np.ndarray:
        X_s = np.where(np.isinf(split.X), np.nan, split.X)
        return model.predict_proba(_signed_log(X_s, numeric))[:, 1]

    return score


def _signed_log(X: np.ndarray, columns: list[int]) -> np.ndarray:
    """Spend and counts are heavy-tailed: compress them so a linear model can use them."""
    out = X.copy()
    out[:, columns] = np.sign(out[:, columns]) * np.log1p(np.abs(out[:, columns]))
    return out


def oracle_scores(split: Split) -> np.ndarray:
    if split.oracle is None:
        raise ValueError("no oracle for this split")
    return split.oracle


def fit_baselines(train: Split, config: TrainConfig, with_oracle: bool) -> dict[str, Scorer]:
    """Every baseline, fitted on the train window only."""
    scorers: dict[str, Scorer] = {
        RANDOM: random_scores(config.seed),
        POPULARITY: popularity_scores(train, config.popularity_prior),
        AFFINITY: affinity_scores,
        LOGISTIC: logistic_scores(train, config),
    }
    if with_oracle:
        scorers[ORACLE] = oracle_scores
    return scorers
