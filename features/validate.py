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

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from features.contract import (
    CONSENTS,
    EXPOSURES,
    OFFER_ID,
    OFFERS,
    TABLES,
    TRANSACTIONS,
    USER_ID,
    USERS,
)
from features.validate_output import quarantine_table, rule_summaries, typed_frame
from features.validate_report import ContractError, Rule, TableCounts, ValidationReport
from features.validate_rows import CheckedTable, check_refs, check_rows, read_table

# Every child table's user and offer must name a kept row of its parent table.
_REFERENCES = (
    (USERS, USER_ID, (TRANSACTIONS, CONSENTS, EXPOSURES), Rule.UNKNOWN_USER, Rule.USER_REJECTED),
    (OFFERS, OFFER_ID, (EXPOSURES,), Rule.UNKNOWN_OFFER, Rule.OFFER_REJECTED),
)


def _run(
    data_dir: str | Path,
    quarantine_dir: str | Path | None,
    frames: bool,
    names: Sequence[str] = TABLES,
) -> tuple[ValidationReport, dict[str, pd.DataFrame]]:
    """Read -> check rows -> check references -> count -> quarantine -> typed frames."""
    unknown = set(names) - set(TABLES)
    if unknown:
        raise ValueError(f"unknown tables {sorted(unknown)}; the contract has {list(TABLES)}")
    data_dir = Path(data_dir)
    qdir = None if quarantine_dir is None else Path(quarantine_dir)
    report = ValidationReport(data_dir, qdir)
    tables = {name: read_table(data_dir, name) for name in TABLES if name in names}
    for t in tables.values():
        if t.raw is not None and not t.raw.empty:
            check_rows(t, report.notes)
    for parent, key, children, unknown_rule, rejected_rule in _REFERENCES:
        check_refs(tables, parent, key, children, unknown_rule, rejected_rule, report.notes)
    rejected = _count(tables, report)
    if qdir is not None and not report.failed:
        for name, t in tables.items():
            quarantine_table(t, rejected[name], qdir)
    out: dict[str, pd.DataFrame] = {}
    if frames and not report.failed:
        out = {name: typed_frame(t, ~rejected[name]) for name, t in tables.items()}
    return report, out


def _count(tables: dict[str, CheckedTable], report: ValidationReport) -> dict[str, np.ndarray]:
    """Each table's rule summaries and counts into the report; its rejected rows back."""
    rejected: dict[str, np.ndarray] = {}
    for name, t in tables.items():
        report.summaries.extend(rule_summaries(t))
        if t.raw is None:
            continue
        bad = t.rejected()
        rejected[name] = bad
        n_bad = int(bad.sum())
        report.counts[name] = TableCounts(t.n, t.n - n_bad, n_bad)
        assert report.counts[name].kept + n_bad == t.n  # nothing dropped without a count
    return rejected


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
