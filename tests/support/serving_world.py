"""A small hand-made world for serving tests (imported by conftest.py and the tests): tables on disk, a published snapshot, a model.

Each decision-table row has its own user, so one request per row exercises the whole table.
The model is a tiny LightGBM booster trained inline on assembled features (the registry path is
exercised by the end-to-end tests in test_registry_e2e.py).
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass, field
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd
from frames import at, consents, transactions, users

from features import contract as c
from features.backend import connect
from features.snapshot import load_snapshot, publish_snapshot
from features.sources import register_sources
from features.tracking import RegisteredRanker
from features.vector import (
    FEATURE_COLUMNS,
    FeatureSource,
    OfferArrays,
    assemble,
)
from policy import policy_version
from serving.scorer import Scorer

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

CUTOFF = "2025-06-01"
NOW = "2025-06-10T12:00:00+00:00"
MODEL_NAME = "offer-ranker"

# user -> (decision-table reason when asked for offer_ranking at NOW)
USERS_BY_REASON = {
    "u_ok": "OK",
    "u_cold": "OK",  # consented after the snapshot's cutoff: no history in it
    "u_revoked": "CONSENT_REVOKED",
    "u_expired": "CONSENT_EXPIRED",
    "u_scope": "PURPOSE_NOT_IN_SCOPE",
    "u_object": "MARKETING_OBJECTION",
    "u_minor": "MINOR",
    "u_noage": "AGE_UNKNOWN",
    "u_noconsent": "NO_CONSENT",
}
# ordinary merchants (id, mcc) and sensitive ones (tier A health, tier C gambling)
MERCHANTS = [("m_groc", "5411"), ("m_cafe", "5812"), ("m_fuel", "5541"), ("m_book", "5942")]
SENSITIVE = [("m_pharm", "5912"), ("m_bet", "7995")]


@dataclass
class World:
    home: Path
    data: Path
    booster: lgb.Booster
    offers: pd.DataFrame
    version: str = "1"
    calls: list[str] = field(default_factory=list)

    def loader(self, home: Path, alias: str) -> RegisteredRanker:
        """The registry's shape, without a registry (test_registry_e2e.py covers that path)."""
        self.calls.append(alias)
        if alias not in ("champion", "challenger"):
            raise LookupError(f"no model under alias {alias!r}")
        return RegisteredRanker(
            booster=self.booster,
            name=MODEL_NAME,
            version=self.version,
            alias=alias,
            run_id="run-stub",
            feature_columns=list(FEATURE_COLUMNS),
            snapshot_id=None,
            policy_version=policy_version(),
        )

    def scorer(self, **kwargs) -> Scorer:
        """Replay mode by default: the world's times are in the past."""
        kwargs.setdefault("allow_past_now", True)
        return Scorer(self.home, self.data, model_loader=self.loader, **kwargs)

    @property
    def active_offer_ids(self) -> list[str]:
        now = pd.Timestamp(NOW)
        o = self.offers
        mask = (o[c.STARTS_AT] <= now) & (now < o[c.ENDS_AT]) & ~o[c.MCC].isin(["5912", "7995"])
        return o.loc[mask, c.OFFER_ID].tolist()


def _transactions(rng: np.random.Generator) -> pd.DataFrame:
    rows = []
    start = at("2024-07-01")
    shoppers = ["u_ok", "u_revoked", "u_expired", "u_scope", "u_object", "u_minor", "u_noage"]
    for user in shoppers:
        for merchant, mcc in MERCHANTS + SENSITIVE:
            for _ in range(int(rng.integers(0, 12))):
                ts = start + pd.Timedelta(hours=int(rng.integers(0, 24 * 330)))
                rows.append((user, ts, float(rng.uniform(5, 120)), merchant, mcc))
    # u_ok shops weekly at the grocer: the strongest habit in the world
    for week in range(40):
        rows.append(("u_ok", start + pd.Timedelta(days=7 * week + 1), 60.0, "m_groc", "5411"))
    return transactions(rows)


def _consents() -> pd.DataFrame:
    return consents(
        [
            {"user_id": "u_ok", "granted_at": "2025-01-01"},
            {"user_id": "u_cold", "granted_at": "2025-06-05"},
            {"user_id": "u_revoked", "granted_at": "2025-01-01", "revoked_at": "2025-06-03"},
            {"user_id": "u_expired", "granted_at": "2024-06-09"},
            {"user_id": "u_scope", "granted_at": "2025-01-01", "purposes": ["fraud_alert"]},
            {"user_id": "u_object", "granted_at": "2025-01-01"},
            {"user_id": "u_minor", "granted_at": "2025-01-01"},
            {"user_id": "u_noage", "granted_at": "2025-01-01"},
        ]
    )


def _users() -> pd.DataFrame:
    frame = users(
        list(USERS_BY_REASON),
        birth={"u_minor": dt.date(2010, 5, 1), "u_noage": None},
        objection={"u_object": "2025-03-01"},
    )
    return frame


def _offers() -> pd.DataFrame:
    rows = []
    for i, (merchant, mcc) in enumerate(MERCHANTS * 3 + SENSITIVE * 2):
        starts, ends = "2025-05-01", "2025-08-01"
        if i % 7 == 5:
            starts, ends = "2025-04-01", "2025-06-05"  # ended before NOW
        if i % 7 == 6:
            starts, ends = "2025-06-20", "2025-09-01"  # not started at NOW
        rows.append((f"o{i:02d}", merchant, mcc, f"offer {i}", at(starts), at(ends), float(5 + i)))
    frame = pd.DataFrame(
        rows, columns=[c.OFFER_ID, c.MERCHANT_ID, c.MCC, c.TITLE, c.STARTS_AT, c.ENDS_AT, c.REWARD]
    )
    for col in (c.STARTS_AT, c.ENDS_AT):
        frame[col] = frame[col].astype("datetime64[us, UTC]")
    return frame


def _exposures(offers: pd.DataFrame) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            c.USER_ID: ["u_ok"],
            c.OFFER_ID: [offers[c.OFFER_ID].iloc[0]],
            c.SHOWN_AT: [at("2025-05-10")],
            c.REDEEMED_AT: [pd.NaT],
        }
    )
    for col in (c.SHOWN_AT, c.REDEEMED_AT):
        frame[col] = pd.to_datetime(frame[col], utc=True).astype("datetime64[us, UTC]")
    return frame


def tiny_booster(tables, offers: pd.DataFrame, seed: int = 0) -> lgb.Booster:
    """A small model whose scores depend on the user x merchant features (so reasons do)."""
    rng = np.random.default_rng(seed)
    source = FeatureSource(tables)
    arrays = OfferArrays.from_frame(offers)
    cut = pd.Timestamp(CUTOFF, tz="UTC").value
    user_ids = tables.user["user_id"].astype(str).unique().tolist()
    n = 600
    pick_u = rng.integers(0, len(user_ids), n)
    pick_o = rng.integers(0, len(arrays), n)
    X = assemble(
        source, [user_ids[i] for i in pick_u], np.full(n, cut, np.int64), arrays.take(pick_o)
    )
    col = FEATURE_COLUMNS.index
    y = np.nan_to_num(X[:, col("um_n_365d")]) + 0.2 * np.nan_to_num(X[:, col("o_reward")])
    y = y + rng.normal(0, 0.5, n)
    params = {"objective": "regression", "num_leaves": 7, "min_data_in_leaf": 5, "verbose": -1,
              "num_threads": 1, "seed": seed, "deterministic": True}  # fmt: skip
    data = lgb.Dataset(X, y, feature_name=list(FEATURE_COLUMNS))  # o_mcc as a number, as trained
    return lgb.train(params, data, num_boost_round=30)


def build_world(root: Path, seed: int = 0) -> World:
    rng = np.random.default_rng(seed)
    home, data = root / "home", root / "data"
    data.mkdir(parents=True)
    txns, user_frame, consent_frame, offers = _transactions(rng), _users(), _consents(), _offers()
    for name, frame in {
        c.TRANSACTIONS: txns,
        c.USERS: user_frame,
        c.CONSENTS: consent_frame,
        c.OFFERS: offers,
        c.EXPOSURES: _exposures(offers),
    }.items():
        frame.to_parquet(data / f"{name}.parquet", index=False)
    sources = register_sources(
        connect(threads=1), txns, user_frame, consent_frame, {}, at("2025-06-01T06:00")
    )
    publish_snapshot(sources, home / "features", at(CUTOFF).to_pydatetime())
    tables, _ = load_snapshot(home / "features")
    return World(home, data, tiny_booster(tables, offers, seed), offers)
