"""The feature job, top to bottom: sweep, open the sources, then a snapshot or point-in-time rows.

Stages live in their own modules: the engine (features/backend.py), the checked inputs
(features/sources.py), the feature expressions (features/definitions.py, pure Ibis) and the
snapshot's write, read and erase (features/snapshot.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import ibis.expr.types as ir
import numpy as np
import pandas as pd

from features import definitions as fd
from features import stale
from features.backend import cache
from features.contract import USER_ID
from features.instants import epoch_ns
from features.population import population_features
from features.snapshot import affinity_tables, named_tables, publish_snapshot
from features.sources import Sources, open_sources
from features.tables import FeatureTables

log = logging.getLogger(__name__)


def build_snapshot(
    data_dir: str | Path,
    features_dir: str | Path,
    as_of: datetime | None = None,
    erasures_dir: str | Path | None = None,
    half_life_days: float = fd.DEFAULT_HALF_LIFE_DAYS,
    engine: str = "duckdb",
    quarantine_dir: str | Path | None = None,
    on_note: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Build and publish a snapshot as of one cutoff (default: now) for every allowed user.

    First sweeps what killed builds left (staging folders, spill folders of dead processes),
    telling `on_note` (default: the log); then checks the inputs (`open_sources`).
    """
    note = on_note or log.warning
    for path in stale.sweep_features_dir(features_dir) + stale.sweep_spill():
        note(f"swept {path}, left by a build that was killed")
    run_time = datetime.now(UTC)
    sources = open_sources(data_dir, erasures_dir, run_time, engine, quarantine_dir=quarantine_dir)
    return publish_snapshot(sources, features_dir, as_of or run_time, half_life_days, engine)


def point_in_time(
    sources: Sources, pairs: pd.DataFrame, half_life_days: float = fd.DEFAULT_HALF_LIFE_DAYS
) -> FeatureTables:
    """Features for many (user_id, cutoff) pairs at once: one range join, not a loop.

    Population features come as of the first instant of each cutoff's month.
    """
    frame = (
        pairs[[USER_ID, fd.CUTOFF]]
        .drop_duplicates()
        .astype({USER_ID: str, fd.CUTOFF: "datetime64[us, UTC]"})
    )
    pair_table = sources.con.create_table("pit_pairs", frame, overwrite=True)
    as_of = _as_of_table(sources.con, "pit_as_of", frame[fd.CUTOFF])
    allowed = fd.allowed_pairs(pair_table, sources.windows, sources.gates)
    usable = fd.usable_transactions(sources.transactions, allowed)  # the range join, once
    base = cache(fd.window_aggregates(usable, half_life_days))
    population = population_features(
        sources.transactions, sources.users, sources.windows, sources.gates, as_of, cache
    )
    exprs = named_tables(affinity_tables(sources.con, base), population)
    # Unordered: assembly indexes by key, and sorting millions of string keys costs seconds.
    # Through Arrow: the same dtypes as a snapshot read back from Parquet, and several times
    # faster than Ibis's own pandas conversion for millions of string keys.
    return FeatureTables(**{n: sources.con.to_pyarrow(e).to_pandas() for n, e in exprs.items()})


def _as_of_table(con: Any, name: str, cutoffs: pd.Series) -> ir.Table:
    """The distinct population as-of instants of some cutoffs, as a backend table."""
    months = np.unique(fd.population_as_of_ns(epoch_ns(cutoffs)))
    frame = pd.DataFrame({fd.AS_OF: pd.to_datetime(months, utc=True).astype("datetime64[us, UTC]")})
    return con.create_table(name, frame, overwrite=True)
