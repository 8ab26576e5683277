"""The data contract's vocabulary: rules, violations and the report every check fills.

Shared by the pandas checks (features/validate*.py) and the engine scan of transactions
(features/intake.py), so both name problems and count rows the same way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

import numpy as np
import pandas as pd

EXAMPLES_PER_RULE = 5
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
    PROPENSITY_OUT_OF_RANGE = "propensity_out_of_range"
    UNKNOWN_ARM = "unknown_arm"
    EXPERIMENT_NOT_NAMED = "experiment_not_named"
    ARM_MISSING = "arm_missing"


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
    Rule.PROPENSITY_OUT_OF_RANGE: "propensity must be in (0, 1]",
    Rule.UNKNOWN_ARM: "arm must be champion, challenger or holdout",
    Rule.EXPERIMENT_NOT_NAMED: "a row with an arm or a propensity must name its experiment",
    Rule.ARM_MISSING: "a row naming an experiment must name its arm",
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


def brief(v: object) -> str:
    """A value as shown in messages: repr, cut to a few dozen characters."""
    if isinstance(v, np.ndarray):
        v = v.tolist()
    elif is_null_scalar(v):
        return "null"
    text = repr(v) if isinstance(v, str | list | tuple) else str(v)
    return text if len(text) <= _BRIEF else text[: _BRIEF - 3] + "..."


def is_null_scalar(v: object) -> bool:
    return v is None or v is pd.NA or v is pd.NaT or (isinstance(v, float) and math.isnan(v))
