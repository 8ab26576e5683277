"""Experiments: definitions, assignment, the logging policy, and the Scorer serving the arms."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from serving_world import NOW, USERS_BY_REASON, World, tiny_booster

from features.snapshot import load_snapshot
from features.tracking import RegisteredRanker
from serving.experiments import (
    CHALLENGER_ARM,
    CHAMPION_ARM,
    HOLDOUT_ARM,
    Experiment,
    ExperimentError,
    assign,
    explore,
    find_experiment,
    load_experiments,
    parse_experiment,
    save_experiment,
    stop_experiment,
    unit_draw,
)
from serving.scorer import Scorer
from serving.state import ModelMismatchError

NOW_DT = datetime.fromisoformat(NOW)
START = "2025-06-01T00:00:00+00:00"
END = "2025-07-01T00:00:00+00:00"


def definition(**over) -> dict:
    raw = {
        "name": "exp1",
        "shares": {CHAMPION_ARM: 0.4, CHALLENGER_ARM: 0.3, HOLDOUT_ARM: 0.3},
        "start": START,
        "end": END,
        "salt": "pepper",
        "exploration": 0.2,
    }
    raw.update(over)
    return raw


@pytest.mark.parametrize(
    ("over", "message"),
    [
        ({"name": "Bad Name"}, "experiment name 'Bad Name'"),
        ({"shares": {CHAMPION_ARM: 0.5, HOLDOUT_ARM: 0.4}}, "shares sum to 0.9, not 1"),
        ({"shares": {CHAMPION_ARM: 1.0}}, "needs at least two arms"),
        ({"shares": {CHAMPION_ARM: 0.5, "treatment": 0.5}}, "unknown arms ['treatment']"),
        ({"shares": {CHAMPION_ARM: 1.2, HOLDOUT_ARM: -0.2}}, "share of champion must be"),
        ({"shares": {CHAMPION_ARM: True, HOLDOUT_ARM: 0.5}}, "share of champion must be"),
        ({"end": START}, "end 2025-06-01 00:00:00+00:00 must be after start"),
        ({"start": "june"}, "start 'june' is not an ISO 8601 instant"),
        ({"exploration": 0}, "exploration must be a number in (0, 0.5]"),
        ({"exploration": 0.9}, "exploration must be a number in (0, 0.5]"),
        ({"salt": 7}, "salt must be a string"),
        ({"color": "red"}, "unknown fields ['color']"),
    ],
)
def test_bad_definitions_are_refused_naming_the_field(over: dict, message: str) -> None:
    with pytest.raises(ExperimentError) as err:
        parse_experiment(definition(**over))
    assert message in str(err.value)


def test_a_definition_round_trips_and_naive_times_are_utc() -> None:
    exp = parse_experiment(definition(start="2025-06-01T00:00:00"))
    assert exp.start == datetime(2025, 6, 1, tzinfo=UTC)
    assert parse_experiment(exp.to_dict()) == exp
    assert exp.arms == (CHAMPION_ARM, CHALLENGER_ARM, HOLDOUT_ARM)


def test_a_missing_salt_is_drawn_and_kept() -> None:
    raw = definition()
    del raw["salt"]
    a, b = parse_experiment(raw), parse_experiment(raw)
    assert len(a.salt) == 32 and a.salt != b.salt


def test_assignment_is_sha256_of_salt_name_and_user() -> None:
    exp = parse_experiment(definition())
    digest = hashlib.sha256(b"pepper\x1fexp1\x1fu_ok").digest()
    expected = int.from_bytes(digest[:8], "big") / 2**64
    assert unit_draw(exp, "u_ok") == expected
    arm = CHAMPION_ARM if expected < 0.4 else CHALLENGER_ARM if expected < 0.7 else HOLDOUT_ARM
    assert assign(exp, "u_ok") == arm


def test_arms_get_their_shares_and_a_new_salt_reshuffles() -> None:
    exp = parse_experiment(definition())
    users = [f"user{i}" for i in range(20000)]
    arms = pd.Series([assign(exp, u) for u in users])
    shares = arms.value_counts(normalize=True)
    for arm, share in exp.shares.items():
        assert abs(shares[arm] - share) < 0.015  # 4.5 standard errors at n = 20000
    other = parse_experiment(definition(salt="salt2"))
    moved = np.mean([assign(other, u) != a for u, a in zip(users, arms, strict=True)])
    assert 0.5 < moved < 0.8  # independent draws: 1 - (0.4^2 + 0.3^2 + 0.3^2) = 0.66


@settings(max_examples=50, deadline=None)
@given(n=st.integers(1, 30), k=st.integers(1, 12), user=st.text(min_size=1, max_size=8))
def test_the_logged_propensity_is_the_replayed_one(n: int, k: int, user: str) -> None:
    exp = parse_experiment(definition())
    a, b = explore(exp, user, NOW_DT, n, k), explore(exp, user, NOW_DT, n, k)
    assert np.array_equal(a.order, b.order) and np.array_equal(a.propensity, b.propensity)
    assert len(a.order) == min(n, k) and len(set(a.order.tolist())) == len(a.order)
    exact = (1 - 0.2) * (a.order == np.arange(len(a.order))) + 0.2 / n
    np.testing.assert_allclose(a.propensity, exact)
    assert ((a.propensity > 0) & (a.propensity <= 1)).all()


def test_propensities_are_the_empirical_frequencies() -> None:
    """Over many requests, how often offer j lands at position r matches the logged value."""
    exp = parse_experiment(definition())
    n, k, draws = 6, 3, 6000
    counts = np.zeros((n, k))
    logged = np.zeros((n, k))
    for i in range(draws):
        shown = explore(exp, "u", NOW_DT + timedelta(seconds=i), n, k)
        counts[shown.order, np.arange(k)] += 1
        logged[shown.order, np.arange(k)] = shown.propensity
    expected = np.full((n, k), 0.2 / n)
    expected[np.arange(k), np.arange(k)] += 0.8
    np.testing.assert_allclose(logged[logged > 0], expected[logged > 0])
    np.testing.assert_allclose(counts / draws, expected, atol=0.02)


def test_storage_replaces_before_start_refuses_after_and_stops(tmp_path) -> None:
    exp = parse_experiment(definition())
    before = datetime(2025, 5, 1, tzinfo=UTC)
    save_experiment(tmp_path, exp, now=before)
    save_experiment(tmp_path, parse_experiment(definition(exploration=0.1)), now=before)
    assert find_experiment(tmp_path, "exp1").exploration == 0.1
    with pytest.raises(ExperimentError, match="can only be stopped"):
        save_experiment(tmp_path, exp, now=NOW_DT)
    overlap = parse_experiment(definition(name="exp2", start="2025-06-20T00:00:00+00:00"))
    with pytest.raises(ExperimentError, match="overlaps exp1"):
        save_experiment(tmp_path, overlap, now=before)
    stopped = stop_experiment(tmp_path, "exp1", at=NOW_DT)
    assert stopped.end == NOW_DT and find_experiment(tmp_path, "exp1").end == NOW_DT
    assert [e.name for e in load_experiments(tmp_path)] == ["exp1"]
    with pytest.raises(ExperimentError, match="no experiment named 'nope'"):
        stop_experiment(tmp_path, "nope")


def test_a_damaged_definition_refuses_to_load_naming_the_file(tmp_path) -> None:
    (tmp_path / "experiments").mkdir()
    (tmp_path / "experiments" / "x.json").write_text("{", encoding="utf-8")
    with pytest.raises(ExperimentError, match="x.json: not a valid experiment"):
        load_experiments(tmp_path)


# ------------------------------------------------------------------------------ the Scorer


class TwoModels:
    """The world's loader with a different booster (version 2) under the challenger alias."""

    def __init__(self, world: World) -> None:
        self.world = world
        tables, _ = load_snapshot(world.home / "features")
        self.challenger = tiny_booster(tables, world.offers, seed=7)

    def __call__(self, home, alias: str) -> RegisteredRanker:
        ranker = self.world.loader(home, alias)
        if alias != "challenger":
            return ranker
        return RegisteredRanker(**{**vars(ranker), "booster": self.challenger, "version": "2"})


def salt_for(user: str, arm: str, shares: dict[str, float]) -> str:
    """A salt that puts `user` in `arm` (the world has two allowed users only)."""
    for i in range(1000):
        exp = parse_experiment(definition(shares=shares, salt=f"s{i}"))
        if assign(exp, user) == arm:
            return exp.salt
    raise AssertionError("no salt found")


def start_experiment(
    world: World, shares: dict[str, float], salt: str = "pepper", start: str = START
) -> Experiment:
    exp = parse_experiment(definition(shares=shares, salt=salt, start=start))
    save_experiment(world.home, exp, now=datetime(2025, 5, 1, tzinfo=UTC))
    return exp


def two_model_scorer(world: World, **kwargs) -> Scorer:
    kwargs.setdefault("allow_past_now", True)
    return Scorer(world.home, world.data, model_loader=TwoModels(world), **kwargs)


THREE = {CHAMPION_ARM: 0.4, CHALLENGER_ARM: 0.3, HOLDOUT_ARM: 0.3}


def test_denied_requests_are_never_assigned_for_any_reason(world: World) -> None:
    start_experiment(world, THREE)
    scorer = two_model_scorer(world)
    for user, reason in USERS_BY_REASON.items():
        result = scorer.rank(user, "offer_ranking", now=NOW_DT)
        assert result.reason_code == reason
        if reason == "OK":
            assert result.arm in THREE and result.experiment == "exp1"
            assert all(0 < o.propensity <= 1 for o in result.offers)
            continue
        assert (result.arm, result.experiment, result.offers) == ("", "", [])
        assert "experiment" not in result.response().model_dump()
    for purpose in ("targeted_advertising", "fraud_alert", "nonsense"):
        denied = scorer.rank("u_ok", purpose, now=NOW_DT)
        assert not denied.allowed and denied.arm == "" and denied.experiment == ""
    batch = scorer.rank_many(list(USERS_BY_REASON), "offer_ranking", now=NOW_DT)
    assert sorted(r.user_id for r in batch if r.arm) == ["u_cold", "u_ok"]
    records = scorer.audit.records()
    assigned = [r for r in records if "arm" in r]
    assert len(assigned) == 4 and all(r["decision"] == "allow" for r in assigned)
    assert all(r["user_id"] in ("u_ok", "u_cold") for r in assigned)


@pytest.mark.parametrize("arm", [CHAMPION_ARM, CHALLENGER_ARM, HOLDOUT_ARM])
def test_each_arm_shows_its_own_ranking_through_the_logging_policy(world: World, arm: str) -> None:
    n = len(world.active_offer_ids)
    plain = {  # rankings of every candidate before any experiment exists
        CHAMPION_ARM: two_model_scorer(world).rank("u_ok", "offer_ranking", n, now=NOW_DT),
        CHALLENGER_ARM: two_model_scorer(world, model_alias="challenger").rank(
            "u_ok", "offer_ranking", n, now=NOW_DT
        ),
        HOLDOUT_ARM: two_model_scorer(world).rank("u_cold", "offer_ranking", n, now=NOW_DT),
    }
    assert plain[HOLDOUT_ARM].cold_start and not plain[CHAMPION_ARM].cold_start
    full = [o.offer_id for o in plain[arm].offers]
    assert len(full) == n
    assert full != [
        o.offer_id for o in plain[CHAMPION_ARM if arm != CHAMPION_ARM else HOLDOUT_ARM].offers
    ]
    exp = start_experiment(world, THREE, salt_for("u_ok", arm, THREE))
    scorer = two_model_scorer(world)
    result = scorer.rank("u_ok", "offer_ranking", k=4, now=NOW_DT)
    shown = explore(exp, "u_ok", NOW_DT, n, 4)
    assert result.arm == arm
    assert [o.offer_id for o in result.offers] == [full[j] for j in shown.order]
    assert [o.rank for o in result.offers] == [1, 2, 3, 4]
    np.testing.assert_allclose([o.propensity for o in result.offers], shown.propensity)
    assert result.model_version == ("2" if arm == CHALLENGER_ARM else "1")
    assert not result.cold_start  # u_ok has history, whatever the arm shows
    body = result.response().model_dump()
    assert body["experiment"] == {
        "name": "exp1",
        "arm": arm,
        "personalised": arm != HOLDOUT_ARM,
        "explored": shown.explored,
    }
    record = scorer.audit.records()[-1]
    assert (record["experiment"], record["arm"]) == ("exp1", arm)
    assert record["propensities"] == [o.propensity for o in result.offers]


def test_requests_outside_the_window_are_not_in_the_experiment(world: World) -> None:
    start_experiment(world, THREE, start="2025-06-05T00:00:00+00:00")
    scorer = two_model_scorer(world)
    before = scorer.rank(
        "u_ok", "offer_ranking", now=datetime(2025, 6, 5, tzinfo=UTC) - timedelta(seconds=1)
    )
    assert before.experiment == "" and before.offers[0].propensity is None
    stop_experiment(world.home, "exp1", at=NOW_DT)
    scorer.reload()
    assert scorer.rank("u_ok", "offer_ranking", now=NOW_DT).experiment == ""


def test_the_same_user_keeps_the_arm_in_a_new_process_state(world: World) -> None:
    start_experiment(world, THREE)
    first = two_model_scorer(world).rank("u_ok", "offer_ranking", now=NOW_DT)
    again = two_model_scorer(world).rank("u_ok", "offer_ranking", now=NOW_DT)
    assert first.arm == again.arm
    assert [o.offer_id for o in first.offers] == [o.offer_id for o in again.offers]


def test_a_challenger_arm_without_a_challenger_model_refuses_to_load(world: World) -> None:
    start_experiment(world, THREE)

    def champion_only(home, alias):
        if alias != "champion":
            raise LookupError(f"no model under alias {alias!r}")
        return world.loader(home, alias)

    with pytest.raises(LookupError, match="challenger"):
        Scorer(world.home, world.data, model_loader=champion_only, allow_past_now=True)


def test_the_challenger_scores_with_its_own_forest_never_the_champions(world: World) -> None:
    """Regression: the challenger's state was the champion's with another booster, and kept the
    champion's compiled forest, so the challenger arm served the champion's scores."""
    start_experiment(world, THREE)
    scorer = two_model_scorer(world)
    champion, challenger = scorer.state, scorer.arms.challenger
    assert challenger is not None and challenger.booster is not champion.booster
    idx = np.arange(len(champion.offers))
    X = Scorer.request_matrix(champion, ["u_ok"], idx, champion.cutoff_ns)
    assert not np.allclose(challenger.booster.predict(X), champion.booster.predict(X))
    assert champion.compiled.forest is not None, champion.compiled.why  # lleaves is in dev
    assert challenger.compiled.forest is not None, challenger.compiled.why
    assert challenger.compiled.forest is not champion.compiled.forest
    np.testing.assert_allclose(
        challenger.compiled.forest.predict(X), challenger.booster.predict(X), rtol=0, atol=1e-9
    )


def test_a_challenger_trained_with_another_half_life_is_refused(world: World) -> None:
    """Its features would decay unlike the snapshot's: refused at load, as the champion is."""
    start_experiment(world, THREE)
    loader = TwoModels(world)
    built = two_model_scorer(world).state.half_life_days
    assert built is not None

    def other_decay(home, alias: str) -> RegisteredRanker:
        ranker = loader(home, alias)
        if alias != "challenger":
            return ranker
        return RegisteredRanker(**{**vars(ranker), "half_life_days": float(built) + 1})

    with pytest.raises(ModelMismatchError, match="half-life"):
        Scorer(world.home, world.data, model_loader=other_decay, allow_past_now=True)
