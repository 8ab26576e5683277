"""The Scorer in process: filters, ranking, reasons, reloads and refusals."""

from __future__ import annotations

import dataclasses
import importlib.util
from datetime import timedelta

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from serving_world import CUTOFF, NOW, World, tiny_booster

from features import contract as c
from features.snapshot import load_snapshot
from features.vector import FEATURE_COLUMNS, OfferArrays, OfferCodes, assemble
from policy import SENSITIVE_MCCS
from serving.explain import (
    FAMILIES,
    PathExplainer,
    ReasonWriter,
    family_of,
    shap_contributions,
)
from serving.requests import RequestError
from serving.scorer import Scorer
from serving.state import ModelMismatchError

NOW_TS = pd.Timestamp(NOW)


@pytest.fixture
def scorer(world: World) -> Scorer:
    return world.scorer()


def test_every_feature_has_a_family() -> None:
    families = {family_of(f) for f in FEATURE_COLUMNS}
    assert families == set(FAMILIES)


def test_path_attributions_add_up_to_the_raw_score(world: World, scorer: Scorer) -> None:
    state = scorer.state
    idx = np.arange(len(state.offers))
    X = assemble(
        state.source,
        ["u_ok"] * len(idx),
        np.full(len(idx), state.cutoff_ns),
        state.offers.take(idx),
    )
    contrib = state.explainer.contributions(state.booster, X)
    raw = state.booster.predict(X, raw_score=True)
    np.testing.assert_allclose(
        contrib.sum(axis=1) + state.explainer.bias, raw, rtol=1e-9, atol=1e-9
    )
    leaves = state.explainer.leaves(state.booster, X)
    np.testing.assert_allclose(
        state.explainer.compact_of(leaves), state.reasons.compact(contrib), rtol=1e-9, atol=1e-9
    )
    shap = shap_contributions(state.booster, X)
    writer = ReasonWriter(FEATURE_COLUMNS)
    # Both methods are additive over the same score; per family they tell a similar story.
    for a, b in zip(contrib, shap, strict=True):
        fa, fb = writer.family_scores(a), writer.family_scores(b)
        # equal up to the bias, which the JSON dump rounds to six digits
        assert sum(fa.values()) == pytest.approx(sum(fb.values()), rel=1e-4, abs=1e-4)
        assert (
            max(fa, key=fa.get) == max(fb, key=fb.get)
            or abs(max(fa.values()) - max(fb.values())) < 1
        )


def test_exact_shap_reasons_are_available(world: World) -> None:
    scorer = world.scorer(explain="shap")
    result = scorer.rank("u_ok", "offer_ranking", k=3, now=NOW_TS)
    assert result.allowed and all(o.reasons for o in result.offers)


def test_reasons_speak_of_habits(scorer: Scorer) -> None:
    result = scorer.rank("u_ok", "offer_ranking", k=10, now=NOW_TS)
    texts = {t for o in result.offers for t in o.reasons}
    assert any("merchant" in t for t in texts), texts
    assert all(len(o.reasons) <= 3 and len(set(o.reasons)) == len(o.reasons) for o in result.offers)


def test_scores_are_the_boosters_on_the_shared_assembly(world: World, scorer: Scorer) -> None:
    assert scorer.state.leaf_scores  # one LightGBM call per request: leaf sums == predict
    result = scorer.rank("u_ok", "offer_ranking", k=100, now=NOW_TS)
    state = scorer.state
    ids = [o.offer_id for o in result.offers]
    idx = np.array([state.offer_index[i] for i in ids])
    X = assemble(
        state.source,
        ["u_ok"] * len(idx),
        np.full(len(idx), state.cutoff_ns),
        state.offers.take(idx),
        at=NOW_TS.value,  # offer windows at the request's now
    )
    np.testing.assert_array_equal([o.score for o in result.offers], world.booster.predict(X))
    assert result.excluded_sensitive == 4 and result.excluded_inactive > 0


def test_assembly_reuses_given_codes_only_from_the_same_source(scorer: Scorer) -> None:
    """Serving codes its catalogue once (OfferCodes) and reuses the users' pair codes; the
    rows are the ones assembly computes itself, and codes read from another source's tables,
    or for other rows, are recomputed rather than trusted."""
    state = scorer.state
    idx = np.arange(len(state.offers))
    users = ["u_ok"] * len(idx) + ["u_cold"] * len(idx)
    rows = np.tile(idx, 2)
    cutoffs = np.full(len(rows), state.cutoff_ns)
    offers = state.offers.take(rows)
    plain = assemble(state.source, users, cutoffs, offers)
    pairs = state.source.pair_codes(users, cutoffs)
    assert (pairs[: len(idx)] >= 0).all() and (pairs[len(idx) :] == -1).all()
    codes = state.offer_codes.take(rows)
    given = assemble(state.source, users, cutoffs, offers, pairs=pairs, codes=codes)
    np.testing.assert_array_equal(given, plain)
    wrong = OfferCodes(codes.merchant[::-1], codes.mcc[::-1], ({}, {}))  # another source's
    assert not wrong.fit(state.source, len(rows))
    np.testing.assert_array_equal(
        assemble(state.source, users, cutoffs, offers, codes=wrong), plain
    )
    short = state.offer_codes.take(idx)  # codes for other rows than these
    np.testing.assert_array_equal(
        assemble(state.source, users, cutoffs, offers, codes=short), plain
    )
    other = dataclasses.replace(state.offers)  # a catalogue replaced in the state: not coded
    assert state.offer_codes.rows_of(other, rows) is None
    assert (
        state.offer_codes.rows_of(state.offers, rows).merchant.tolist() == codes.merchant.tolist()
    )
    with pytest.raises(ValueError, match=r"assemble: 3 pair codes for \d+ rows"):
        assemble(state.source, users, cutoffs, offers, pairs=pairs[:3])


def test_request_time_decides_not_snapshot_time(scorer: Scorer) -> None:
    # u_expired's consent ran at the snapshot's cutoff and lapsed on 2025-06-09.
    before = scorer.rank("u_expired", "offer_ranking", now=pd.Timestamp("2025-06-08T00:00Z"))
    after = scorer.rank("u_expired", "offer_ranking", now=NOW_TS)
    assert before.allowed and not after.allowed and after.reason_code == "CONSENT_EXPIRED"


def test_a_past_now_is_refused_outside_replay_mode(world: World) -> None:
    scorer = world.scorer(allow_past_now=False)
    with pytest.raises(RequestError, match="in the past"):
        scorer.rank("u_revoked", "offer_ranking", now=pd.Timestamp("2025-06-02T00:00Z"))
    recent = pd.Timestamp.now(tz="UTC") - timedelta(minutes=1)  # client clock a little behind
    assert scorer.rank("u_ok", "offer_ranking", now=recent).reason_code == "CONSENT_EXPIRED"


def test_an_erasure_holds_at_any_decision_time(world: World) -> None:
    from serving.erase import erase

    erase(world.home, world.data, "u_ok")
    result = world.scorer().rank("u_ok", "offer_ranking", now=NOW_TS)  # replay: before erasure
    assert (result.decision.decision, result.reason_code) == ("deny", "CONSENT_REVOKED")


def test_default_now_is_the_clock(scorer: Scorer) -> None:
    result = scorer.rank("u_ok", "offer_ranking")  # consents of 2025 have lapsed by now
    assert abs(result.now - pd.Timestamp.now(tz="UTC")) < timedelta(minutes=1)


def test_request_errors_come_before_any_decision(scorer: Scorer) -> None:
    with pytest.raises(RequestError, match="unknown candidate offer ids: 'x1', 'x2'"):
        scorer.rank("u_ok", "offer_ranking", candidates=["o00", "x1", "x2"], now=NOW_TS)
    with pytest.raises(RequestError, match="before the feature snapshot's cutoff"):
        scorer.rank("u_ok", "offer_ranking", now=pd.Timestamp(CUTOFF) - timedelta(seconds=1))
    with pytest.raises(RequestError, match="k must be"):
        scorer.rank("u_ok", "offer_ranking", k=0, now=NOW_TS)
    assert scorer.audit.records() == []


def test_empty_slate_is_an_allow_without_offers(world: World, scorer: Scorer) -> None:
    result = scorer.rank("u_ok", "offer_ranking", candidates=["o05"], now=NOW_TS)  # ended
    assert result.allowed and result.offers == [] and result.excluded_inactive == 1


def test_model_with_other_features_is_refused(world: World) -> None:
    def loader(home, alias):
        stub = world.loader(home, alias)
        return dataclasses.replace(stub, feature_columns=list(FEATURE_COLUMNS)[::-1])

    with pytest.raises(ModelMismatchError, match="trained on features"):
        Scorer(world.home, world.data, model_loader=loader)


def test_model_under_another_policy_is_refused(world: World) -> None:
    def loader(home, alias):
        return dataclasses.replace(world.loader(home, alias), policy_version="p1-000000000000")

    with pytest.raises(ModelMismatchError, match="policy"):
        Scorer(world.home, world.data, model_loader=loader)

    def untagged(home, alias):
        return dataclasses.replace(world.loader(home, alias), policy_version="")

    with pytest.raises(ModelMismatchError, match="policy"):
        Scorer(world.home, world.data, model_loader=untagged)


def test_missing_alias_fails_loudly(world: World) -> None:
    with pytest.raises(LookupError):
        Scorer(world.home, world.data, model_alias="nope", model_loader=world.loader)


def test_reload_swaps_model_and_snapshot(world: World, scorer: Scorer) -> None:
    old = scorer.state
    tables, _ = load_snapshot(world.home / "features")
    world.booster = tiny_booster(tables, world.offers, seed=7)
    world.version = "2"
    scorer.reload()
    assert scorer.state is not old and scorer.state.model_version == "2"
    assert scorer.rank("u_ok", "offer_ranking", now=NOW_TS).model_version == "2"


def test_rank_many_equals_rank(world: World, scorer: Scorer) -> None:
    users = ["u_ok", "u_cold", "u_minor", "ghost", "u_ok"]
    many = scorer.rank_many(users, "offer_ranking", k=4, now=NOW_TS)
    for user, got in zip(users, many, strict=True):
        one = scorer.rank(user, "offer_ranking", k=4, now=NOW_TS)
        assert (got.user_id, got.reason_code, got.cold_start) == (
            user,
            one.reason_code,
            one.cold_start,
        )
        assert [(o.offer_id, o.score, o.reasons) for o in got.offers] == [
            (o.offer_id, o.score, o.reasons) for o in one.offers
        ]


# ---------------------------------------------------------------- properties


MCCS = sorted(SENSITIVE_MCCS)[:6] + ["5411", "5812", "5541", "5942", "5311"]
MERCHANT_IDS = ["m_groc", "m_cafe", "m_fuel", "m_book", "m_pharm", "m_bet", "m_new"]


@st.composite
def catalogues(draw) -> pd.DataFrame:
    n = draw(st.integers(min_value=1, max_value=30))
    rows = []
    for i in range(n):
        start = NOW_TS + timedelta(hours=draw(st.integers(-24 * 60, 24 * 10)))
        end = start + timedelta(hours=draw(st.integers(1, 24 * 90)))
        rows.append(
            (f"x{i}", draw(st.sampled_from(MERCHANT_IDS)), draw(st.sampled_from(MCCS)), "t", start, end,
             draw(st.one_of(st.none(), st.floats(0, 50))))
        )  # fmt: skip
    frame = pd.DataFrame(
        rows, columns=[c.OFFER_ID, c.MERCHANT_ID, c.MCC, c.TITLE, c.STARTS_AT, c.ENDS_AT, c.REWARD]
    )
    return frame.astype({c.REWARD: "float64"})


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    catalogue=catalogues(),
    user=st.sampled_from(["u_ok", "u_cold", "u_revoked", "u_minor", "ghost", "u_expired"]),
    hours=st.integers(0, 24 * 30),
    k=st.integers(1, 40),
    use_candidates=st.booleans(),
)
def test_never_a_sensitive_or_inactive_offer(
    world_scorer: Scorer,
    catalogue: pd.DataFrame,
    user: str,
    hours: int,
    k: int,
    use_candidates: bool,
) -> None:
    state = world_scorer.state
    offers = OfferArrays.from_frame(catalogue)
    world_scorer.state = dataclasses.replace(
        state,
        offers=offers,
        offer_index={o: i for i, o in enumerate(offers.offer_id)},
        sensitive=catalogue[c.MCC].isin(SENSITIVE_MCCS).to_numpy(),
    )
    now = pd.Timestamp(CUTOFF, tz="UTC") + timedelta(hours=hours)
    candidates = catalogue[c.OFFER_ID].tolist() if use_candidates else None
    try:
        result = world_scorer.rank(user, "offer_ranking", k=k, candidates=candidates, now=now)
    finally:
        world_scorer.state = state
    by_id = catalogue.set_index(c.OFFER_ID)
    eligible = by_id[
        ~by_id[c.MCC].isin(SENSITIVE_MCCS) & (by_id[c.STARTS_AT] <= now) & (now < by_id[c.ENDS_AT])
    ]
    returned = [o.offer_id for o in result.offers]
    assert set(returned) <= set(eligible.index)
    assert len(returned) == len(set(returned))
    if result.allowed:
        assert len(returned) == min(k, len(eligible))
        assert result.excluded_sensitive == int(by_id[c.MCC].isin(SENSITIVE_MCCS).sum())
    else:
        assert returned == []


@pytest.fixture(scope="module")
def world_scorer(tmp_path_factory, _world_template: World) -> Scorer:
    import shutil

    root = tmp_path_factory.mktemp("prop")
    shutil.copytree(_world_template.home, root / "home")
    return Scorer(
        root / "home",
        _world_template.data,
        model_loader=_world_template.loader,
        allow_past_now=True,
    )


@pytest.mark.parametrize("compiled", ["off", "auto"])
def test_booster_predicts_with_one_thread_and_not_at_all_when_compiled(
    monkeypatch: pytest.MonkeyPatch, world: World, compiled: str
) -> None:
    """The compiled forest gives scores and the top k's leaves: LightGBM leaves the request."""
    monkeypatch.setenv("OFFERS_COMPILED", compiled)
    scorer = world.scorer()
    seen = []
    real = lgb.Booster.predict

    def spy(self, data, *args, **kwargs):
        seen.append(kwargs.get("num_threads"))
        return real(self, data, *args, **kwargs)

    monkeypatch.setattr(lgb.Booster, "predict", spy)
    result = scorer.rank("u_ok", "offer_ranking", now=NOW_TS)
    assert result.offers and not result.cold_start and result.offers[0].reasons
    if compiled == "off" or importlib.util.find_spec("lleaves") is None:
        assert scorer.state.scoring_path == "leaf_sums"
        assert seen and all(n == 1 for n in seen)
    else:
        assert scorer.state.scoring_path == "compiled" and seen == []


def test_leaf_sums_are_refused_when_predict_transforms() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, len(FEATURE_COLUMNS)))
    y = (X[:, 0] > 0).astype(float)
    params = {"objective": "binary", "verbose": -1, "num_threads": 1, "num_leaves": 7}
    binary = lgb.train(params, lgb.Dataset(X, y), num_boost_round=5)  # predict applies sigmoid
    explainer = PathExplainer(binary, X.shape[1])
    assert not explainer.exact_on(binary, X)
    assert np.array_equal(
        explainer.scores(explainer.leaves(binary, X)), binary.predict(X, raw_score=True)
    )
