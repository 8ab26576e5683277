"""The hidden redemption model (the oracle): the true p_redeem of every exposure row.

Logistic in the user's affinity for the offer's category and merchant, their recent behaviour
there, the reward and the position; the intercept is solved for a target redemption rate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from offers.synth.behaviour import Txns
from offers.synth.columns import DAY
from offers.synth.world import FAVOURITE_SPLIT, N_FAVOURITES, Catalog, Merchants, People

TARGET_REDEMPTION_RATE = 0.10  # the intercept is solved so that mean p_redeem is this
COEF_CATEGORY = 0.6  # x log lift of the user's current taste for the offer's category
COEF_MERCHANT = 0.5  # x log lift of the user's preference for the offer's merchant
COEF_VISITS = 0.5  # x log1p(purchases at the merchant in the last VISITS_WINDOW_DAYS)
COEF_RECENCY = 1.0  # x exp(-days since the last purchase there / RECENCY_SCALE_DAYS)
COEF_CATEGORY_SPEND = 0.15  # x log1p(spend in the category in the last SPEND_WINDOW_DAYS)
COEF_REWARD = 0.5  # x log(reward)
COEF_POSITION = 0.6  # x -log(position): position bias
VISITS_WINDOW_DAYS = 90  # window for merchant visit counts
SPEND_WINDOW_DAYS = 30  # window for category spend
RECENCY_SCALE_DAYS = 21.0  # decay of the last-visit effect
LIFT_CLIP = 3.0  # log lifts are clipped to +-this
INTERCEPT_NEWTON_STEPS = 30  # Newton steps to solve the intercept


@dataclass(frozen=True)
class Exposure:
    """One array per exposure row: who saw which merchant's offer, when, where, for what."""

    user: np.ndarray
    shown: np.ndarray  # seconds since start
    merchant: np.ndarray  # the offer's merchant
    reward: np.ndarray  # the offer's reward
    position: np.ndarray


def p_redeem(
    catalog: Catalog,
    merchants: Merchants,
    people: People,
    txns: Txns,
    exposure: Exposure,
    days: int,
) -> np.ndarray:
    """The true p_redeem: logistic in affinity, recent behaviour, reward and position."""
    z = redeem_logit(catalog, merchants, people, txns, exposure, days)
    return sigmoid(z + solve_intercept(z, TARGET_REDEMPTION_RATE))


def redeem_logit(
    catalog: Catalog,
    merchants: Merchants,
    people: People,
    txns: Txns,
    exposure: Exposure,
    days: int,
) -> np.ndarray:
    """The logit before the intercept (a simulator fixes the intercept once, then reuses it)."""
    t = logit_terms(catalog, merchants, people, txns, exposure, days)
    return (
        people.propensity[exposure.user]
        + COEF_CATEGORY * t[CATEGORY_LIFT]
        + COEF_MERCHANT * t[MERCHANT_LIFT]
        + COEF_VISITS * t[LOG_VISITS]
        + COEF_RECENCY * t[RECENCY]
        + COEF_CATEGORY_SPEND * t[LOG_CATEGORY_SPEND]
        + COEF_REWARD * np.log(exposure.reward)
        - COEF_POSITION * np.log(exposure.position)
    )


# The oracle's per-row terms that depend on the user's hidden tastes and history (the reward
# and position terms are the offer's and the slate's own, known exactly).
CATEGORY_LIFT = "category_lift"  # log lift of the user's current taste for the category
MERCHANT_LIFT = "merchant_lift"  # log lift of the user's preference for the merchant
LOG_VISITS = "log1p_visits"  # log1p(purchases at the merchant, last VISITS_WINDOW_DAYS)
RECENCY = "recency"  # exp(-days since the last purchase there / RECENCY_SCALE_DAYS)
LOG_CATEGORY_SPEND = "log1p_category_spend"  # log1p(category spend, last SPEND_WINDOW_DAYS)
TERMS = (CATEGORY_LIFT, MERCHANT_LIFT, LOG_VISITS, RECENCY, LOG_CATEGORY_SPEND)


def logit_terms(
    catalog: Catalog,
    merchants: Merchants,
    people: People,
    txns: Txns,
    exposure: Exposure,
    days: int,
) -> dict[str, np.ndarray]:
    """The TERMS per exposure row, before their coefficients: the logit is built from them,
    and benchmarks/quality_ceiling.py asks how far a ranker gets that knows one exactly."""
    cat = merchants.cat[exposure.merchant]
    cat_lift, merchant_lift = _lifts(catalog, merchants, people, exposure, cat, days)
    visits, recency, spend = _recent(catalog, merchants, txns, exposure, cat, days)
    return {
        CATEGORY_LIFT: cat_lift,
        MERCHANT_LIFT: merchant_lift,
        LOG_VISITS: np.log1p(visits),
        RECENCY: recency,
        LOG_CATEGORY_SPEND: np.log1p(spend),
    }


def _lifts(
    catalog: Catalog,
    merchants: Merchants,
    people: People,
    exposure: Exposure,
    cat: np.ndarray,
    days: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Log lifts of the user's current taste for the category and preference for the merchant."""
    user, merchant = exposure.user, exposure.merchant
    w = exposure.shown / (days * DAY)
    p_cat = (1 - w) * people.taste[0, user, cat] + w * people.taste[1, user, cat]
    cat_lift = np.clip(np.log(p_cat / catalog.weight[cat]), -LIFT_CLIP, LIFT_CLIP)
    fav = people.fav[user, cat]  # (E, N_FAVOURITES)
    fav_w = np.array([FAVOURITE_SPLIT, 1 - FAVOURITE_SPLIT])[:N_FAVOURITES]
    fav_share = ((fav == merchant[:, None]) * fav_w[None, :]).sum(axis=1)
    loyalty = people.loyalty[user]
    share = loyalty * fav_share + (1 - loyalty) * merchants.pop[merchant]
    merchant_lift = np.clip(np.log(share / merchants.pop[merchant]), -LIFT_CLIP, LIFT_CLIP)
    return cat_lift, merchant_lift


def _recent(
    catalog: Catalog,
    merchants: Merchants,
    txns: Txns,
    exposure: Exposure,
    cat: np.ndarray,
    days: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Visits to the merchant, recency of the last one, and spend in the category, before showing."""
    user, shown = exposure.user, exposure.shown
    purchase = txns.amount > 0
    visits, last = _window_stats(
        txns.user[purchase] * len(merchants.cat) + txns.merchant[purchase],
        txns.ts[purchase],
        None,
        user * len(merchants.cat) + exposure.merchant,
        shown,
        VISITS_WINDOW_DAYS * DAY,
        days,
    )
    days_since = (shown - last) / DAY
    recency = np.where(last >= 0, np.exp(-days_since / RECENCY_SCALE_DAYS), 0.0)
    spend, _ = _window_stats(
        txns.user[purchase] * catalog.k + txns.cat[purchase],
        txns.ts[purchase],
        txns.amount[purchase],
        user * catalog.k + cat,
        shown,
        SPEND_WINDOW_DAYS * DAY,
        days,
    )
    return visits, recency, spend


def _window_stats(
    key: np.ndarray,
    ts: np.ndarray,
    value: np.ndarray | None,
    q_key: np.ndarray,
    q_ts: np.ndarray,
    window: int,
    days: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Per query: count (or sum of `value`) of events with the key in [q_ts - window, q_ts),
    and the time of the latest event with the key before q_ts (-1 if none)."""
    span = days * DAY + 1
    comp = key * span + ts
    order = np.argsort(comp)  # ties (same key, same second) add up the same in any order
    comp = comp[order]
    base = q_key * span
    q_order = np.argsort(base + q_ts)  # sorted needles make the searches cache-friendly
    base, q_ts = base[q_order], q_ts[q_order]
    hi = np.searchsorted(comp, base + q_ts, side="left")
    lo = np.searchsorted(comp, base + np.maximum(q_ts - window, 0), side="left")
    first = np.searchsorted(comp, base, side="left")
    if value is None:
        total_sorted = (hi - lo).astype(np.float64)
    else:
        csum = np.concatenate([[0.0], np.cumsum(value[order])])
        total_sorted = csum[hi] - csum[lo]
    last_sorted = np.where(hi > first, comp[np.maximum(hi - 1, 0)] - base, -1)
    total, last = np.empty_like(total_sorted), np.empty_like(last_sorted)
    total[q_order], last[q_order] = total_sorted, last_sorted
    return total, last


def solve_intercept(z: np.ndarray, target: float) -> float:
    """Newton on b so that mean(sigmoid(z + b)) equals target (monotone, converges fast)."""
    b = float(np.log(target / (1 - target)) - np.mean(z))
    for _ in range(INTERCEPT_NEWTON_STEPS):
        p = sigmoid(z + b)
        gap = p.mean() - target
        if abs(gap) < 1e-9:
            break
        b -= gap / max(float((p * (1 - p)).mean()), 1e-12)
    return b


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))
