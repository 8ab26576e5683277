"""The latent world: merchant categories, merchants and people (tastes, loyalty, favourites).

Nothing here is a contract table; the later stages draw rows from these arrays.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from policy.mcc import MCC_TIERS, Tier


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
TASTE_CONCENTRATION = 6.0  # Dirichlet concentration of tastes (lower: more specialised users)
TASTE_DRIFT = 0.4  # share of a user's tastes replaced by new ones by the end of the period
LOYALTY_BETA = (2.0, 2.0)  # per-user probability that a purchase goes to a favourite merchant
N_FAVOURITES = 2  # favourite merchants per user and category
FAVOURITE_SPLIT = 0.7  # share of loyal purchases going to the first favourite
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

# --- weekly rhythm (per category), hidden deal propensity (per user) ---
FRIDAY_BLEND = 0.5  # Friday sits this far from a weekday towards the weekend factor
USER_PROPENSITY_SIGMA = 0.4  # per-user hidden deal-seeking propensity (logit scale)


@dataclass(frozen=True)
class Catalog:
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
class Merchants:
    cat: np.ndarray  # category of each merchant; merchants are contiguous by category
    pop: np.ndarray  # popularity within its category (sums to 1 per category)
    pop_cum_flat: np.ndarray  # per-category cumulative popularity + category index
    price: np.ndarray  # price level multiplier
    label: np.ndarray  # number in the merchant id (a permutation, so ids hide categories)
    global_pop: np.ndarray  # share of all transactions expected at the merchant


@dataclass(frozen=True)
class People:
    n: int
    taste: np.ndarray  # (2, U, K) category distribution at the start and at the end
    loyalty: np.ndarray  # (U,)
    fav: np.ndarray  # (U, K, N_FAVOURITES) favourite merchant indices
    propensity: np.ndarray  # (U,) hidden deal-seeking logit offset
    country: np.ndarray  # (U,) str
    currency: np.ndarray  # (U,) str, the home currency of the country


def make_catalog() -> Catalog:
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
    return Catalog(
        mcc=np.array([c.mcc for c in CATEGORIES] + [m.mcc for m in sens]),
        weight=weight,
        mu=np.log([c.median_amount for c in CATEGORIES] + [SENSITIVE_MEDIAN_AMOUNT] * len(sens)),
        sigma=np.array([c.sigma for c in CATEGORIES] + [SENSITIVE_SIGMA] * len(sens)),
        dow_cum=dow_cum,
        sensitive=np.arange(len(weight)) >= len(CATEGORIES),
        n_ordinary=len(CATEGORIES),
    )


def make_merchants(rng: np.random.Generator, catalog: Catalog, n_users: int) -> Merchants:
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
    return Merchants(
        cat=cat,
        pop=pop,
        pop_cum_flat=cum + cat,
        price=rng.lognormal(0.0, MERCHANT_PRICE_SIGMA, len(cat)),
        label=rng.permutation(len(cat)),
        global_pop=catalog.weight[cat] * pop,
    )


def make_people(rng: np.random.Generator, catalog: Catalog, merchants: Merchants, n: int) -> People:
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
    fav = zipf_pick(rng, merchants, cats.ravel()).reshape(cats.shape).astype(np.int32)
    names = list(COUNTRIES)
    country = rng.choice(len(names), n, p=[COUNTRIES[c][1] for c in names])
    return People(
        n=n,
        taste=taste,
        loyalty=rng.beta(*LOYALTY_BETA, n),
        fav=fav,
        propensity=rng.normal(0.0, USER_PROPENSITY_SIGMA, n),
        country=np.array(names)[country],
        currency=np.array([COUNTRIES[c][0] for c in names])[country],
    )


def zipf_pick(rng: np.random.Generator, merchants: Merchants, cat: np.ndarray) -> np.ndarray:
    """A popularity-weighted merchant of each given category (one searchsorted for all)."""
    return np.searchsorted(merchants.pop_cum_flat, cat + rng.random(len(cat)), side="right")


def categorical_rows(rng: np.random.Generator, cum: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Draw a column index from row `rows[i]` of a row-wise cumulative matrix (last column 1)."""
    k = cum.shape[1]
    flat = (cum + np.arange(cum.shape[0])[:, None]).ravel()
    return np.searchsorted(flat, rows + rng.random(len(rows)), side="right") - rows * k
