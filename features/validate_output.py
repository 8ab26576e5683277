"""What validation hands on: rule summaries, quarantine files and the typed frames.

The quarantine writer is shared with the feature build's engine scan (features/intake.py).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from datetime import date, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from features.contract import LOOKBACK_DAYS, SCHEMAS, Kind
from features.validate_parse import STR_DTYPE, TS_DTYPE
from features.validate_report import (
    EXAMPLES_PER_RULE,
    Rule,
    RuleSummary,
    Violation,
    brief,
    is_null_scalar,
)
from features.validate_rows import CheckedTable, RowCheck

REASON = "reason"  # quarantine file: all reasons of the row, joined with "; "
ROW = "row"  # quarantine file: 0-based data row in the source file


def _text(v: object) -> str | None:
    """A raw cell as text for the quarantine file (lists as JSON)."""
    if isinstance(v, np.ndarray | list | tuple):
        return json.dumps([str(i) for i in v])
    if is_null_scalar(v):
        return None
    if isinstance(v, datetime | date | pd.Timestamp):
        return v.isoformat()
    return str(v)


def rule_summaries(t: CheckedTable) -> list[RuleSummary]:
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


def quarantine_table(t: CheckedTable, bad: np.ndarray, qdir: Path) -> None:
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


def typed_frame(t: CheckedTable, keep: np.ndarray) -> pd.DataFrame:
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
