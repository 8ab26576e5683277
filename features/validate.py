"""The data contract enforced once, at the edge: validate the five tables, hand out typed frames.

Why here: features, training and serving all trust these frames, so a bad row must either stop
the run (strict mode) or be set aside with its reasons (quarantine mode); it is never silently
dropped. Every check is vectorised (pandas/pyarrow), so 10M transactions validate in seconds.

What a CSV cell may hold (Parquet columns may also be natively typed):
- empty or blank cells are null;
- timestamps are ISO 8601 ("2024-03-01T10:00:00+02:00", "2024-03-01 08:00:00Z", "2024-03-01");
  a naive timestamp means UTC, an offset is converted, so mixed zones in one column are fine;
- dates are YYYY-MM-DD;
- lists (purposes) are either a JSON array '["offer_ranking","analytics"]' or a '|'-separated
  string 'offer_ranking|analytics'; elements are stripped of surrounding blanks;
- integers may be written "30" or "30.0" (integer-valued floats, as pandas writes nullable ints);
- a cell that fails as written is retried with surrounding blanks stripped.
Parquet: a float NaN is null (pandas cannot tell them apart), an integer column is accepted
where a string is expected (so an MCC stored as 742 fails the 4-digit rule, it is not padded).

A violation names (table, row, column, rule, value): row is the 0-based data row in the file
(header excluded, so CSV line = row + 2). Duplicate keys reject every row sharing the key (we
cannot know which one is right). Referential integrity is checked after the per-row rules: a
row whose user (or offer) row was rejected is rejected too (rule `user_rejected`).
File-level problems (missing, ambiguous, unreadable or empty file, missing required column)
fail the run in both modes: no row of such a table can be kept or quarantined meaningfully.
Quarantine: QDIR/<table>.parquet for every table (0 rows when none rejected, so no stale file
lingers): the original columns as text, `row`, and `reason` ("rule: column=value; ...").

Typed-frame contract of `load_tables` (other modules rely on it):
- every column of `features.contract.SCHEMAS` exists, in schema order; absent optional columns
  are added as all-null; columns outside the contract are dropped (the report notes them);
- the index is a fresh RangeIndex over the kept rows, in file order;
- timestamps: tz-aware `datetime64[us, UTC]`, nulls NaT;
- `birth_date`: object dtype holding `datetime.date` or None;
- `purposes`: object dtype, a Python `list[str]` per row (non-empty, each row its own list);
- `lookback_days`: int64, null or absent filled with 365 (policy.consent.DEFAULT_LOOKBACK_DAYS);
- `amount`, `reward`: float64 (finite; `reward` NaN when null);
- `position`: nullable Int64;
- string columns: pandas string dtype `str` (pyarrow-backed), nulls NaN (use `pd.isna`);
- `expires_at` stays null when not given: policy.consent applies the 365-day default.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from features.contract import (
    CONSENTS,
    ENDS_AT,
    EXPIRES_AT,
    EXPOSURES,
    GRANTED_AT,
    LOOKBACK_DAYS,
    MCC,
    OFFER_ID,
    OFFERS,
    REVOKED_AT,
    SCHEMAS,
    STARTS_AT,
    TABLES,
    TRANSACTIONS,
    UNIQUE_KEYS,
    USER_ID,
    USERS,
    Column,
    Kind,
)
from features.io import MissingTableError, read_raw, table_path
from policy.consent import DEFAULT_LOOKBACK_DAYS

EXAMPLES_PER_RULE = 5
REASON = "reason"  # quarantine file: all reasons of the row, joined with "; "
ROW = "row"  # quarantine file: 0-based data row in the source file
_BRIEF = 40  # characters of a value shown in messages


class Rule(StrEnum):
    """What went wrong; the names appear in reports and quarantine reasons."""

    MISSING_FILE = "missing_file"
    AMBIGUOUS_FILE = "ambiguous_file"
    UNREADABLE_FILE = "unreadable_file"
    EMPTY_FILE = "empty_file"
    MISSING_COLUMN = "missing_column"
    NULL = "null"
    BAD_STRING = "bad_string"
    BAD_TIMESTAMP = "bad_timestamp"
    BAD_DATE = "bad_date"
    BAD_FLOAT = "bad_float"
    BAD_INT = "bad_int"
    BAD_STRING_LIST = "bad_string_list"
    NOT_FINITE = "not_finite"
    EMPTY_LIST = "empty_list"
    DUPLICATE_KEY = "duplicate_key"
    MCC_NOT_4_DIGITS = "mcc_not_4_digits"
    LOOKBACK_DAYS_NOT_POSITIVE = "lookback_days_not_positive"
    EXPIRES_NOT_AFTER_GRANTED = "expires_not_after_granted"
    REVOKED_BEFORE_GRANTED = "revoked_before_granted"
    ENDS_NOT_AFTER_STARTS = "ends_not_after_starts"
    UNKNOWN_USER = "unknown_user"
    USER_REJECTED = "user_rejected"
    UNKNOWN_OFFER = "unknown_offer"
    OFFER_REJECTED = "offer_rejected"


RULE_TEXT: dict[Rule, str] = {
    Rule.MISSING_FILE: "the table needs <table>.parquet or <table>.csv",
    Rule.AMBIGUOUS_FILE: "only one of <table>.parquet and <table>.csv may exist",
    Rule.UNREADABLE_FILE: "the file must be readable Parquet or CSV",
    Rule.EMPTY_FILE: "the file must hold at least one row",
    Rule.MISSING_COLUMN: "every required column must be present",
    Rule.NULL: "the column does not allow nulls (empty cells are null)",
    Rule.BAD_STRING: "value must be a string",
    Rule.BAD_TIMESTAMP: "value must be an ISO 8601 timestamp (naive means UTC)",
    Rule.BAD_DATE: "value must be a date YYYY-MM-DD",
    Rule.BAD_FLOAT: "value must be a number",
    Rule.BAD_INT: "value must be an integer",
    Rule.BAD_STRING_LIST: "value must be a list of strings: JSON array or 'a|b'",
    Rule.NOT_FINITE: "amounts and rewards must be finite",
    Rule.EMPTY_LIST: "purposes must be a non-empty list of non-blank strings",
    Rule.DUPLICATE_KEY: "the key must be unique (every row sharing it is rejected)",
    Rule.MCC_NOT_4_DIGITS: "MCC must be exactly 4 digits (ISO 18245)",
    Rule.LOOKBACK_DAYS_NOT_POSITIVE: "lookback_days must be a positive integer",
    Rule.EXPIRES_NOT_AFTER_GRANTED: "expires_at must be after granted_at",
    Rule.REVOKED_BEFORE_GRANTED: "revoked_at must not be before granted_at",
    Rule.ENDS_NOT_AFTER_STARTS: "ends_at must be after starts_at",
    Rule.UNKNOWN_USER: "user_id must exist in users",
    Rule.USER_REJECTED: "the user's row in users was rejected",
    Rule.UNKNOWN_OFFER: "offer_id must exist in offers",
    Rule.OFFER_REJECTED: "the offer's row in offers was rejected",
}

FILE_RULES = frozenset(
    {
        Rule.MISSING_FILE,
        Rule.AMBIGUOUS_FILE,
        Rule.UNREADABLE_FILE,
        Rule.EMPTY_FILE,
        Rule.MISSING_COLUMN,
    }
)

_TYPE_RULE: dict[Kind, Rule] = {
    Kind.STRING: Rule.BAD_STRING,
    Kind.TIMESTAMP: Rule.BAD_TIMESTAMP,
    Kind.DATE: Rule.BAD_DATE,
    Kind.FLOAT: Rule.BAD_FLOAT,
    Kind.INT: Rule.BAD_INT,
    Kind.STRING_LIST: Rule.BAD_STRING_LIST,
}

TS_DTYPE = "datetime64[us, UTC]"
STR_DTYPE = "str"


# --------------------------------------------------------------------------- report


@dataclass(frozen=True)
class Violation:
    """One broken rule: row is the 0-based data row, None for a file-level problem."""

    table: str
    row: int | None
    column: str | None
    rule: Rule
    value: str = ""

    def format(self) -> str:
        where = self.table if self.row is None else f"{self.table} row {self.row}"
        col = f", column {self.column}" if self.column else ""
        val = f" (value {self.value})" if self.value else ""
        return f"{where}{col}: {self.rule}{val}"


@dataclass(frozen=True)
class RuleSummary:
    """All violations of one rule in one table: total count and the first rows."""

    table: str
    rule: Rule
    count: int
    examples: tuple[Violation, ...]


@dataclass(frozen=True)
class TableCounts:
    read: int
    kept: int
    rejected: int


@dataclass
class ValidationReport:
    """The outcome of `validate_dir`; `failed` decides the exit code."""

    data_dir: Path
    quarantine_dir: Path | None
    counts: dict[str, TableCounts] = field(default_factory=dict)
    summaries: list[RuleSummary] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def strict(self) -> bool:
        return self.quarantine_dir is None

    @property
    def file_problems(self) -> list[RuleSummary]:
        """Problems of a whole file or column (no row): no row can be quarantined for them."""
        return [
            s
            for s in self.summaries
            if s.rule in FILE_RULES or any(v.row is None for v in s.examples)
        ]

    @property
    def failed(self) -> bool:
        """Strict: any violation fails. Quarantine: only file-level problems do."""
        return bool(self.summaries) if self.strict else bool(self.file_problems)

    @property
    def violation_count(self) -> int:
        return sum(s.count for s in self.summaries)

    def summary(self, table: str, rule: Rule | str) -> RuleSummary | None:
        return next((s for s in self.summaries if s.table == table and s.rule == rule), None)

    def format(self) -> str:
        """Readable terminal report: status, counts per table, then each rule's first rows."""
        mode = "strict" if self.strict else f"quarantine to {self.quarantine_dir}"
        status = "FAILED" if self.failed else "OK"
        lines = [f"validate {self.data_dir} ({mode}): {status}"]
        if self.counts:
            lines.append(f"  {'table':<14}{'read':>10}{'kept':>10}{'rejected':>10}")
            for table, c in self.counts.items():
                lines.append(f"  {table:<14}{c.read:>10}{c.kept:>10}{c.rejected:>10}")
        if self.summaries:
            lines.append(
                f"{self.violation_count} violation(s); rows are 0-based data rows "
                "(header excluded, CSV line = row + 2):"
            )
            for s in self.summaries:
                lines.append(f"- {s.table} / {s.rule}: {s.count} ({RULE_TEXT[s.rule]})")
                lines.extend(f"    {v.format()}" for v in s.examples)
                if s.count > len(s.examples):
                    lines.append(f"    ... and {s.count - len(s.examples)} more")
        for note in self.notes:
            lines.append(f"note: {note}")
        if self.failed and self.strict:
            lines.append("strict mode: fix the rows above, or rerun with --quarantine QDIR")
        elif self.failed:
            lines.append("file-level problems cannot be quarantined; nothing was written")
        elif not self.strict:
            rejected = sum(c.rejected for c in self.counts.values())
            lines.append(
                f"{rejected} rejected row(s) written with their reasons to "
                f"{self.quarantine_dir}/<table>.parquet"
            )
        return "\n".join(lines)


class ContractError(ValueError):
    """Raised by `load_tables` when validation fails; the message is the formatted report."""

    def __init__(self, report: ValidationReport) -> None:
        super().__init__(report.format())
        self.report = report


# --------------------------------------------------------------------------- parsing


@dataclass
class _Parsed:
    values: pd.Series  # typed, aligned with the raw rows; null where null or unparseable
    null: np.ndarray  # value absent (null or blank)
    bad: np.ndarray  # value present but not of the column's kind
    extra: list[tuple[Rule, np.ndarray]] = field(default_factory=list)


def _mask(x: pd.Series | np.ndarray) -> np.ndarray:
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


def _isin(s: pd.Series, values: pd.Series) -> np.ndarray:
    """Vectorised membership of a string column in a set of strings (nulls: False)."""
    found = pc.is_in(_arrow(s), value_set=_arrow(values.dropna()))
    return pc.fill_null(found, False).to_numpy(zero_copy_only=False).astype(bool, copy=False)


def _duplicated(s: pd.Series) -> np.ndarray:
    """Every row whose non-null string key occurs more than once (one hash pass if none do)."""
    arr = _arrow(s)
    distinct = pc.unique(arr)
    if len(distinct) - distinct.null_count == len(arr) - arr.null_count:
        return np.zeros(len(s), bool)
    counts = pc.value_counts(arr)
    dup = counts.field("values").filter(pc.greater(counts.field("counts"), 1)).drop_null()
    return _isin(s, pd.Series(dup.to_pylist(), dtype=STR_DTYPE))


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
    failed = ~null & _mask(parsed.isna())
    if failed.any():
        idx = np.flatnonzero(failed)
        parsed.iloc[idx] = parse(text.iloc[idx].str.strip()).to_numpy()
        failed = ~null & _mask(parsed.isna())
    return text, parsed, null, failed


def _arrow_cast(text: pd.Series, to: pa.DataType) -> pa.Array | pa.ChunkedArray | None:
    try:
        return pc.cast(_arrow(text), to)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None


def _all_bad(s: pd.Series, typed: pd.Series) -> _Parsed:
    null = _mask(s.isna())
    return _Parsed(typed, null, ~null)


def _parse_string(s: pd.Series) -> _Parsed:
    no_bad = np.zeros(len(s), bool)
    if _is_stringy(s):  # kept as written (no strip); blank means null
        values = s.astype(STR_DTYPE)
        null = _blank(values)
        return _Parsed(values.mask(null) if null.any() else values, null, no_bad)
    if pd.api.types.is_integer_dtype(s.dtype) and not pd.api.types.is_bool_dtype(s.dtype):
        null = _mask(s.isna())
        return _Parsed(s.astype("Int64").astype(STR_DTYPE).mask(null), null, no_bad)
    if s.dtype == object:  # mixed objects: only the str values are good
        is_str = _mask(s.map(lambda v: isinstance(v, str)))
        values = s.where(is_str).astype(STR_DTYPE)
        null = _mask(s.isna()) | (is_str & _blank(values))
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
        return _Parsed(s.dt.tz_convert("UTC").astype(TS_DTYPE), _mask(s.isna()), no_bad)
    if pd.api.types.is_datetime64_dtype(s.dtype):  # naive means UTC
        return _Parsed(s.dt.tz_localize("UTC").astype(TS_DTYPE), _mask(s.isna()), no_bad)
    if _is_stringy(s):
        _, parsed, null, failed = _parse_text(s, _to_utc, _to_utc_fast)
        return _Parsed(parsed, null, failed)
    if s.dtype == object and pd.api.types.infer_dtype(s, skipna=True) in ("datetime", "date"):
        parsed = pd.to_datetime(s, utc=True, errors="coerce").astype(TS_DTYPE)
        null = _mask(s.isna())
        return _Parsed(parsed, null, ~null & _mask(parsed.isna()))
    return _all_bad(s, pd.Series(pd.NaT, index=s.index, dtype=TS_DTYPE))


def _dates(parsed: pd.Series) -> pd.Series:
    """datetime64 -> object dtype of datetime.date, None where null."""
    out = pd.Series(np.full(len(parsed), None, dtype=object), index=parsed.index, dtype=object)
    ok = _mask(parsed.notna())
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
        null = _mask(s.isna())
        bad = ~null & _mask(naive != naive.dt.normalize())  # a date has no time of day
        return _Parsed(_dates(naive.mask(bad)), null, bad)
    if s.dtype == object and pd.api.types.infer_dtype(s, skipna=True) == "date":
        null = _mask(s.isna())
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
        null = _mask(values.isna())  # Parquet NaN is null here (pandas cannot tell them apart)
        return _Parsed(values, null, np.zeros(len(s), bool), [(Rule.NOT_FINITE, _inf(values))])
    if _is_stringy(s):
        text, values, null, failed = _parse_text(s, _to_float, _to_float_fast)
        # "nan" is a number, just not a finite one (Arrow reads it as NaN, pandas fails on it)
        nan_word = ~null & _mask(values.isna()) & ~failed
        idx = np.flatnonzero(failed)
        nan_word[idx] = _mask(text.iloc[idx].str.strip().str.lower().isin(_NAN_WORDS))
        return _Parsed(
            values, null, failed & ~nan_word, [(Rule.NOT_FINITE, _inf(values) | nan_word)]
        )
    values = pd.to_numeric(s, errors="coerce").astype("float64")
    null = _mask(s.isna())
    return _Parsed(values, null, ~null & _mask(values.isna()), [(Rule.NOT_FINITE, _inf(values))])


def _inf(values: pd.Series) -> np.ndarray:
    return np.isinf(values.to_numpy(dtype="float64", na_value=np.nan))


def _parse_int(s: pd.Series) -> _Parsed:
    if pd.api.types.is_integer_dtype(s.dtype) and not pd.api.types.is_bool_dtype(s.dtype):
        return _Parsed(s.astype("Int64"), _mask(s.isna()), np.zeros(len(s), bool))
    p = _parse_float(s)
    x = p.values.to_numpy(dtype="float64", na_value=np.nan)
    with np.errstate(invalid="ignore"):
        fractional = np.isfinite(x) & (x != np.floor(x))
        huge = np.abs(x) > _MAX_EXACT_INT  # beyond it a float no longer holds every integer
    nonfinite = p.extra[0][1]
    bad = p.bad | nonfinite | fractional | huge
    return _Parsed(p.values.mask(bad).astype("Int64"), p.null, bad)


def _is_null_scalar(v: object) -> bool:
    return v is None or v is pd.NA or v is pd.NaT or (isinstance(v, float) and math.isnan(v))


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
        elif _is_null_scalar(v):
            null[i] = True
        items.append(row)
    return _list_rows(s.index, items, null)


_PARSERS: dict[Kind, Callable[[pd.Series], _Parsed]] = {
    Kind.STRING: _parse_string,
    Kind.TIMESTAMP: _parse_timestamp,
    Kind.DATE: _parse_date,
    Kind.FLOAT: _parse_float,
    Kind.INT: _parse_int,
    Kind.STRING_LIST: _parse_string_list,
}


def _absent(col: Column, n: int) -> pd.Series:
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


# --------------------------------------------------------------------------- checks


@dataclass
class RowCheck:
    """Rows of one table breaking one rule on one column, with the raw values (for messages)."""

    column: str | None
    rule: Rule
    rows: np.ndarray
    values: pd.Series  # raw values at `rows`


@dataclass
class _Table:
    name: str
    raw: pd.DataFrame | None = None
    typed: dict[str, pd.Series] = field(default_factory=dict)
    nulls: dict[str, np.ndarray] = field(default_factory=dict)
    checks: list[RowCheck] = field(default_factory=list)
    file_problems: list[Violation] = field(default_factory=list)

    @property
    def n(self) -> int:
        return 0 if self.raw is None else len(self.raw)

    @property
    def usable(self) -> bool:
        return self.raw is not None and not self.file_problems

    def flag(self, column: str, rule: Rule, mask: np.ndarray, values: pd.Series) -> None:
        rows = np.flatnonzero(mask)
        if len(rows):
            self.checks.append(RowCheck(column, rule, rows, values.iloc[rows]))

    def rejected(self) -> np.ndarray:
        bad = np.zeros(self.n, bool)
        for c in self.checks:
            bad[c.rows] = True
        return bad


def _read(data_dir: Path, table: str) -> _Table:
    t = _Table(table)

    def problem(rule: Rule, value: str, column: str | None = None) -> None:
        t.file_problems.append(Violation(table, None, column, rule, value))

    try:
        path = table_path(data_dir, table)
    except MissingTableError:
        problem(Rule.MISSING_FILE, f"{table}.parquet or {table}.csv in {data_dir}")
        return t
    except ValueError:
        problem(Rule.AMBIGUOUS_FILE, f"both {table}.parquet and {table}.csv in {data_dir}")
        return t
    try:
        raw = read_raw(data_dir, table)
    except pd.errors.EmptyDataError:
        problem(Rule.EMPTY_FILE, path.name)
        return t
    except (pd.errors.ParserError, pa.ArrowException, OSError, UnicodeDecodeError) as e:
        problem(Rule.UNREADABLE_FILE, f"{path.name}: {brief(str(e))}")
        return t
    t.raw = raw.reset_index(drop=True)
    if t.raw.empty:
        problem(Rule.EMPTY_FILE, path.name)
    for col in SCHEMAS[table]:
        if col.required and col.name not in t.raw.columns:
            problem(Rule.MISSING_COLUMN, "", col.name)
    return t


def _check_rows(t: _Table, notes: list[str]) -> None:
    """Per-row rules of one table: nulls, kinds, finiteness, keys, MCC, and table sanity."""
    assert t.raw is not None
    raw, n = t.raw, t.n
    known = {c.name for c in SCHEMAS[t.name]}
    extra = [str(c) for c in raw.columns if c not in known]
    if extra:
        notes.append(f"{t.name}: columns outside the contract ignored: {', '.join(extra)}")
    for col in SCHEMAS[t.name]:
        if col.name not in raw.columns:
            t.typed[col.name] = _absent(col, n)
            if not col.required:
                notes.append(f"{t.name}: optional column {col.name} absent, all null")
            continue
        s = raw[col.name]
        p = _PARSERS[col.kind](s)
        if not col.nullable:
            t.flag(col.name, Rule.NULL, p.null, s)
        t.flag(col.name, _TYPE_RULE[col.kind], p.bad, s)
        for rule, mask in p.extra:
            t.flag(col.name, rule, mask, s)
        t.typed[col.name] = p.values
        t.nulls[col.name] = p.null
    typed = t.typed

    key = UNIQUE_KEYS.get(t.name)
    if key in raw.columns:
        t.flag(key, Rule.DUPLICATE_KEY, _duplicated(typed[key]), raw[key])
    if MCC in raw.columns:
        m = typed[MCC]
        four = _mask(m.str.fullmatch(r"[0-9]{4}"))
        t.flag(MCC, Rule.MCC_NOT_4_DIGITS, _mask(m.notna()) & ~four, raw[MCC])
    if t.name == CONSENTS:
        g = typed[GRANTED_AT]
        if EXPIRES_AT in raw.columns:
            t.flag(
                EXPIRES_AT,
                Rule.EXPIRES_NOT_AFTER_GRANTED,
                _mask(typed[EXPIRES_AT] <= g),
                raw[EXPIRES_AT],
            )
        if REVOKED_AT in raw.columns:
            t.flag(
                REVOKED_AT,
                Rule.REVOKED_BEFORE_GRANTED,
                _mask(typed[REVOKED_AT] < g),
                raw[REVOKED_AT],
            )
        if LOOKBACK_DAYS in raw.columns:
            lb = typed[LOOKBACK_DAYS]
            t.flag(
                LOOKBACK_DAYS, Rule.LOOKBACK_DAYS_NOT_POSITIVE, _mask(lb <= 0), raw[LOOKBACK_DAYS]
            )
            filled = int(t.nulls[LOOKBACK_DAYS].sum())
            if filled:
                notes.append(
                    f"{t.name}: {filled} null {LOOKBACK_DAYS} set to {DEFAULT_LOOKBACK_DAYS}"
                )
            typed[LOOKBACK_DAYS] = lb.fillna(DEFAULT_LOOKBACK_DAYS).astype("int64")
    if t.name == OFFERS and STARTS_AT in raw.columns and ENDS_AT in raw.columns:
        t.flag(
            ENDS_AT,
            Rule.ENDS_NOT_AFTER_STARTS,
            _mask(typed[ENDS_AT] <= typed[STARTS_AT]),
            raw[ENDS_AT],
        )


def _check_refs(
    tables: dict[str, _Table],
    parent: str,
    key: str,
    children: tuple[str, ...],
    unknown: Rule,
    rejected: Rule,
    notes: list[str],
) -> None:
    """Children rows must name a parent row that exists and was itself kept."""
    children = tuple(name for name in children if name in tables)
    if parent not in tables or not children:
        return  # a subset load (e.g. users and consents only) checks what it reads
    p = tables[parent]
    if not p.usable or key not in p.raw.columns:
        notes.append(f"{key} references not checked: {parent} is unusable")
        return
    ids = p.typed[key]
    parent_bad = p.rejected()
    kept_ids = ids[~parent_bad]
    for name in children:
        c = tables[name]
        if c.raw is None or key not in c.raw.columns or key not in c.typed:
            continue  # the child's own file problem is reported already
        v = c.typed[key]
        known = _isin(v, ids)  # nulls are False here; the null rule reports them
        kept = _isin(v, kept_ids) if parent_bad.any() else known
        c.flag(key, unknown, _mask(v.notna()) & ~known, c.raw[key])
        c.flag(key, rejected, known & ~kept, c.raw[key])


# --------------------------------------------------------------------------- output


def brief(v: object) -> str:
    """A value as shown in messages: repr, cut to a few dozen characters."""
    if isinstance(v, np.ndarray):
        v = v.tolist()
    elif _is_null_scalar(v):
        return "null"
    text = repr(v) if isinstance(v, str | list | tuple) else str(v)
    return text if len(text) <= _BRIEF else text[: _BRIEF - 3] + "..."


def _text(v: object) -> str | None:
    """A raw cell as text for the quarantine file (lists as JSON)."""
    if isinstance(v, np.ndarray | list | tuple):
        return json.dumps([str(i) for i in v])
    if _is_null_scalar(v):
        return None
    if isinstance(v, datetime | date | pd.Timestamp):
        return v.isoformat()
    return str(v)


def _summaries(t: _Table) -> list[RuleSummary]:
    out = [RuleSummary(t.name, v.rule, 1, (v,)) for v in t.file_problems]
    by_rule: dict[Rule, list[RowCheck]] = {}
    for c in t.checks:
        by_rule.setdefault(c.rule, []).append(c)
    for rule, checks in by_rule.items():
        firsts: list[tuple[int, RowCheck, int]] = []
        for c in checks:
            firsts.extend((int(r), c, j) for j, r in enumerate(c.rows[:EXAMPLES_PER_RULE]))
        firsts.sort(key=lambda x: x[0])
        examples = tuple(
            Violation(t.name, r, c.column, rule, brief(c.values.iloc[j]))
            for r, c, j in firsts[:EXAMPLES_PER_RULE]
        )
        out.append(RuleSummary(t.name, rule, sum(len(c.rows) for c in checks), examples))
    return out


def _as_text(s: pd.Series) -> pd.Series:
    """A raw column as text for the quarantine file; vectorised except for object columns."""
    if isinstance(s.dtype, pd.StringDtype):
        return s.astype(STR_DTYPE)
    if s.dtype == object:
        return s.map(_text).astype(STR_DTYPE)
    if pd.api.types.is_datetime64_any_dtype(s.dtype):  # ISO 8601, as it would be written
        return s.astype(STR_DTYPE).str.replace(" ", "T", n=1).mask(s.isna())
    return s.astype(STR_DTYPE).mask(s.isna())


def _write_quarantine(t: _Table, bad: np.ndarray, qdir: Path) -> None:
    """Rejected rows, original columns as text, plus their 0-based row and every reason."""
    assert t.raw is not None
    rows = np.flatnonzero(bad)
    write_quarantine(t.name, t.raw.iloc[rows].set_axis(rows), t.checks, qdir)


def write_quarantine(
    table: str, picked: pd.DataFrame, checks: Sequence[RowCheck], qdir: Path
) -> None:
    """QDIR/<table>.parquet: `picked` (raw rows indexed by their 0-based file row) as text, plus
    `row` and `reason` ("rule: column=value; ..." in check order); the feature build shares it."""
    rows = picked.index.to_numpy()
    out = pd.DataFrame({str(c): _as_text(picked[c]) for c in picked.columns}).set_axis(rows)
    reasons = pd.Series(pd.NA, index=rows, dtype=STR_DTYPE)
    for c in checks:  # in check order: columns in schema order, then references
        text = (c.rule.value + ": " + str(c.column) + "=" + c.values.map(brief)).astype(STR_DTYPE)
        before = reasons.loc[c.rows].to_numpy()
        joined = pd.Series(before, dtype=STR_DTYPE) + "; " + text.to_numpy()
        reasons.loc[c.rows] = np.where(pd.isna(before), text.to_numpy(), joined.to_numpy())
    out[ROW] = rows
    out[REASON] = reasons
    qdir.mkdir(parents=True, exist_ok=True)
    final = qdir / f"{table}.parquet"
    tmp = qdir / f".{table}.parquet.tmp"
    out.reset_index(drop=True).to_parquet(tmp, index=False)
    os.replace(tmp, final)  # atomic: a crash never leaves a half-written quarantine file


def _frame(t: _Table, keep: np.ndarray) -> pd.DataFrame:
    cols = {}
    for col in SCHEMAS[t.name]:
        s = t.typed[col.name][keep].reset_index(drop=True)
        if col.kind == Kind.STRING:
            s = s.astype(STR_DTYPE)
        elif col.kind == Kind.TIMESTAMP:
            s = s.astype(TS_DTYPE)
        elif col.kind == Kind.FLOAT:
            s = s.astype("float64")
        elif col.kind == Kind.INT and col.name != LOOKBACK_DAYS:
            s = s.astype("Int64")
        cols[col.name] = s
    return pd.DataFrame(cols)


def _run(
    data_dir: str | Path,
    quarantine_dir: str | Path | None,
    frames: bool,
    names: Sequence[str] = TABLES,
) -> tuple[ValidationReport, dict[str, pd.DataFrame]]:
    data_dir = Path(data_dir)
    qdir = None if quarantine_dir is None else Path(quarantine_dir)
    report = ValidationReport(data_dir, qdir)
    unknown = set(names) - set(TABLES)
    if unknown:
        raise ValueError(f"unknown tables {sorted(unknown)}; the contract has {list(TABLES)}")
    tables = {name: _read(data_dir, name) for name in TABLES if name in names}
    for t in tables.values():
        if t.raw is not None and not t.raw.empty:
            _check_rows(t, report.notes)
    _check_refs(
        tables,
        USERS,
        USER_ID,
        (TRANSACTIONS, CONSENTS, EXPOSURES),
        Rule.UNKNOWN_USER,
        Rule.USER_REJECTED,
        report.notes,
    )
    _check_refs(
        tables,
        OFFERS,
        OFFER_ID,
        (EXPOSURES,),
        Rule.UNKNOWN_OFFER,
        Rule.OFFER_REJECTED,
        report.notes,
    )

    rejected: dict[str, np.ndarray] = {}
    for name, t in tables.items():
        report.summaries.extend(_summaries(t))
        if t.raw is None:
            continue
        bad = t.rejected()
        rejected[name] = bad
        n_bad = int(bad.sum())
        report.counts[name] = TableCounts(t.n, t.n - n_bad, n_bad)
        assert report.counts[name].kept + n_bad == t.n  # nothing dropped without a count

    if qdir is not None and not report.failed:
        for name, t in tables.items():
            _write_quarantine(t, rejected[name], qdir)
    out: dict[str, pd.DataFrame] = {}
    if frames and not report.failed:
        out = {name: _frame(t, ~rejected[name]) for name, t in tables.items()}
    return report, out


# --------------------------------------------------------------------------- public


def validate_dir(
    data_dir: str | Path, quarantine_dir: str | Path | None = None
) -> ValidationReport:
    """Check the five tables of DATA_DIR against the contract.

    Strict (no quarantine_dir): any violation makes the report fail. With quarantine_dir, every
    rejected row is written to QDIR/<table>.parquet (original columns as text, `row`, `reason`)
    and the good rows continue; only file-level problems fail the report.
    """
    return _run(data_dir, quarantine_dir, frames=False)[0]


def load_tables(
    data_dir: str | Path,
    quarantine_dir: str | Path | None = None,
    tables: Sequence[str] = TABLES,
) -> dict[str, pd.DataFrame]:
    """Validate, then return the kept rows of each table as typed frames (module docstring).

    `tables` loads a subset (the feature job reads users and consents here and scans
    transactions in the engine); references are checked among the tables read.
    Raises ContractError (message: the formatted report) when the validation fails.
    """
    report, frames = check_tables(data_dir, quarantine_dir, tables)
    if report.failed:
        raise ContractError(report)
    return frames


def check_tables(
    data_dir: str | Path,
    quarantine_dir: str | Path | None = None,
    tables: Sequence[str] = TABLES,
) -> tuple[ValidationReport, dict[str, pd.DataFrame]]:
    """`load_tables` that hands back the report (its counts go into a snapshot's manifest)
    and raises nothing: the frames are empty when the report failed."""
    return _run(data_dir, quarantine_dir, frames=True, names=tables)
