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
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from features import definitions as fd
from features.backend import connect
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
from features.io import MissingTableError, file_digest, table_path
from features.job import point_in_time
from features.policy_frames import consents_by_user, user_facts
from features.sources import Sources, open_sources
from features.validate import load_tables
from features.vector import FEATURE_COLUMNS, FeatureSource, OfferArrays, assemble
from policy import OFFER_RANKING, SENSITIVE_MCCS, Reason, decide
from training.config import TrainConfig

TRAIN, VALID, TEST = "train", "validation", "test"
SPLITS = (TRAIN, VALID, TEST)

KEPT = Reason.OK.value
REASON_WITHDRAWN = "WITHDRAWN_OR_ERASED_AT_RUN"  # consent withdrawn or user erased as of the run
REASON_SENSITIVE = "SENSITIVE_MCC_OFFER"  # offer from a sensitive-tier merchant category
REASON_OUTSIDE = "OUTSIDE_WINDOWS"  # shown before the train window or after the test window
NEVER = np.iinfo(np.int64).max  # redeemed_ns of an exposure that was never (validly) redeemed

Step = Callable[[str], None]


def _noop(_: str) -> None:
    return None


# ------------------------------------------------------------------------------- windows


@dataclass(frozen=True)
class Windows:
    """[train_start, train_end) [train_end, valid_end) [valid_end, test_end), by shown_at."""

    train_start: pd.Timestamp
    train_end: pd.Timestamp
    valid_end: pd.Timestamp
    test_end: pd.Timestamp

    def __post_init__(self) -> None:
        if not (self.train_start < self.train_end <= self.valid_end < self.test_end):
            raise ValueError(f"windows out of order: {self.as_dict()}")

    def bounds(self, split: str) -> tuple[pd.Timestamp, pd.Timestamp]:
        return {
            TRAIN: (self.train_start, self.train_end),
            VALID: (self.train_end, self.valid_end),
            TEST: (self.valid_end, self.test_end),
        }[split]

    def as_dict(self) -> dict[str, str]:
        return {
            "train_start": self.train_start.isoformat(),
            "train_end": self.train_end.isoformat(),
            "valid_end": self.valid_end.isoformat(),
            "test_end": self.test_end.isoformat(),
        }

    @classmethod
    def from_dict(cls, values: Mapping[str, str]) -> Windows:
        names = ("train_start", "train_end", "valid_end", "test_end")
        return cls(**{k: _utc(values[k]) for k in names})


def _utc(value: str | datetime | pd.Timestamp) -> pd.Timestamp:
    t = pd.Timestamp(value)
    return t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")


def resolve_windows(shown_at: pd.Series, config: TrainConfig) -> Windows:
    """Explicit boundaries from the config win; the rest count back from the last exposure."""
    if shown_at.empty:
        raise ValueError("no exposure is left to train on after the policy filter")
    day = pd.Timedelta(days=1)
    test_end = _utc(config.test_end) if config.test_end else shown_at.max().floor("D") + day
    valid_end = (
        _utc(config.valid_end)
        if config.valid_end
        else test_end - pd.Timedelta(days=config.test_days)
    )
    train_end = (
        _utc(config.train_end)
        if config.train_end
        else valid_end - pd.Timedelta(days=config.valid_days)
    )
    train_start = (
        train_end - pd.Timedelta(days=config.train_days)
        if config.train_days
        else min(shown_at.min().floor("D"), train_end - day)
    )
    return Windows(train_start, train_end, valid_end, test_end)


# ------------------------------------------------------------------------------- splits


@dataclass
class Split:
    """One window's slates: rows sorted so that each slate is a contiguous run (`group`)."""

    name: str
    X: np.ndarray  # float64, FEATURE_COLUMNS order
    y: np.ndarray  # 0/1 labels (censored where the window says so)
    group: np.ndarray  # slate sizes in row order
    user_id: np.ndarray
    offer_id: np.ndarray
    merchant_id: np.ndarray
    shown_at: np.ndarray  # int64 ns since the epoch, UTC
    position: np.ndarray  # float64, NaN when the exposure names none
    new_user: np.ndarray  # bool per row: under `new_user_days` of history at shown_at
    oracle: np.ndarray | None = None  # p_redeem per row (synthetic data only)
    n_censored: int = 0
    redeemed_ns: np.ndarray | None = None  # int64 ns of a valid redemption, NEVER for none

    def known_at(self, at_ns: int | float) -> Split:
        """The same slates with the labels one knew at `at_ns`: redeemed strictly before it."""
        if self.redeemed_ns is None:
            raise ValueError(f"split {self.name!r} carries no redemption times to relabel")
        y = (self.redeemed_ns < at_ns).astype(np.float64)
        return replace(self, y=y, n_censored=int(np.sum(self.redeemed_ns != NEVER) - y.sum()))

    def slate_shown_ns(self) -> np.ndarray:
        """Each slate's instant: its earliest shown_at (what windows and folds cut by)."""
        if not self.n_rows:
            return np.zeros(0, dtype=np.int64)
        return np.minimum.reduceat(self.shown_at, self.slate_starts())

    @classmethod
    def concat(cls, name: str, parts: Sequence[Split]) -> Split:
        """Slates of several splits, in the given order, as one split."""
        joined = {f: np.concatenate([getattr(p, f) for p in parts]) for f in _ROW_FIELDS}
        optional = {
            f: None
            if any(getattr(p, f) is None for p in parts)
            else np.concatenate([getattr(p, f) for p in parts])
            for f in ("oracle", "redeemed_ns")
        }
        return cls(
            name=name,
            **joined,
            **optional,
            group=np.concatenate([p.group for p in parts]).astype(np.int64),
            n_censored=sum(p.n_censored for p in parts),
        )

    @property
    def n_rows(self) -> int:
        return len(self.y)

    @property
    def n_slates(self) -> int:
        return len(self.group)

    def slate_starts(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.group)[:-1]]).astype(np.int64)

    def per_slate(self, row_values: np.ndarray) -> np.ndarray:
        """A per-row value read at each slate's first row (constant within a slate)."""
        if not self.n_rows:
            return np.asarray(row_values)[:0]
        return np.asarray(row_values)[self.slate_starts()]

    def take_slates(self, keep: np.ndarray) -> Split:
        """The slates where `keep` (one bool per slate) holds, rows in the same order."""
        keep = np.asarray(keep, dtype=bool)
        rows = np.repeat(keep, self.group)
        return Split(
            name=self.name,
            **{f: getattr(self, f)[rows] for f in _ROW_FIELDS},
            group=self.group[keep],
            oracle=None if self.oracle is None else self.oracle[rows],
            n_censored=self.n_censored,
            redeemed_ns=None if self.redeemed_ns is None else self.redeemed_ns[rows],
        )

    def informative(self) -> Split:
        """Slates with both a positive and a negative: the only ones LambdaRank learns from."""
        if not self.n_rows:
            return self
        starts = self.slate_starts()
        positives = np.add.reduceat((self.y > 0).astype(np.int64), starts)
        return self.take_slates((positives > 0) & (positives < self.group))

    def column(self, name: str) -> np.ndarray:
        """A feature column by name, so baselines never hard-code positions."""
        return self.X[:, FEATURE_COLUMNS.index(name)]

    def digest(self) -> str:
        """Content hash of what the model sees (features, labels, slates); never of ids."""
        h = hashlib.sha256()
        for part in (self.X, self.y, self.group):
            h.update(np.ascontiguousarray(part).tobytes())
        return h.hexdigest()

    def summary(self) -> dict[str, float]:
        with_pos = np.add.reduceat(self.y, self.slate_starts()) > 0 if self.n_rows else []
        return {
            "n_rows": float(self.n_rows),
            "n_slates": float(self.n_slates),
            "n_positive": float(np.sum(self.y > 0)),
            "n_slates_with_positive": float(np.sum(with_pos)),
            "n_censored": float(self.n_censored),
            "max_slate_size": float(self.group.max()) if self.n_slates else 0.0,
        }


_ROW_FIELDS = ("X", "y", "user_id", "offer_id", "merchant_id", "shown_at", "position", "new_user")


@dataclass
class TrainingData:
    splits: dict[str, Split]
    windows: Windows
    exclusions: dict[str, int]  # exposures by reason; KEPT counts those that stayed
    n_exposures: int
    pairs_id: str  # identifies the point-in-time feature rows: "pit-<hash>"
    source_digests: dict[str, str]
    run_time: datetime
    has_oracle: bool = False
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def max_slate_size(self) -> int:
        return max((int(s.group.max()) for s in self.splits.values() if s.n_slates), default=0)


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


def _ns(stamps: pd.Series) -> np.ndarray:
    """Instants as int64 nanoseconds since the epoch, UTC."""
    s = pd.Series(stamps).dt.tz_convert("UTC").dt.tz_localize(None)
    return s.astype("datetime64[ns]").to_numpy().view("int64")


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
    return assemble(FeatureSource(tables), list(user_ids), _ns(stamps), offers)


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
    fallback = rows[USER_ID].astype(str) + "|" + pd.Series(_ns(rows[SHOWN_AT])).astype(str)
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
    step = on_step or _noop
    run_time = run_time or datetime.now(UTC)
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def tick(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[name] = round(now - clock, 3)
        clock = now

    step("validating and loading tables")
    inputs = load_inputs(data_dir)
    assert inputs.exposures is not None
    erased = read_erasures_if_any(erasures_dir)
    ex = inputs.exposures.reset_index(drop=True)
    offers = inputs.offers
    oi = offer_index(offers, ex[OFFER_ID])
    tick("load")

    step("policy decision at each shown_at")
    reasons = policy_reasons(
        ex[USER_ID].astype(str).to_numpy(dtype=object),
        ex[SHOWN_AT],
        offers[MCC].astype(str).to_numpy(dtype=object)[oi],
        inputs.users,
        inputs.consents,
        erased,
        run_time,
    )
    tick("policy")

    # Windows come from the rows that stay, so excluded users cannot move them.
    kept = reasons == KEPT
    group_key = _group_keys(ex)
    group_code = pd.factorize(group_key, sort=True)[0]
    slate_shown = ex[SHOWN_AT].groupby(group_key).transform("min")
    windows = windows or resolve_windows(slate_shown[kept], config)
    inside = ((slate_shown >= windows.train_start) & (slate_shown < windows.test_end)).to_numpy()
    reasons = np.where(kept & ~inside, REASON_OUTSIDE, reasons)
    exclusions = dict(sorted(Counter(reasons.tolist()).items()))
    kept = reasons == KEPT

    split_of = np.full(len(ex), "", dtype=object)
    for name in SPLITS:
        lo, hi = windows.bounds(name)
        split_of[((slate_shown >= lo) & (slate_shown < hi)).to_numpy() & kept] = name
    rows = np.flatnonzero(np.isin(split_of, list(splits)))
    label = labels(ex, pd.Series(offers[ENDS_AT].to_numpy()[oi], index=ex.index))

    step(f"point-in-time features for {len(rows):,} exposures")
    sources = open_sources(
        data_dir, erasures_dir, run_time, con=connect("duckdb", threads=config.feature_threads)
    )
    sel = ex.iloc[rows].reset_index(drop=True)
    sel_oi = oi[rows]
    sel_users = sel[USER_ID].astype(str).to_numpy(dtype=object)
    X_all = feature_matrix(
        sources,
        sel_users.tolist(),
        sel[SHOWN_AT],
        OfferArrays.from_frame(offers).take(sel_oi),
        config.half_life_days,
    )
    tick("features")

    history = history_days(sources, sel_users, sel[SHOWN_AT])
    new_user = ~(history >= config.new_user_days)  # NaN (no usable history) is new too
    shown_ns = _ns(sel[SHOWN_AT])
    oracle = _oracle_scores(inputs.oracle, sel)
    tick("segments")

    step("assembling slates")
    position = (
        pd.to_numeric(sel[POSITION], errors="coerce").astype("float64").to_numpy()
        if POSITION in sel
        else np.full(len(sel), np.nan)
    )
    sel_split = split_of[rows]
    sel_label = label[rows].astype(np.float64)
    sel_redeemed = sel[REDEEMED_AT]
    sel_redeemed_ns = np.where(
        sel_label > 0, _ns(sel_redeemed.where(sel_label > 0, sel[SHOWN_AT])), NEVER
    )
    sel_group = group_code[rows]
    sel_slate_shown = _ns(slate_shown.iloc[rows])
    # Within a slate, rows go in a seeded pseudo-random order keyed by the row itself: logged
    # order carries position bias, and LightGBM's NDCG breaks score ties by row order.
    sel_shuffle = pd.util.hash_pandas_object(
        sel[[USER_ID, OFFER_ID, SHOWN_AT]].astype({USER_ID: str, OFFER_ID: str}),
        index=False,
        hash_key=f"{config.seed:016d}"[-16:],
    ).to_numpy()
    sel_merchant = offers[MERCHANT_ID].astype(str).to_numpy(dtype=object)[sel_oi]
    censor_at = {TRAIN: windows.train_end}
    if config.censor_validation:
        censor_at[VALID] = windows.valid_end

    out: dict[str, Split] = {}
    for name in splits:
        idx = np.flatnonzero(sel_split == name)
        sort_keys = (sel_shuffle, sel_group, sel_slate_shown)
        idx = idx[np.lexsort(tuple(k[idx] for k in sort_keys))]
        y = sel_label[idx].copy()
        n_censored = 0
        if name in censor_at:
            late = (sel_redeemed.iloc[idx] >= censor_at[name]).to_numpy() & (y > 0)
            n_censored = int(late.sum())
            y[late] = 0.0
        out[name] = Split(
            name=name,
            X=X_all[idx],
            y=y,
            group=_run_lengths(sel_group[idx]),
            user_id=sel_users[idx],
            offer_id=sel[OFFER_ID].astype(str).to_numpy(dtype=object)[idx],
            merchant_id=sel_merchant[idx],
            shown_at=shown_ns[idx],
            position=position[idx],
            new_user=new_user[idx],
            oracle=None if oracle is None else oracle[idx],
            n_censored=n_censored,
            redeemed_ns=sel_redeemed_ns[idx],
        )
    tick("slates")
    return TrainingData(
        splits=out,
        windows=windows,
        exclusions=exclusions,
        n_exposures=len(ex),
        pairs_id=pairs_id(sel_users, shown_ns, inputs.digests),
        source_digests=inputs.digests,
        run_time=run_time,
        has_oracle=oracle is not None,
        timings=timings,
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
