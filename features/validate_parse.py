"""Parsing one raw column into its contract kind: typed values, null mask, bad mask.

Every parser is vectorised (pyarrow casts first, pandas as the fallback, stripped retries only
for the cells that failed), so 10M cells parse in seconds; the cell grammar is in
features/validate.py's docstring.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from features.contract import LOOKBACK_DAYS, Column, Kind
from features.validate_report import Rule, is_null_scalar
from policy.consent import DEFAULT_LOOKBACK_DAYS

TS_DTYPE = "datetime64[us, UTC]"
STR_DTYPE = "str"


@dataclass
class _Parsed:
    values: pd.Series  # typed, aligned with the raw rows; null where null or unparseable
    null: np.ndarray  # value absent (null or blank)
    bad: np.ndarray  # value present but not of the column's kind
    extra: list[tuple[Rule, np.ndarray]] = field(default_factory=list)


def as_mask(x: pd.Series | np.ndarray) -> np.ndarray:
    """Boolean numpy mask; missing counts as False."""
    if isinstance(x, pd.Series):
        return x.fillna(False).to_numpy(dtype=bool)
    return np.asarray(x, dtype=bool)


def _is_stringy(s: pd.Series) -> bool:
    if isinstance(s.dtype, pd.StringDtype):
        return True
    return s.dtype == object and pd.api.types.infer_dtype(s, skipna=True) in ("string", "empty")


def _arrow(s: pd.Series) -> pa.Array | pa.ChunkedArray:
    """A string column as Arrow, zero-copy for pandas' pyarrow-backed `str`."""
    return pa.array(s.astype(STR_DTYPE))


def _blank(text: pd.Series) -> np.ndarray:
    """Null, empty or whitespace-only: all mean "no value" in the contract."""
    arr = _arrow(text)
    blank = pc.or_(pc.equal(pc.utf8_length(arr), 0), pc.utf8_is_space(arr))
    return pc.fill_null(blank, True).to_numpy(zero_copy_only=False).astype(bool, copy=False)


def isin_strings(s: pd.Series, values: pd.Series) -> np.ndarray:
    """Vectorised membership of a string column in a set of strings (nulls: False)."""
    found = pc.is_in(_arrow(s), value_set=_arrow(values.dropna()))
    return pc.fill_null(found, False).to_numpy(zero_copy_only=False).astype(bool, copy=False)


def duplicated_keys(s: pd.Series) -> np.ndarray:
    """Every row whose non-null string key occurs more than once (one hash pass if none do)."""
    arr = _arrow(s)
    distinct = pc.unique(arr)
    if len(distinct) - distinct.null_count == len(arr) - arr.null_count:
        return np.zeros(len(s), bool)
    counts = pc.value_counts(arr)
    dup = counts.field("values").filter(pc.greater(counts.field("counts"), 1)).drop_null()
    return isin_strings(s, pd.Series(dup.to_pylist(), dtype=STR_DTYPE))


def _parse_text(
    s: pd.Series,
    parse: Callable[[pd.Series], pd.Series],
    fast: Callable[[pd.Series], pd.Series | None] | None = None,
) -> tuple[pd.Series, pd.Series, np.ndarray, np.ndarray]:
    """Parse a text column: blank is null; cells failing as written are retried stripped.

    `fast` (an Arrow cast) handles a clean column in one pass and returns None at the first
    cell it cannot read; pandas then parses, and only the failures are stripped and retried.
    Returns (text, parsed, null, failed).
    """
    text = s.astype(STR_DTYPE)
    null = _blank(text)
    parsed = None if fast is None else fast(text)
    if parsed is not None:
        return text, parsed, null, np.zeros(len(s), bool)
    parsed = parse(text)
    failed = ~null & as_mask(parsed.isna())
    if failed.any():
        idx = np.flatnonzero(failed)
        parsed.iloc[idx] = parse(text.iloc[idx].str.strip()).to_numpy()
        failed = ~null & as_mask(parsed.isna())
    return text, parsed, null, failed


def _arrow_cast(text: pd.Series, to: pa.DataType) -> pa.Array | pa.ChunkedArray | None:
    try:
        return pc.cast(_arrow(text), to)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None


def _all_bad(s: pd.Series, typed: pd.Series) -> _Parsed:
    null = as_mask(s.isna())
    return _Parsed(typed, null, ~null)


def _parse_string(s: pd.Series) -> _Parsed:
    no_bad = np.zeros(len(s), bool)
    if _is_stringy(s):  # kept as written (no strip); blank means null
        values = s.astype(STR_DTYPE)
        null = _blank(values)
        return _Parsed(values.mask(null) if null.any() else values, null, no_bad)
    if pd.api.types.is_integer_dtype(s.dtype) and not pd.api.types.is_bool_dtype(s.dtype):
        null = as_mask(s.isna())
        return _Parsed(s.astype("Int64").astype(STR_DTYPE).mask(null), null, no_bad)
    if s.dtype == object:  # mixed objects: only the str values are good
        is_str = as_mask(s.map(lambda v: isinstance(v, str)))
        values = s.where(is_str).astype(STR_DTYPE)
        null = as_mask(s.isna()) | (is_str & _blank(values))
        return _Parsed(values.mask(null), null, ~null & ~is_str)
    return _all_bad(s, pd.Series(pd.NA, index=s.index, dtype=STR_DTYPE))


def _to_utc(text: pd.Series) -> pd.Series:
    return pd.to_datetime(text, utc=True, format="ISO8601", errors="coerce").astype(TS_DTYPE)


def _to_utc_fast(text: pd.Series) -> pd.Series | None:
    """All cells zoned, or all naive (then UTC): one Arrow cast; mixed columns go to pandas."""
    zoned = _arrow_cast(text, pa.timestamp("us", tz="UTC"))
    if zoned is not None:
        return pd.Series(zoned.to_pandas(), index=text.index).astype(TS_DTYPE)
    naive = _arrow_cast(text, pa.timestamp("us"))
    if naive is not None:
        out = pd.Series(naive.to_pandas(), index=text.index)
        return out.dt.tz_localize("UTC").astype(TS_DTYPE)
    return None


def _parse_timestamp(s: pd.Series) -> _Parsed:
    no_bad = np.zeros(len(s), bool)
    if isinstance(s.dtype, pd.DatetimeTZDtype):
        return _Parsed(s.dt.tz_convert("UTC").astype(TS_DTYPE), as_mask(s.isna()), no_bad)
    if pd.api.types.is_datetime64_dtype(s.dtype):  # naive means UTC
        return _Parsed(s.dt.tz_localize("UTC").astype(TS_DTYPE), as_mask(s.isna()), no_bad)
    if _is_stringy(s):
        _, parsed, null, failed = _parse_text(s, _to_utc, _to_utc_fast)
        return _Parsed(parsed, null, failed)
    if s.dtype == object and pd.api.types.infer_dtype(s, skipna=True) in ("datetime", "date"):
        parsed = pd.to_datetime(s, utc=True, errors="coerce").astype(TS_DTYPE)
        null = as_mask(s.isna())
        return _Parsed(parsed, null, ~null & as_mask(parsed.isna()))
    return _all_bad(s, pd.Series(pd.NaT, index=s.index, dtype=TS_DTYPE))


def _dates(parsed: pd.Series) -> pd.Series:
    """datetime64 -> object dtype of datetime.date, None where null."""
    out = pd.Series(np.full(len(parsed), None, dtype=object), index=parsed.index, dtype=object)
    ok = as_mask(parsed.notna())
    out[ok] = parsed[ok].dt.date
    return out


def _to_day(text: pd.Series) -> pd.Series:
    return pd.to_datetime(text, format="%Y-%m-%d", errors="coerce").astype("datetime64[s]")


def _parse_date(s: pd.Series) -> _Parsed:
    if _is_stringy(s):
        _, parsed, null, failed = _parse_text(s, _to_day)
        return _Parsed(_dates(parsed), null, failed)
    if pd.api.types.is_datetime64_any_dtype(s.dtype):
        naive = s.dt.tz_localize(None) if isinstance(s.dtype, pd.DatetimeTZDtype) else s
        null = as_mask(s.isna())
        bad = ~null & as_mask(naive != naive.dt.normalize())  # a date has no time of day
        return _Parsed(_dates(naive.mask(bad)), null, bad)
    if s.dtype == object and pd.api.types.infer_dtype(s, skipna=True) == "date":
        null = as_mask(s.isna())
        return _Parsed(_dates(pd.to_datetime(s, errors="coerce")), null, np.zeros(len(s), bool))
    return _all_bad(s, pd.Series(np.full(len(s), None, dtype=object), index=s.index))


_NAN_WORDS = ("nan", "+nan", "-nan")
_MAX_EXACT_INT = 2**53


def _to_float(text: pd.Series) -> pd.Series:
    return pd.to_numeric(text, errors="coerce").astype("float64")


def _to_float_fast(text: pd.Series) -> pd.Series | None:
    x = _arrow_cast(text, pa.float64())
    if x is None:
        return None
    return pd.Series(x.to_numpy(zero_copy_only=False), index=text.index, dtype="float64")


def _parse_float(s: pd.Series) -> _Parsed:
    if pd.api.types.is_bool_dtype(s.dtype):
        return _all_bad(s, pd.Series(np.nan, index=s.index, dtype="float64"))
    if pd.api.types.is_numeric_dtype(s.dtype):
        values = s.astype("float64")
        null = as_mask(values.isna())  # Parquet NaN is null here (pandas cannot tell them apart)
        return _Parsed(values, null, np.zeros(len(s), bool), [(Rule.NOT_FINITE, _inf(values))])
    if _is_stringy(s):
        text, values, null, failed = _parse_text(s, _to_float, _to_float_fast)
        # "nan" is a number, just not a finite one (Arrow reads it as NaN, pandas fails on it)
        nan_word = ~null & as_mask(values.isna()) & ~failed
        idx = np.flatnonzero(failed)
        nan_word[idx] = as_mask(text.iloc[idx].str.strip().str.lower().isin(_NAN_WORDS))
        return _Parsed(
            values, null, failed & ~nan_word, [(Rule.NOT_FINITE, _inf(values) | nan_word)]
        )
    values = pd.to_numeric(s, errors="coerce").astype("float64")
    null = as_mask(s.isna())
    return _Parsed(values, null, ~null & as_mask(values.isna()), [(Rule.NOT_FINITE, _inf(values))])


def _inf(values: pd.Series) -> np.ndarray:
    return np.isinf(values.to_numpy(dtype="float64", na_value=np.nan))


def _parse_int(s: pd.Series) -> _Parsed:
    if pd.api.types.is_integer_dtype(s.dtype) and not pd.api.types.is_bool_dtype(s.dtype):
        return _Parsed(s.astype("Int64"), as_mask(s.isna()), np.zeros(len(s), bool))
    p = _parse_float(s)
    x = p.values.to_numpy(dtype="float64", na_value=np.nan)
    with np.errstate(invalid="ignore"):
        fractional = np.isfinite(x) & (x != np.floor(x))
        huge = np.abs(x) > _MAX_EXACT_INT  # beyond it a float no longer holds every integer
    nonfinite = p.extra[0][1]
    bad = p.bad | nonfinite | fractional | huge
    return _Parsed(p.values.mask(bad).astype("Int64"), p.null, bad)


def _list_from_text(text: str) -> list[str] | None:
    """'["a","b"]' (JSON) or 'a|b'; None when it is not a list of strings."""
    if text.startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError:
            return None
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            return None
        return [i.strip() for i in items]
    return [i.strip() for i in text.split("|")]


_LIST_SEPARATOR = "\x1f"  # joins a list's items into one key; a split that disagrees is re-read


def _parse_arrow_lists(s: pd.Series) -> _Parsed | None:
    """Lists read from Parquet (arrays of strings), parsed once per distinct list: the per-row
    loop took a second for 400k consents. None when the column is anything else."""
    raw = s.to_numpy(dtype=object)
    if not all(v is None or isinstance(v, np.ndarray) for v in raw):
        return None
    try:
        lists = pa.array(raw, type=pa.list_(pa.string()))
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return None
    null = lists.is_null().to_numpy(zero_copy_only=False)
    lengths = pc.list_value_length(lists).fill_null(0).to_numpy(zero_copy_only=False)
    joined = pc.binary_join(lists, _LIST_SEPARATOR)  # null when a list holds a null item
    encoded = pc.dictionary_encode(joined)
    codes = encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False)
    parsed = [
        [i.strip() for i in key.split(_LIST_SEPARATOR)] if key else []
        for key in encoded.dictionary.to_pylist()
    ]
    split_lengths = np.array([len(p) for p in parsed] + [0])[codes]  # code -1 reads the 0
    if ((codes >= 0) & (lengths > 0) & (split_lengths != lengths)).any():
        return None  # an item holds the separator: let the per-row loop decide
    return _list_rows(s.index, [parsed[c] if c >= 0 else None for c in codes], null)


def _list_rows(index: pd.Index, items: list[list[str] | None], null: np.ndarray) -> _Parsed:
    """Each row's items (None: not a list of strings) as values, bad and empty-list masks."""
    n = len(items)
    values = np.full(n, None, dtype=object)
    bad = np.zeros(n, bool)
    empty = np.zeros(n, bool)
    for i, row in enumerate(items):
        if null[i]:
            continue
        if row is None:
            bad[i] = True
        elif not row or not all(row):
            empty[i] = True
        else:
            values[i] = list(row)  # each row its own list: callers may mutate theirs
    return _Parsed(
        pd.Series(values, index=index, dtype=object), null, bad, [(Rule.EMPTY_LIST, empty)]
    )


def _parse_string_list(s: pd.Series) -> _Parsed:
    """Per-row parsing, but only over consents (one or a few rows per user), memoised per text."""
    fast = _parse_arrow_lists(s)
    if fast is not None:
        return fast
    null = np.zeros(len(s), bool)
    items: list[list[str] | None] = []
    memo: dict[str, list[str] | None] = {}
    lists: dict[tuple, list[str] | None] = {}  # few distinct purpose lists: parse each once
    for i, v in enumerate(s.to_numpy(dtype=object)):
        row: list[str] | None = None
        if isinstance(v, str):
            text = v.strip()
            null[i] = not text
            if text and text not in memo:
                memo[text] = _list_from_text(text)
            row = memo.get(text)
        elif isinstance(v, list | tuple | np.ndarray):
            key = tuple(v)
            if key not in lists:
                lists[key] = (
                    [i.strip() for i in key] if all(isinstance(i, str) for i in key) else None
                )
            row = lists[key]
        elif is_null_scalar(v):
            null[i] = True
        items.append(row)
    return _list_rows(s.index, items, null)


PARSERS: dict[Kind, Callable[[pd.Series], _Parsed]] = {
    Kind.STRING: _parse_string,
    Kind.TIMESTAMP: _parse_timestamp,
    Kind.DATE: _parse_date,
    Kind.FLOAT: _parse_float,
    Kind.INT: _parse_int,
    Kind.STRING_LIST: _parse_string_list,
}


def absent_column(col: Column, n: int) -> pd.Series:
    """An absent optional column, all null, in its typed dtype."""
    index = pd.RangeIndex(n)
    if col.name == LOOKBACK_DAYS:
        return pd.Series(DEFAULT_LOOKBACK_DAYS, index=index, dtype="int64")
    if col.kind == Kind.TIMESTAMP:
        return pd.Series(pd.NaT, index=index, dtype=TS_DTYPE)
    if col.kind == Kind.FLOAT:
        return pd.Series(np.nan, index=index, dtype="float64")
    if col.kind == Kind.INT:
        return pd.Series(pd.NA, index=index, dtype="Int64")
    if col.kind == Kind.STRING:
        return pd.Series(pd.NA, index=index, dtype=STR_DTYPE)
    return pd.Series(np.full(n, None, dtype=object), index=index, dtype=object)
