"""Feature set v1, merchant affinity, written once as Ibis expressions.

Pure functions: Ibis tables in, Ibis tables out. Nothing here knows the backend; the job module
runs them on DuckDB (default) or Spark. Only portable operations are used: equality and
inequality joins, conditional aggregates, `truncate`, `epoch_seconds`; no `asof_join`.

Every feature is computed per (user_id, cutoff) "pair", so a snapshot (one cutoff for all
users) and point-in-time training rows (many cutoffs) are the same computation.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import ibis
import ibis.expr.types as ir
import numpy as np

from features.contract import AMOUNT, GRANTED_AT, MCC, MERCHANT_ID, TS, USER_ID
from features.eligibility import (
    ACTIVE_UNTIL,
    ADULT_FROM,
    OBJECTION_AT,
    USABLE_FROM,
    WITHDRAWN,
)
from policy import SENSITIVE_MCCS

CUTOFF = "cutoff"
AS_OF = "as_of"  # population features are computed as of the first instant of the cutoff's month
WINDOW_START = "window_start"
AGE_DAYS = "age_days"
RULE = "rule"
N_ROWS = "n"

SECONDS_PER_DAY = 86_400.0
MAX_WINDOW_DAYS = 365  # data minimisation: nothing older than the longest window is read
WINDOWS_DAYS = (30, 90, 365)
TREND_RECENT_DAYS = 30  # trend compares the last 30 days ...
TREND_BASE_DAYS = 90  # ... with the 60 days before them (days 30-90)
POPULATION_WINDOW_DAYS = 90
DEFAULT_HALF_LIFE_DAYS = 30.0

# Exclusion rules, in the order they are checked (DESIGN.md "Time and consent semantics").
RULE_AFTER_CUTOFF = "at_or_after_cutoff"
RULE_NO_CONSENT = "no_active_offer_ranking_consent"
RULE_POLICY_DENIED = "user_denied_by_policy"  # marketing objection, minor or unknown age
RULE_BEFORE_LOOKBACK = "before_consent_lookback"
RULE_OUTSIDE_WINDOW = "older_than_365d_feature_window"
RULE_SENSITIVE = "sensitive_mcc"
RULE_WITHDRAWN = "user_withdrawn_or_erased"
RULE_KEPT = "kept"
EXCLUSION_RULES = (
    RULE_AFTER_CUTOFF,
    RULE_NO_CONSENT,
    RULE_POLICY_DENIED,
    RULE_BEFORE_LOOKBACK,
    RULE_OUTSIDE_WINDOW,
    RULE_SENSITIVE,
    RULE_WITHDRAWN,
)

# Feature names and one-line meanings (the manifest lists them; assembly orders them).
USER_MERCHANT_PREFIX = "um_"
USER_MCC_PREFIX = "uc_"
AFFINITY_FEATURES: dict[str, str] = {
    **{f"n_{d}d": f"purchases in the last {d} days" for d in WINDOWS_DAYS},
    **{
        f"spend_{d}d": f"net spend in the last {d} days, refunds deducted, floored at 0"
        for d in WINDOWS_DAYS
    },
    "days_since_last": "days since the last purchase (null: none in 365 days)",
    "decayed_spend": "spend weighted by 2^(-age/half_life), floored at 0",
    "share_365d": "share of the user's 365-day spend",
    "trend": "log((1 + spend last 30 d) / (1 + spend in the 60 d before / 2))",
}
USER_FEATURES: dict[str, str] = {
    "u_active_days_365d": "distinct days with a usable transaction in 365 days",
    "u_spend_365d": "net spend in 365 days, floored at 0",
    "u_n_txn_365d": "purchases in 365 days",
    "u_n_merchants_365d": "merchants with a purchase in 365 days",
    "u_entropy_365d": "entropy (nats) of the user's 365-day spend over merchants",
}
MERCHANT_POPULARITY = "m_pop_90d"
MCC_POPULARITY = "c_pop_90d"
POPULATION_FEATURES: dict[str, str] = {
    MERCHANT_POPULARITY: "share of consenting users with a purchase at the merchant in 90 days",
    MCC_POPULARITY: "share of consenting users with a purchase in the category in 90 days",
}
N_USERS_ALLOWED = "n_users_allowed"


def _days_between(later: ir.TimestampValue, earlier: ir.TimestampValue) -> ir.FloatingValue:
    return (later.epoch_seconds() - earlier.epoch_seconds()).cast("float64") / SECONDS_PER_DAY


def allowed_pairs(pairs: ir.Table, windows: ir.Table, gates: ir.Table) -> ir.Table:
    """Pairs whose user may feed features at the cutoff, with the oldest usable timestamp.

    Allowed: an offer_ranking consent active at the cutoff, no objection by then, adult at the
    cutoff, birth date known, and not withdrawn or erased when the job runs.
    """
    active = pairs.join(
        windows,
        [
            pairs[USER_ID] == windows[USER_ID],
            windows[GRANTED_AT] <= pairs[CUTOFF],
            pairs[CUTOFF] < windows[ACTIVE_UNTIL],
        ],
    ).select(pairs[USER_ID], pairs[CUTOFF], windows[USABLE_FROM])
    consented = active.group_by([USER_ID, CUTOFF]).agg(**{USABLE_FROM: active[USABLE_FROM].min()})
    joined = consented.join(gates, consented[USER_ID] == gates[USER_ID]).select(
        consented[USER_ID],
        consented[CUTOFF],
        consented[USABLE_FROM],
        gates[ADULT_FROM],
        gates[OBJECTION_AT],
        gates[WITHDRAWN],
    )
    ok = (
        ~joined[WITHDRAWN]
        & joined[ADULT_FROM].notnull()
        & (joined[ADULT_FROM] <= joined[CUTOFF])
        & (joined[OBJECTION_AT].isnull() | (joined[OBJECTION_AT] > joined[CUTOFF]))
    )
    window_floor = joined[CUTOFF] - ibis.interval(days=MAX_WINDOW_DAYS)
    return joined.filter(ok).select(
        USER_ID,
        CUTOFF,
        **{WINDOW_START: ibis.greatest(joined[USABLE_FROM], window_floor)},
    )


def usable_transactions(transactions: ir.Table, allowed: ir.Table) -> ir.Table:
    """Transactions that may feed features at each allowed pair's cutoff, with their age."""
    t, a = transactions, allowed
    # Bounds of all windows first: a cheap filter that spares the range join most rows.
    t = t.filter(t[TS] < a[CUTOFF].max(), t[TS] >= a[WINDOW_START].min())
    joined = t.join(
        a,
        [t[USER_ID] == a[USER_ID], t[TS] < a[CUTOFF], t[TS] >= a[WINDOW_START]],
    ).filter(~t[MCC].isin(sorted(SENSITIVE_MCCS)))
    return joined.select(
        t[USER_ID],
        a[CUTOFF],
        t[MERCHANT_ID],
        t[MCC],
        t[TS],
        t[AMOUNT],
        **{AGE_DAYS: _days_between(a[CUTOFF], t[TS])},
    )


def classify_transactions(
    transactions: ir.Table, pairs: ir.Table, windows: ir.Table, gates: ir.Table
) -> ir.Table:
    """Every transaction with its user's cutoff and a rule code: 0 kept, else the first failing
    rule (index into EXCLUSION_RULES, plus one). For one cutoff per user (snapshots).

    One pass yields both the exclusion counts and the usable rows, so a snapshot reads the
    transactions once; point-in-time requests use `allowed_pairs` + `usable_transactions`.
    """
    t = transactions
    active = pairs.join(
        windows,
        [
            pairs[USER_ID] == windows[USER_ID],
            windows[GRANTED_AT] <= pairs[CUTOFF],
            pairs[CUTOFF] < windows[ACTIVE_UNTIL],
        ],
    ).select(pairs[USER_ID], windows[USABLE_FROM])
    consented = active.group_by(USER_ID).agg(**{USABLE_FROM: active[USABLE_FROM].min()})
    status = pairs.left_join(consented, pairs[USER_ID] == consented[USER_ID]).select(
        pairs[USER_ID], pairs[CUTOFF], consented[USABLE_FROM]
    )
    status = status.left_join(gates, status[USER_ID] == gates[USER_ID]).select(
        status[USER_ID],
        status[CUTOFF],
        status[USABLE_FROM],
        gates[ADULT_FROM],
        gates[OBJECTION_AT],
        gates[WITHDRAWN],
    )
    j = t.left_join(status, t[USER_ID] == status[USER_ID])
    policy_denied = (
        j[ADULT_FROM].isnull()
        | (j[ADULT_FROM] > j[CUTOFF])
        | (j[OBJECTION_AT].notnull() & (j[OBJECTION_AT] <= j[CUTOFF]))
    )
    failing = {
        RULE_AFTER_CUTOFF: j[CUTOFF].isnull() | (j[TS] >= j[CUTOFF]),
        RULE_NO_CONSENT: j[USABLE_FROM].isnull(),
        RULE_POLICY_DENIED: policy_denied,
        RULE_BEFORE_LOOKBACK: j[TS] < j[USABLE_FROM],
        RULE_OUTSIDE_WINDOW: j[TS] < j[CUTOFF] - ibis.interval(days=MAX_WINDOW_DAYS),
        RULE_SENSITIVE: j[MCC].isin(sorted(SENSITIVE_MCCS)),
        RULE_WITHDRAWN: j[WITHDRAWN].fill_null(False),
    }
    code = ibis.cases(
        *((failing[rule], EXCLUSION_RULES.index(rule) + 1) for rule in EXCLUSION_RULES),
        else_=0,
    ).cast("int8")
    return j.select(t[USER_ID], j[CUTOFF], t[MERCHANT_ID], t[MCC], t[TS], t[AMOUNT], **{RULE: code})


def exclusion_counts(classified: ir.Table) -> ir.Table:
    """Transactions per rule code; they add up to the transactions read."""
    return classified.group_by(RULE).agg(**{N_ROWS: classified.count()})


def rule_name(code: int) -> str:
    return RULE_KEPT if code == 0 else EXCLUSION_RULES[code - 1]


def kept_transactions(classified: ir.Table) -> ir.Table:
    """The usable rows of a classified table, shaped like `usable_transactions`."""
    kept = classified.filter(classified[RULE] == 0)
    return kept.select(
        USER_ID,
        CUTOFF,
        MERCHANT_ID,
        MCC,
        TS,
        AMOUNT,
        **{AGE_DAYS: _days_between(kept[CUTOFF], kept[TS])},
    )


def window_aggregates(usable: ir.Table, half_life_days: float = DEFAULT_HALF_LIFE_DAYS) -> ir.Table:
    """The one pass over usable transactions: per (user, cutoff, merchant, mcc) window sums."""
    return _window_aggregates(usable, [USER_ID, CUTOFF, MERCHANT_ID, MCC], half_life_days)


def active_days(usable: ir.Table) -> ir.Table:
    """Distinct days per pair: the only feature that needs a second pass over transactions."""
    days = usable.select(USER_ID, CUTOFF, day=usable[TS].date())
    return days.group_by([USER_ID, CUTOFF]).agg(u_active_days_365d=days.day.nunique().cast("int64"))


def _window_aggregates(usable: ir.Table, keys: list[str], half_life_days: float) -> ir.Table:
    age, amount = usable[AGE_DAYS], usable[AMOUNT]
    purchase = amount > 0
    decay = (age * (-math.log(2.0) / half_life_days)).exp()
    metrics = {}
    for d in WINDOWS_DAYS:
        metrics[f"n_{d}d"] = usable.count(where=purchase & (age < d))
        metrics[f"spend_{d}d"] = amount.sum(where=age < d)
    metrics["min_age_purchase"] = age.min(where=purchase)
    metrics["decayed_spend"] = (amount * decay).sum()
    metrics["spend_base"] = amount.sum(where=(age >= TREND_RECENT_DAYS) & (age < TREND_BASE_DAYS))
    return usable.group_by(keys).agg(**metrics)


def _rollup(base: ir.Table, keys: list[str]) -> ir.Table:
    sums = [f"n_{d}d" for d in WINDOWS_DAYS] + [f"spend_{d}d" for d in WINDOWS_DAYS]
    sums += ["decayed_spend", "spend_base"]
    # Counts are summed as float64 and cast back at the end: DuckDB widens SUM(BIGINT) to
    # HUGEINT, which Parquet stores as double, and Ibis drops an int64 -> int64 cast as a no-op.
    metrics = {c: base[c].cast("float64").sum() for c in sums}
    metrics["min_age_purchase"] = base["min_age_purchase"].min()
    return base.group_by(keys).agg(**metrics)


def _finish_affinity(rolled: ir.Table, key: str, prefix: str, user_spend: ir.Table) -> ir.Table:
    r = rolled.join(
        user_spend, [rolled[USER_ID] == user_spend[USER_ID], rolled[CUTOFF] == user_spend[CUTOFF]]
    )
    floor0 = {
        f"spend_{d}d": ibis.greatest(r[f"spend_{d}d"].fill_null(0.0), 0.0) for d in WINDOWS_DAYS
    }
    spend_365 = floor0["spend_365d"]
    user_total = r["u_spend_365d"]
    recent = floor0["spend_30d"]
    base = ibis.greatest(r["spend_base"].fill_null(0.0), 0.0)
    out = {
        **{f"n_{d}d": r[f"n_{d}d"].cast("int64") for d in WINDOWS_DAYS},
        **floor0,
        "days_since_last": r["min_age_purchase"],
        "decayed_spend": ibis.greatest(r["decayed_spend"].fill_null(0.0), 0.0),
        "share_365d": ibis.ifelse(user_total > 0, spend_365 / user_total, 0.0),
        "trend": ((recent + 1.0) / (base / 2.0 + 1.0)).ln(),
    }
    return r.select(
        r[USER_ID], r[CUTOFF], r[key], **{f"{prefix}{name}": expr for name, expr in out.items()}
    )


def affinity_features(
    base: ir.Table,
    days: ir.Table,
    materialize: Callable[[ir.Table], ir.Table] = lambda table: table,
) -> dict[str, ir.Table]:
    """User x merchant, user x mcc and user features from `window_aggregates` and `active_days`.

    `materialize` lets the job keep intermediate tables that several outputs read (the
    per-merchant rollup and the user totals) instead of recomputing them per output.
    """
    by_merchant = materialize(_rollup(base, [USER_ID, CUTOFF, MERCHANT_ID]))
    by_mcc = _rollup(base, [USER_ID, CUTOFF, MCC])

    merchant_spend = ibis.greatest(by_merchant["spend_365d"].fill_null(0.0), 0.0)
    spend = by_merchant.select(USER_ID, CUTOFF, s=merchant_spend, buys=by_merchant["n_365d"])
    totals = materialize(
        spend.group_by([USER_ID, CUTOFF]).agg(
            u_spend_365d=spend.s.sum(),
            u_n_txn_365d=spend.buys.sum().cast("int64"),
            u_n_merchants_365d=spend.count(where=spend.buys > 0).cast("int64"),
        )
    )
    shares = spend.join(
        totals, [spend[USER_ID] == totals[USER_ID], spend[CUTOFF] == totals[CUTOFF]]
    )
    p = shares.s / shares.u_spend_365d
    shares = shares.filter(shares.s > 0).select(shares[USER_ID], shares[CUTOFF], plogp=p * p.ln())
    entropy = shares.group_by([USER_ID, CUTOFF]).agg(u_entropy_365d=-shares.plogp.sum())
    user = totals.join(entropy, [USER_ID, CUTOFF], how="left").select(
        totals, entropy.u_entropy_365d
    )
    user = user.join(days, [USER_ID, CUTOFF]).select(user, days.u_active_days_365d)
    user = user.select(
        USER_ID,
        CUTOFF,
        u_active_days_365d=user.u_active_days_365d,
        u_spend_365d=user.u_spend_365d,
        u_n_txn_365d=user.u_n_txn_365d,
        u_n_merchants_365d=user.u_n_merchants_365d,
        u_entropy_365d=user.u_entropy_365d.fill_null(0.0),
    )
    user_spend = totals.select(USER_ID, CUTOFF, "u_spend_365d")
    return {
        "user_merchant": _finish_affinity(
            by_merchant, MERCHANT_ID, USER_MERCHANT_PREFIX, user_spend
        ),
        "user_mcc": _finish_affinity(by_mcc, MCC, USER_MCC_PREFIX, user_spend),
        "user": user,
    }


def population_features(
    transactions: ir.Table,
    users: ir.Table,
    windows: ir.Table,
    gates: ir.Table,
    as_of: ir.Table,
    materialize: Callable[[ir.Table], ir.Table] = lambda table: table,
) -> dict[str, ir.Table]:
    """Per merchant and per mcc: share of users allowed at `as_of` who bought there in 90 days.

    `as_of` is a one-column table of instants (AS_OF). Only allowed users' usable transactions
    count, in numerator and denominator alike.
    """
    pairs = users.select(USER_ID).cross_join(as_of).select(USER_ID, **{CUTOFF: as_of[AS_OF]})
    allowed = allowed_pairs(pairs, windows, gates)
    allowed = allowed.mutate(
        **{
            WINDOW_START: ibis.greatest(
                allowed[WINDOW_START], allowed[CUTOFF] - ibis.interval(days=POPULATION_WINDOW_DAYS)
            )
        }
    )
    usable = usable_transactions(transactions, allowed).filter(ibis._[AMOUNT] > 0)
    buyers = materialize(usable.select(CUTOFF, USER_ID, MERCHANT_ID, MCC).distinct())
    n_allowed = allowed.group_by(CUTOFF).agg(**{N_USERS_ALLOWED: allowed.count()})

    def share(key: str, name: str) -> ir.Table:
        active = buyers.group_by([CUTOFF, key]).agg(n_active=buyers[USER_ID].nunique())
        j = active.join(n_allowed, CUTOFF)
        return j.select(
            **{AS_OF: j[CUTOFF]},
            **{key: j[key]},
            **{name: j.n_active.cast("float64") / j[N_USERS_ALLOWED].cast("float64")},
        )

    return {"merchant": share(MERCHANT_ID, MERCHANT_POPULARITY), "mcc": share(MCC, MCC_POPULARITY)}


def population_as_of_ns(cutoffs_ns: np.ndarray) -> np.ndarray:
    """Population features for a cutoff are those as of the first instant of its month (UTC).

    The one spelling of that rule: the jobs choose as-of instants with it, assembly finds them.
    """
    months = np.asarray(cutoffs_ns, dtype=np.int64).astype("datetime64[ns]").astype("datetime64[M]")
    return months.astype("datetime64[ns]").view("int64")


def affinity_feature_docs() -> dict[str, str]:
    """Every user x merchant and user x mcc feature name with its one-line meaning."""
    docs = {}
    for prefix, scope in (
        (USER_MERCHANT_PREFIX, "at the merchant"),
        (USER_MCC_PREFIX, "in the category"),
    ):
        docs.update(
            {f"{prefix}{name}": f"{meaning} {scope}" for name, meaning in AFFINITY_FEATURES.items()}
        )
    return docs
