"""Exposures -> slates with labels and point-in-time features: the training set, made lawful.

Why each step:
- every exposure passes the policy decision at its shown_at (`policy.decide`, the same code as
  serving), so the model learns only from moments the customer allowed ranking;
- users withdrawn or erased as of the run leave entirely, whatever their past consents said
  (erasure is final: their data leaves training sets too), and so do sensitive-MCC offers, which
  policy never lets be served; every row that leaves is counted by reason;
- windows are cut by shown_at (train < validation < test), and a training label that falls
  after the train window's end is censored: at that time nobody could have known it;
- features come only through `features.job.point_in_time` + `features.vector.assemble`, the
  function serving calls too, so training and serving cannot drift apart.

Where the I/O is: `build_dataset` reads everything (validated tables, erasures, the feature
sources) in one place; `slates_from` turns what was read into splits: `choose_rows`,
`row_table` and `make_split` are pure, and the point-in-time features are the only queries
(training/point_in_time.py, on the opened sources).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from features.backend import connect
from features.contract import (
    ENDS_AT,
    MCC,
    MERCHANT_ID,
    OFFER_ID,
    P_REDEEM,
    POSITION,
    REDEEMED_AT,
    SHOWN_AT,
    SLATE_ID,
    USER_ID,
)
from features.instants import epoch_ns
from features.sources import Sources, open_sources
from features.vector import OfferArrays
from training.config import TrainConfig
from training.inputs import KEPT, Inputs, load_inputs, policy_reasons, read_erasures_if_any
from training.point_in_time import feature_matrix, history_days, pairs_id
from training.splits import (
    NEVER,
    SPLITS,
    TRAIN,
    VALID,
    Split,
    TrainingData,
    Windows,
    resolve_windows,
)
from training.steps import Step, Timer, noop

REASON_OUTSIDE = "OUTSIDE_WINDOWS"  # shown before the train window or after the test window


def offer_index(offers: pd.DataFrame, offer_ids: pd.Series) -> np.ndarray:
    idx = pd.Index(offers[OFFER_ID].astype(str)).get_indexer(offer_ids.astype(str))
    if (idx < 0).any():
        missing = sorted(set(offer_ids[idx < 0].astype(str)))[:5]
        raise ValueError(f"exposures name offers missing from the catalogue: {missing}")
    return idx


def _group_keys(rows: pd.DataFrame) -> pd.Series:
    """slate_id where given, else (user_id, shown_at)."""
    fallback = rows[USER_ID].astype(str) + "|" + pd.Series(epoch_ns(rows[SHOWN_AT])).astype(str)
    if SLATE_ID not in rows:
        return fallback
    slate = rows[SLATE_ID].astype(object)
    keys = np.where(pd.isna(slate), fallback, "s|" + slate.astype(str))
    return pd.Series(keys, index=rows.index)


def _run_lengths(codes: np.ndarray) -> np.ndarray:
    """Sizes of the runs of equal consecutive codes (the slates, once rows are sorted)."""
    if len(codes) == 0:
        return np.array([], dtype=np.int64)
    boundaries = np.flatnonzero(codes[1:] != codes[:-1]) + 1
    return np.diff(np.concatenate([[0], boundaries, [len(codes)]])).astype(np.int64)


def labels(exposures: pd.DataFrame, ends_at: pd.Series) -> np.ndarray:
    """Redeemed between shown_at and the offer's end (inclusive): a positive."""
    redeemed = exposures[REDEEMED_AT]
    ok = redeemed.notna() & (redeemed >= exposures[SHOWN_AT]) & (redeemed <= ends_at)
    return ok.to_numpy(dtype=bool)


def build_dataset(
    data_dir: str | Path,
    config: TrainConfig,
    *,
    erasures_dir: str | Path | None,
    run_time: datetime | None = None,
    windows: Windows | None = None,
    splits: Sequence[str] = SPLITS,
    on_step: Step | None = None,
) -> TrainingData:
    """Lawful, labelled, point-in-time slates for the requested splits (default: all three)."""
    step = on_step or noop
    run_time = run_time or datetime.now(UTC)
    timer = Timer()
    step("validating and loading tables")
    inputs = load_inputs(data_dir)
    erased = read_erasures_if_any(erasures_dir)
    con = connect("duckdb", threads=config.feature_threads)
    sources = open_sources(data_dir, erasures_dir, run_time, con=con)
    timer.mark("load")
    return slates_from(
        inputs,
        erased,
        sources,
        config,
        run_time,
        windows=windows,
        splits=splits,
        step=step,
        timer=timer,
    )


def slates_from(
    inputs: Inputs,
    erased: Mapping[str, datetime],
    sources: Sources,
    config: TrainConfig,
    run_time: datetime,
    *,
    windows: Windows | None = None,
    splits: Sequence[str] = SPLITS,
    step: Step = noop,
    timer: Timer | None = None,
) -> TrainingData:
    """Loaded tables -> policy -> windows -> point-in-time features (through `sources`) -> slates."""
    timer = timer or Timer()
    assert inputs.exposures is not None
    ex = inputs.exposures.reset_index(drop=True)
    oi = offer_index(inputs.offers, ex[OFFER_ID])
    step("policy decision at each shown_at")
    reasons = policy_reasons(
        ex[USER_ID].astype(str).to_numpy(dtype=object),
        ex[SHOWN_AT],
        inputs.offers[MCC].astype(str).to_numpy(dtype=object)[oi],
        inputs.users,
        inputs.consents,
        erased,
        run_time,
    )
    timer.mark("policy")
    chosen = choose_rows(ex, reasons, config, windows, splits)
    rows = chosen.rows
    sel = ex.iloc[rows].reset_index(drop=True)
    step(f"point-in-time features for {len(rows):,} exposures")
    users = sel[USER_ID].astype(str).to_numpy(dtype=object)
    X = feature_matrix(
        sources,
        users.tolist(),
        sel[SHOWN_AT],
        OfferArrays.from_frame(inputs.offers).take(oi[rows]),
        config.half_life_days,
    )
    timer.mark("features")
    history = history_days(sources, users, sel[SHOWN_AT])
    oracle = _oracle_scores(inputs.oracle, sel)
    timer.mark("segments")
    step("assembling slates")
    table = row_table(sel, inputs.offers.iloc[oi[rows]], chosen, history, oracle, config)
    out = {name: make_split(name, table, X, chosen.windows, config) for name in splits}
    timer.mark("slates")
    return TrainingData(
        splits=out,
        windows=chosen.windows,
        exclusions=chosen.exclusions,
        n_exposures=len(ex),
        pairs_id=pairs_id(users, table[SHOWN_NS].to_numpy(), inputs.digests),
        source_digests=inputs.digests,
        run_time=run_time,
        has_oracle=oracle is not None,
        timings=timer.seconds,
    )


@dataclass(frozen=True)
class Chosen:
    """Which exposures stay, in which split, and why the others left."""

    windows: Windows
    exclusions: dict[str, int]  # exposures by reason; KEPT counts those that stayed
    rows: np.ndarray  # positions (in the exposures) of the rows of the requested splits
    split: np.ndarray  # split name per row in `rows`
    slate: np.ndarray  # slate code per row in `rows` (sorted slate keys)
    slate_shown: pd.Series  # each row's slate instant (its earliest shown_at)


def choose_rows(
    ex: pd.DataFrame,
    reasons: np.ndarray,
    config: TrainConfig,
    windows: Windows | None,
    splits: Sequence[str],
) -> Chosen:
    """Windows from the rows that stay (excluded users cannot move them), then a split per row."""
    kept = reasons == KEPT
    group_key = _group_keys(ex)
    group_code = pd.factorize(group_key, sort=True)[0]
    slate_shown = ex[SHOWN_AT].groupby(group_key).transform("min")
    windows = windows or resolve_windows(slate_shown[kept], config)
    inside = ((slate_shown >= windows.train_start) & (slate_shown < windows.test_end)).to_numpy()
    reasons = np.where(kept & ~inside, REASON_OUTSIDE, reasons)
    exclusions = dict(sorted(Counter(reasons.tolist()).items()))
    kept = reasons == KEPT
    split = np.full(len(ex), "", dtype=object)
    for name in SPLITS:
        lo, hi = windows.bounds(name)
        split[((slate_shown >= lo) & (slate_shown < hi)).to_numpy() & kept] = name
    rows = np.flatnonzero(np.isin(split, list(splits)))
    return Chosen(windows, exclusions, rows, split[rows], group_code[rows], slate_shown.iloc[rows])


# Columns of the row table: one row per chosen exposure, every per-row array in one frame.
SPLIT = "split"  # the split's name
LABEL = "label"  # 1.0: redeemed between shown_at and the offer's end
REDEEMED_NS = "redeemed_ns"  # int64 ns of a valid redemption, NEVER for none
SLATE = "slate"  # slate code: rows of one slate share it
SLATE_NS = "slate_ns"  # the slate's instant (its earliest shown_at), int64 ns
SHUFFLE = "shuffle"  # seeded pseudo-random order within a slate
SHOWN_NS = "shown_ns"  # shown_at, int64 ns
NEW_USER = "new_user"  # under `new_user_days` of usable history at shown_at
ORACLE_P = "oracle"  # p_redeem (synthetic data only)


def row_table(
    sel: pd.DataFrame,
    offers: pd.DataFrame,
    chosen: Chosen,
    history: np.ndarray,
    oracle: np.ndarray | None,
    config: TrainConfig,
) -> pd.DataFrame:
    """The chosen exposures with everything a split needs; `offers` holds each row's offer."""
    label = labels(sel, pd.Series(offers[ENDS_AT].to_numpy(), index=sel.index))
    label = label.astype(np.float64)
    shown_ns = epoch_ns(sel[SHOWN_AT])
    position = (
        pd.to_numeric(sel[POSITION], errors="coerce").astype("float64").to_numpy()
        if POSITION in sel
        else np.full(len(sel), np.nan)
    )
    # Within a slate, rows go in a seeded pseudo-random order keyed by the row itself: logged
    # order carries position bias, and LightGBM's NDCG breaks score ties by row order.
    shuffle = pd.util.hash_pandas_object(
        sel[[USER_ID, OFFER_ID, SHOWN_AT]].astype({USER_ID: str, OFFER_ID: str}),
        index=False,
        hash_key=f"{config.seed:016d}"[-16:],
    ).to_numpy()
    columns = {
        USER_ID: sel[USER_ID].astype(str).to_numpy(dtype=object),
        OFFER_ID: sel[OFFER_ID].astype(str).to_numpy(dtype=object),
        MERCHANT_ID: offers[MERCHANT_ID].astype(str).to_numpy(dtype=object),
        SPLIT: chosen.split,
        LABEL: label,
        REDEEMED_AT: sel[REDEEMED_AT],  # tz-aware: compared with the censoring instants
        REDEEMED_NS: np.where(
            label > 0, epoch_ns(sel[REDEEMED_AT].where(label > 0, sel[SHOWN_AT])), NEVER
        ),
        SLATE: chosen.slate,
        SLATE_NS: epoch_ns(chosen.slate_shown),
        SHUFFLE: shuffle,
        SHOWN_NS: shown_ns,
        POSITION: position,
        NEW_USER: ~(history >= config.new_user_days),  # NaN (no usable history) is new too
    }
    if oracle is not None:
        columns[ORACLE_P] = oracle
    return pd.DataFrame(columns)


def make_split(
    name: str, table: pd.DataFrame, X: np.ndarray, windows: Windows, config: TrainConfig
) -> Split:
    """One split's rows, each slate contiguous, labels censored at the window's end."""
    idx = np.flatnonzero(table[SPLIT].to_numpy() == name)
    sort_keys = (table[SHUFFLE].to_numpy(), table[SLATE].to_numpy(), table[SLATE_NS].to_numpy())
    idx = idx[np.lexsort(tuple(k[idx] for k in sort_keys))]
    rows = table.iloc[idx]
    y = rows[LABEL].to_numpy(dtype=np.float64, copy=True)
    censor_at = {TRAIN: windows.train_end}
    if config.censor_validation:
        censor_at[VALID] = windows.valid_end
    n_censored = 0
    if name in censor_at:
        late = (rows[REDEEMED_AT] >= censor_at[name]).to_numpy() & (y > 0)
        n_censored = int(late.sum())
        y[late] = 0.0
    return Split(
        name=name,
        X=X[idx],
        y=y,
        group=_run_lengths(rows[SLATE].to_numpy()),
        user_id=rows[USER_ID].to_numpy(),
        offer_id=rows[OFFER_ID].to_numpy(),
        merchant_id=rows[MERCHANT_ID].to_numpy(),
        shown_at=rows[SHOWN_NS].to_numpy(),
        position=rows[POSITION].to_numpy(),
        new_user=rows[NEW_USER].to_numpy(),
        oracle=rows[ORACLE_P].to_numpy() if ORACLE_P in rows else None,
        n_censored=n_censored,
        redeemed_ns=rows[REDEEMED_NS].to_numpy(),
    )


def _oracle_scores(oracle: pd.DataFrame | None, rows: pd.DataFrame) -> np.ndarray | None:
    """p_redeem per row from oracle.parquet; None when absent or partial (no ceiling then)."""
    if oracle is None:
        return None
    keys = [USER_ID, OFFER_ID, SHOWN_AT]
    o = oracle.astype({USER_ID: str, OFFER_ID: str}).drop_duplicates(keys)
    o[SHOWN_AT] = pd.to_datetime(o[SHOWN_AT], utc=True).astype("datetime64[us, UTC]")
    left = rows[keys].astype({USER_ID: str, OFFER_ID: str, SHOWN_AT: "datetime64[us, UTC]"})
    scores = left.merge(o, on=keys, how="left")[P_REDEEM].to_numpy(dtype=np.float64)
    return None if np.isnan(scores).any() else scores
