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
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from features import definitions as fd
from features.contract import (
    CONSENTS,
    ENDS_AT,
    EXPOSURES,
    MCC,
    MERCHANT_ID,
    OFFER_ID,
    OFFERS,
    ORACLE,
    P_REDEEM,
    POSITION,
    REDEEMED_AT,
    SHOWN_AT,
    SLATE_ID,
    TRANSACTIONS,
    USER_ID,
    USERS,
)
from features.erasures import erased_since_always, is_erased, read_erasures
from features.instants import epoch_ns
from features.io import MissingTableError, file_digest, table_path
from features.job import Sources, connect, open_sources, point_in_time
from features.policy_frames import consents_by_user, user_facts
from features.validate import load_tables
from features.vector import FeatureSource, OfferArrays, assemble
from policy import OFFER_RANKING, SENSITIVE_MCCS, Reason, decide
from training.config import TrainConfig
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

KEPT = Reason.OK.value
REASON_WITHDRAWN = "WITHDRAWN_OR_ERASED_AT_RUN"  # consent withdrawn or user erased as of the run
REASON_SENSITIVE = "SENSITIVE_MCC_OFFER"  # offer from a sensitive-tier merchant category
REASON_OUTSIDE = "OUTSIDE_WINDOWS"  # shown before the train window or after the test window

# ------------------------------------------------------------------------------- inputs


@dataclass
class Inputs:
    users: pd.DataFrame
    consents: pd.DataFrame
    offers: pd.DataFrame
    exposures: pd.DataFrame | None
    oracle: pd.DataFrame | None
    digests: dict[str, str]


def load_inputs(data_dir: str | Path, with_exposures: bool = True) -> Inputs:
    """Typed, validated contract tables (features.validate); transactions stay on disk."""
    data_dir = Path(data_dir)
    wanted = (USERS, CONSENTS, OFFERS) + ((EXPOSURES,) if with_exposures else ())
    tables = load_tables(data_dir, tables=wanted)
    oracle = None
    if with_exposures:
        try:
            oracle_path = table_path(data_dir, ORACLE)
        except MissingTableError:
            oracle_path = None
        if oracle_path is not None:
            oracle = pd.read_parquet(oracle_path, columns=[USER_ID, OFFER_ID, SHOWN_AT, P_REDEEM])
    digests = {t: file_digest(table_path(data_dir, t)) for t in (TRANSACTIONS, *wanted)}
    return Inputs(
        users=tables[USERS],
        consents=tables[CONSENTS],
        offers=tables[OFFERS],
        exposures=tables.get(EXPOSURES),
        oracle=oracle,
        digests=digests,
    )


def read_erasures_if_any(erasures_dir: str | Path | None) -> dict[str, datetime]:
    return read_erasures(erasures_dir) if erasures_dir else {}


# ------------------------------------------------------------------------------- policy


def policy_reasons(
    user_ids: np.ndarray,
    shown_at: pd.Series,
    offer_mcc: np.ndarray,
    users: pd.DataFrame,
    consents: pd.DataFrame,
    erased: Mapping[str, datetime],
    run_time: datetime,
) -> np.ndarray:
    """Reason per row: KEPT, or why the row may not be used (first failing rule wins).

    Order: withdrawn or erased as of the run (final), then the policy decision at shown_at
    (its reason code), then a sensitive-MCC offer.
    """
    by_user = consents_by_user(consents)
    facts = user_facts(users, erased_since_always(erased))  # recorded: erased at every instant
    user_ids = np.asarray(user_ids, dtype=object)
    stamps = pd.Series(shown_at).reset_index(drop=True)

    withdrawn: dict[str, bool] = {}
    for user in pd.unique(user_ids):
        at_run = decide(OFFER_RANKING, run_time, by_user.get(user, ()), facts.get(user))
        withdrawn[user] = is_erased(erased, user) or (at_run.reason is Reason.CONSENT_REVOKED)

    pair_codes, pair_keys = pd.factorize(
        pd.MultiIndex.from_arrays([user_ids, stamps.to_numpy()]), sort=False
    )
    pair_reason = np.empty(len(pair_keys), dtype=object)
    for i, (user, ts) in enumerate(pair_keys):
        if withdrawn[user]:
            pair_reason[i] = REASON_WITHDRAWN
            continue
        when = pd.Timestamp(ts).to_pydatetime()
        decision = decide(OFFER_RANKING, when, by_user.get(user, ()), facts.get(user))
        pair_reason[i] = decision.reason.value
    reasons = pair_reason[pair_codes] if len(pair_codes) else np.array([], dtype=object)
    sensitive = np.isin(np.asarray(offer_mcc, dtype=object).astype(str), sorted(SENSITIVE_MCCS))
    return np.where((reasons == KEPT) & sensitive, REASON_SENSITIVE, reasons)


# ------------------------------------------------------------------------------- features


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


def offer_index(offers: pd.DataFrame, offer_ids: pd.Series) -> np.ndarray:
    idx = pd.Index(offers[OFFER_ID].astype(str)).get_indexer(offer_ids.astype(str))
    if (idx < 0).any():
        missing = sorted(set(offer_ids[idx < 0].astype(str)))[:5]
        raise ValueError(f"exposures name offers missing from the catalogue: {missing}")
    return idx


# ------------------------------------------------------------------------------- build


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
