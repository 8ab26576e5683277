"""Typed columns from the int64 numbers every stage works in: ids, category codes, UTC times."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

DAY = 86_400  # seconds in a day
YEAR_DAYS = 365.25  # days in an average year (ages, activity rates)
STRING_DTYPE = pd.StringDtype("pyarrow", na_value=np.nan)  # pandas' default `str`
ID_WIDTHS = {"u": 6, "m": 4, "o": 4, "t": 9, "c": 7, "s": 7}  # minimum digits of id labels
NULL = np.iinfo(np.int64).min  # "no timestamp" in the int64 seconds used internally


def ids(prefix: str, numbers: np.ndarray, count: int) -> pd.Series:
    """String ids like u000123 for entity numbers in [0, count), padded wide enough for count."""
    return pd.Series(pc.take(_labels(prefix, count), pa.array(numbers)), dtype=STRING_DTYPE)


def _labels(prefix: str, count: int) -> pa.Array:
    """prefix + zero-padded 0..count-1, built as one byte buffer (no per-row Python)."""
    width = max(ID_WIDTHS[prefix], len(str(max(count - 1, 0))))
    chars = np.empty((count, len(prefix) + width), dtype=np.uint8)
    chars[:, : len(prefix)] = np.frombuffer(prefix.encode(), dtype=np.uint8)
    rest = np.arange(count, dtype=np.int64)
    for col in range(chars.shape[1] - 1, len(prefix) - 1, -1):
        chars[:, col] = 48 + rest % 10
        rest //= 10
    offsets = np.arange(0, chars.size + 1, chars.shape[1], dtype=np.int64)
    return pa.LargeStringArray.from_buffers(count, pa.py_buffer(offsets), pa.py_buffer(chars))


def take(labels: np.ndarray, index: np.ndarray) -> pd.Series:
    """labels[index] as a string column."""
    return pd.Series(
        pc.take(pa.array(labels.tolist(), pa.string()), pa.array(index)), dtype=STRING_DTYPE
    )


def utc(seconds: np.ndarray, t0: pd.Timestamp) -> pd.Series:
    """Seconds since t0 (NULL: missing) as datetime64[us, UTC]."""
    seconds = np.asarray(seconds, dtype=np.int64)
    missing = seconds == NULL
    us = t0.value // 1000 + np.where(missing, 0, seconds) * 1_000_000
    values = us.view("datetime64[us]")
    values[missing] = np.datetime64("NaT")
    return pd.Series(values).dt.tz_localize("UTC")
