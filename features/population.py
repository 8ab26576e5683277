"""Population features: per merchant and per mcc, the share of allowed users who bought there.

Pure Ibis. A snapshot takes its buyers from the one pass over the transactions
(`snapshot_population`); point in time finds them with the same eligibility rules
(`population_features`).
"""

from __future__ import annotations

from collections.abc import Callable

import ibis
import ibis.expr.types as ir

from features.contract import AMOUNT, MCC, MERCHANT_ID, USER_ID
from features.definitions import (
    AS_OF,
    CUTOFF,
    MCC_POPULARITY,
    MERCHANT_POPULARITY,
    N_USERS_ALLOWED,
    POP_BUYS,
    POP_FROM,
    POPULATION_WINDOW_DAYS,
    WINDOW_START,
    allowed_pairs,
    usable_transactions,
)


def snapshot_population(
    aggregates: ir.Table, status: ir.Table, as_of: ir.TimestampValue
) -> dict[str, ir.Table]:
    """Population shares from the buyers `classified_aggregates` found in the same pass."""
    buyers = aggregates.filter(aggregates[POP_BUYS] > 0)
    buyers = buyers.select(USER_ID, MERCHANT_ID, MCC, **{CUTOFF: as_of})
    allowed = status.filter(status[POP_FROM].notnull())
    n_allowed = allowed.aggregate(**{N_USERS_ALLOWED: allowed.count()}).mutate(**{CUTOFF: as_of})
    return population_shares(buyers, n_allowed)


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
    return population_shares(buyers, n_allowed)


def population_shares(buyers: ir.Table, n_allowed: ir.Table) -> dict[str, ir.Table]:
    """Buyers (CUTOFF = as-of, user, merchant, mcc) over users allowed at that instant."""

    def share(key: str, name: str) -> ir.Table:
        active = buyers.group_by([CUTOFF, key]).agg(n_active=buyers[USER_ID].nunique())
        j = active.join(n_allowed, CUTOFF)
        return j.select(
            **{AS_OF: j[CUTOFF]},
            **{key: j[key]},
            **{name: j.n_active.cast("float64") / j[N_USERS_ALLOWED].cast("float64")},
        )

    return {"merchant": share(MERCHANT_ID, MERCHANT_POPULARITY), "mcc": share(MCC, MCC_POPULARITY)}
