"""The model's feature matrix for (user, cutoff, candidate offer) rows: the one place that knows
the model's columns and their order. Training and serving both call `assemble`, so there is no
training/serving skew.

Lookups are vectorised: every keyed table is flattened to a sorted int64 key
(pair_code * n_items + item_code) searched with numpy, which serves one request of 100
candidates and a training set of millions of rows through the same code.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from features import definitions as fd
from features.contract import ENDS_AT, MCC, MERCHANT_ID, OFFER_ID, REWARD, STARTS_AT, USER_ID
from features.instants import epoch_ns as _ns
from features.tables import FeatureTables

NS_PER_DAY = 86_400 * 10**9

UM_COLUMNS = tuple(f"{fd.USER_MERCHANT_PREFIX}{n}" for n in fd.AFFINITY_FEATURES)
UC_COLUMNS = tuple(f"{fd.USER_MCC_PREFIX}{n}" for n in fd.AFFINITY_FEATURES)
USER_COLUMNS = tuple(fd.USER_FEATURES)
OFFER_REWARD = "o_reward"
OFFER_DAYS_LEFT = "o_days_left"
OFFER_DAYS_SINCE_START = "o_days_since_start"
OFFER_MCC = "o_mcc"  # categorical: the offer merchant's MCC as an integer
OFFER_FEATURES: dict[str, str] = {
    OFFER_REWARD: "the offer's reward (null when the offer names none)",
    OFFER_DAYS_LEFT: "days until the offer ends, as of the cutoff",
    OFFER_DAYS_SINCE_START: "days since the offer started, as of the cutoff",
    OFFER_MCC: "the offer's category (MCC as an integer; categorical)",
}
FEATURE_COLUMNS: tuple[str, ...] = (
    UM_COLUMNS
    + UC_COLUMNS
    + USER_COLUMNS
    + (fd.MERCHANT_POPULARITY, fd.MCC_POPULARITY)
    + tuple(OFFER_FEATURES)
)
CATEGORICAL_COLUMNS: tuple[str, ...] = (OFFER_MCC,)
# "Never bought there" is missing (LightGBM routes it), not zero days ago.
MISSING_MEANS_NEVER = {f"{p}days_since_last" for p in (fd.USER_MERCHANT_PREFIX, fd.USER_MCC_PREFIX)}


def feature_docs() -> dict[str, str]:
    docs = {**fd.affinity_feature_docs(), **fd.USER_FEATURES, **fd.POPULATION_FEATURES}
    return {name: ({**docs, **OFFER_FEATURES})[name] for name in FEATURE_COLUMNS}


@dataclass(frozen=True)
class OfferArrays:
    """The offer catalogue as arrays, built once and sliced per request."""

    offer_id: np.ndarray
    merchant_id: np.ndarray
    mcc: np.ndarray
    reward: np.ndarray
    starts_ns: np.ndarray
    ends_ns: np.ndarray
    mcc_number: np.ndarray  # the MCC as the model's number (OFFER_MCC), converted once

    @classmethod
    def from_frame(cls, offers: pd.DataFrame) -> OfferArrays:
        reward = offers[REWARD] if REWARD in offers else pd.Series(np.nan, index=offers.index)
        return cls(
            offer_id=offers[OFFER_ID].astype(str).to_numpy(dtype=object),
            merchant_id=offers[MERCHANT_ID].astype(str).to_numpy(dtype=object),
            mcc=offers[MCC].astype(str).to_numpy(dtype=object),
            reward=pd.to_numeric(reward, errors="raise").astype("float64").to_numpy(),
            starts_ns=_ns(offers[STARTS_AT]),
            ends_ns=_ns(offers[ENDS_AT]),
            mcc_number=np.array([int(m) for m in offers[MCC].astype(str)], dtype=np.float64),
        )

    def take(self, idx: np.ndarray) -> OfferArrays:
        return OfferArrays(*(getattr(self, f)[idx] for f in self.__dataclass_fields__))

    def __len__(self) -> int:
        return len(self.offer_id)


class _KeyedBlock:
    """One keyed table: sorted combined keys and a dense float64 block of its columns."""

    def __init__(self, first: np.ndarray, item: np.ndarray, n_items: int, values: np.ndarray):
        keys = first.astype(np.int64) * np.int64(n_items + 1) + item.astype(np.int64)
        order = np.argsort(keys, kind="stable")
        self.keys = keys[order]
        self.values = values[order]
        self.n_items = n_items

    @classmethod
    def presorted(cls, keys: np.ndarray, values: np.ndarray, n_items: int) -> _KeyedBlock:
        """A block from keys already sorted (a mapped file, an online store's value): no copy."""
        block = cls.__new__(cls)
        block.keys, block.values, block.n_items = keys, values, n_items
        return block

    def gather(self, first: np.ndarray, item: np.ndarray, fill: np.ndarray) -> np.ndarray:
        out = np.empty((len(first), len(fill)))
        out[:] = fill  # a third of broadcast_to(...).copy()'s time: this runs per request
        known = (first >= 0) & (item >= 0)
        if not known.any() or len(self.keys) == 0:
            return out
        keys = first[known].astype(np.int64) * np.int64(self.n_items + 1) + item[known]
        pos = np.minimum(np.searchsorted(self.keys, keys), len(self.keys) - 1)
        hit = self.keys[pos] == keys
        rows = np.flatnonzero(known)[hit]
        out[rows] = self.values[pos[hit]]
        return out


KeyedBlock = _KeyedBlock  # public name for the modules that build sources from arrays


def _codes(mapping: dict, values: Sequence) -> np.ndarray:
    get = mapping.get
    return np.fromiter((get(v, -1) for v in values), dtype=np.int64, count=len(values))


class FeatureSource:
    """Feature tables indexed for assembly; built once per snapshot or training set."""

    def __init__(self, tables: FeatureTables):
        # Every pair with usable history has a user row: the user table defines the pair codes.
        user_keys = zip(
            tables.user[USER_ID].astype(str).tolist(),
            _ns(tables.user[fd.CUTOFF]).tolist(),
            strict=True,
        )
        self.pair_code_: dict[tuple[str, int], int] = {key: i for i, key in enumerate(user_keys)}
        merchants = pd.concat([tables.user_merchant[MERCHANT_ID], tables.merchant_pop[MERCHANT_ID]])
        mccs = pd.concat([tables.user_mcc[MCC], tables.mcc_pop[MCC]])
        self.merchant_code_ = {m: i for i, m in enumerate(pd.unique(merchants.astype(str)))}
        self.mcc_code_ = {m: i for i, m in enumerate(pd.unique(mccs.astype(str)))}
        as_ofs = pd.unique(
            np.concatenate([_ns(tables.merchant_pop[fd.AS_OF]), _ns(tables.mcc_pop[fd.AS_OF])])
        )
        self.as_of_code_ = {int(t): i for i, t in enumerate(as_ofs)}
        self.user_merchant_ = self._pair_block(
            tables.user_merchant, MERCHANT_ID, self.merchant_code_, UM_COLUMNS
        )
        self.user_mcc_ = self._pair_block(tables.user_mcc, MCC, self.mcc_code_, UC_COLUMNS)
        self.user_ = self._pair_block(tables.user, None, {}, USER_COLUMNS)
        self.merchant_pop_ = self._as_of_block(
            tables.merchant_pop, MERCHANT_ID, self.merchant_code_, fd.MERCHANT_POPULARITY
        )
        self.mcc_pop_ = self._as_of_block(tables.mcc_pop, MCC, self.mcc_code_, fd.MCC_POPULARITY)

    @classmethod
    def from_parts(
        cls,
        pair_code: dict[tuple[str, int], int],
        merchant_code: dict[str, int],
        mcc_code: dict[str, int],
        as_of_code: dict[int, int],
        blocks: dict[str, _KeyedBlock],
    ) -> FeatureSource:
        """A source from arrays built elsewhere (features.mapped, the online store), keyed by
        the attribute names in BLOCKS; assembly reads it exactly as one built from tables."""
        source = cls.__new__(cls)
        source.pair_code_ = pair_code
        source.merchant_code_, source.mcc_code_ = merchant_code, mcc_code
        source.as_of_code_ = as_of_code
        for name in BLOCKS:
            setattr(source, name, blocks[name])
        return source

    def _pair_block(
        self, frame: pd.DataFrame, item_col: str | None, codes: dict, columns: tuple[str, ...]
    ) -> _KeyedBlock:
        first = self._frame_pair_codes(frame)
        item = (
            np.zeros(len(frame), np.int64)
            if item_col is None
            else _codes(codes, frame[item_col].astype(str).tolist())
        )
        values = frame[list(columns)].to_numpy(dtype=np.float64)
        return _KeyedBlock(first, item, max(len(codes), 1), values)

    def _frame_pair_codes(self, frame: pd.DataFrame) -> np.ndarray:
        """Vectorised (a hash join), since training tables have millions of rows."""
        keys = pd.DataFrame(
            {"u": list(k[0] for k in self.pair_code_), "c": list(k[1] for k in self.pair_code_)}
        )
        keys["code"] = np.arange(len(keys), dtype=np.int64)
        rows = pd.DataFrame(
            {"u": frame[USER_ID].astype(str).to_numpy(), "c": _ns(frame[fd.CUTOFF])}
        )
        merged = rows.merge(keys, on=["u", "c"], how="left", sort=False)
        return merged["code"].fillna(-1).to_numpy(dtype=np.int64)

    def _as_of_block(
        self, frame: pd.DataFrame, item_col: str, codes: dict, column: str
    ) -> _KeyedBlock:
        first = _codes(self.as_of_code_, _ns(frame[fd.AS_OF]).tolist())
        item = _codes(codes, frame[item_col].astype(str).tolist())
        return _KeyedBlock(
            first, item, max(len(codes), 1), frame[[column]].to_numpy(dtype=np.float64)
        )

    def pair_codes(self, user_ids: Sequence[str], cutoffs_ns: np.ndarray) -> np.ndarray:
        """-1 where the pair has no features (not allowed, or no usable history)."""
        return _codes(self.pair_code_, list(zip(user_ids, cutoffs_ns.tolist(), strict=True)))

    def has_history(self, user_id: str, cutoff_ns: int) -> bool:
        return (user_id, int(cutoff_ns)) in self.pair_code_

    def sample_users(self, n: int) -> list[str]:
        """Up to n user ids with features (load-time checks probe real rows)."""
        return [u for u, _ in itertools.islice(self.pair_code_, n)]


# The keyed blocks of a FeatureSource (attribute names) and the columns of each, in order.
PAIR_BLOCKS: dict[str, tuple[str, ...]] = {
    "user_merchant_": UM_COLUMNS,
    "user_mcc_": UC_COLUMNS,
    "user_": USER_COLUMNS,
}
POPULATION_BLOCKS: dict[str, tuple[str, ...]] = {
    "merchant_pop_": (fd.MERCHANT_POPULARITY,),
    "mcc_pop_": (fd.MCC_POPULARITY,),
}
BLOCKS: dict[str, tuple[str, ...]] = {**PAIR_BLOCKS, **POPULATION_BLOCKS}


def _fill(columns: tuple[str, ...]) -> np.ndarray:
    return np.array([np.nan if c in MISSING_MEANS_NEVER else 0.0 for c in columns])


_UM_FILL, _UC_FILL, _USER_FILL, _POP_FILL = (
    _fill(UM_COLUMNS),
    _fill(UC_COLUMNS),
    _fill(USER_COLUMNS),
    np.zeros(1),
)


@dataclass(frozen=True)
class OfferCodes:
    """Each offer's merchant and MCC as one source codes them (-1: not in its tables), kept with
    the code tables read, so they are used only with a source holding those very tables.

    Why: serving codes its catalogue once per loaded state instead of on every request."""

    merchant: np.ndarray
    mcc: np.ndarray
    tables: tuple[dict[str, int], dict[str, int]]
    coded: OfferArrays | None = None  # the very catalogue coded (None once rows are taken)

    @classmethod
    def of(cls, source: FeatureSource, offers: OfferArrays) -> OfferCodes:
        return cls(
            _codes(source.merchant_code_, offers.merchant_id.tolist()),
            _codes(source.mcc_code_, offers.mcc.tolist()),
            (source.merchant_code_, source.mcc_code_),
            offers,
        )

    def take(self, idx: np.ndarray) -> OfferCodes:
        return OfferCodes(self.merchant[idx], self.mcc[idx], self.tables)

    def rows_of(self, offers: OfferArrays, idx: np.ndarray) -> OfferCodes | None:
        """The codes of `offers`' rows idx, if `offers` is the catalogue coded (else None)."""
        return self.take(idx) if self.coded is offers else None

    def fit(self, source: FeatureSource, n: int) -> bool:
        same = self.tables[0] is source.merchant_code_ and self.tables[1] is source.mcc_code_
        return same and len(self.merchant) == n


def assemble(
    source: FeatureSource,
    user_ids: Sequence[str],
    cutoffs: Sequence | np.ndarray,
    offers: OfferArrays,
    at: Sequence | np.ndarray | int | None = None,
    *,
    pairs: np.ndarray | None = None,
    codes: OfferCodes | None = None,
) -> np.ndarray:
    """Rows (user_ids[i], cutoffs[i], offers[i]) -> float64 matrix in FEATURE_COLUMNS order.

    `cutoffs` are instants (Timestamps, or int64 ns since the epoch in UTC): the history the
    user and population features may read ends there. `at` is the instant the offer is shown,
    which the offer-window features (days left, days since start) are measured from; it
    defaults to the cutoff (training: both are shown_at). Serving reads a snapshot as of its
    cutoff but shows the offer at the request's `now`, so it passes `at=now`. It may also pass
    what it already looked up: `pairs`, each row's `source.pair_codes`, and `codes`, the offers'
    OfferCodes (ignored unless read from this source's tables).
    """
    n = len(user_ids)
    if not (len(cutoffs) == len(offers) == n):
        raise ValueError(
            f"assemble: {n} users, {len(cutoffs)} cutoffs, {len(offers)} offers differ in length"
        )
    cut_ns = np.asarray(cutoffs, dtype=np.int64) if _is_int_array(cutoffs) else _ns(cutoffs)
    at_ns = cut_ns if at is None else _instants(at, n)
    if pairs is None:
        pairs = source.pair_codes(list(user_ids), cut_ns)
    elif len(pairs) != n:
        raise ValueError(f"assemble: {len(pairs)} pair codes for {n} rows")
    if codes is None or not codes.fit(source, n):
        codes = OfferCodes.of(source, offers)
    merchants, mccs = codes.merchant, codes.mcc
    as_of = _codes(source.as_of_code_, fd.population_as_of_ns(cut_ns).tolist())
    blocks = [
        source.user_merchant_.gather(pairs, merchants, _UM_FILL),
        source.user_mcc_.gather(pairs, mccs, _UC_FILL),
        source.user_.gather(pairs, np.zeros(n, np.int64), _USER_FILL),
        source.merchant_pop_.gather(as_of, merchants, _POP_FILL),
        source.mcc_pop_.gather(as_of, mccs, _POP_FILL),
        np.column_stack(
            [
                offers.reward,
                (offers.ends_ns - at_ns) / NS_PER_DAY,
                (at_ns - offers.starts_ns) / NS_PER_DAY,
                offers.mcc_number,
            ]
        ),
    ]
    return np.hstack(blocks)


def _instants(values: Sequence | np.ndarray | int, n: int) -> np.ndarray:
    """One instant for every row (int64 ns since the epoch, UTC), from one or n instants."""
    if isinstance(values, int | np.integer):
        return np.full(n, int(values), dtype=np.int64)
    out = np.asarray(values, dtype=np.int64) if _is_int_array(values) else _ns(values)
    if len(out) != n:
        raise ValueError(f"assemble: {len(out)} offer instants for {n} rows")
    return out


def _is_int_array(values: Sequence | np.ndarray) -> bool:
    return isinstance(values, np.ndarray) and np.issubdtype(values.dtype, np.integer)
