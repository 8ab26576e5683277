"""Serving an experiment's arms: which state ranks each arm, and the slate each request shows.

Why apart from the Scorer: the request path without an experiment stays as it was; with one,
`rank_in_experiment` splits the allowed requests by arm (denied ones never get an arm), ranks
each arm's users with that arm's state (champion: the served model; challenger: the registered
`challenger` alias over the same snapshot; holdout: the non-personalised popularity ranking for
every user), then applies the logging policy of serving.experiments and records the arm, the
experiment and each shown offer's propensity on the result.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from features.instants import instant_ns
from features.tracking import CHALLENGER, load_registered_model
from policy import ConsentState, ConsentStatus, Decision, Reason
from serving.experiments import (
    CHALLENGER_ARM,
    HOLDOUT_ARM,
    Experiment,
    active_experiment,
    assign,
    explore,
    load_experiments,
)
from serving.results import RankedOffer, RankResult
from serving.state import ModelLoader, ServingState, state_for_model

if TYPE_CHECKING:
    from serving.scorer import Scorer


@dataclass(frozen=True)
class ArmStates:
    """The stored experiments and, when one of them has a challenger arm, its model's state."""

    experiments: tuple[Experiment, ...] = ()
    challenger: ServingState | None = None

    def active(self, now: datetime) -> Experiment | None:
        return active_experiment(self.experiments, now)


def load_arms(
    home: Path, base: ServingState, model_loader: ModelLoader | None, now: datetime | None
) -> ArmStates:
    """Experiments not over at `now` (None: all, for replays); the challenger alias loaded (and
    checked) only if one of them needs it. A missing challenger model then refuses to load, as
    a missing champion does.
    """
    experiments = tuple(e for e in load_experiments(home) if now is None or e.end > now)
    if not any(CHALLENGER_ARM in e.shares for e in experiments):
        return ArmStates(experiments)
    model = (model_loader or load_registered_model)(home, CHALLENGER)
    challenger = state_for_model(home, base, model, CHALLENGER)
    return ArmStates(experiments, challenger)


def state_of_arm(arms: ArmStates, base: ServingState, arm: str) -> ServingState:
    if arm == CHALLENGER_ARM:
        if arms.challenger is None:
            raise RuntimeError("challenger arm without a loaded challenger model")
        return arms.challenger
    return base


def rank_in_experiment(
    scorer: Scorer,
    base: ServingState,
    arms: ArmStates,
    experiment: Experiment,
    user_ids: Sequence[str],
    decisions: Sequence[Decision],
    purpose: str,
    idx: np.ndarray | None,
    k: int,
    now: datetime,
) -> list[RankResult]:
    """Denied requests as without an experiment; allowed ones by arm, explored, with propensities."""
    by_arm: dict[str | None, list[int]] = {}
    for i, (user, decision) in enumerate(zip(user_ids, decisions, strict=True)):
        arm = assign(experiment, user) if decision.allowed else None
        by_arm.setdefault(arm, []).append(i)
    n = len(scorer.slate_of(base, idx, instant_ns(now)).idx)
    results: list[RankResult | None] = [None] * len(user_ids)
    for arm, members in by_arm.items():
        users = [user_ids[i] for i in members]
        picked = [decisions[i] for i in members]
        if arm is None:  # denied: never assigned, nothing explored
            ranked = scorer.rank_decided(base, users, picked, purpose, idx, k, now)
        else:
            state = state_of_arm(arms, base, arm)
            full = scorer.rank_decided(
                state, users, picked, purpose, idx, max(n, 1), now, arm == HOLDOUT_ARM
            )
            ranked = [_shown(r, experiment, arm, n, k, state) for r in full]
        for i, result in zip(members, ranked, strict=True):
            results[i] = result
    return [r for r in results if r is not None]


def _shown(
    result: RankResult, experiment: Experiment, arm: str, n: int, k: int, state: ServingState
) -> RankResult:
    """The logging policy applied to the arm's full ranking of the n candidates."""
    shown = explore(experiment, result.user_id, result.now, n, k)
    offers = [
        RankedOffer(
            result.offers[j].offer_id,
            result.offers[j].score,
            position,
            result.offers[j].reasons,
            float(p),
        )
        for position, (j, p) in enumerate(zip(shown.order, shown.propensity, strict=True), 1)
    ]
    cold = not state.source.has_history(result.user_id, state.cutoff_ns)
    return replace(
        result,
        offers=offers,
        cold_start=cold,
        experiment=experiment.name,
        arm=arm,
        explored=shown.explored,
    )


def arm_rankings(
    scorer: Scorer, state: ServingState, users: Sequence[str], now: datetime, popular: bool
) -> list[list[str]]:
    """Each user's full deterministic ranking (offer ids) by `state`'s model, or popularity.

    No decision and no audit: for off-policy evaluation and the simulator's true values, over
    requests that were allowed when they were logged.
    """
    n = len(scorer.slate_of(state, None, instant_ns(now)).idx)
    allow = Decision(True, Reason.OK, ConsentState(ConsentStatus.NONE, None), state.policy_version)
    results = scorer.rank_decided(
        state, list(users), [allow] * len(users), "", None, max(n, 1), now, popular
    )
    return [[o.offer_id for o in r.offers] for r in results]
