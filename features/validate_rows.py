"""Row checks of the pandas tables: read a file, flag each rule's rows, check references.

A check only flags rows (`CheckedTable.flag`); what is kept, reported or quarantined is
decided afterwards from the flags (features/validate.py), so no row is dropped here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from features.contract import (
    ARM,
    CONSENTS,
    ENDS_AT,
    EXPERIMENT,
    EXPERIMENT_ARMS,
    EXPIRES_AT,
    EXPOSURES,
    GRANTED_AT,
    LOOKBACK_DAYS,
    MCC,
    OFFERS,
    PROPENSITY,
    REVOKED_AT,
    SCHEMAS,
    STARTS_AT,
    UNIQUE_KEYS,
    Kind,
)
from features.io import MissingTableError, read_raw, table_path
from features.validate_parse import (
    PARSERS,
    absent_column,
    as_mask,
    duplicated_keys,
    isin_strings,
)
from features.validate_report import Rule, Violation, brief
from policy.consent import DEFAULT_LOOKBACK_DAYS

_TYPE_RULE: dict[Kind, Rule] = {
    Kind.STRING: Rule.BAD_STRING,
    Kind.TIMESTAMP: Rule.BAD_TIMESTAMP,
    Kind.DATE: Rule.BAD_DATE,
    Kind.FLOAT: Rule.BAD_FLOAT,
    Kind.INT: Rule.BAD_INT,
    Kind.STRING_LIST: Rule.BAD_STRING_LIST,
}


@dataclass
class RowCheck:
    """Rows of one table breaking one rule on one column, with the raw values (for messages)."""

    column: str | None
    rule: Rule
    rows: np.ndarray
    values: pd.Series  # raw values at `rows`


@dataclass
class CheckedTable:
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


def read_table(data_dir: Path, table: str) -> CheckedTable:
    t = CheckedTable(table)

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


def check_rows(t: CheckedTable, notes: list[str]) -> None:
    """Per-row rules of one table: nulls, kinds, finiteness, keys, MCC, and table sanity.

    The order of the steps is the order of a quarantined row's reasons.
    """
    assert t.raw is not None
    known = {c.name for c in SCHEMAS[t.name]}
    extra = [str(c) for c in t.raw.columns if c not in known]
    if extra:
        notes.append(f"{t.name}: columns outside the contract ignored: {', '.join(extra)}")
    _check_columns(t, notes)
    _check_keys(t)
    if t.name == CONSENTS:
        _check_consents(t, notes)
    if t.name == OFFERS:
        _check_offers(t)
    if t.name == EXPOSURES:
        _check_experiment_columns(t)


def _check_columns(t: CheckedTable, notes: list[str]) -> None:
    """Parse every contract column into its kind, flagging nulls, bad kinds and extra rules."""
    assert t.raw is not None
    for col in SCHEMAS[t.name]:
        if col.name not in t.raw.columns:
            t.typed[col.name] = absent_column(col, t.n)
            if not col.required:
                notes.append(f"{t.name}: optional column {col.name} absent, all null")
            continue
        s = t.raw[col.name]
        p = PARSERS[col.kind](s)
        if not col.nullable:
            t.flag(col.name, Rule.NULL, p.null, s)
        t.flag(col.name, _TYPE_RULE[col.kind], p.bad, s)
        for rule, mask in p.extra:
            t.flag(col.name, rule, mask, s)
        t.typed[col.name] = p.values
        t.nulls[col.name] = p.null


def _check_keys(t: CheckedTable) -> None:
    """Unique keys and 4-digit MCCs, in any table that has them."""
    assert t.raw is not None
    raw, typed = t.raw, t.typed
    key = UNIQUE_KEYS.get(t.name)
    if key in raw.columns:
        t.flag(key, Rule.DUPLICATE_KEY, duplicated_keys(typed[key]), raw[key])
    if MCC in raw.columns:
        m = typed[MCC]
        four = as_mask(m.str.fullmatch(r"[0-9]{4}"))
        t.flag(MCC, Rule.MCC_NOT_4_DIGITS, as_mask(m.notna()) & ~four, raw[MCC])


def _check_consents(t: CheckedTable, notes: list[str]) -> None:
    """A consent's instants in order and a positive lookback (null lookback: the default)."""
    assert t.raw is not None
    raw, typed = t.raw, t.typed
    g = typed[GRANTED_AT]
    if EXPIRES_AT in raw.columns:
        expires_early = as_mask(typed[EXPIRES_AT] <= g)
        t.flag(EXPIRES_AT, Rule.EXPIRES_NOT_AFTER_GRANTED, expires_early, raw[EXPIRES_AT])
    if REVOKED_AT in raw.columns:
        revoked_early = as_mask(typed[REVOKED_AT] < g)
        t.flag(REVOKED_AT, Rule.REVOKED_BEFORE_GRANTED, revoked_early, raw[REVOKED_AT])
    if LOOKBACK_DAYS in raw.columns:
        lb = typed[LOOKBACK_DAYS]
        t.flag(LOOKBACK_DAYS, Rule.LOOKBACK_DAYS_NOT_POSITIVE, as_mask(lb <= 0), raw[LOOKBACK_DAYS])
        filled = int(t.nulls[LOOKBACK_DAYS].sum())
        if filled:
            notes.append(f"{t.name}: {filled} null {LOOKBACK_DAYS} set to {DEFAULT_LOOKBACK_DAYS}")
        typed[LOOKBACK_DAYS] = lb.fillna(DEFAULT_LOOKBACK_DAYS).astype("int64")


def _check_offers(t: CheckedTable) -> None:
    """An offer ends after it starts."""
    assert t.raw is not None
    if STARTS_AT in t.raw.columns and ENDS_AT in t.raw.columns:
        ends_early = as_mask(t.typed[ENDS_AT] <= t.typed[STARTS_AT])
        t.flag(ENDS_AT, Rule.ENDS_NOT_AFTER_STARTS, ends_early, t.raw[ENDS_AT])


def _check_experiment_columns(t: CheckedTable) -> None:
    """Experiment logging: propensity in (0, 1], a known arm, and both named together."""
    assert t.raw is not None
    if not any(c in t.raw.columns for c in (EXPERIMENT, ARM, PROPENSITY)):
        return  # files written before experiments existed stay valid
    experiment, arm, propensity = t.typed[EXPERIMENT], t.typed[ARM], t.typed[PROPENSITY]
    has_exp, has_arm, has_p = (as_mask(s.notna()) for s in (experiment, arm, propensity))
    if PROPENSITY in t.raw.columns:
        outside = has_p & ~as_mask((propensity > 0) & (propensity <= 1))
        t.flag(PROPENSITY, Rule.PROPENSITY_OUT_OF_RANGE, outside, t.raw[PROPENSITY])
    if ARM in t.raw.columns:
        known = isin_strings(arm, pd.Series(EXPERIMENT_ARMS, dtype=arm.dtype))
        t.flag(ARM, Rule.UNKNOWN_ARM, has_arm & ~known, t.raw[ARM])
    unnamed = (has_arm | has_p) & ~has_exp
    t.flag(EXPERIMENT, Rule.EXPERIMENT_NOT_NAMED, unnamed, experiment.astype(object))
    t.flag(ARM, Rule.ARM_MISSING, has_exp & ~has_arm, arm.astype(object))


def check_refs(
    tables: dict[str, CheckedTable],
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
        known = isin_strings(v, ids)  # nulls are False here; the null rule reports them
        kept = isin_strings(v, kept_ids) if parent_bad.any() else known
        c.flag(key, unknown, as_mask(v.notna()) & ~known, c.raw[key])
        c.flag(key, rejected, known & ~kept, c.raw[key])
