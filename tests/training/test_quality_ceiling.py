"""benchmarks/quality_ceiling.py: the oracle's true terms land on the right training rows."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from offers.synth import generate_world
from offers.synth import oracle as o

ROOT = Path(__file__).resolve().parents[2]
N_USERS, SEED = 1000, 3  # the world of the synth_dir fixture (conftest.py): a mismatch fails


def _ceiling():
    spec = importlib.util.spec_from_file_location("ceiling", ROOT / "benchmarks/quality_ceiling.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_row_terms_rebuild_the_oracle_of_every_test_row(synth_data) -> None:
    """With the row's reward, position and propensity, the terms give the oracle's logit up to
    its one intercept: ids and instants map to the right user, offer and second."""
    ceiling = _ceiling()
    _, world = generate_world(N_USERS, SEED)
    test = synth_data.splits["test"]
    terms = ceiling.row_terms(world, test)
    assert set(terms) == set(o.TERMS)
    user = np.array([int(u[1:]) for u in test.user_id])
    offer = np.array([int(x[1:]) for x in test.offer_id])
    coefs = {
        o.CATEGORY_LIFT: o.COEF_CATEGORY,
        o.MERCHANT_LIFT: o.COEF_MERCHANT,
        o.LOG_VISITS: o.COEF_VISITS,
        o.RECENCY: o.COEF_RECENCY,
        o.LOG_CATEGORY_SPEND: o.COEF_CATEGORY_SPEND,
    }
    z = world.people.propensity[user] + sum(c * terms[n] for n, c in coefs.items())
    z += o.COEF_REWARD * np.log(world.offers.reward[offer])
    z -= o.COEF_POSITION * np.log(test.position)
    intercept = np.log(test.oracle / (1 - test.oracle)) - z
    assert test.n_rows > 100
    assert np.ptp(intercept) < 1e-6
    # a shifted instant is another row's history: the match breaks
    shifted = ceiling.row_terms(world, _shifted(test, days=30))
    assert not np.allclose(shifted[o.LOG_VISITS], terms[o.LOG_VISITS])


def _shifted(split, days: int):
    from dataclasses import replace

    return replace(split, shown_at=split.shown_at + days * 86_400 * 10**9)


def test_row_terms_refuse_ids_from_another_world(synth_data) -> None:
    _, small = generate_world(50, SEED)
    with pytest.raises(ValueError, match="not from this world"):
        _ceiling().row_terms(small, synth_data.splits["test"])


def test_with_terms_appends_named_terms_in_order() -> None:
    ceiling = _ceiling()
    X = np.array([[1.0, 2.0], [3.0, 4.0]])
    terms = {"a": np.array([5.0, 6.0]), "b": np.array([7.0, 8.0])}
    assert np.array_equal(ceiling.with_terms(X, terms, ["b", "a"]), [[1, 2, 7, 5], [3, 4, 8, 6]])
    assert ceiling.with_terms(X, terms, []) is X
    assert ceiling.variant_terms("features only") == []
    assert ceiling.variant_terms("a+b") == ["a", "b"]
    with pytest.raises(ValueError, match=r"unknown oracle terms \['c'\]"):
        ceiling.with_terms(X, terms, ["c"])
