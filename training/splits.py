"""The shapes a training set has: time windows, slates per window (`Split`), the whole set.

Pure data and arithmetic on arrays; building them from the contract tables is training/dataset.py.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

import numpy as np
import pandas as pd

from features.vector import FEATURE_COLUMNS
from training.config import TrainConfig

TRAIN, VALID, TEST = "train", "validation", "test"
SPLITS = (TRAIN, VALID, TEST)
NEVER = np.iinfo(np.int64).max  # redeemed_ns of an exposure that was never (validly) redeemed


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
