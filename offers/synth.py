"""Synthetic contract tables with a ground-truth redemption oracle.

Why: the pipeline needs data that looks like a bank's card history (tastes, loyalty, weekly
rhythm, refunds, sensitive spending, messy consents) and whose labels come from a *known* model,
so later work can tell how close a trained ranker gets to the ceiling (`oracle.parquet`).

Everything is vectorised numpy (no per-transaction Python loops) and deterministic per seed:
each stage draws from its own child generator spawned from `numpy.random.default_rng(seed)`.
Times are handled as int64 seconds since `start` (midnight UTC) and converted to
`datetime64[us, UTC]` only when the frames are built.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from features.contract import (
    AMOUNT,
    BIRTH_DATE,
    CONSENT_ID,
    CONSENTS,
    COUNTRY,
    CURRENCY,
    ENDS_AT,
    EXPIRES_AT,
    EXPOSURES,
    GRANTED_AT,
    LOOKBACK_DAYS,
    MARKETING_OBJECTION_AT,
    MCC,
    MERCHANT_ID,
    OFFER_ID,
    OFFERS,
    ORACLE,
    P_REDEEM,
    POSITION,
    PURPOSES,
    REDEEMED_AT,
    REVOKED_AT,
    REWARD,
    SHOWN_AT,
    SLATE_ID,
    STARTS_AT,
    TITLE,
    TRANSACTIONS,
    TS,
    TXN_ID,
    USER_ID,
    USERS,
)
from policy.mcc import MCC_TIERS, Tier
from policy.purposes import OFFER_RANKING

DAY = 86_400  # seconds in a day
YEAR_DAYS = 365.25  # days in an average year (ages, activity rates)


@dataclass(frozen=True)
class Category:
    """One ordinary (non-sensitive) merchant category and how people spend in it."""

    mcc: str  # ISO 18245 code
    name: str
    weight: float  # relative share of ordinary transactions in the population
    median_amount: float  # median purchase amount (lognormal)
    sigma: float  # lognormal spread of amounts
    weekend: float  # Saturday/Sunday activity relative to Monday-Thursday


# --- categories: ordinary spending (ISO 18245 codes, none in a sensitive tier) ---
CATEGORIES: tuple[Category, ...] = (
    Category("5411", "grocery stores, supermarkets", 24.0, 38.0, 0.7, 1.4),
    Category("5499", "misc. food stores, convenience", 7.0, 9.0, 0.6, 1.2),
    Category("5812", "restaurants", 8.0, 42.0, 0.6, 1.7),
    Category("5814", "fast food", 10.0, 11.0, 0.5, 1.3),
    Category("5541", "service stations", 6.0, 55.0, 0.4, 1.0),
    Category("4111", "commuter transport", 6.0, 4.0, 0.6, 0.4),
    Category("4121", "taxis and ride hailing", 4.0, 18.0, 0.6, 1.5),
    Category("5311", "department stores", 3.0, 65.0, 0.9, 1.6),
    Category("5331", "variety stores", 3.0, 17.0, 0.7, 1.3),
    Category("5651", "family clothing", 2.5, 60.0, 0.7, 1.6),
    Category("5691", "men's and women's clothing", 2.0, 75.0, 0.7, 1.6),
    Category("5732", "electronics", 1.5, 120.0, 1.1, 1.4),
    Category("5942", "book stores", 1.0, 22.0, 0.6, 1.3),
    Category("5945", "toys and games", 1.0, 30.0, 0.7, 1.5),
    Category("5941", "sporting goods", 1.2, 50.0, 0.9, 1.5),
    Category("5977", "cosmetic stores", 1.5, 28.0, 0.6, 1.3),
    Category("5995", "pet shops", 1.5, 32.0, 0.7, 1.2),
    Category("7230", "beauty and barber shops", 1.2, 35.0, 0.5, 1.4),
    Category("7832", "cinemas", 1.0, 24.0, 0.4, 2.2),
    Category("7997", "gyms and membership clubs", 1.2, 40.0, 0.5, 0.9),
    Category("7011", "hotels", 0.8, 140.0, 0.8, 1.5),
    Category("4511", "airlines", 0.5, 210.0, 0.8, 0.9),
    Category("4814", "telecom services", 1.5, 35.0, 0.4, 0.7),
    Category("4899", "cable and streaming", 2.0, 14.0, 0.3, 0.8),
    Category("5200", "home supply, hardware", 1.5, 55.0, 0.9, 1.8),
    Category("5999", "misc. retail", 3.0, 25.0, 0.9, 1.1),
)

# --- sensitive spending (tiers A, B, C of policy.mcc; the pipeline must drop it) ---
SENSITIVE_RATE_BETA = (2.0, 48.0)  # per-user share of sensitive transactions: Beta, mean 4%
SENSITIVE_TIER_SHARE = {Tier.A: 0.50, Tier.B: 0.08, Tier.C: 0.42}  # split of sensitive spend
SENSITIVE_MCC_BOOST = {  # relative frequency of common codes within their tier (others: 1)
    "5912": 12.0,  # pharmacies
    "8011": 4.0,  # doctors
    "8021": 3.0,  # dentists
    "8043": 2.0,  # opticians
    "9222": 4.0,  # fines
    "5813": 10.0,  # bars
    "5921": 6.0,  # liquor stores
    "5993": 3.0,  # tobacco
    "7995": 3.0,  # betting, casinos
    "7800": 2.0,  # lotteries
}
SENSITIVE_MEDIAN_AMOUNT = 35.0  # median amount of a sensitive purchase
SENSITIVE_SIGMA = 0.9  # lognormal spread of sensitive amounts
SENSITIVE_WEEKEND = {"5813": 2.2, "5921": 1.6, "8011": 0.2, "8021": 0.2}  # weekend factors
SENSITIVE_MERCHANTS_PER_MCC = 2  # merchants per sensitive code

# --- users ---
TXNS_PER_USER_YEAR = 50.0  # mean purchases per user and year (100k users ~ 10M rows in 2 y)
ACTIVITY_SIGMA = 0.8  # lognormal spread of user activity around that mean
TASTE_CONCENTRATION = 6.0  # Dirichlet concentration of tastes (lower: more specialised users)
TASTE_DRIFT = 0.4  # share of a user's tastes replaced by new ones by the end of the period
LOYALTY_BETA = (2.0, 2.0)  # per-user probability that a purchase goes to a favourite merchant
N_FAVOURITES = 2  # favourite merchants per user and category
FAVOURITE_SPLIT = 0.7  # share of loyal purchases going to the first favourite
MINOR_SHARE = 0.03  # users under 18 at the end of the period
UNKNOWN_BIRTH_SHARE = 0.02  # users without a birth date
OBJECTION_SHARE = 0.05  # users who object to direct marketing (GDPR art. 21) at some time
MINOR_AGE_YEARS = (13.0, 17.9)  # age range of minors at the end of the period
ADULT_MIN_AGE_YEARS = 18.1  # youngest adult at the end of the period (clear of the boundary)
ADULT_AGE_GAMMA = (2.0, 11.0)  # years above the minimum: Gamma(shape, scale), mean 22
MAX_AGE_YEARS = 95.0  # oldest user
COUNTRIES = {  # country: (currency, share of users)
    "DE": ("EUR", 0.30),
    "FR": ("EUR", 0.20),
    "NL": ("EUR", 0.10),
    "ES": ("EUR", 0.10),
    "IT": ("EUR", 0.10),
    "GB": ("GBP", 0.12),
    "US": ("USD", 0.08),
}

# --- merchants ---
USERS_PER_MERCHANT = 50  # merchants scale with users ...
MERCHANTS_RANGE = (500, 2000)  # ... within these bounds
MIN_MERCHANTS_PER_CATEGORY = 4  # even a rare category has a few merchants
MERCHANTS_WEIGHT_POWER = 0.6  # merchants per category ~ category weight ** this
ZIPF_EXPONENT = 1.1  # popularity of the k-th merchant of a category ~ k ** -this
MERCHANT_PRICE_SIGMA = 0.25  # lognormal price level of a merchant around its category

# --- transaction times, refunds ---
HOUR_WEIGHTS = (  # relative activity per hour of day (UTC), 0h..23h
    0.3, 0.2, 0.1, 0.1, 0.1, 0.2, 0.5, 1.2, 2.0, 2.2, 2.4, 2.8,
    3.4, 3.0, 2.6, 2.6, 2.9, 3.4, 3.6, 3.2, 2.5, 1.8, 1.1, 0.6,
)  # fmt: skip
FRIDAY_BLEND = 0.5  # Friday sits this far from a weekday towards the weekend factor
REFUND_RATE = 0.02  # share of purchases that get a refund
REFUND_FULL_SHARE = 0.8  # refunds of the whole amount; the rest are partial
REFUND_PARTIAL = (0.2, 0.9)  # fraction refunded when partial
REFUND_DELAY_DAYS = 3.0  # median delay between purchase and refund (lognormal)
REFUND_DELAY_SIGMA = 0.8  # lognormal spread of that delay

# --- consents ---
CONSENT_MIX = {  # consent life cycle: share of users
    "never": 0.10,  # no consent row at all
    "other_only": 0.10,  # consent without offer_ranking (balance display, fraud alerts)
    "renew": 0.50,  # offer_ranking, re-authorised before each anniversary
    "expire": 0.12,  # offer_ranking once, left to expire
    "revoke": 0.10,  # offer_ranking, revoked mid-period (after 0 or 1 renewals)
    "reauth": 0.08,  # offer_ranking, lapses, then re-authorised after a gap
}
BALANCE_DISPLAY = "balance_display"  # one of policy.purposes.OTHER_CONSENTED_PURPOSES
FRAUD_ALERT = "fraud_alert"  # one of policy.purposes.OTHER_CONSENTED_PURPOSES
RANKING_PURPOSE_SETS = (  # (purposes, share) for users who consent to offer_ranking
    ((OFFER_RANKING,), 0.40),
    ((OFFER_RANKING, FRAUD_ALERT), 0.20),
    ((OFFER_RANKING, BALANCE_DISPLAY), 0.20),
    ((OFFER_RANKING, FRAUD_ALERT, BALANCE_DISPLAY), 0.20),
)
OTHER_PURPOSE_SETS = (  # (purposes, share) for users who consent to other purposes only
    ((BALANCE_DISPLAY,), 0.6),
    ((FRAUD_ALERT, BALANCE_DISPLAY), 0.4),
)
FIRST_GRANT_MAX_DAYS = 240  # first consents are granted within this many days of the start
VALIDITY_DAYS = ((365, 0.85), (180, 0.10), (90, 0.05))  # (validity, share) per consent row
EXPIRES_NULL_SHARE = 0.5  # 365-day rows written with expires_at null (the default)
CONSENT_LOOKBACK = ((365, 0.80), (180, 0.12), (90, 0.08))  # (lookback_days, share) per user
RENEW_LEAD_MAX_DAYS = 30  # a renewal comes up to this many days before expiry
REAUTH_GAP_DAYS = (10, 120)  # a lapsed consent is re-authorised after this many days
REVOKE_POSITION = (0.05, 0.95)  # where in the active window a revocation falls

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

# --- the hidden redemption model (the oracle) ---
TARGET_REDEMPTION_RATE = 0.10  # the intercept is solved so that mean p_redeem is this
COEF_CATEGORY = 0.6  # x log lift of the user's current taste for the offer's category
COEF_MERCHANT = 0.5  # x log lift of the user's preference for the offer's merchant
COEF_VISITS = 0.5  # x log1p(purchases at the merchant in the last VISITS_WINDOW_DAYS)
COEF_RECENCY = 1.0  # x exp(-days since the last purchase there / RECENCY_SCALE_DAYS)
COEF_CATEGORY_SPEND = 0.15  # x log1p(spend in the category in the last SPEND_WINDOW_DAYS)
COEF_REWARD = 0.5  # x log(reward)
COEF_POSITION = 0.6  # x -log(position): position bias
USER_PROPENSITY_SIGMA = 0.4  # per-user hidden deal-seeking propensity (logit scale)
VISITS_WINDOW_DAYS = 90  # window for merchant visit counts
SPEND_WINDOW_DAYS = 30  # window for category spend
RECENCY_SCALE_DAYS = 21.0  # decay of the last-visit effect
LIFT_CLIP = 3.0  # log lifts are clipped to +-this
INTERCEPT_NEWTON_STEPS = 30  # Newton steps to solve the intercept
REDEEM_DELAY_BETA = (1.0, 3.0)  # redemption falls at Beta(a, b) of the way to the offer's end

STRING_DTYPE = pd.StringDtype("pyarrow", na_value=np.nan)  # pandas' default `str`
ID_WIDTHS = {"u": 6, "m": 4, "o": 4, "t": 9, "c": 7, "s": 7}  # minimum digits of id labels
N_STREAMS = 8  # child generators, one per stage
NULL = np.iinfo(np.int64).min  # "no timestamp" in the int64 seconds used internally


@dataclass(frozen=True)
class _Catalog:
    """All categories, ordinary then sensitive, as arrays indexed by category."""

    mcc: np.ndarray  # str
    weight: np.ndarray  # population share (sums to 1 over all categories)
    mu: np.ndarray  # log median amount
    sigma: np.ndarray
    dow_cum: np.ndarray  # (K, 7) cumulative weekday distribution (Monday first)
    sensitive: np.ndarray  # bool
    n_ordinary: int

    @property
    def k(self) -> int:
        return len(self.mcc)


@dataclass(frozen=True)
class _Merchants:
    cat: np.ndarray  # category of each merchant; merchants are contiguous by category
    pop: np.ndarray  # popularity within its category (sums to 1 per category)
    pop_cum_flat: np.ndarray  # per-category cumulative popularity + category index
    price: np.ndarray  # price level multiplier
    label: np.ndarray  # number in the merchant id (a permutation, so ids hide categories)
    global_pop: np.ndarray  # share of all transactions expected at the merchant


@dataclass(frozen=True)
class _People:
    n: int
    taste: np.ndarray  # (2, U, K) category distribution at the start and at the end
    loyalty: np.ndarray  # (U,)
    fav: np.ndarray  # (U, K, N_FAVOURITES) favourite merchant indices
    propensity: np.ndarray  # (U,) hidden deal-seeking logit offset
    country: np.ndarray  # (U,) str
    currency: np.ndarray  # (U,) str, the home currency of the country


@dataclass(frozen=True)
class _Txns:
    user: np.ndarray
    ts: np.ndarray  # seconds since start
    merchant: np.ndarray
    cat: np.ndarray
    amount: np.ndarray


@dataclass(frozen=True)
class _Offers:
    merchant: np.ndarray
    start_day: np.ndarray
    end_day: np.ndarray  # exclusive
    reward: np.ndarray


def generate(
    n_users: int = 1000, seed: int = 0, start: str = "2024-01-01", days: int = 730
) -> dict[str, pd.DataFrame]:
    """The five contract tables plus "oracle" (the hidden p_redeem of every exposure row).

    Covers [start, start + days) in UTC; the same arguments always give identical frames.
    """
    if n_users < 1 or days <= EXPOSURE_WARMUP_DAYS + 7 * OFFER_WEEKS[1]:
        raise ValueError(
            f"need n_users >= 1 and days > {EXPOSURE_WARMUP_DAYS + 7 * OFFER_WEEKS[1]}"
        )
    t0 = pd.Timestamp(start, tz="UTC").floor("D")
    r = np.random.default_rng(seed).spawn(N_STREAMS)
    catalog = _catalog()
    merchants = _merchants(r[0], catalog, n_users)
    people = _people(r[1], catalog, merchants, n_users)
    users = _users_frame(r[2], people, t0, days)
    consents = _consents_frame(r[3], n_users, t0, days)
    txns = _transactions(r[4], catalog, merchants, people, t0, days)
    offers = _offers(r[5], catalog, merchants, days)
    exposures, oracle = _exposures(r[6], catalog, merchants, people, txns, offers, t0, days)
    return {
        TRANSACTIONS: _transactions_frame(txns, catalog, merchants, people, t0),
        USERS: users,
        CONSENTS: consents,
        OFFERS: _offers_frame(offers, catalog, merchants, t0),
        EXPOSURES: exposures,
        ORACLE: oracle,
    }


def write_synthetic(out_dir: str | Path, n_users: int = 1000, seed: int = 0) -> dict[str, int]:
    """Write DIR/<table>.parquet for the five tables and DIR/oracle.parquet; return row counts."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    counts: dict[str, int] = {}
    for name, frame in generate(n_users=n_users, seed=seed).items():
        frame.to_parquet(out / f"{name}.parquet", index=False)
        counts[name] = len(frame)
    return counts


# ----------------------------------------------------------------------------- world


def _catalog() -> _Catalog:
    """Ordinary categories then every tier A/B/C code, with population weights summing to 1."""
    sens = [m for m in MCC_TIERS if m.tier in SENSITIVE_TIER_SHARE]
    boost = np.array([SENSITIVE_MCC_BOOST.get(m.mcc, 1.0) for m in sens])
    tier = np.array([str(m.tier) for m in sens])
    sens_w = np.zeros(len(sens))
    for t, share in SENSITIVE_TIER_SHARE.items():
        in_tier = tier == str(t)
        sens_w[in_tier] = share * boost[in_tier] / boost[in_tier].sum()
    ord_w = np.array([c.weight for c in CATEGORIES])
    mean_sens = SENSITIVE_RATE_BETA[0] / sum(SENSITIVE_RATE_BETA)
    weight = np.concatenate([(1 - mean_sens) * ord_w / ord_w.sum(), mean_sens * sens_w])
    weekend = np.array(
        [c.weekend for c in CATEGORIES] + [SENSITIVE_WEEKEND.get(m.mcc, 1.0) for m in sens]
    )
    friday = 1.0 + FRIDAY_BLEND * (weekend - 1.0)
    dow = np.column_stack([np.ones((len(weekend), 4)), friday, weekend, weekend])
    dow_cum = np.cumsum(dow / dow.sum(axis=1, keepdims=True), axis=1)
    dow_cum[:, -1] = 1.0
    return _Catalog(
        mcc=np.array([c.mcc for c in CATEGORIES] + [m.mcc for m in sens]),
        weight=weight,
        mu=np.log([c.median_amount for c in CATEGORIES] + [SENSITIVE_MEDIAN_AMOUNT] * len(sens)),
        sigma=np.array([c.sigma for c in CATEGORIES] + [SENSITIVE_SIGMA] * len(sens)),
        dow_cum=dow_cum,
        sensitive=np.arange(len(weight)) >= len(CATEGORIES),
        n_ordinary=len(CATEGORIES),
    )


def _merchants(rng: np.random.Generator, catalog: _Catalog, n_users: int) -> _Merchants:
    """Merchants per category (more for big categories), Zipf popularity within each."""
    n_total = int(np.clip(n_users // USERS_PER_MERCHANT, *MERCHANTS_RANGE))
    n_sens = int(catalog.sensitive.sum())
    ord_share = catalog.weight[: catalog.n_ordinary] ** MERCHANTS_WEIGHT_POWER
    ord_share /= ord_share.sum()
    n_ord_total = n_total - SENSITIVE_MERCHANTS_PER_MCC * n_sens
    per_cat = np.concatenate(
        [
            np.maximum(MIN_MERCHANTS_PER_CATEGORY, np.round(ord_share * n_ord_total)),
            np.full(n_sens, SENSITIVE_MERCHANTS_PER_MCC),
        ]
    ).astype(np.int64)
    cat = np.repeat(np.arange(catalog.k), per_cat)
    first = np.concatenate([[0], np.cumsum(per_cat)[:-1]])
    rank = np.arange(len(cat)) - first[cat]
    raw = (rank + 1.0) ** -ZIPF_EXPONENT
    pop = raw / np.bincount(cat, weights=raw)[cat]
    cum = np.cumsum(pop) - np.concatenate([[0.0], np.cumsum(pop)])[first[cat]]
    last = np.cumsum(per_cat) - 1
    cum[last] = 1.0
    return _Merchants(
        cat=cat,
        pop=pop,
        pop_cum_flat=cum + cat,
        price=rng.lognormal(0.0, MERCHANT_PRICE_SIGMA, len(cat)),
        label=rng.permutation(len(cat)),
        global_pop=catalog.weight[cat] * pop,
    )


def _people(rng: np.random.Generator, catalog: _Catalog, merchants: _Merchants, n: int) -> _People:
    """Latent tastes (drifting), loyalty, favourite merchants and a hidden deal propensity."""
    k_ord = catalog.n_ordinary
    base = catalog.weight[:k_ord] / catalog.weight[:k_ord].sum()
    alpha = TASTE_CONCENTRATION * base
    taste0 = rng.dirichlet(alpha, n)
    taste1 = (1 - TASTE_DRIFT) * taste0 + TASTE_DRIFT * rng.dirichlet(alpha, n)
    sens_rate = rng.beta(*SENSITIVE_RATE_BETA, n)[:, None]
    sens_mix = catalog.weight[k_ord:] / catalog.weight[k_ord:].sum()
    taste = np.stack(
        [np.hstack([(1 - sens_rate) * t, sens_rate * sens_mix[None, :]]) for t in (taste0, taste1)]
    )
    cats = np.broadcast_to(np.arange(catalog.k)[None, :, None], (n, catalog.k, N_FAVOURITES))
    fav = _zipf_pick(rng, merchants, cats.ravel()).reshape(cats.shape).astype(np.int32)
    names = list(COUNTRIES)
    country = rng.choice(len(names), n, p=[COUNTRIES[c][1] for c in names])
    return _People(
        n=n,
        taste=taste,
        loyalty=rng.beta(*LOYALTY_BETA, n),
        fav=fav,
        propensity=rng.normal(0.0, USER_PROPENSITY_SIGMA, n),
        country=np.array(names)[country],
        currency=np.array([COUNTRIES[c][0] for c in names])[country],
    )


def _zipf_pick(rng: np.random.Generator, merchants: _Merchants, cat: np.ndarray) -> np.ndarray:
    """A popularity-weighted merchant of each given category (one searchsorted for all)."""
    return np.searchsorted(merchants.pop_cum_flat, cat + rng.random(len(cat)), side="right")


def _categorical_rows(rng: np.random.Generator, cum: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Draw a column index from row `rows[i]` of a row-wise cumulative matrix (last column 1)."""
    k = cum.shape[1]
    flat = (cum + np.arange(cum.shape[0])[:, None]).ravel()
    return np.searchsorted(flat, rows + rng.random(len(rows)), side="right") - rows * k


# ----------------------------------------------------------------------------- users, consents


def _users_frame(
    rng: np.random.Generator, people: _People, t0: pd.Timestamp, days: int
) -> pd.DataFrame:
    """Ages (a few minors, a few unknown), countries and marketing objections."""
    n = people.n
    order = rng.permutation(n)
    n_minor, n_unknown = round(MINOR_SHARE * n), round(UNKNOWN_BIRTH_SHARE * n)
    minor, unknown = order[:n_minor], order[n_minor : n_minor + n_unknown]
    age = ADULT_MIN_AGE_YEARS + rng.gamma(*ADULT_AGE_GAMMA, n)
    age = np.minimum(age, MAX_AGE_YEARS)
    age[minor] = rng.uniform(*MINOR_AGE_YEARS, n_minor)
    end_day = (t0 + pd.Timedelta(days=days)).to_datetime64().astype("datetime64[D]")
    birth = (end_day - np.round(age * YEAR_DAYS).astype("timedelta64[D]")).astype(object)
    birth[unknown] = None
    objector = rng.permutation(n)[: round(OBJECTION_SHARE * n)]
    objection = np.full(n, NULL, dtype=np.int64)
    objection[objector] = rng.integers(0, days * DAY, len(objector))
    return pd.DataFrame(
        {
            USER_ID: _ids("u", np.arange(n), n),
            BIRTH_DATE: pd.Series(birth, dtype=object),
            MARKETING_OBJECTION_AT: _utc(objection, t0),
            COUNTRY: pd.Series(people.country, dtype=STRING_DTYPE),
        }
    )


def _consents_frame(rng: np.random.Generator, n: int, t0: pd.Timestamp, days: int) -> pd.DataFrame:
    """Consent rows per life cycle; a chain step at a time, vectorised over users."""
    kinds = list(CONSENT_MIX)
    counts = np.round(np.array([CONSENT_MIX[k] for k in kinds]) * n).astype(np.int64)
    counts[kinds.index("renew")] += n - counts.sum()
    kind = np.empty(n, dtype=np.int64)
    kind[rng.permutation(n)] = np.repeat(np.arange(len(kinds)), counts)
    k_of = {k: i for i, k in enumerate(kinds)}

    ranking_sets = [s for s, _ in RANKING_PURPOSE_SETS]
    other_sets = [s for s, _ in OTHER_PURPOSE_SETS]
    purpose_sets = ranking_sets + other_sets
    purpose_idx = rng.choice(len(ranking_sets), n, p=[p for _, p in RANKING_PURPOSE_SETS])
    other = kind == k_of["other_only"]
    purpose_idx[other] = len(ranking_sets) + rng.choice(
        len(other_sets), int(other.sum()), p=[p for _, p in OTHER_PURPOSE_SETS]
    )
    lookback = np.array([d for d, _ in CONSENT_LOOKBACK])[
        rng.choice(len(CONSENT_LOOKBACK), n, p=[p for _, p in CONSENT_LOOKBACK])
    ]
    revoke_step = rng.integers(0, 2, n)  # revoking users renew 0 or 1 times first

    end = days * DAY
    alive = kind != k_of["never"]
    grant = rng.integers(0, FIRST_GRANT_MAX_DAYS * DAY, n)
    rows: list[tuple[np.ndarray, ...]] = []
    step = 0
    while True:
        alive &= grant < end
        who = np.flatnonzero(alive)
        if len(who) == 0:
            break
        g = grant[who]
        validity = np.array([d for d, _ in VALIDITY_DAYS])[
            rng.choice(len(VALIDITY_DAYS), len(who), p=[p for _, p in VALIDITY_DAYS])
        ]
        expiry = g + validity * DAY
        null_expiry = (validity == 365) & (rng.random(len(who)) < EXPIRES_NULL_SHARE)
        kw = kind[who]
        revoke = (kw == k_of["revoke"]) & (revoke_step[who] == step)
        window_end = np.minimum(expiry, end)
        at = g + (rng.uniform(*REVOKE_POSITION, len(who)) * (window_end - g)).astype(np.int64)
        rows.append((who, g, np.where(null_expiry, NULL, expiry), np.where(revoke, at, NULL)))

        lead = rng.integers(0, RENEW_LEAD_MAX_DAYS * DAY, len(who))
        gap = rng.integers(REAUTH_GAP_DAYS[0] * DAY, REAUTH_GAP_DAYS[1] * DAY, len(who))
        lapse = (kw == k_of["reauth"]) & (step == 0)
        grant[who] = np.where(lapse, expiry + gap, expiry - lead)
        stop = revoke | (kw == k_of["expire"])
        alive[who[stop]] = False
        step += 1

    user, granted, expires, revoked = (np.concatenate(c) for c in zip(*rows, strict=True))
    order = np.lexsort((granted, user))
    user, granted, expires, revoked = user[order], granted[order], expires[order], revoked[order]
    return pd.DataFrame(
        {
            CONSENT_ID: _ids("c", np.arange(len(user)), len(user)),
            USER_ID: _ids("u", user, n),
            PURPOSES: pd.Series([list(purpose_sets[i]) for i in purpose_idx[user]], dtype=object),
            GRANTED_AT: _utc(granted, t0),
            EXPIRES_AT: _utc(expires, t0),
            REVOKED_AT: _utc(revoked, t0),
            LOOKBACK_DAYS: pd.Series(lookback[user], dtype=np.int64),
        }
    )


# ----------------------------------------------------------------------------- transactions


def _transactions(
    rng: np.random.Generator,
    catalog: _Catalog,
    merchants: _Merchants,
    people: _People,
    t0: pd.Timestamp,
    days: int,
) -> _Txns:
    """Purchases from drifting tastes, loyalty and Zipf popularity, plus refunds; sorted by time."""
    n = people.n
    rate = TXNS_PER_USER_YEAR * rng.lognormal(-(ACTIVITY_SIGMA**2) / 2, ACTIVITY_SIGMA, n)
    per_user = rng.poisson(rate * days / YEAR_DAYS)
    user = np.repeat(np.arange(n, dtype=np.int64), per_user)
    m = len(user)

    day = rng.integers(0, days, m)
    late = rng.random(m) < (day + 0.5) / days  # taste drift: a mixture moving to the late taste
    cum = np.cumsum(people.taste.reshape(2 * n, catalog.k), axis=1)
    cum[:, -1] = 1.0
    cat = _categorical_rows(rng, cum, late * n + user)
    del cum, late

    # weekly rhythm: move each purchase within its week to a weekday drawn for its category
    weekday0 = t0.weekday()
    dow = _categorical_rows(rng, catalog.dow_cum, cat)
    day = day - (weekday0 + day) % 7 + dow
    day = np.where(day < 0, day + 7, np.where(day >= days, day - 7, day))
    hour_cum = np.cumsum(HOUR_WEIGHTS) / np.sum(HOUR_WEIGHTS)
    hour_cum[-1] = 1.0
    hour = np.searchsorted(hour_cum, rng.random(m), side="right")
    ts = day * DAY + hour * 3600 + rng.integers(0, 3600, m)
    del day, hour, dow

    merchant = np.empty(m, dtype=np.int64)
    loyal = rng.random(m) < people.loyalty[user]
    which = (rng.random(m) >= FAVOURITE_SPLIT).astype(np.int64)
    merchant[loyal] = people.fav[user[loyal], cat[loyal], which[loyal]]
    merchant[~loyal] = _zipf_pick(rng, merchants, cat[~loyal])
    del loyal, which

    log_amount = catalog.mu[cat] + np.log(merchants.price[merchant])
    amount = np.exp(log_amount + catalog.sigma[cat] * rng.standard_normal(m))
    amount = np.maximum(np.round(amount, 2), 0.01)
    del log_amount

    refund = np.flatnonzero(rng.random(m) < REFUND_RATE)
    delay = rng.lognormal(np.log(REFUND_DELAY_DAYS * DAY), REFUND_DELAY_SIGMA, len(refund))
    r_ts = ts[refund] + delay.astype(np.int64) + 1
    keep = r_ts < days * DAY
    refund, r_ts = refund[keep], r_ts[keep]
    part = rng.uniform(*REFUND_PARTIAL, len(refund))
    full = rng.random(len(refund)) < REFUND_FULL_SHARE
    r_amount = -np.maximum(np.round(amount[refund] * np.where(full, 1.0, part), 2), 0.01)

    user = np.concatenate([user, user[refund]])
    ts = np.concatenate([ts, r_ts])
    order = np.argsort(ts * n + user, kind="stable")
    return _Txns(
        user=user[order],
        ts=ts[order],
        merchant=np.concatenate([merchant, merchant[refund]])[order],
        cat=np.concatenate([cat, cat[refund]])[order],
        amount=np.concatenate([amount, r_amount])[order],
    )


def _transactions_frame(
    txns: _Txns, catalog: _Catalog, merchants: _Merchants, people: _People, t0: pd.Timestamp
) -> pd.DataFrame:
    m = len(txns.user)
    return pd.DataFrame(
        {
            TXN_ID: _ids("t", np.arange(m), m),
            USER_ID: _ids("u", txns.user, people.n),
            TS: _utc(txns.ts, t0),
            AMOUNT: txns.amount,
            MERCHANT_ID: _ids("m", merchants.label[txns.merchant], len(merchants.cat)),
            MCC: _take(catalog.mcc, txns.cat),
            CURRENCY: _take(people.currency, txns.user),
        }
    )


# ----------------------------------------------------------------------------- offers


def _offers(
    rng: np.random.Generator, catalog: _Catalog, merchants: _Merchants, days: int
) -> _Offers:
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
    return _Offers(
        merchant=merchant[order],
        start_day=start_day[order],
        end_day=(start_day + length)[order],
        reward=reward[order],
    )


def _offers_frame(
    offers: _Offers, catalog: _Catalog, merchants: _Merchants, t0: pd.Timestamp
) -> pd.DataFrame:
    merchant_ids = _ids("m", merchants.label[offers.merchant], len(merchants.cat))
    titles = [f"{r:g}% back at {mid}" for r, mid in zip(offers.reward, merchant_ids, strict=True)]
    return pd.DataFrame(
        {
            OFFER_ID: _ids("o", np.arange(len(offers.merchant)), len(offers.merchant)),
            MERCHANT_ID: merchant_ids,
            MCC: _take(catalog.mcc, merchants.cat[offers.merchant]),
            TITLE: pd.Series(titles, dtype=STRING_DTYPE),
            STARTS_AT: _utc(offers.start_day * DAY, t0),
            ENDS_AT: _utc(offers.end_day * DAY, t0),
            REWARD: offers.reward,
        }
    )


# ----------------------------------------------------------------------------- exposures


def _exposures(
    rng: np.random.Generator,
    catalog: _Catalog,
    merchants: _Merchants,
    people: _People,
    txns: _Txns,
    offers: _Offers,
    t0: pd.Timestamp,
    days: int,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Slates from a popularity-weighted logging policy; labels from the hidden model."""
    n_offers = len(offers.merchant)
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

    is_sens = catalog.sensitive[merchants.cat[offers.merchant]]
    log_w = np.log(np.sqrt(merchants.global_pop[offers.merchant]))
    log_w = log_w + np.where(is_sens, np.log(SENSITIVE_SHOW_FACTOR), 0.0)
    log_w = np.append(log_w, -np.inf)  # index -1 (padding) can never be drawn

    # offers active on each day, left-aligned and padded with -1: slates draw from their day's row
    max_active = int(n_active.max())
    act_day, act_offer = np.nonzero(active)  # row-major: by day, then offer
    act = np.full((days, max_active), -1, dtype=np.int64)
    act[act_day, np.arange(len(act_day)) - np.searchsorted(act_day, act_day)] = act_offer
    width = min(SLATE_SIZE[1], max_active)
    slate_parts, offer_parts, pos_parts = [], [], []
    for lo in range(0, len(s_user), SLATE_CHUNK):
        hi = min(lo + SLATE_CHUNK, len(s_user))
        cand = act[s_day[lo:hi]]
        keys = log_w[cand] + rng.gumbel(size=cand.shape)  # Gumbel top-k: weighted, no repeats
        top = np.argsort(-keys, axis=1, kind="stable")[:, :width]
        pos = np.broadcast_to(np.arange(1, width + 1), top.shape)
        keep = pos <= size[lo:hi, None]
        slate_parts.append(np.broadcast_to(np.arange(lo, hi)[:, None], top.shape)[keep])
        offer_parts.append(np.take_along_axis(cand, top, axis=1)[keep])
        pos_parts.append(pos[keep])
    slate = np.concatenate(slate_parts)
    offer = np.concatenate(offer_parts)
    position = np.concatenate(pos_parts).astype(np.int64)

    user, shown = s_user[slate], s_ts[slate]
    p = _oracle(catalog, merchants, people, txns, offers, user, shown, offer, position, days)
    redeemed = rng.random(len(p)) < p
    ends = offers.end_day[offer] * DAY
    frac = rng.beta(*REDEEM_DELAY_BETA, len(p))
    redeemed_at = np.where(redeemed, shown + np.floor(frac * (ends - shown)).astype(np.int64), NULL)

    user_ids = _ids("u", user, people.n)
    offer_ids = _ids("o", offer, n_offers)
    shown_at = _utc(shown, t0)
    exposures = pd.DataFrame(
        {
            USER_ID: user_ids,
            OFFER_ID: offer_ids,
            SHOWN_AT: shown_at,
            SLATE_ID: _ids("s", slate, len(s_user)),
            POSITION: position,
            REDEEMED_AT: _utc(redeemed_at, t0),
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
    return exposures, oracle


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


def _oracle(
    catalog: _Catalog,
    merchants: _Merchants,
    people: _People,
    txns: _Txns,
    offers: _Offers,
    user: np.ndarray,
    shown: np.ndarray,
    offer: np.ndarray,
    position: np.ndarray,
    days: int,
) -> np.ndarray:
    """The true p_redeem: logistic in affinity, recent behaviour, reward and position."""
    merchant = offers.merchant[offer]
    cat = merchants.cat[merchant]
    w = shown / (days * DAY)
    p_cat = (1 - w) * people.taste[0, user, cat] + w * people.taste[1, user, cat]
    cat_lift = np.clip(np.log(p_cat / catalog.weight[cat]), -LIFT_CLIP, LIFT_CLIP)
    fav = people.fav[user, cat]  # (E, N_FAVOURITES)
    fav_w = np.array([FAVOURITE_SPLIT, 1 - FAVOURITE_SPLIT])[:N_FAVOURITES]
    fav_share = ((fav == merchant[:, None]) * fav_w[None, :]).sum(axis=1)
    loyalty = people.loyalty[user]
    share = loyalty * fav_share + (1 - loyalty) * merchants.pop[merchant]
    merchant_lift = np.clip(np.log(share / merchants.pop[merchant]), -LIFT_CLIP, LIFT_CLIP)

    purchase = txns.amount > 0
    visits, last = _window_stats(
        txns.user[purchase] * len(merchants.cat) + txns.merchant[purchase],
        txns.ts[purchase],
        None,
        user * len(merchants.cat) + merchant,
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
    z = (
        people.propensity[user]
        + COEF_CATEGORY * cat_lift
        + COEF_MERCHANT * merchant_lift
        + COEF_VISITS * np.log1p(visits)
        + COEF_RECENCY * recency
        + COEF_CATEGORY_SPEND * np.log1p(spend)
        + COEF_REWARD * np.log(offers.reward[offer])
        - COEF_POSITION * np.log(position)
    )
    return _sigmoid(z + _solve_intercept(z, TARGET_REDEMPTION_RATE))


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


def _solve_intercept(z: np.ndarray, target: float) -> float:
    """Newton on b so that mean(sigmoid(z + b)) equals target (monotone, converges fast)."""
    b = float(np.log(target / (1 - target)) - np.mean(z))
    for _ in range(INTERCEPT_NEWTON_STEPS):
        p = _sigmoid(z + b)
        gap = p.mean() - target
        if abs(gap) < 1e-9:
            break
        b -= gap / max(float((p * (1 - p)).mean()), 1e-12)
    return b


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


# ----------------------------------------------------------------------------- typed columns


def _ids(prefix: str, numbers: np.ndarray, count: int) -> pd.Series:
    """String ids like u000123 for entity numbers in [0, count), padded wide enough for count."""
    return pd.Series(pc.take(_labels(prefix, count), pa.array(numbers)), dtype=STRING_DTYPE)


def _labels(prefix: str, count: int) -> pa.Array:
    """prefix + zero-padded 0..count-1, built as one byte buffer (no per-row Python)."""
    width = max(ID_WIDTHS[prefix], len(str(max(count - 1, 0))))
    chars = np.empty((count, len(prefix) + width), dtype=np.uint8)
    chars[:, : len(prefix)] = np.frombuffer(prefix.encode(), dtype=np.uint8)
    rest = np.arange(count, dtype=np.int64)
    for col in range(chars.shape[1] - 1, len(prefix) - 1, -1):
        chars[:, col] = 48 + rest % 10
        rest //= 10
    offsets = np.arange(0, chars.size + 1, chars.shape[1], dtype=np.int64)
    return pa.LargeStringArray.from_buffers(count, pa.py_buffer(offsets), pa.py_buffer(chars))


def _take(labels: np.ndarray, index: np.ndarray) -> pd.Series:
    return pd.Series(
        pc.take(pa.array(labels.tolist(), pa.string()), pa.array(index)), dtype=STRING_DTYPE
    )


def _utc(seconds: np.ndarray, t0: pd.Timestamp) -> pd.Series:
    """Seconds since t0 (NULL: missing) as datetime64[us, UTC]."""
    seconds = np.asarray(seconds, dtype=np.int64)
    missing = seconds == NULL
    us = t0.value // 1000 + np.where(missing, 0, seconds) * 1_000_000
    values = us.view("datetime64[us]")
    values[missing] = np.datetime64("NaT")
    return pd.Series(values).dt.tz_localize("UTC")
