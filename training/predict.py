"""Predict: point-in-time scores for given (user_id, offer_id, shown_at) rows, policy first.

Rows the policy refuses get no score, only their reason; the rest are scored by a registered
version (the champion by default) with the feature half-life it was trained with.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from features import tracking
from features.backend import connect
from features.contract import MCC, OFFER_ID, SHOWN_AT, USER_ID
from features.sources import open_sources
from features.vector import OfferArrays
from training.config import TrainConfig
from training.inputs import KEPT, Inputs, load_inputs, policy_reasons, read_erasures_if_any
from training.point_in_time import feature_matrix
from training.versions import columns_for, run_half_life

REASON_UNKNOWN_OFFER = "UNKNOWN_OFFER"


@dataclass
class PredictResult:
    out: Path
    model: str  # name/version scored with
    n_rows: int
    n_scored: int
    reasons: dict[str, int]


def read_rows(path: str | Path) -> pd.DataFrame:
    """user_id, offer_id, shown_at rows from Parquet or CSV; naive times mean UTC."""
    path = Path(path)
    frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path, dtype=str)
    missing = {USER_ID, OFFER_ID, SHOWN_AT} - set(frame.columns)
    if missing:
        raise ValueError(f"{path}: missing columns {sorted(missing)}")
    raw = frame[SHOWN_AT]
    textual = not pd.api.types.is_datetime64_any_dtype(raw.dtype)
    shown = pd.to_datetime(raw, utc=True, format="ISO8601" if textual else None)
    if shown.isna().any():
        raise ValueError(f"{path}: {int(shown.isna().sum())} rows without a valid {SHOWN_AT}")
    return pd.DataFrame(
        {
            USER_ID: frame[USER_ID].astype(str).to_numpy(dtype=object),
            OFFER_ID: frame[OFFER_ID].astype(str).to_numpy(dtype=object),
            SHOWN_AT: shown.astype("datetime64[us, UTC]").to_numpy(),
        }
    )


def predict(
    data_dir: str | Path,
    exposures_path: str | Path,
    out_path: str | Path,
    *,
    home: Path,
    erasures_dir: Path | None,
    model: str | None = None,
    run_time: datetime | None = None,
) -> PredictResult:
    """Scores as of each shown_at; rows the policy refuses get no score, only their reason."""
    run_time = run_time or datetime.now(UTC)
    ranker = tracking.load_model_uri(home, model or tracking.model_uri(tracking.CHAMPION))
    inputs = load_inputs(data_dir, with_exposures=False)
    rows = read_rows(exposures_path)
    oi = pd.Index(inputs.offers[OFFER_ID].astype(str)).get_indexer(rows[OFFER_ID])
    reasons = _reasons(rows, oi, inputs, read_erasures_if_any(erasures_dir), run_time)
    ok = np.flatnonzero(reasons == KEPT)
    scores = np.full(len(rows), np.nan)
    if len(ok):
        config = TrainConfig()
        con = connect("duckdb", threads=config.feature_threads)
        X = feature_matrix(
            open_sources(data_dir, erasures_dir, run_time, con=con),
            rows[USER_ID].to_numpy(dtype=object)[ok].tolist(),
            rows[SHOWN_AT].iloc[ok],
            OfferArrays.from_frame(inputs.offers).take(oi[ok]),
            run_half_life(home, ranker.version, config),
        )
        scores[ok] = ranker.booster.predict(columns_for(X, ranker.feature_columns), num_threads=1)
    out_path = _write(_ranked(rows.assign(score=scores, reason=reasons)), Path(out_path))
    counts = pd.Series(reasons).value_counts()
    return PredictResult(
        out=out_path,
        model=f"{ranker.name}/{ranker.version}",
        n_rows=len(rows),
        n_scored=len(ok),
        reasons={str(k): int(v) for k, v in counts.items()},
    )


def _reasons(
    rows: pd.DataFrame,
    oi: np.ndarray,
    inputs: Inputs,
    erased: dict[str, datetime],
    run_time: datetime,
) -> np.ndarray:
    """The policy's reason per row; an offer missing from the catalogue is a reason too."""
    known = oi >= 0
    mcc_of = inputs.offers[MCC].astype(str).to_numpy(dtype=object)
    mcc = np.where(known, mcc_of[np.where(known, oi, 0)], "")
    reasons = policy_reasons(
        rows[USER_ID].to_numpy(dtype=object),
        rows[SHOWN_AT],
        mcc,
        inputs.users,
        inputs.consents,
        erased,
        run_time,
    )
    return np.where(known, reasons, REASON_UNKNOWN_OFFER)


def _ranked(out: pd.DataFrame) -> pd.DataFrame:
    """Rank within each (user, shown_at) by score; unscored rows get no rank."""
    out["rank"] = (
        out.groupby([USER_ID, SHOWN_AT])["score"]
        .rank(ascending=False, method="first")
        .astype("Int64")
    )
    return out


def _write(out: pd.DataFrame, path: Path) -> Path:
    """CSV when the name says so, Parquet otherwise."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".csv":
        out.to_csv(path, index=False)
    else:
        out.to_parquet(path, index=False)
    return path
