"""The transactions table: purchases from drifting tastes, loyalty and popularity, plus refunds."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.contract import AMOUNT, CURRENCY, MCC, MERCHANT_ID, TS, TXN_ID, USER_ID
from offers.synth.columns import DAY, YEAR_DAYS, ids, take, utc
from offers.synth.world import (
    FAVOURITE_SPLIT,
    Catalog,
    Merchants,
    People,
    categorical_rows,
    zipf_pick,
)

# --- activity ---
TXNS_PER_USER_YEAR = 50.0  # mean purchases per user and year (100k users ~ 10M rows in 2 y)
ACTIVITY_SIGMA = 0.8  # lognormal spread of user activity around that mean

# --- transaction times, refunds ---
HOUR_WEIGHTS = (  # relative activity per hour of day (UTC), 0h..23h
    0.3, 0.2, 0.1, 0.1, 0.1, 0.2, 0.5, 1.2, 2.0, 2.2, 2.4, 2.8,
    3.4, 3.0, 2.6, 2.6, 2.9, 3.4, 3.6, 3.2, 2.5, 1.8, 1.1, 0.6,
)  # fmt: skip
REFUND_RATE = 0.02  # share of purchases that get a refund
REFUND_FULL_SHARE = 0.8  # refunds of the whole amount; the rest are partial
REFUND_PARTIAL = (0.2, 0.9)  # fraction refunded when partial
REFUND_DELAY_DAYS = 3.0  # median delay between purchase and refund (lognormal)
REFUND_DELAY_SIGMA = 0.8  # lognormal spread of that delay


@dataclass(frozen=True)
class Txns:
    user: np.ndarray
    ts: np.ndarray  # seconds since start
    merchant: np.ndarray
    cat: np.ndarray
    amount: np.ndarray


def draw_transactions(
    rng: np.random.Generator,
    catalog: Catalog,
    merchants: Merchants,
    people: People,
    t0: pd.Timestamp,
    days: int,
) -> Txns:
    """Purchases from drifting tastes, loyalty and Zipf popularity, plus refunds; sorted by time."""
    n = people.n
    rate = TXNS_PER_USER_YEAR * rng.lognormal(-(ACTIVITY_SIGMA**2) / 2, ACTIVITY_SIGMA, n)
    per_user = rng.poisson(rate * days / YEAR_DAYS)
    user = np.repeat(np.arange(n, dtype=np.int64), per_user)
    cat, ts = _categories_and_times(rng, catalog, people, user, t0, days)
    merchant, amount = _merchants_and_amounts(rng, catalog, merchants, people, user, cat)
    return _with_refunds(rng, Txns(user, ts, merchant, cat, amount), n, days)


def _categories_and_times(
    rng: np.random.Generator,
    catalog: Catalog,
    people: People,
    user: np.ndarray,
    t0: pd.Timestamp,
    days: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Each purchase's category (tastes drifting over the period) and second since start."""
    n, m = people.n, len(user)
    day = rng.integers(0, days, m)
    late = rng.random(m) < (day + 0.5) / days  # taste drift: a mixture moving to the late taste
    cum = np.cumsum(people.taste.reshape(2 * n, catalog.k), axis=1)
    cum[:, -1] = 1.0
    cat = categorical_rows(rng, cum, late * n + user)
    del cum, late

    # weekly rhythm: move each purchase within its week to a weekday drawn for its category
    weekday0 = t0.weekday()
    dow = categorical_rows(rng, catalog.dow_cum, cat)
    day = day - (weekday0 + day) % 7 + dow
    day = np.where(day < 0, day + 7, np.where(day >= days, day - 7, day))
    hour_cum = np.cumsum(HOUR_WEIGHTS) / np.sum(HOUR_WEIGHTS)
    hour_cum[-1] = 1.0
    hour = np.searchsorted(hour_cum, rng.random(m), side="right")
    return cat, day * DAY + hour * 3600 + rng.integers(0, 3600, m)


def _merchants_and_amounts(
    rng: np.random.Generator,
    catalog: Catalog,
    merchants: Merchants,
    people: People,
    user: np.ndarray,
    cat: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """A favourite merchant for loyal purchases, else a popular one; amounts at its price level."""
    m = len(user)
    merchant = np.empty(m, dtype=np.int64)
    loyal = rng.random(m) < people.loyalty[user]
    which = (rng.random(m) >= FAVOURITE_SPLIT).astype(np.int64)
    merchant[loyal] = people.fav[user[loyal], cat[loyal], which[loyal]]
    merchant[~loyal] = zipf_pick(rng, merchants, cat[~loyal])
    del loyal, which

    log_amount = catalog.mu[cat] + np.log(merchants.price[merchant])
    amount = np.exp(log_amount + catalog.sigma[cat] * rng.standard_normal(m))
    return merchant, np.maximum(np.round(amount, 2), 0.01)


def _with_refunds(rng: np.random.Generator, buys: Txns, n: int, days: int) -> Txns:
    """Purchases plus their refunds (full or partial, a few days later), sorted by time."""
    refund = np.flatnonzero(rng.random(len(buys.user)) < REFUND_RATE)
    delay = rng.lognormal(np.log(REFUND_DELAY_DAYS * DAY), REFUND_DELAY_SIGMA, len(refund))
    r_ts = buys.ts[refund] + delay.astype(np.int64) + 1
    keep = r_ts < days * DAY
    refund, r_ts = refund[keep], r_ts[keep]
    part = rng.uniform(*REFUND_PARTIAL, len(refund))
    full = rng.random(len(refund)) < REFUND_FULL_SHARE
    r_amount = -np.maximum(np.round(buys.amount[refund] * np.where(full, 1.0, part), 2), 0.01)

    user = np.concatenate([buys.user, buys.user[refund]])
    ts = np.concatenate([buys.ts, r_ts])
    order = np.argsort(ts * n + user, kind="stable")
    return Txns(
        user=user[order],
        ts=ts[order],
        merchant=np.concatenate([buys.merchant, buys.merchant[refund]])[order],
        cat=np.concatenate([buys.cat, buys.cat[refund]])[order],
        amount=np.concatenate([buys.amount, r_amount])[order],
    )


def transactions_frame(
    txns: Txns, catalog: Catalog, merchants: Merchants, people: People, t0: pd.Timestamp
) -> pd.DataFrame:
    m = len(txns.user)
    return pd.DataFrame(
        {
            TXN_ID: ids("t", np.arange(m), m),
            USER_ID: ids("u", txns.user, people.n),
            TS: utc(txns.ts, t0),
            AMOUNT: txns.amount,
            MERCHANT_ID: ids("m", merchants.label[txns.merchant], len(merchants.cat)),
            MCC: take(catalog.mcc, txns.cat),
            CURRENCY: take(people.currency, txns.user),
        }
    )
