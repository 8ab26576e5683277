"""Point-in-time reads for training rows: features as of each shown_at, usable history, and
the name of the feature rows a model saw.

Features come only through `features.job.point_in_time` + `features.vector.assemble`, the
function serving calls too, so training and serving cannot drift apart.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from features import definitions as fd
from features.contract import USER_ID
from features.instants import epoch_ns
from features.job import point_in_time
from features.sources import Sources
from features.vector import FeatureSource, OfferArrays, assemble


def feature_matrix(
    sources: Sources,
    user_ids: Sequence[str],
    shown_at: pd.Series,
    offers: OfferArrays,
    half_life_days: float,
) -> np.ndarray:
    """Point-in-time features as of each shown_at, through the one assembly function."""
    stamps = pd.Series(shown_at).reset_index(drop=True).astype("datetime64[us, UTC]")
    pairs = pd.DataFrame({USER_ID: np.asarray(user_ids, dtype=object), fd.CUTOFF: stamps})
    tables = point_in_time(sources, pairs, half_life_days)
    return assemble(FeatureSource(tables), list(user_ids), epoch_ns(stamps), offers)


def pairs_id(user_ids: np.ndarray, shown_ns: np.ndarray, digests: Mapping[str, str]) -> str:
    """Names the feature rows a model saw: the (user, cutoff) pairs and the sources' digests."""
    frame = pd.DataFrame({USER_ID: user_ids, fd.CUTOFF: shown_ns}).drop_duplicates()
    frame = frame.sort_values([fd.CUTOFF, USER_ID], kind="stable")
    h = hashlib.sha256(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    for name in sorted(digests):
        h.update(f"{name}={digests[name]}".encode())
    return f"pit-{h.hexdigest()[:12]}"


def history_days(sources: Sources, user_ids: np.ndarray, shown_at: pd.Series) -> np.ndarray:
    """Days of usable history at each cutoff (age of the oldest usable transaction; NaN: none).

    "Usable" is the feature engine's own gate (consented, non-sensitive, before the cutoff,
    inside the look-back), so the new-user segment sees exactly what the model can see.
    """
    stamps = pd.Series(shown_at).reset_index(drop=True).astype("datetime64[us, UTC]")
    rows = pd.DataFrame(
        {USER_ID: np.asarray(user_ids, dtype=object).astype(str), fd.CUTOFF: stamps}
    )
    pairs = sources.con.create_table("history_pairs", rows.drop_duplicates(), overwrite=True)
    allowed = fd.allowed_pairs(pairs, sources.windows, sources.gates)
    usable = fd.usable_transactions(sources.transactions, allowed)
    oldest = sources.con.execute(
        usable.group_by([USER_ID, fd.CUTOFF]).agg(days=usable[fd.AGE_DAYS].max())
    )
    oldest[fd.CUTOFF] = pd.to_datetime(oldest[fd.CUTOFF], utc=True).astype("datetime64[us, UTC]")
    oldest[USER_ID] = oldest[USER_ID].astype(str)
    return rows.merge(oldest, on=[USER_ID, fd.CUTOFF], how="left")["days"].to_numpy(np.float64)
