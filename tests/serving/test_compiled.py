"""Compiled trees (serving/compiled.py): the same scores within 1e-9, the same responses and
reasons, a cache keyed by model version that is rebuilt (never trusted) when it does not check
out, and a fall back to the leaf-sum path, saying why, when the compiled forest disagrees."""

from __future__ import annotations

import importlib.util
import logging
import pickle
import re
import time
from datetime import datetime

import lightgbm as lgb
import numpy as np
import pytest
from serving_world import NOW, USERS_BY_REASON, World

from serving.compiled import (
    COMPILED_ENV,
    IN_PROCESS_MAX_CHARS,
    compile_code,
    compiled_setting,
    entry_path,
    read_entry,
    write_entry,
)
from serving.state import load_state
from serving.watcher import ReloadWatcher

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("lleaves") is None, reason="needs the fast extra (lleaves)"
)


def _entry(world: World, version: str = "1"):
    return entry_path(world.home, "offer-ranker", version, world.booster.model_to_string())


def _random_booster(seed: int) -> tuple[lgb.Booster, np.ndarray]:
    """A real LightGBM model with a categorical column and missing values, and rows for it."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(3000, 6))
    X[:, 5] = rng.integers(0, 40, 3000)  # categorical
    X[rng.random(X.shape) < 0.1] = np.nan
    y = np.nan_to_num(X[:, 0]) * 2 + np.sin(np.nan_to_num(X[:, 1])) + (X[:, 5] % 3 == 0)
    params = {"objective": "regression", "num_leaves": 31, "verbose": -1, "num_threads": 1,
              "seed": seed, "deterministic": True, "min_data_in_leaf": 5}  # fmt: skip
    data = lgb.Dataset(X, y, categorical_feature=[5])
    return lgb.train(params, data, num_boost_round=80), X


def test_compiled_scores_equal_booster_predict_within_1e9_on_a_real_model() -> None:
    from serving.leafcode import CompiledForest

    booster, X = _random_booster(0)
    text = booster.model_to_string()
    forest = CompiledForest(text, compile_code(text))
    rows = np.vstack([X, np.full((1, 6), np.nan), X[:50] * 1e6])  # all missing, far out
    diff = np.abs(forest.predict(rows) - booster.predict(rows))
    assert diff.max() <= 1e-9
    clone = pickle.loads(pickle.dumps(forest))  # batch workers receive the state pickled
    assert np.array_equal(clone.predict(rows), forest.predict(rows))


def test_a_compiler_failure_in_the_child_process_is_an_error_naming_it() -> None:
    """Compiling runs in a short-lived process (LLVM's memory leaves with it); its failure
    must reach the caller, which then keeps the leaf-sum path."""
    too_big_for_in_process = (
        "tree\nnum_class=1\nobjective=lambdarank\nnot a LightGBM model\n"
        + " " * IN_PROCESS_MAX_CHARS
    )
    with pytest.raises(
        RuntimeError,
        match=r"(?s)compiling the leaf forest failed \(exit 1\): .*is not a LightGBM model",
    ):
        compile_code(too_big_for_in_process)


def test_a_model_the_leaf_forest_cannot_score_is_refused_before_any_compile(tmp_path) -> None:
    """A poisson model (an output transform the leaf forest does not apply) is said so at
    once: no compile, no cache entry, the Booster scores it."""
    from serving.compiled import choose_compiled

    rng = np.random.default_rng(4)
    X = rng.normal(size=(300, 4))
    params = {"objective": "poisson", "verbose": -1, "num_threads": 1}
    booster = lgb.train(params, lgb.Dataset(X, rng.poisson(2.0, 300)), num_boost_round=5)
    choice = choose_compiled(booster, X[:20], tmp_path, "offer-ranker", "1")
    assert choice.forest is None and choice.pending is None
    assert choice.why == "not compiled: objective 'poisson': no compiled output for it"
    assert not (tmp_path / "serving").exists()


def test_the_scorer_serves_the_checked_compiled_forest(world: World) -> None:
    state = world.scorer().state
    assert state.scoring_path == "compiled"
    scoring = state.describe()["scoring"]
    assert scoring["compiled"] is True and scoring["setting"] == "auto"
    assert "max |compiled - Booster.predict|" in scoring["why"]
    assert _entry(world).parent == world.home / "serving" / "compiled" / "offer-ranker" / "v1"
    assert read_entry(_entry(world), world.booster.model_to_string())[0] is not None


def test_same_responses_and_reasons_with_compiled_on_and_off(world: World, monkeypatch) -> None:
    on = world.scorer()
    monkeypatch.setenv(COMPILED_ENV, "off")
    off = world.scorer()
    assert (on.state.scoring_path, off.state.scoring_path) == ("compiled", "leaf_sums")
    assert off.state.describe()["scoring"]["why"] == f"{COMPILED_ENV}=off"
    now = datetime.fromisoformat(NOW)
    ranked = 0
    for user in USERS_BY_REASON:
        for k in (1, 3, 10):
            a = on.rank(user, "offer_ranking", k, now=now)
            b = off.rank(user, "offer_ranking", k, now=now)
            assert a.decision == b.decision and a.cold_start == b.cold_start
            assert [(o.offer_id, o.rank, o.reasons) for o in a.offers] == [
                (o.offer_id, o.rank, o.reasons) for o in b.offers
            ]
            assert np.allclose([o.score for o in a.offers], [o.score for o in b.offers],
                               rtol=0, atol=1e-9)  # fmt: skip
            ranked += bool(a.offers) and not a.cold_start
    assert ranked == 3  # u_ok, warm, at each k: the model path was compared


def test_a_batch_too_big_for_all_its_leaves_ranks_the_same(world: World, monkeypatch) -> None:
    """Beyond LEAF_SCORE_MAX_ROWS the forest keeps only scores (chunks) and finds the leaves of
    the top k again: the same offers, scores and reasons as one call for everything."""
    import serving.scorer

    scorer = world.scorer()
    assert scorer.state.scoring_path == "compiled"
    now = datetime.fromisoformat(NOW)
    users = list(USERS_BY_REASON)
    whole = scorer.rank_many(users, "offer_ranking", 3, now=now)
    monkeypatch.setattr(serving.scorer, "LEAF_SCORE_MAX_ROWS", 1)
    chunked = scorer.rank_many(users, "offer_ranking", 3, now=now)
    offers = [[(o.offer_id, o.score, o.reasons) for o in r.offers] for r in whole]
    assert offers == [[(o.offer_id, o.score, o.reasons) for o in r.offers] for r in chunked]
    assert sum(bool(r.offers) and not r.cold_start for r in whole) == 1  # u_ok: the model path


def test_a_corrupt_cache_entry_is_rebuilt_not_loaded(world: World, caplog) -> None:
    world.scorer()
    path = _entry(world)
    blob = bytearray(path.read_bytes())
    blob[-100] ^= 0xFF  # one bit pattern in the object code
    path.write_bytes(bytes(blob))
    assert read_entry(path, world.booster.model_to_string()) == (
        None,
        "object code does not match its checksum",
    )
    with caplog.at_level(logging.WARNING, logger="serving.compiled"):
        state = world.scorer().state
    assert state.scoring_path == "compiled" and "rebuilding" in caplog.text
    assert read_entry(path, world.booster.model_to_string())[0] is not None  # sound again


def _forge_entry(world: World, trees: str | int, tmp_path) -> None:
    """A sound header for this model around other object code: another model's (same
    features, `trees` of them) or lleaves' own summing forest of this very model (the format
    before leaf indices, whose entry point takes other arguments)."""
    path = _entry(world)
    path.parent.mkdir(parents=True)
    text = world.booster.model_to_string()
    if trees == "lleaves":
        import lleaves

        (tmp_path / "model.txt").write_text(text)
        model = lleaves.Model(model_file=str(tmp_path / "model.txt"))
        model.compile(cache=str(tmp_path / "forest.o"), finline=False)
        write_entry(path, text, (tmp_path / "forest.o").read_bytes())
        return
    n_trees = world.booster.num_trees() if trees == "same" else int(trees)
    rows = np.random.default_rng(2).normal(size=(200, world.booster.num_feature()))
    params = {"objective": "regression", "verbose": -1, "num_threads": 1, "min_data_in_leaf": 5}
    other = lgb.train(params, lgb.Dataset(rows, np.arange(200.0)), num_boost_round=n_trees)
    assert other.num_trees() == n_trees
    write_entry(path, text, compile_code(other.model_to_string()))


@pytest.mark.parametrize(
    ("trees", "why"),
    [
        ("same", r"puts \d+ of \d+ check rows in other leaves than Booster pred_leaf"),
        (5, r"reads 31 features and writes 5 trees; the model has 31 and \d+"),
        ("lleaves", r"lacks offers_leaf_v\d+_root, offers_leaf_v\d+_n_features"),
    ],
)
def test_an_entry_that_disagrees_with_the_booster_falls_back_and_is_removed(
    world: World, caplog, tmp_path, trees, why
) -> None:
    """Code of another model: with the same shape, its leaves are wrong and found so on the
    check rows; with another shape, or another entry point, it is refused before it is ever
    called (it would read and write outside the arrays it is given)."""
    _forge_entry(world, trees, tmp_path)
    with caplog.at_level(logging.WARNING, logger="serving.compiled"):
        state = world.scorer().state
    assert state.scoring_path == "leaf_sums"  # the checked path of before
    said = state.describe()["scoring"]["why"]
    assert re.search(why, said) and "cache entry removed" in said, said
    assert "scoring with the Booster" in caplog.text
    assert not _entry(world).exists()
    assert world.scorer().state.scoring_path == "compiled"  # the next load rebuilt it


def test_the_cache_is_keyed_by_model_version_and_a_foreign_entry_is_rebuilt(
    world: World, caplog
) -> None:
    world.scorer()
    v1 = _entry(world, "1")
    world.version = "2"
    v2 = _entry(world, "2")
    assert v1 != v2 and v2.parent.name == "v2"
    v2.parent.mkdir(parents=True)
    other, _ = _random_booster(3)  # another model's entry under this version's name
    write_entry(v2, other.model_to_string(), b"not object code")
    assert read_entry(v2, world.booster.model_to_string()) == (None, "built from another model")
    with caplog.at_level(logging.WARNING, logger="serving.compiled"):
        state = world.scorer().state
    assert state.model_version == "2" and state.scoring_path == "compiled"
    assert "built from another model" in caplog.text
    assert v1.exists() and read_entry(v2, world.booster.model_to_string())[0] is not None


def test_the_setting_is_auto_or_off_and_a_typo_is_refused(world: World, monkeypatch) -> None:
    assert compiled_setting({}) == "auto" and compiled_setting({COMPILED_ENV: " OFF "}) == "off"
    monkeypatch.setenv(COMPILED_ENV, "fast")
    with pytest.raises(
        ValueError, match=f"{COMPILED_ENV}='fast': expected one of auto, background, off"
    ):
        load_state(world.home, world.data, model_loader=world.loader)


def _wait_ready(scorer, seconds: float = 120.0) -> None:
    deadline = time.monotonic() + seconds
    while not scorer.state.compiled.ready():
        assert time.monotonic() < deadline, "the background build never finished"
        time.sleep(0.1)


def test_background_serves_leaf_sums_at_once_then_the_compiled_forest(
    world: World, monkeypatch
) -> None:
    """`offers serve`'s default: no start waits for a compile; the watcher upgrades it."""
    monkeypatch.setenv(COMPILED_ENV, "background")
    scorer = world.scorer()
    assert scorer.state.scoring_path == "leaf_sums"
    assert "compiling forest-" in scorer.state.compiled.why
    assert scorer.state.compiled.pending == _entry(world)
    before = scorer.rank("u_ok", "offer_ranking", 5, now=datetime.fromisoformat(NOW))
    _wait_ready(scorer)
    assert ReloadWatcher(scorer, 0).check()  # the entry appeared: reload
    assert scorer.state.scoring_path == "compiled" and scorer.state.compiled.pending is None
    assert before.offers and not before.cold_start  # the model ranked them
    after = scorer.rank("u_ok", "offer_ranking", 5, now=datetime.fromisoformat(NOW))
    assert [o.offer_id for o in after.offers] == [o.offer_id for o in before.offers]
    np.testing.assert_allclose(
        [o.score for o in after.offers], [o.score for o in before.offers], rtol=0, atol=1e-9
    )
    assert not ReloadWatcher(scorer, 0).check()  # nothing pending any more


def test_a_failed_background_build_is_said_and_not_retried_on_every_reload(
    world: World, monkeypatch, tmp_path
) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "lleaves.py").write_text("raise ImportError('this lleaves is broken')\n")
    monkeypatch.setenv("PYTHONPATH", str(broken))  # reaches the build's process only
    monkeypatch.setenv(COMPILED_ENV, "background")
    scorer = world.scorer()
    _wait_ready(scorer)
    assert ReloadWatcher(scorer, 0).check()
    why = scorer.state.compiled.why
    assert "background compile failed" in why and "this lleaves is broken" in why
    assert scorer.state.scoring_path == "leaf_sums" and scorer.state.compiled.pending is None
    assert not _entry(world).exists()
    assert not ReloadWatcher(scorer, 0).check()


def test_two_loads_starting_builds_at_once_both_end_with_the_entry(world: World) -> None:
    """Workers reloading after a promotion start builds together: neither build may lose the
    model text to the other (a lost one would be recorded as failed and never retried)."""
    from serving.compiled import _background, _failed, compile_later

    text = world.booster.model_to_string()
    path = _entry(world)
    earlier = set(map(id, _background))  # builds other tests started
    for _ in range(3):  # before any build takes the lock: each starts its own
        compile_later(path, text)
    builds = [b for b in _background if id(b) not in earlier]
    assert len(builds) >= 2
    assert all(build.wait(timeout=120) == 0 for build in builds)
    assert not _failed(path).exists()
    assert read_entry(path, text)[0] is not None
    assert not list(path.parent.glob("*.model*.txt"))  # each build removed its own copy
