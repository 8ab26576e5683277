"""Synthetic contract tables with a ground-truth redemption oracle.

Why: the pipeline needs data that looks like a bank's card history (tastes, loyalty, weekly
rhythm, refunds, sensitive spending, messy consents) and whose labels come from a *known* model,
so later work can tell how close a trained ranker gets to the ceiling (`oracle.parquet`).

Everything is vectorised numpy (no per-transaction Python loops) and deterministic per seed:
each stage draws from its own child generator spawned from `numpy.random.default_rng(seed)`.
Times are handled as int64 seconds since `start` (midnight UTC) and converted to
`datetime64[us, UTC]` only when the frames are built (`columns`).

Stages, one module each: `world` (categories, merchants, people), `population` (users,
consents), `behaviour` (transactions), `campaigns` (offers, slates, redemptions) and
`oracle` (the hidden p_redeem). The knobs sit at the top of the module that uses them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from features.contract import CONSENTS, EXPOSURES, OFFERS, ORACLE, TRANSACTIONS, USERS
from offers.synth.behaviour import Txns, draw_transactions, transactions_frame
from offers.synth.campaigns import (
    EXPOSURE_WARMUP_DAYS,
    OFFER_WEEKS,
    Offers,
    draw_offers,
    exposures,
    offers_frame,
)
from offers.synth.population import consents_frame, users_frame
from offers.synth.world import (
    Catalog,
    Merchants,
    People,
    make_catalog,
    make_merchants,
    make_people,
)

N_STREAMS = 8  # child generators, one per stage


@dataclass(frozen=True)
class SynthWorld:
    """The hidden world behind the tables (for the oracle; offers/experiments simulates on it)."""

    catalog: Catalog
    merchants: Merchants
    people: People
    txns: Txns
    offers: Offers
    t0: pd.Timestamp
    days: int


def generate(
    n_users: int = 1000, seed: int = 0, start: str = "2024-01-01", days: int = 730
) -> dict[str, pd.DataFrame]:
    """The five contract tables plus "oracle" (the hidden p_redeem of every exposure row).

    Covers [start, start + days) in UTC; the same arguments always give identical frames.
    """
    return generate_world(n_users, seed, start, days)[0]


def generate_world(
    n_users: int = 1000, seed: int = 0, start: str = "2024-01-01", days: int = 730
) -> tuple[dict[str, pd.DataFrame], SynthWorld]:
    """`generate`'s tables and the world they were drawn from."""
    if n_users < 1 or days <= EXPOSURE_WARMUP_DAYS + 7 * OFFER_WEEKS[1]:
        raise ValueError(
            f"need n_users >= 1 and days > {EXPOSURE_WARMUP_DAYS + 7 * OFFER_WEEKS[1]}"
        )
    t0 = pd.Timestamp(start, tz="UTC").floor("D")
    r = np.random.default_rng(seed).spawn(N_STREAMS)
    catalog = make_catalog()
    merchants = make_merchants(r[0], catalog, n_users)
    people = make_people(r[1], catalog, merchants, n_users)
    users = users_frame(r[2], people, t0, days)
    consents = consents_frame(r[3], n_users, t0, days)
    txns = draw_transactions(r[4], catalog, merchants, people, t0, days)
    offers = draw_offers(r[5], catalog, merchants, days)
    shown, oracle = exposures(r[6], catalog, merchants, people, txns, offers, t0, days)
    tables = {
        TRANSACTIONS: transactions_frame(txns, catalog, merchants, people, t0),
        USERS: users,
        CONSENTS: consents,
        OFFERS: offers_frame(offers, catalog, merchants, t0),
        EXPOSURES: shown,
        ORACLE: oracle,
    }
    return tables, SynthWorld(catalog, merchants, people, txns, offers, t0, days)


def write_synthetic(out_dir: str | Path, n_users: int = 1000, seed: int = 0) -> dict[str, int]:
    """Write DIR/<table>.parquet for the five tables and DIR/oracle.parquet; return row counts."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    counts: dict[str, int] = {}
    for name, frame in generate(n_users=n_users, seed=seed).items():
        frame.to_parquet(out / f"{name}.parquet", index=False)
        counts[name] = len(frame)
    return counts
