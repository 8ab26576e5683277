"""The simulator's world: synthetic tables, a published snapshot, two models, the true oracle.

Why its own models instead of `offers train`: the closed-loop study runs the real Scorer many
times, and needs two rankers that differ (a champion and a weaker challenger), not the best
ones; training them inline on the snapshot's features against the oracle's probabilities takes
a second. They reach the Scorer through its `model_loader`, exactly the shape the registry
returns (`features.tracking.RegisteredRanker`), so the serving path is the production one.

The oracle is offers/synth's: p = sigmoid(logit(user, offer, time, position) + b), with the
intercept b solved once on the world's historical exposures (as synth solves it) and then fixed,
so the same (user, offer, time, position) always has the same probability.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd

from features import contract as c
from features.backend import connect
from features.snapshot import load_snapshot, publish_snapshot
from features.sources import register_sources
from features.tracking import RegisteredRanker
from features.vector import (
    CATEGORICAL_COLUMNS,
    FEATURE_COLUMNS,
    FeatureSource,
    OfferArrays,
    assemble,
)
from offers.synth import SynthWorld, generate_world
from offers.synth.oracle import (
    TARGET_REDEMPTION_RATE,
    Exposure,
    redeem_logit,
    sigmoid,
    solve_intercept,
)
from policy import policy_version
from serving.experiments import CHALLENGER_ARM, CHAMPION_ARM, HOLDOUT_ARM

SIM_MODEL = "offer-ranker"
TRAIN_WINDOW_DAYS = 180  # the stand-in models learn from exposures this long before the start
REQUEST_HOUR = 12  # each user asks once a week, at noon of their weekday


@dataclass(frozen=True)
class SimConfig:
    n_users: int = 400
    weeks: int = 4
    k: int = 5
    exploration: float = 0.2
    shares: dict[str, float] = field(
        default_factory=lambda: {CHAMPION_ARM: 0.4, CHALLENGER_ARM: 0.3, HOLDOUT_ARM: 0.3}
    )
    world_seed: int = 0
    days: int = 730


@dataclass
class SimWorld:
    """Everything a simulated week needs; models and the oracle are fixed, seeds vary."""

    root: Path
    config: SimConfig
    synth: SynthWorld
    intercept: float
    start: datetime
    user_index: dict[str, int]
    offer_index: dict[str, int]
    boosters: dict[str, lgb.Booster]
    requests: list[tuple[datetime, list[str]]]

    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def end(self) -> datetime:
        return self.start + timedelta(weeks=self.config.weeks)

    def loader(self, home: Path, alias: str) -> RegisteredRanker:
        """The registry's shape for the two stand-in models (version 1 champion, 2 challenger)."""
        if alias not in self.boosters:
            raise LookupError(f"no model under alias {alias!r}")
        return RegisteredRanker(
            booster=self.boosters[alias],
            name=SIM_MODEL,
            version="1" if alias == CHAMPION_ARM else "2",
            alias=alias,
            run_id=f"sim-{alias}",
            feature_columns=list(FEATURE_COLUMNS),
            snapshot_id=None,
            policy_version=policy_version(),
        )

    def p_redeem(
        self, users: np.ndarray, offers: np.ndarray, at: np.ndarray, position: np.ndarray
    ) -> np.ndarray:
        """The true probability for catalogue indices, instants (ns) and 1-based positions."""
        w = self.synth
        shown = (at - w.t0.value) // 1_000_000_000
        seen = Exposure(users, shown, w.offers.merchant[offers], w.offers.reward[offers], position)
        z = redeem_logit(w.catalog, w.merchants, w.people, w.txns, seen, w.days)
        return sigmoid(z + self.intercept)


def register_models(world: SimWorld) -> dict[str, str]:
    """Log and register the two models in MLflow under the sim's home (aliases champion and
    challenger), so `offers serve` and `offers experiment report --candidate` find them there.
    The input example is synthetic (zeros), as every registered model's is."""
    from features import tracking

    example = pd.DataFrame(np.zeros((2, len(FEATURE_COLUMNS))), columns=list(FEATURE_COLUMNS))
    tags = {tracking.TAG_POLICY_VERSION: policy_version()}
    versions = {}
    for alias in (CHAMPION_ARM, CHALLENGER_ARM):
        with tracking.start_run(world.home, run_name=f"sim-{alias}") as run:
            uri = run.log_ranker(world.boosters[alias], FEATURE_COLUMNS, example)
            run_id = run.run_id
        versions[alias] = tracking.register_version(world.home, uri, run_id, tags, alias)
    return versions


def build_sim_world(root: Path, config: SimConfig | None = None) -> SimWorld:
    """Write the tables, publish the snapshot as of the start, fit the two models."""
    config = config or SimConfig()
    tables, synth = generate_world(n_users=config.n_users, seed=config.world_seed, days=config.days)
    data = root / "data"
    data.mkdir(parents=True)
    for name in c.TABLES:
        tables[name].to_parquet(data / f"{name}.parquet", index=False)
    start = (synth.t0 + pd.Timedelta(days=config.days - 7 * config.weeks)).to_pydatetime()
    user_index = {u: i for i, u in enumerate(tables[c.USERS][c.USER_ID].astype(str))}
    offer_index = {o: i for i, o in enumerate(tables[c.OFFERS][c.OFFER_ID].astype(str))}
    intercept = _intercept(synth, tables[c.EXPOSURES], user_index, offer_index)
    sources = register_sources(
        connect(threads=1),
        tables[c.TRANSACTIONS],
        tables[c.USERS],
        tables[c.CONSENTS],
        {},
        start,
    )
    publish_snapshot(sources, root / "home" / "features", start)
    snapshot, _ = load_snapshot(root / "home" / "features")
    boosters = _fit_models(FeatureSource(snapshot), tables, start)
    requests = _requests(sorted(user_index), start, config)
    return SimWorld(
        root, config, synth, intercept, start, user_index, offer_index, boosters, requests
    )


def _intercept(
    synth: SynthWorld,
    exposures: pd.DataFrame,
    user_index: dict[str, int],
    offer_index: dict[str, int],
) -> float:
    """synth's intercept: solved for the target rate over the world's own exposures."""
    users = exposures[c.USER_ID].map(user_index).to_numpy(np.int64)
    offers = exposures[c.OFFER_ID].map(offer_index).to_numpy(np.int64)
    shown = (exposures[c.SHOWN_AT] - synth.t0).dt.total_seconds().to_numpy(np.int64)
    seen = Exposure(
        users,
        shown,
        synth.offers.merchant[offers],
        synth.offers.reward[offers],
        exposures[c.POSITION].to_numpy(np.int64),
    )
    z = redeem_logit(synth.catalog, synth.merchants, synth.people, synth.txns, seen, synth.days)
    return solve_intercept(z, TARGET_REDEMPTION_RATE)


def _fit_models(
    source: FeatureSource, tables: dict[str, pd.DataFrame], start: datetime
) -> dict[str, lgb.Booster]:
    """Champion: 60 rounds, 15 leaves; challenger: 6 rounds, 3 leaves (weaker, different).
    Both regress the oracle's p_redeem of past exposures on features as of the start."""
    shown = tables[c.EXPOSURES]
    since = pd.Timestamp(start) - pd.Timedelta(days=TRAIN_WINDOW_DAYS)
    recent = shown[(shown[c.SHOWN_AT] >= since) & (shown[c.SHOWN_AT] < pd.Timestamp(start))]
    oracle = tables[c.ORACLE].loc[recent.index, c.P_REDEEM].to_numpy()
    offers = tables[c.OFFERS].set_index(c.OFFER_ID).loc[recent[c.OFFER_ID]].reset_index()
    cut = np.full(len(recent), pd.Timestamp(start).value, np.int64)
    at = recent[c.SHOWN_AT].astype("int64").to_numpy() * 1000
    X = assemble(source, recent[c.USER_ID].tolist(), cut, OfferArrays.from_frame(offers), at=at)
    boosters = {}
    for alias, rounds, leaves in ((CHAMPION_ARM, 60, 15), (CHALLENGER_ARM, 6, 3)):
        params = {"objective": "regression", "num_leaves": leaves, "learning_rate": 0.1,
                  "min_data_in_leaf": 20, "verbose": -1, "num_threads": 1, "seed": 0,
                  "deterministic": True}  # fmt: skip
        data = lgb.Dataset(
            X,
            oracle,
            feature_name=list(FEATURE_COLUMNS),
            categorical_feature=list(CATEGORICAL_COLUMNS),
        )
        boosters[alias] = lgb.train(params, data, num_boost_round=rounds)
    return boosters


def _requests(
    users: list[str], start: datetime, config: SimConfig
) -> list[tuple[datetime, list[str]]]:
    """Each user asks once a week, at noon of a weekday fixed per user (world seed)."""
    weekday = np.random.default_rng(config.world_seed).integers(0, 7, len(users))
    out = []
    for week in range(config.weeks):
        for day in range(7):
            at = start + timedelta(days=7 * week + day, hours=REQUEST_HOUR)
            out.append((at, [u for u, d in zip(users, weekday, strict=True) if d == day]))
    return [(at, members) for at, members in out if members]
