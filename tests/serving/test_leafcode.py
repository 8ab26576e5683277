"""The native leaf forest (serving/leafcode.py): LightGBM's `pred_leaf` exactly, `predict`'s raw
score bit for bit, on real models with numeric and categorical splits and missing values."""

from __future__ import annotations

import importlib.util

import lightgbm as lgb
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from serving import leafcode
from serving.compiled import compile_code
from serving.leafcode import CompiledForest, leaf_index_text, leaf_output_table, output_transform

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("lleaves") is None, reason="needs the fast extra (lleaves)"
)

N_FEATURES = 5


def _model(objective: str, rounds: int = 40, seed: int = 0) -> tuple[lgb.Booster, np.ndarray]:
    """A real model: column 4 categorical, 10% missing values, groups for the rankers."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(1200, N_FEATURES))
    X[:, 4] = rng.integers(0, 30, len(X))
    X[rng.random(X.shape) < 0.1] = np.nan
    signal = np.nan_to_num(X[:, 0]) - np.abs(np.nan_to_num(X[:, 1])) + (X[:, 4] % 4 == 1)
    y = (signal + rng.normal(scale=0.5, size=len(X)) > 0.5).astype(float)
    params = {"objective": objective, "num_leaves": 15, "min_data_in_leaf": 5, "verbose": -1,
              "num_threads": 1, "seed": seed, "deterministic": True}  # fmt: skip
    data = lgb.Dataset(X, y, categorical_feature=[4], group=[20] * 60)
    return lgb.train(params, data, num_boost_round=rounds), X


@pytest.fixture(scope="module")
def forests() -> dict[str, tuple[lgb.Booster, np.ndarray, CompiledForest]]:
    out = {}
    for objective in ("lambdarank", "binary", "regression"):
        booster, X = _model(objective)
        text = booster.model_to_string()
        out[objective] = (booster, X, CompiledForest(text, compile_code(text)))
    return out


@pytest.mark.parametrize("objective", ["lambdarank", "regression"])
def test_leaves_equal_pred_leaf_and_scores_equal_predict_bit_for_bit(forests, objective) -> None:
    booster, X, forest = forests[objective]
    rows = np.vstack([X, np.full((1, N_FEATURES), np.nan), X[:50] * 1e6, -X[:50]])
    leaves, scores = forest.leaves_and_scores(rows)
    assert leaves.dtype == np.int32
    assert np.array_equal(leaves, booster.predict(rows, pred_leaf=True))
    assert np.array_equal(scores, booster.predict(rows))  # the same additions in the same order


def test_binary_scores_are_lightgbm_sigmoid_within_1e12(forests) -> None:
    booster, X, forest = forests["binary"]
    leaves, scores = forest.leaves_and_scores(X)
    assert np.array_equal(leaves, booster.predict(X, pred_leaf=True))
    assert np.abs(scores - booster.predict(X)).max() <= 1e-12
    assert np.array_equal(forest.predict(X), scores)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    rows=st.lists(
        st.lists(
            st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-5, 40)),
            min_size=N_FEATURES,
            max_size=N_FEATURES,
        ),
        min_size=1,
        max_size=30,
    )
)
def test_any_rows_reach_lightgbm_leaves(forests, rows) -> None:
    """Infinities, NaN, huge and negative categories, values on the thresholds themselves."""
    booster, _, forest = forests["lambdarank"]
    X = np.array(rows, dtype=np.float64)
    leaves, scores = forest.leaves_and_scores(X)
    assert np.array_equal(leaves, booster.predict(X, pred_leaf=True))
    assert np.array_equal(scores, booster.predict(X))


def test_predict_in_chunks_equals_one_call(forests, monkeypatch) -> None:
    _, X, forest = forests["lambdarank"]
    whole = forest.predict(X)
    monkeypatch.setattr(leafcode, "PREDICT_CHUNK_ROWS", 7)
    assert np.array_equal(forest.predict(X), whole)
    assert forest.predict(X[:0]).shape == (0,)


def test_rows_of_the_wrong_width_are_refused_before_the_native_call(forests) -> None:
    _, X, forest = forests["lambdarank"]
    with pytest.raises(ValueError, match=r"rows must be \(n < 2\*\*31, 5\), got \(3, 4\)"):
        forest.leaves_and_scores(X[:3, :4])


def test_the_leaf_text_numbers_each_tree_s_leaves_and_keeps_the_splits() -> None:
    booster, _ = _model("lambdarank", rounds=3)
    text = booster.model_to_string()
    leaf_text = leaf_index_text(text)
    table = leaf_output_table(text)
    assert table.shape[0] == 3
    for t in range(3):
        n = booster.dump_model()["tree_info"][t]["num_leaves"]
        assert [booster.get_leaf_output(t, j) for j in range(n)] == table[t, :n].tolist()
        assert np.all(table[t, n:] == 0)
    assert leaf_text.count("leaf_value=0 1 2") == 3
    assert [ln for ln in leaf_text.splitlines() if "leaf_value" not in ln] == [
        ln for ln in text.splitlines() if "leaf_value" not in ln
    ]


def test_models_the_native_code_cannot_score_are_refused_saying_why() -> None:
    with pytest.raises(ValueError, match=r"single-output models \(num_class=1\)"):
        leaf_index_text("tree\nversion=v4\nnum_class=3\n")
    with pytest.raises(ValueError, match="objective 'poisson': no compiled output for it"):
        output_transform("tree\nobjective=poisson max_delta_step:0.7\n")
    with pytest.raises(ValueError, match="the model text has no objective= line"):
        output_transform("tree\nnum_class=1\n")
    assert output_transform("objective=binary sigmoid:2\n")(np.array([0.0, 1.0])).tolist() == [
        0.5,
        1.0 / (1.0 + np.exp(-2.0)),
    ]
