"""The offers and exposures tables: partner offers, slates from a logging policy, redemptions.

The logging policy shows popular offers more often (sensitive ones rarely); each exposure's
label is drawn from the oracle's p_redeem, which is also returned (the "oracle" table).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.contract import (
    ENDS_AT,
    MCC,
    MERCHANT_ID,
    OFFER_ID,
    P_REDEEM,
    POSITION,
    REDEEMED_AT,
    REWARD,
    SHOWN_AT,
    SLATE_ID,
    STARTS_AT,
    TITLE,
    USER_ID,
)
from offers.synth.behaviour import Txns
from offers.synth.columns import DAY, NULL, STRING_DTYPE, ids, take, utc
from offers.synth.oracle import Exposure, p_redeem
from offers.synth.world import Catalog, Merchants, People

# --- offers ---
N_OFFERS = 300  # partner offers over the whole period
SENSITIVE_OFFER_SHARE = 0.03  # offers from sensitive-MCC merchants (must never be served)
OFFER_WEEKS = (2, 8)  # offer window length in weeks (inclusive)
OFFER_POPULARITY_POWER = 1.0  # partners are picked ~ merchant popularity ** this
REWARDS = ((1, 0.10), (2, 0.15), (3, 0.20), (5, 0.25), (7, 0.10), (10, 0.12), (15, 0.05),
           (20, 0.03))  # fmt: skip
EXPOSURE_WARMUP_DAYS = 90  # no offer runs (nor is shown) before users have some history

# --- exposures (the logging policy) ---
SLATES_PER_USER = 6.0  # mean slates shown to a user with transactions (Poisson)
SLATE_SIZE = (5, 20)  # offers per slate (inclusive), capped by the offers active then
SHOW_HOURS = (7, 22)  # slates are shown between these hours (UTC, end exclusive)
SENSITIVE_SHOW_FACTOR = 0.05  # sampling weight of a sensitive offer relative to others
SLATE_CHUNK = 200_000  # slates per vectorised chunk (memory: chunk x max active offers)
REDEEM_DELAY_BETA = (1.0, 3.0)  # redemption falls at Beta(a, b) of the way to the offer's end


@dataclass(frozen=True)
class Offers:
    merchant: np.ndarray
    start_day: np.ndarray
    end_day: np.ndarray  # exclusive
    reward: np.ndarray


@dataclass(frozen=True)
class Slates:
    """Slates shown (one row each) and their exposure rows (one per offer shown)."""

    user: np.ndarray  # per slate
    ts: np.ndarray  # per slate, seconds since start
    slate: np.ndarray  # per exposure: index into the slate arrays
    offer: np.ndarray  # per exposure
    position: np.ndarray  # per exposure, 1-based


def draw_offers(
    rng: np.random.Generator, catalog: Catalog, merchants: Merchants, days: int
) -> Offers:
    """Partner offers from popular merchants (a few sensitive ones), windows spread over time."""
    n_sens = round(N_OFFERS * SENSITIVE_OFFER_SHARE)
    weight = merchants.global_pop**OFFER_POPULARITY_POWER
    sens_m = catalog.sensitive[merchants.cat]
    picks = []
    for mask, count in ((~sens_m, N_OFFERS - n_sens), (sens_m, n_sens)):
        w = np.where(mask, weight, 0.0)
        picks.append(rng.choice(len(w), count, p=w / w.sum()))
    merchant = np.concatenate(picks)
    length = 7 * rng.integers(OFFER_WEEKS[0], OFFER_WEEKS[1] + 1, N_OFFERS)
    start_day = rng.integers(EXPOSURE_WARMUP_DAYS, days - length + 1)
    reward = np.array([r for r, _ in REWARDS], dtype=np.float64)[
        rng.choice(len(REWARDS), N_OFFERS, p=[p for _, p in REWARDS])
    ]
    order = np.lexsort((rng.random(N_OFFERS), start_day))  # ids follow start dates
    return Offers(
        merchant=merchant[order],
        start_day=start_day[order],
        end_day=(start_day + length)[order],
        reward=reward[order],
    )


def offers_frame(
    offers: Offers, catalog: Catalog, merchants: Merchants, t0: pd.Timestamp
) -> pd.DataFrame:
    merchant_ids = ids("m", merchants.label[offers.merchant], len(merchants.cat))
    titles = [f"{r:g}% back at {mid}" for r, mid in zip(offers.reward, merchant_ids, strict=True)]
    return pd.DataFrame(
        {
            OFFER_ID: ids("o", np.arange(len(offers.merchant)), len(offers.merchant)),
            MERCHANT_ID: merchant_ids,
            MCC: take(catalog.mcc, merchants.cat[offers.merchant]),
            TITLE: pd.Series(titles, dtype=STRING_DTYPE),
            STARTS_AT: utc(offers.start_day * DAY, t0),
            ENDS_AT: utc(offers.end_day * DAY, t0),
            REWARD: offers.reward,
        }
    )


def exposures(
    rng: np.random.Generator,
    catalog: Catalog,
    merchants: Merchants,
    people: People,
    txns: Txns,
    offers: Offers,
    t0: pd.Timestamp,
    days: int,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Slates from a popularity-weighted logging policy; labels from the hidden model."""
    slates = _slates(rng, catalog, merchants, people, txns, offers, days)
    user, shown, offer = slates.user[slates.slate], slates.ts[slates.slate], slates.offer
    seen = Exposure(user, shown, offers.merchant[offer], offers.reward[offer], slates.position)
    p = p_redeem(catalog, merchants, people, txns, seen, days)
    redeemed = rng.random(len(p)) < p
    ends = offers.end_day[offer] * DAY
    frac = rng.beta(*REDEEM_DELAY_BETA, len(p))
    redeemed_at = np.where(redeemed, shown + np.floor(frac * (ends - shown)).astype(np.int64), NULL)

    user_ids = ids("u", user, people.n)
    offer_ids = ids("o", offer, len(offers.merchant))
    shown_at = utc(shown, t0)
    exposure_frame = pd.DataFrame(
        {
            USER_ID: user_ids,
            OFFER_ID: offer_ids,
            SHOWN_AT: shown_at,
            SLATE_ID: ids("s", slates.slate, len(slates.user)),
            POSITION: slates.position,
            REDEEMED_AT: utc(redeemed_at, t0),
        }
    )
    oracle = pd.DataFrame(
        {
            USER_ID: user_ids.copy(),
            OFFER_ID: offer_ids.copy(),
            SHOWN_AT: shown_at.copy(),
            P_REDEEM: p,
        }
    )
    return exposure_frame, oracle


def _slates(
    rng: np.random.Generator,
    catalog: Catalog,
    merchants: Merchants,
    people: People,
    txns: Txns,
    offers: Offers,
    days: int,
) -> Slates:
    """When each user is shown a slate (on days with enough offers), and which offers it holds."""
    day_grid = np.arange(days)[:, None]
    active = (offers.start_day[None, :] <= day_grid) & (day_grid < offers.end_day[None, :])
    n_active = active.sum(axis=1)
    eligible = np.flatnonzero(
        (n_active >= SLATE_SIZE[0]) & (np.arange(days) >= EXPOSURE_WARMUP_DAYS)
    )
    if len(eligible) == 0:
        raise ValueError(f"no day has {SLATE_SIZE[0]} active offers: raise N_OFFERS or days")

    has_txns = np.bincount(txns.user, minlength=people.n) > 0
    per_user = np.where(has_txns, rng.poisson(SLATES_PER_USER, people.n), 0)
    s_user = np.repeat(np.arange(people.n, dtype=np.int64), per_user)
    s_day = eligible[rng.integers(0, len(eligible), len(s_user))]
    s_ts = (
        s_day * DAY
        + rng.integers(SHOW_HOURS[0], SHOW_HOURS[1], len(s_user)) * 3600
        + rng.integers(0, 3600, len(s_user))
    )
    s_user, s_ts, s_day = _unique_times(s_user, s_ts, s_day)
    size = np.minimum(rng.integers(SLATE_SIZE[0], SLATE_SIZE[1] + 1, len(s_user)), n_active[s_day])
    slate, offer, position = _fill(rng, catalog, merchants, offers, active, s_day, size)
    return Slates(s_user, s_ts, slate, offer, position)


def _fill(
    rng: np.random.Generator,
    catalog: Catalog,
    merchants: Merchants,
    offers: Offers,
    active: np.ndarray,
    s_day: np.ndarray,
    size: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per exposure row: slate index, offer and position (weighted draws without repeats)."""
    is_sens = catalog.sensitive[merchants.cat[offers.merchant]]
    log_w = np.log(np.sqrt(merchants.global_pop[offers.merchant]))
    log_w = log_w + np.where(is_sens, np.log(SENSITIVE_SHOW_FACTOR), 0.0)
    log_w = np.append(log_w, -np.inf)  # index -1 (padding) can never be drawn

    # offers active on each day, left-aligned and padded with -1: slates draw from their day's row
    max_active = int(active.sum(axis=1).max())
    act_day, act_offer = np.nonzero(active)  # row-major: by day, then offer
    act = np.full((active.shape[0], max_active), -1, dtype=np.int64)
    act[act_day, np.arange(len(act_day)) - np.searchsorted(act_day, act_day)] = act_offer
    width = min(SLATE_SIZE[1], max_active)
    slate_parts, offer_parts, pos_parts = [], [], []
    for lo in range(0, len(s_day), SLATE_CHUNK):
        hi = min(lo + SLATE_CHUNK, len(s_day))
        cand = act[s_day[lo:hi]]
        keys = log_w[cand] + rng.gumbel(size=cand.shape)  # Gumbel top-k: weighted, no repeats
        top = np.argsort(-keys, axis=1, kind="stable")[:, :width]
        pos = np.broadcast_to(np.arange(1, width + 1), top.shape)
        keep = pos <= size[lo:hi, None]
        slate_parts.append(np.broadcast_to(np.arange(lo, hi)[:, None], top.shape)[keep])
        offer_parts.append(np.take_along_axis(cand, top, axis=1)[keep])
        pos_parts.append(pos[keep])
    position = np.concatenate(pos_parts).astype(np.int64)
    return np.concatenate(slate_parts), np.concatenate(offer_parts), position


def _unique_times(
    user: np.ndarray, ts: np.ndarray, day: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Order slates by time and nudge a user's same-second slates apart (oracle key is unique)."""
    order = np.lexsort((ts, user))
    user, ts, day = user[order], ts[order].copy(), day[order]
    while True:
        dup = np.flatnonzero((user[1:] == user[:-1]) & (ts[1:] <= ts[:-1])) + 1
        if len(dup) == 0:
            break
        ts[dup] = ts[dup - 1] + 1  # within SHOW_HOURS, so never past midnight
    order = np.lexsort((user, ts))
    return user[order], ts[order], day[order]
