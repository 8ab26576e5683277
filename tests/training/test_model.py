"""The LambdaRank estimator keeps the scikit-learn contract and is deterministic."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from training.model import LambdaRankModel


def _slates(seed: int, n_slates: int = 300, size: int = 10, noise: float = 1.0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n_slates * size, 4))
    utility = 1.5 * X[:, 0] - X[:, 1] + noise * rng.normal(size=len(X))
    y = np.zeros(len(X))
    for s in range(n_slates):  # the best item of each slate redeems
        rows = slice(s * size, (s + 1) * size)
        y[rows][np.argmax(utility[rows])] = 1.0
    return X, y, np.full(n_slates, size)


def test_sklearn_contract() -> None:
    model = LambdaRankModel(n_estimators=20, num_leaves=7, seed=3)
    assert clone(model).get_params() == model.get_params()
    assert model.set_params(learning_rate=0.1) is model and model.learning_rate == 0.1
    with pytest.raises(NotFittedError):
        model.predict(np.zeros((2, 4)))
    X, y, g = _slates(0)
    assert model.fit(X, y, g) is model
    assert model.booster_.current_iteration() == model.best_iteration_ == 20
    assert model.n_features_in_ == 4 and list(model.feature_names_in_) == ["f0", "f1", "f2", "f3"]
    assert model.predict(X).shape == (len(X),)


def test_params_are_explicit() -> None:
    params = LambdaRankModel(eval_at=(10, 5), label_gain=(0, 1)).lgb_params()
    assert params["objective"] == "lambdarank"
    assert params["eval_at"] == [10, 5]  # the stopping metric first
    assert params["label_gain"] == [0.0, 1.0]
    assert params["lambdarank_truncation_level"] == 13
    assert params["deterministic"] is True and params["seed"] == 0


def test_learns_and_early_stops_on_validation_ndcg() -> None:
    X, y, g = _slates(1)
    Xv, yv, gv = _slates(2, n_slates=150)
    model = LambdaRankModel(
        n_estimators=400, num_leaves=7, min_child_samples=20, early_stopping_rounds=20
    )
    model.fit(X, y, g, eval_set=[(Xv, yv)], eval_group=[gv], feature_name=["a", "b", "c", "d"])
    history = model.evals_result_["validation"]["ndcg@10"]
    assert model.best_iteration_ < len(history) <= 400  # it stopped early
    assert model.booster_.current_iteration() == model.best_iteration_  # best trees only
    assert model.best_score_["validation"]["ndcg@10"] == max(history)
    assert max(history) > 0.8
    gain = model.feature_importance("gain")
    assert gain["a"] > gain["c"] and gain["b"] > gain["d"]


def test_same_seed_same_model_different_seed_different_model() -> None:
    X, y, g = _slates(4)
    kwargs = dict(n_estimators=30, num_leaves=7, feature_fraction=0.5, bagging_fraction=0.7)
    a = LambdaRankModel(seed=1, **kwargs).fit(X, y, g).booster_.model_to_string()
    b = LambdaRankModel(seed=1, **kwargs).fit(X, y, g).booster_.model_to_string()
    c = LambdaRankModel(seed=2, **kwargs).fit(X, y, g).booster_.model_to_string()
    assert a == b and a != c


def test_position_debias_is_accepted() -> None:
    X, y, g = _slates(5)
    position = np.tile(np.arange(1, 11), len(g))
    model = LambdaRankModel(n_estimators=10, num_leaves=7).fit(X, y, g, position=position)
    assert model.best_iteration_ == 10
