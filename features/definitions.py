"""Feature set v1, merchant affinity, written once as Ibis expressions.

Pure functions: Ibis tables in, Ibis tables out. Nothing here knows the backend; the job module
runs them on DuckDB (default) or Spark. Only portable operations are used: equality and
inequality joins, conditional aggregates, `epoch_seconds`, bit shifts, and SQL's `bit_or` and
`bit_count` (declared as builtin UDFs: the same names on both engines); no `asof_join`.

Every feature is computed per (user_id, cutoff) "pair", so a snapshot (one cutoff for all
users) and point-in-time training rows (many cutoffs) are the same sums. A snapshot reads the
transactions once (`classified_aggregates`: exclusion counts, window sums, day bitmaps for
active days, population buyers, all in one GROUP BY); point in time is one range join
(`usable_transactions`) into `window_aggregates`. Both feed `affinity_features`
(features/affinity.py) and the population shares (features/population.py). The exclusion
rules are spelled once here and used by both paths.
"""

from __future__ import annotations

import math

import ibis
import ibis.expr.datatypes as dt
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
WINDOW_FLOOR = "window_floor"  # cutoff - 365 d: the oldest instant any feature may read
POP_FROM = "pop_from"  # start of the user's population window at the as-of instant (null: none)
POPULATION = "population"  # the row is a purchase inside the user's population window
POP_BUYS = "pop_buys"
DAY_WORD_INDEX = "day_word"
DAY_BIT = "day_bit"
USER_RULE = "user_rule"  # the first user-level exclusion rule a user fails (0: none)
DAY_WORDS, BITS_PER_WORD = 6, 62  # 372 bits hold the 366 calendar days a 365-day window meets
DAY_WORD = "days_bits_"
DAY_WORD_COLUMNS = tuple(f"{DAY_WORD}{k}" for k in range(DAY_WORDS))

SECONDS_PER_DAY = 86_400.0
MAX_WINDOW_DAYS = 365  # data minimisation: nothing older than the longest window is read
WINDOWS_DAYS = (30, 90, 365)
TREND_RECENT_DAYS = 30  # trend compares the last 30 days ...
TREND_BASE_DAYS = 90  # ... with the 60 days before them (days 30-90)
POPULATION_WINDOW_DAYS = 90
DEFAULT_HALF_LIFE_DAYS = 30.0
HALF_LIFE_PARAM = "half_life_days"  # its key in run params, manifests and model metadata

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
METRICS = (
    *(f"n_{d}d" for d in WINDOWS_DAYS),
    *(f"spend_{d}d" for d in WINDOWS_DAYS),
    "min_age_purchase",
    "decayed_spend",
    *DAY_WORD_COLUMNS,
)


def _days_between(later: ir.TimestampValue, earlier: ir.TimestampValue) -> ir.FloatingValue:
    return (later.epoch_seconds() - earlier.epoch_seconds()).cast("float64") / SECONDS_PER_DAY


def allowed_pairs(pairs: ir.Table, windows: ir.Table, gates: ir.Table) -> ir.Table:
    """Pairs whose user may feed features at the cutoff, with the oldest usable timestamp.

    Allowed: no user-level exclusion rule (`_user_rule`) at the cutoff. WINDOW_START is where
    the pair's usable transactions start: the later of the consent's lookback and the window.
    """
    s = _pair_status(pairs, windows, gates, [USER_ID, CUTOFF])
    allowed = s.filter(s[USER_RULE] == 0)
    window_floor = allowed[CUTOFF] - ibis.interval(days=MAX_WINDOW_DAYS)
    return allowed.select(
        USER_ID,
        CUTOFF,
        USABLE_FROM,
        USER_RULE,
        **{
            WINDOW_START: ibis.greatest(allowed[USABLE_FROM], window_floor),
            WINDOW_FLOOR: window_floor,
        },
    )


def usable_transactions(transactions: ir.Table, allowed: ir.Table) -> ir.Table:
    """Transactions that may feed features at each allowed pair's cutoff, with their age.

    The range join reads only rows inside each pair's window (bounds the rules imply, so the
    engine can use a range join); the rules themselves then decide, as in a snapshot.
    """
    t, a = transactions, allowed
    # Bounds of all windows first: a cheap filter that spares the range join most rows.
    t = t.filter(t[TS] < a[CUTOFF].max(), t[TS] >= a[WINDOW_START].min())
    joined = t.join(
        a,
        [t[USER_ID] == a[USER_ID], t[TS] < a[CUTOFF], t[TS] >= a[WINDOW_START]],
    )
    rules = _exclusion_rules(
        a[USER_RULE], t[TS], t[MCC], a[USABLE_FROM], a[CUTOFF], a[WINDOW_FLOOR]
    )
    joined = joined.filter(_rule_of(rules) == 0)
    return joined.select(
        t[USER_ID],
        a[CUTOFF],
        t[MERCHANT_ID],
        t[MCC],
        t[TS],
        t[AMOUNT],
        **{
            AGE_DAYS: _days_between(a[CUTOFF], t[TS]),
            WINDOW_FLOOR: a[WINDOW_FLOOR],
        },
    )


# The exclusion rules, spelled once: user-level rules per (user, cutoff) in `_user_rule`,
# every rule per transaction in `_exclusion_rules`. A snapshot classifies each transaction
# with them (and counts per rule); point in time keeps the transactions no rule excludes.


def _policy_denied(cutoff: ir.TimestampValue, gated: ir.Table) -> ir.BooleanValue:
    """Marketing objection by the cutoff, minor at the cutoff, or unknown age."""
    return (
        gated[ADULT_FROM].isnull()
        | (gated[ADULT_FROM] > cutoff)
        | (gated[OBJECTION_AT].notnull() & (gated[OBJECTION_AT] <= cutoff)).fill_null(False)
    )


def _user_rule(s: ir.Table) -> ir.IntegerValue:
    """The first user-level rule a pair fails at its cutoff (0: none): no active consent,
    denied by policy, withdrawn or erased when the job runs."""
    return ibis.cases(
        (s[USABLE_FROM].isnull(), _rule_code(RULE_NO_CONSENT)),
        (_policy_denied(s[CUTOFF], s), _rule_code(RULE_POLICY_DENIED)),
        (s[WITHDRAWN].fill_null(False), _rule_code(RULE_WITHDRAWN)),
        else_=0,
    ).cast("int8")


def _exclusion_rules(
    user_rule: ir.IntegerValue,
    ts: ir.TimestampValue,
    mcc: ir.StringValue,
    usable_from: ir.TimestampValue,
    cutoff: ir.TimestampValue,
    window_floor: ir.TimestampValue,
) -> dict[str, ir.BooleanValue]:
    """Every rule a transaction is checked against, in EXCLUSION_RULES order (first wins)."""
    return {
        RULE_AFTER_CUTOFF: user_rule.isnull() | (ts >= cutoff),  # an unknown user too
        RULE_NO_CONSENT: user_rule == _rule_code(RULE_NO_CONSENT),
        RULE_POLICY_DENIED: user_rule == _rule_code(RULE_POLICY_DENIED),
        RULE_BEFORE_LOOKBACK: ts < usable_from,
        RULE_OUTSIDE_WINDOW: ts < window_floor,
        RULE_SENSITIVE: mcc.isin(sorted(SENSITIVE_MCCS)),
        RULE_WITHDRAWN: user_rule == _rule_code(RULE_WITHDRAWN),
    }


def _rule_of(rules: dict[str, ir.BooleanValue]) -> ir.IntegerValue:
    """The rule code of the first rule that holds (index into EXCLUSION_RULES plus one), 0 none."""
    return ibis.cases(*((rules[r], _rule_code(r)) for r in EXCLUSION_RULES), else_=0).cast("int8")


def _rule_code(rule: str) -> int:
    return EXCLUSION_RULES.index(rule) + 1


def _pair_status(pairs: ir.Table, windows: ir.Table, gates: ir.Table, keys: list[str]) -> ir.Table:
    """Per pair: USABLE_FROM (the oldest usable instant of the consents active at the cutoff,
    null: none), the user's gates and USER_RULE. `keys` identify a pair (the user alone when
    the cutoff is one constant)."""
    active = pairs.join(
        windows,
        [
            pairs[USER_ID] == windows[USER_ID],
            windows[GRANTED_AT] <= pairs[CUTOFF],
            pairs[CUTOFF] < windows[ACTIVE_UNTIL],
        ],
    ).select(*(pairs[k] for k in keys), windows[USABLE_FROM])
    consented = active.group_by(keys).agg(**{USABLE_FROM: active[USABLE_FROM].min()})
    s = pairs.left_join(consented, keys).select(pairs[USER_ID], pairs[CUTOFF], USABLE_FROM)
    s = s.left_join(gates, USER_ID).select(s, gates[ADULT_FROM], gates[OBJECTION_AT], WITHDRAWN)
    return s.mutate(**{USER_RULE: _user_rule(s)})


def snapshot_status(
    users: ir.Table,
    windows: ir.Table,
    gates: ir.Table,
    cutoff: ir.TimestampValue,
    as_of: ir.TimestampValue,
) -> ir.Table:
    """Per user of a snapshot: what its transactions are checked against, in one small table.

    USER_RULE is the first user-level rule the user fails at the cutoff (`_user_rule`; 0 for
    none); USABLE_FROM the consent's oldest usable instant; POP_FROM the start of the user's
    90-day population window at `as_of` (null: not allowed then).
    """
    s = _pair_status(users.select(USER_ID, **{CUTOFF: cutoff}), windows, gates, [USER_ID])
    population = allowed_pairs(users.select(USER_ID, **{CUTOFF: as_of}), windows, gates)
    pop_from = ibis.greatest(
        population[WINDOW_START], as_of - ibis.interval(days=POPULATION_WINDOW_DAYS)
    )
    population = population.select(USER_ID, **{POP_FROM: pop_from})
    s = s.left_join(population, USER_ID).select(s, population[POP_FROM])
    return s.select(USER_ID, USABLE_FROM, POP_FROM, USER_RULE)


def classified_aggregates(
    transactions: ir.Table,
    status: ir.Table,
    cutoff: ir.TimestampValue,
    as_of: ir.TimestampValue,
    half_life_days: float = DEFAULT_HALF_LIFE_DAYS,
) -> ir.Table:
    """The snapshot's one pass over the transactions: every row gets a rule code (0 kept,
    else the first failing rule: index into EXCLUSION_RULES, plus one) and lands in one group.

    Kept rows and population purchases group by (user, merchant, mcc, rule); every other row
    loses its user, so excluded rows fold into a few groups per rule and are only counted. One
    aggregate then yields the exclusion counts, the window sums and the population buyers.
    The cutoff and the window's start are constants, not columns: the join carries little.
    """
    t = transactions
    j = t.left_join(status, t[USER_ID] == status[USER_ID])
    window_floor = cutoff - ibis.interval(days=MAX_WINDOW_DAYS)
    rules = _exclusion_rules(j[USER_RULE], j[TS], j[MCC], j[USABLE_FROM], cutoff, window_floor)
    in_population_window = (
        j[POP_FROM].notnull() & (j[TS] >= j[POP_FROM]) & (j[TS] < as_of) & (j[AMOUNT] > 0)
    ).fill_null(False)
    # The MCC list is checked only for the few rows in the window (a CASE evaluates lazily).
    pop = ibis.ifelse(in_population_window, ~rules[RULE_SENSITIVE], False)
    rows = j.select(
        t[USER_ID],
        t[MERCHANT_ID],
        t[MCC],
        t[AMOUNT],
        **{
            RULE: _rule_of(rules),
            POPULATION: pop,
            AGE_DAYS: _days_between(cutoff, j[TS]),
            **_day_bit(_day_number(j[TS], window_floor)),
        },
    )
    keyed = (rows[RULE] == 0) | rows[POPULATION]
    user = ibis.ifelse(keyed, rows[USER_ID], ibis.null()).name(USER_ID)
    return rows.group_by([user, MERCHANT_ID, MCC, RULE]).agg(
        **{N_ROWS: rows.count(), POP_BUYS: rows.count(where=rows[POPULATION])},
        **_window_metrics(rows, half_life_days),
    )


def exclusion_counts(aggregates: ir.Table) -> ir.Table:
    """Transactions per rule code; they add up to the transactions read."""
    return aggregates.group_by(RULE).agg(**{N_ROWS: aggregates[N_ROWS].sum()})


def rule_name(code: int) -> str:
    return RULE_KEPT if code == 0 else EXCLUSION_RULES[code - 1]


def kept_aggregates(aggregates: ir.Table) -> ir.Table:
    """The kept groups of `classified_aggregates`: `window_aggregates` without the (constant)
    cutoff column, which `affinity_features` adds to its outputs."""
    kept = aggregates.filter(aggregates[RULE] == 0)
    return kept.select(USER_ID, MERCHANT_ID, MCC, *METRICS)


def window_aggregates(usable: ir.Table, half_life_days: float = DEFAULT_HALF_LIFE_DAYS) -> ir.Table:
    """Point in time: per (user, cutoff, merchant, mcc) window sums of usable transactions."""
    rows = usable.mutate(**_day_bit(_day_number(usable[TS], usable[WINDOW_FLOOR])))
    return rows.group_by([USER_ID, CUTOFF, MERCHANT_ID, MCC]).agg(
        **_window_metrics(rows, half_life_days)
    )


def _day_number(ts: ir.TimestampValue, floor: ir.TimestampValue) -> ir.IntegerValue:
    """UTC calendar day of `ts` counted from the day of the 365-day window's start (0..365);
    rows outside a window (excluded, never read as kept) are clamped into the bitmap's range."""
    days = (ts.epoch_seconds() / SECONDS_PER_DAY).floor() - (
        floor.epoch_seconds() / SECONDS_PER_DAY
    ).floor()
    return ibis.greatest(ibis.least(days.cast("int64"), DAY_WORDS * BITS_PER_WORD - 1), 0)


def _day_bit(day: ir.IntegerValue) -> dict[str, ir.IntegerValue]:
    """A day's word in the bitmap and its bit there, computed once per row."""
    return {
        DAY_WORD_INDEX: day // BITS_PER_WORD,
        # a 64-bit one: an int64 literal compiles to a bare `1`, which Spark shifts as a
        # 32-bit int (shift counts wrap at 32); the explicit cast survives compilation
        DAY_BIT: ibis.literal(1, type="int8").cast("int64") << (day % BITS_PER_WORD),
    }


@ibis.udf.agg.builtin(name="bit_or")
def bit_or(x: dt.int64) -> dt.int64:  # type: ignore[empty-body]
    """SQL bit_or: Ibis's own compiles on DuckDB but not on Spark; both know this name."""


@ibis.udf.scalar.builtin(name="bit_count")
def bit_count(x: dt.int64) -> dt.int8:  # type: ignore[empty-body]
    """SQL bit_count, the same name on DuckDB and Spark. DuckDB answers TINYINT: declared as
    such, so Ibis keeps the cast to int64 before any sum (declared int64, it dropped it)."""


def _window_metrics(rows: ir.Table, half_life_days: float) -> dict[str, ir.Value]:
    """Sums over a group's rows; only kept groups are read, so no per-row keep filter."""
    age, amount = rows[AGE_DAYS], rows[AMOUNT]
    purchase = amount > 0
    decay = (age * (-math.log(2.0) / half_life_days)).exp()
    metrics: dict[str, ir.Value] = {}
    # Every kept row is inside the longest window, so its sums need no age filter; the
    # trend's base (days 30-90) is spend_90d - spend_30d. Each aggregate costs a pass's worth.
    for d in WINDOWS_DAYS:
        inside = d >= MAX_WINDOW_DAYS
        metrics[f"n_{d}d"] = rows.count(where=purchase if inside else purchase & (age < d))
        metrics[f"spend_{d}d"] = amount.sum() if inside else amount.sum(where=age < d)
    metrics["min_age_purchase"] = age.min(where=purchase)
    metrics["decayed_spend"] = (amount * decay).sum()
    # Active days without a second pass: each group keeps a bitmap of its days, users OR them.
    for k in range(DAY_WORDS):
        metrics[f"{DAY_WORD}{k}"] = bit_or(rows[DAY_BIT], where=rows[DAY_WORD_INDEX] == k)
    return metrics


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
