"""Closed-loop simulation: serve synthetic users through the real Scorer in an experiment, draw
their redemptions from the oracle, analyse the log as the report does, compare with the truth.

The truth, precisely. For an allowed request i (user u, time t, n candidates, slate length
m = min(k, n)) and an arm's deterministic ranking d (champion model, challenger model, or
popularity for the holdout), the expected redemptions of its slate under the logging policy are
    V_arm(i) = (1 - eps) * sum_r p(u, d_r, t, r) + eps * sum_r mean_a p(u, a, t, r),  r = 1..m
(p: the oracle; the second term is the uniform exploration). A user's potential outcome under
an arm is Y_u(arm) = sum of V_arm over the user's allowed requests, and the true lift of A over
B is mean over U of Y_u(A) - Y_u(B), U = every user with an allowed request: the same
population whatever the assignment (a denial does not depend on the arm). The report estimates
it by the difference of the arms' mean redemptions per user.

An off-policy candidate (here the challenger model, judged on the champion's and the holdout's
traffic only) has the true value mean over those slates of sum_r p(u, c_r, t, r), its
deterministic ranking c; IPS and SNIPS estimate it from the logged propensities.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from features import contract as c
from features.instants import instant_ns
from offers.experiments.analysis import DEFAULT_RESAMPLES, lift, off_policy, per_user
from offers.experiments.simworld import SimWorld
from serving.arms import arm_rankings, state_of_arm
from serving.audit import SYNC_INTERVAL, AuditLog
from serving.experiments import (
    ARMS,
    CHALLENGER_ARM,
    CHAMPION_ARM,
    HOLDOUT_ARM,
    Experiment,
    save_experiment,
)
from serving.scorer import Scorer

SIM_NAME = "sim"
PURPOSE = "offer_ranking"
REQUEST_TIME = "request_time"
CANDIDATE_TRAFFIC = (CHAMPION_ARM, HOLDOUT_ARM)  # the challenger judged before it is served
QUANTITIES = (
    "champion_vs_holdout",
    "challenger_vs_holdout",
    "challenger_vs_champion",
    "ips",
    "snips",
)


@dataclass
class Truths:
    """Per allowed request: deterministic values per arm, the uniform value, the candidate's
    ranking (for IPS); fixed per world (they do not depend on the assignment)."""

    values: pd.DataFrame  # user_id, request_time, v_<arm>, v_uniform
    candidate: dict[tuple[str, datetime], list[str]]

    def lift(self, arm: str, base: str, eps: float) -> float:
        v = self.values
        diff = (1 - eps) * (v[f"v_{arm}"] - v[f"v_{base}"])  # the uniform term cancels
        return float(diff.groupby(v[c.USER_ID]).sum().mean())


def experiment_for(world: SimWorld, seed: int) -> Experiment:
    cfg = world.config
    return Experiment(SIM_NAME, dict(cfg.shares), world.start, world.end, f"seed-{seed}",
                      cfg.exploration)  # fmt: skip


def sim_scorer(world: SimWorld, seed: int = 0) -> Scorer:
    """The production Scorer on the sim's home, with the seed's experiment stored."""
    save_experiment(world.home, experiment_for(world, seed), now=world.start - timedelta(seconds=1))
    audit = AuditLog(world.home / "audit", sync=SYNC_INTERVAL)
    return Scorer(world.home, world.data, model_loader=world.loader, audit=audit,
                  allow_past_now=True)  # fmt: skip


def true_values(world: SimWorld, scorer: Scorer) -> Truths:
    """Every arm's deterministic ranking of every allowed request, valued by the oracle."""
    rows, candidate = [], {}
    m_max = world.config.k
    for at, users in world.requests:
        decisions = scorer.decide_many(users, PURPOSE, at)
        allowed = [u for u, d in zip(users, decisions, strict=True) if d.allowed]
        state = scorer.state
        cands = state.offers.offer_id[scorer.slate_of(state, None, instant_ns(at)).idx]
        n, m = len(cands), min(m_max, len(cands))
        if not allowed or n == 0:
            continue
        col = {o: j for j, o in enumerate(cands)}
        p = _p_matrix(world, allowed, list(cands), at, m)  # (users, n, m)
        values = {"v_uniform": p.mean(axis=1).sum(axis=1)}
        for arm in ARMS:
            arm_state = state_of_arm(scorer.arms, state, arm)
            ranked = arm_rankings(scorer, arm_state, allowed, at, arm == HOLDOUT_ARM)
            idx = np.array([[col[o] for o in r[:m]] for r in ranked])
            values[f"v_{arm}"] = p[np.arange(len(allowed))[:, None], idx, np.arange(m)].sum(axis=1)
            if arm == CHALLENGER_ARM:
                candidate.update({(u, at): r for u, r in zip(allowed, ranked, strict=True)})
        rows.append(pd.DataFrame({c.USER_ID: allowed, REQUEST_TIME: at, **values}))
    return Truths(pd.concat(rows, ignore_index=True), candidate)


def _p_matrix(
    world: SimWorld, users: list[str], offers: list[str], at: datetime, m: int
) -> np.ndarray:
    u = np.array([world.user_index[x] for x in users])
    o = np.array([world.offer_index[x] for x in offers])
    grid = np.meshgrid(u, o, np.arange(1, m + 1), indexing="ij")
    uu, oo, rr = (g.ravel() for g in grid)
    p = world.p_redeem(uu, oo, np.full(len(uu), instant_ns(at)), rr)
    return p.reshape(len(u), len(o), m)


def serve_once(world: SimWorld, scorer: Scorer, seed: int) -> pd.DataFrame:
    """One simulated experiment: every request served by the Scorer, redemptions drawn."""
    experiment = experiment_for(world, seed)
    save_experiment(world.home, experiment, now=world.start - timedelta(seconds=1))
    # Only the experiment changed: swap it in without reloading the snapshot and models.
    scorer.arms = replace(scorer.arms, experiments=(experiment,))
    rows = []
    for at, users in world.requests:
        for r in scorer.rank_many(users, PURPOSE, world.config.k, now=at):
            rows += [(r.user_id, o.offer_id, at, r.request_id, o.rank, r.experiment, r.arm,
                      o.propensity) for o in r.offers if r.arm]  # fmt: skip
    cols = [c.USER_ID, c.OFFER_ID, c.SHOWN_AT, c.SLATE_ID, c.POSITION, c.EXPERIMENT, c.ARM,
            c.PROPENSITY]  # fmt: skip
    logged = pd.DataFrame(rows, columns=cols)
    p = world.p_redeem(
        logged[c.USER_ID].map(world.user_index).to_numpy(),
        logged[c.OFFER_ID].map(world.offer_index).to_numpy(),
        logged[c.SHOWN_AT].map(instant_ns).to_numpy(np.int64),
        logged[c.POSITION].to_numpy(np.int64),
    )
    redeemed = np.random.default_rng([seed, 1]).random(len(p)) < p
    logged[c.SHOWN_AT] = pd.to_datetime(logged[c.SHOWN_AT], utc=True)
    logged[c.REDEEMED_AT] = logged[c.SHOWN_AT].where(redeemed) + pd.Timedelta(days=1)
    return logged


def estimate_once(
    world: SimWorld, truths: Truths, logged: pd.DataFrame, seed: int, resamples: int
) -> dict[str, dict[str, float]]:
    """The report's estimates of one simulated experiment beside the truths."""
    rng = np.random.default_rng([seed, 2])
    eps = world.config.exploration
    users = per_user(logged)
    out = {}
    for name, (arm, base) in {
        "champion_vs_holdout": (CHAMPION_ARM, HOLDOUT_ARM),
        "challenger_vs_holdout": (CHALLENGER_ARM, HOLDOUT_ARM),
        "challenger_vs_champion": (CHALLENGER_ARM, CHAMPION_ARM),
    }.items():
        estimate, _ = lift(users, arm, base, rng, resamples)
        out[name] = {**estimate.to_dict(), "truth": truths.lift(arm, base, eps)}
    traffic = logged[logged[c.ARM].isin(CANDIDATE_TRAFFIC)]
    keys = traffic.drop_duplicates(c.SLATE_ID)
    rankings = {
        s: truths.candidate[(u, t.to_pydatetime())]
        for s, u, t in zip(keys[c.SLATE_ID], keys[c.USER_ID], keys[c.SHOWN_AT], strict=True)
    }
    truth = _candidate_truth(truths, keys)
    for name, estimate in off_policy(traffic, rankings, rng, resamples).items():
        out[name] = {**estimate.to_dict(), "truth": truth}
    return out


def _candidate_truth(truths: Truths, slates: pd.DataFrame) -> float:
    v = truths.values.set_index([c.USER_ID, REQUEST_TIME])[f"v_{CHALLENGER_ARM}"]
    keys = list(
        zip(slates[c.USER_ID], slates[c.SHOWN_AT].map(lambda t: t.to_pydatetime()), strict=True)
    )
    return float(v.loc[keys].mean())


def coverage_study(
    world: SimWorld,
    seeds: range | list[int],
    resamples: int = DEFAULT_RESAMPLES,
    keep_last: bool = False,
) -> pd.DataFrame:
    """One row per (seed, quantity): estimate, interval, truth, covered (`keep_last`: the last
    seed's logged exposures in `.attrs["logged"]`)."""
    scorer = sim_scorer(world, seeds[0])
    truths = true_values(world, scorer)
    rows = []
    for seed in seeds:
        logged = serve_once(world, scorer, seed)
        for name, e in estimate_once(world, truths, logged, seed, resamples).items():
            rows.append({"seed": seed, "quantity": name, **e,
                         "covered": e["low"] <= e["truth"] <= e["high"]})  # fmt: skip
    scorer.audit.close()
    study = pd.DataFrame(rows)
    if keep_last:
        study.attrs["logged"] = logged
    return study


def append_logged(world: SimWorld, logged: pd.DataFrame) -> Path:
    """The simulated log as the offer service would report it: appended to DATA/exposures."""
    path = world.data / f"{c.EXPOSURES}.parquet"
    history = pd.read_parquet(path)
    logged = logged.astype({c.POSITION: history[c.POSITION].dtype})
    for col in (c.SHOWN_AT, c.REDEEMED_AT):
        logged[col] = logged[col].astype(history[col].dtype)
    pd.concat([history, logged], ignore_index=True).to_parquet(path, index=False)
    return path
