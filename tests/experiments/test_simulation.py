"""The closed loop: 50 seeded experiments through the real Scorer; the intervals cover the truth.

Deterministic: assignment and exploration come from sha256 seeds, redemptions and bootstrap
from numpy generators seeded per experiment, the models are fitted deterministically.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features import contract as c
from offers.experiments.analysis import per_user
from offers.experiments.simulate import (
    coverage_study,
    experiment_for,
    serve_once,
    sim_scorer,
    true_values,
)
from offers.experiments.simworld import SimConfig, SimWorld, build_sim_world
from serving.arms import ArmStates
from serving.audit import AuditLog
from serving.experiments import assign, explore

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> SimWorld:
    return build_sim_world(tmp_path_factory.mktemp("sim"), SimConfig(n_users=400, weeks=4))


def test_the_lift_and_ips_intervals_cover_the_truth_in_50_experiments(world: SimWorld) -> None:
    study = coverage_study(world, range(50), resamples=500)
    coverage = study.groupby("quantity")["covered"].mean()
    assert coverage["champion_vs_holdout"] >= 0.9  # the "Done means"
    assert coverage["ips"] >= 0.9  # the second model (challenger) judged off-policy
    assert coverage["snips"] >= 0.9
    assert coverage["challenger_vs_holdout"] >= 0.9
    truths = study.groupby("quantity")["truth"].agg(["min", "max"])
    lifts = ["champion_vs_holdout", "challenger_vs_holdout", "challenger_vs_champion"]
    assert (truths.loc[lifts, "min"] == truths.loc[lifts, "max"]).all()  # one population
    assert truths.loc["champion_vs_holdout", "min"] > 0  # personalisation helps here


def test_the_log_is_what_serving_decided_and_replays(world: SimWorld, tmp_path: Path) -> None:
    scorer = sim_scorer(world, seed=3)
    logged = serve_once(world, scorer, seed=3)
    exp = experiment_for(world, 3)
    users = per_user(logged)
    assert (users[c.ARM] == users[c.USER_ID].map(lambda u: assign(exp, u))).all()
    # the audit records of the same requests carry the same arms and propensities
    records = [r for r in AuditLog(world.home / "audit").records() if r.get("experiment") == "sim"]
    allowed = {r["request_id"]: r for r in records if r["decision"] == "allow"}
    for slate, rows in logged.groupby(c.SLATE_ID):
        record = allowed[slate]
        assert record["arm"] == rows[c.ARM].iloc[0]
        assert record["propensities"] == rows.sort_values(c.POSITION)[c.PROPENSITY].tolist()
    denied = [r for r in AuditLog(world.home / "audit").records() if r["decision"] == "deny"]
    assert denied and not any("arm" in r for r in denied)  # a denial is never assigned
    assert not {r["request_id"] for r in denied} & set(logged[c.SLATE_ID])
    # an auditor replays one slate from the definition, the user and the request time
    row = logged.iloc[0]
    n = len(scorer.slate_of(scorer.state, None, pd.Timestamp(row[c.SHOWN_AT]).value).idx)
    shown = explore(exp, row[c.USER_ID], row[c.SHOWN_AT].to_pydatetime(), n, world.config.k)
    slate = logged[logged[c.SLATE_ID] == row[c.SLATE_ID]].sort_values(c.POSITION)
    np.testing.assert_allclose(slate[c.PROPENSITY], shown.propensity)
    redeemed = logged.dropna(subset=[c.REDEEMED_AT])
    assert 0 < len(redeemed) < len(logged)
    assert (redeemed[c.REDEEMED_AT] - redeemed[c.SHOWN_AT] == timedelta(days=1)).all()
    scorer.audit.close()


def test_true_values_are_oracle_sums(world: SimWorld) -> None:
    """One request by hand: the champion's plain top k (no experiment), valued by the oracle
    position by position, is the champion's deterministic value."""
    scorer = sim_scorer(world, seed=0)
    truths = true_values(world, scorer)
    first = truths.values.iloc[0]
    user, at = first[c.USER_ID], first["request_time"]
    scorer.arms = ArmStates()  # no experiment: the champion's own ranking
    plain = scorer.rank_many([user], "offer_ranking", world.config.k, now=at)[0]
    scorer.audit.close()
    assert plain.experiment == "" and len(plain.offers) == world.config.k
    offers = np.array([world.offer_index[o.offer_id] for o in plain.offers])
    k = len(offers)
    p = world.p_redeem(np.full(k, world.user_index[user]), offers,
                       np.full(k, pd.Timestamp(at).value), np.arange(1, k + 1))  # fmt: skip
    assert first["v_champion"] == pytest.approx(p.sum())
    assert truths.candidate[(user, at)][:k] != [o.offer_id for o in plain.offers]
