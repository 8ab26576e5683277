"""Affinity features from window aggregates: user x merchant, user x mcc and user tables.

Pure Ibis, like features/definitions.py: the same expressions serve a snapshot (one constant
cutoff) and point in time (a CUTOFF column), on DuckDB or Spark.
"""

from __future__ import annotations

from collections.abc import Callable

import ibis
import ibis.expr.types as ir

from features.contract import MCC, MERCHANT_ID, USER_ID
from features.definitions import (
    CUTOFF,
    DAY_WORD_COLUMNS,
    TREND_BASE_DAYS,
    TREND_RECENT_DAYS,
    USER_MCC_PREFIX,
    USER_MERCHANT_PREFIX,
    WINDOWS_DAYS,
    bit_count,
    bit_or,
)


def _rollup(base: ir.Table, keys: list[str], with_days: bool) -> ir.Table:
    sums = [f"n_{d}d" for d in WINDOWS_DAYS] + [f"spend_{d}d" for d in WINDOWS_DAYS]
    sums += ["decayed_spend"]
    # Counts are summed as float64 and cast back at the end: DuckDB widens SUM(BIGINT) to
    # HUGEINT, which Parquet stores as double, and Ibis drops an int64 -> int64 cast as a no-op.
    metrics: dict[str, ir.Value] = {c: base[c].cast("float64").sum() for c in sums}
    metrics["min_age_purchase"] = base["min_age_purchase"].min()
    if with_days:  # only the user totals read the day bitmaps
        metrics.update({w: bit_or(base[w]) for w in DAY_WORD_COLUMNS})
    return base.group_by(keys).agg(**metrics)


def _finish_affinity(
    rolled: ir.Table,
    key: str,
    prefix: str,
    user_spend: ir.Table,
    cutoff: ir.TimestampValue | None,
) -> ir.Table:
    pair = _pair_keys(cutoff)
    r = rolled.join(user_spend, [rolled[k] == user_spend[k] for k in pair])
    floor0 = {
        f"spend_{d}d": ibis.greatest(r[f"spend_{d}d"].fill_null(0.0), 0.0) for d in WINDOWS_DAYS
    }
    spend_365 = floor0["spend_365d"]
    user_total = r["u_spend_365d"]
    recent = floor0["spend_30d"]
    spend_base = r[f"spend_{TREND_BASE_DAYS}d"].fill_null(0.0) - r[
        f"spend_{TREND_RECENT_DAYS}d"
    ].fill_null(0.0)
    base = ibis.greatest(spend_base, 0.0)
    out = {
        **{f"n_{d}d": r[f"n_{d}d"].cast("int64") for d in WINDOWS_DAYS},
        **floor0,
        "days_since_last": r["min_age_purchase"],
        "decayed_spend": ibis.greatest(r["decayed_spend"].fill_null(0.0), 0.0),
        "share_365d": ibis.ifelse(user_total > 0, spend_365 / user_total, 0.0),
        "trend": ((recent + 1.0) / (base / 2.0 + 1.0)).ln(),
    }
    return r.select(
        r[USER_ID],
        **{CUTOFF: r[CUTOFF] if cutoff is None else cutoff},
        **{key: r[key]},
        **{f"{prefix}{name}": expr for name, expr in out.items()},
    )


def _pair_keys(cutoff: ir.TimestampValue | None) -> list[str]:
    """A snapshot's one cutoff is a constant, not a key to group and join on."""
    return [USER_ID, CUTOFF] if cutoff is None else [USER_ID]


def merchants_with_several_mccs(base: ir.Table) -> ir.IntegerScalar:
    """How many merchants appear under more than one MCC (0 in most card data)."""
    per_merchant = base.group_by(MERCHANT_ID).agg(lo=base[MCC].min(), hi=base[MCC].max())
    return per_merchant.filter(per_merchant.lo != per_merchant.hi).count()


def affinity_features(
    base: ir.Table,
    materialize: Callable[[ir.Table], ir.Table] = lambda table: table,
    one_mcc_per_merchant: bool = False,
    cutoff: ir.TimestampValue | None = None,
) -> dict[str, ir.Table]:
    """User x merchant, user x mcc and user features from window aggregates.

    `base` holds a CUTOFF column (point in time), or none when `cutoff` gives the snapshot's.

    `materialize` lets the job keep intermediate tables that several outputs read (the
    per-merchant rollup and the user totals) instead of recomputing them per output. When
    every merchant has one MCC (`merchants_with_several_mccs` is 0), the per-merchant rollup
    of `base` is `base` itself and is not computed.
    """
    pair = _pair_keys(cutoff)
    if one_mcc_per_merchant:
        by_merchant = base.drop(MCC)
    else:
        by_merchant = materialize(_rollup(base, [*pair, MERCHANT_ID], with_days=True))
    by_mcc = _rollup(base, [*pair, MCC], with_days=False)

    totals = materialize(_user_totals(by_merchant, pair))
    user = _user_features(totals, cutoff)
    user_spend = totals.select(*pair, "u_spend_365d")
    return {
        "user_merchant": _finish_affinity(
            by_merchant, MERCHANT_ID, USER_MERCHANT_PREFIX, user_spend, cutoff
        ),
        "user_mcc": _finish_affinity(by_mcc, MCC, USER_MCC_PREFIX, user_spend, cutoff),
        "user": user,
    }


def _user_totals(by_merchant: ir.Table, pair: list[str]) -> ir.Table:
    """Per pair: the user features' sums over merchants, and what the entropy needs."""
    s = ibis.greatest(by_merchant["spend_365d"].fill_null(0.0), 0.0)
    buys = by_merchant["n_365d"]
    active_days = sum(
        (bit_count(bit_or(by_merchant[w]).fill_null(0)).cast("int64") for w in DAY_WORD_COLUMNS),
        ibis.literal(0, type="int64"),
    )
    return by_merchant.group_by(pair).agg(
        u_active_days_365d=active_days,
        u_spend_365d=s.sum(),
        u_n_txn_365d=buys.sum().cast("int64"),
        u_n_merchants_365d=by_merchant.count(where=buys > 0).cast("int64"),
        s_log_s=(s * s.ln()).sum(where=s > 0),
        n_spending=by_merchant.count(where=s > 0),
    )


def _user_features(totals: ir.Table, cutoff: ir.TimestampValue | None) -> ir.Table:
    """The user table: the totals plus the entropy of the user's spend over merchants."""
    # Entropy of p = s / S without a second pass: -sum p ln p = ln S - sum(s ln s) / S
    # (exactly 0 for one merchant, where the identity would leave a rounding residue).
    total = totals.u_spend_365d
    entropy = ibis.ifelse(
        totals.n_spending > 1,
        ibis.greatest(total.ln() - totals.s_log_s.fill_null(0.0) / total, 0.0),
        0.0,
    )
    return totals.select(
        USER_ID,
        **{CUTOFF: totals[CUTOFF] if cutoff is None else cutoff},
        u_active_days_365d=totals.u_active_days_365d,
        u_spend_365d=totals.u_spend_365d,
        u_n_txn_365d=totals.u_n_txn_365d,
        u_n_merchants_365d=totals.u_n_merchants_365d,
        u_entropy_365d=entropy,
    )
