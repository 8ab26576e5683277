"""Transactions as the feature job reads them: checked against the data contract on the engine,
before anything is published (the build fails closed on foreign input).

Why not `load_tables`: tens of millions of transactions are scanned by the engine, never loaded
into pandas. The rules are the contract's (features/validate.py: same names, report, quarantine
file), written as engine expressions; the rows a feature sees are the typed, normalised values
of exactly those expressions, so nothing the check did not accept can reach a feature.

- txn_id, user_id, merchant_id: a string column (an int column fails the file: its ids would
  silently match no user); null or blank is `null`.
- ts: a timestamp or date column, or ISO 8601 text (naive means UTC, offsets are converted);
  else `bad_timestamp`.
- amount: a number column, or text reading as one; else `bad_float`; inf or "nan" text is
  `not_finite`; NaN in a number column is `null` (pandas cannot tell them apart).
- mcc: exactly 4 digits after explicit normalisation: surrounding whitespace is stripped, an
  integer column or an integral float (5912.0, or "5912.0" as text) becomes its digits;
  anything else (5912.5, "59a2", 59120, 742: codes are not padded) is `mcc_not_4_digits`,
  NaN or blank is `null`. So "5912 " and 5912.0 are read as 5912, a sensitive code.
- an empty file, a missing column or a column of a type that cannot hold the values fails the
  whole file in both modes. Not checked here: duplicate txn_id and users missing from users
  (a full hash pass over the ids; `offers validate` checks both).

Strict: any bad row raises ContractError naming table, row, column and rule (first rows per
rule). Quarantine: bad rows go to QDIR/transactions.parquet with their reasons, as `offers
validate --quarantine` writes them, and the job continues with the good rows. Rows are 0-based
data rows of the file (CSV line = row + 2).

Speed: a clean Parquet file costs one cheap aggregate. Parquet statistics prove ids non-null
and non-blank without reading them, and MCCs are judged per distinct value (a few hundred);
per-row flags are computed only for rules not proven clean.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import ibis
import ibis.expr.types as ir
import pandas as pd
import pyarrow.parquet as pq

from features.contract import AMOUNT, MCC, MERCHANT_ID, TRANSACTIONS, TS, TXN_ID, USER_ID
from features.io import MissingTableError, table_path
from features.validate_output import write_quarantine
from features.validate_report import (
    EXAMPLES_PER_RULE,
    ContractError,
    Rule,
    RuleSummary,
    TableCounts,
    ValidationReport,
    Violation,
    brief,
)
from features.validate_rows import RowCheck

COLUMNS = (TXN_ID, USER_ID, TS, AMOUNT, MERCHANT_ID, MCC)  # what the feature job reads
IDS = (TXN_ID, USER_ID, MERCHANT_ID)
ROW_COL = "__offers_row"
UTC_TS = "timestamp('UTC')"
_FOUR_DIGITS = r"^[0-9]{4}$"
_FLOAT_TEXT = r"^[0-9]{4}\.0+$"  # "5912.0": a code held as a float, written out as text
_N, _BAD = "__n", "__bad"


@dataclass(frozen=True)
class Flag:
    """Rows breaking one rule on one column; `expr` is never null (unknown counts as bad)."""

    column: str
    rule: Rule
    expr: ir.BooleanValue


# --------------------------------------------------------------------------- rules


def _blank(s: ir.StringValue) -> ir.BooleanValue:
    return s.isnull() | (s.strip() == "").fill_null(True)


def _timestamp(s: ir.Value) -> tuple[ir.Value, list[tuple[Rule, ir.BooleanValue]]]:
    if s.type().is_string():
        null = _blank(s)
        value = s.strip().try_cast(UTC_TS)
        return value, [(Rule.NULL, null), (Rule.BAD_TIMESTAMP, ~null & value.isnull())]
    zoned = s.type().is_timestamp() and s.type().timezone is not None
    value = s if zoned else s.cast("timestamp").cast(UTC_TS)  # naive means UTC
    return value, [(Rule.NULL, s.isnull())]


def _amount(s: ir.Value) -> tuple[ir.Value, list[tuple[Rule, ir.BooleanValue]]]:
    if s.type().is_string():
        null = _blank(s)
        value = s.strip().try_cast("float64")
        nonfinite = (value.isnan() | value.isinf()).fill_null(False)
        return value, [
            (Rule.NULL, null),
            (Rule.BAD_FLOAT, ~null & value.isnull()),
            (Rule.NOT_FINITE, nonfinite),
        ]
    value = s.cast("float64")
    null = s.isnull() | value.isnan().fill_null(False)
    return value, [(Rule.NULL, null), (Rule.NOT_FINITE, value.isinf().fill_null(False))]


def _mcc(s: ir.Value) -> tuple[ir.Value, list[tuple[Rule, ir.BooleanValue]]]:
    """The 4-digit text of an MCC held as text, integer or float; null where it has none."""
    if s.type().is_string():
        null = _blank(s)
        text = s.strip()
        value = ibis.ifelse(text.re_search(_FLOAT_TEXT), text.substr(0, 4), text)
    elif s.type().is_integer():
        null = s.isnull()
        value = s.cast("string")
    else:  # float or decimal: integral values in range only, never rounded
        f = s.cast("float64")
        null = s.isnull() | f.isnan().fill_null(False)
        whole = f.try_cast("int64")
        ok = ((f >= 0) & (f < 10_000) & (whole.cast("float64") == f)).fill_null(False)
        value = ibis.ifelse(ok, whole.cast("string"), ibis.null("string"))
    four = ((value.length() == 4) & value.re_search(_FOUR_DIGITS)).fill_null(False)
    return value, [(Rule.NULL, null), (Rule.MCC_NOT_4_DIGITS, ~null & ~four)]


def _id(s: ir.Value) -> tuple[ir.Value, list[tuple[Rule, ir.BooleanValue]]]:
    return s, [(Rule.NULL, _blank(s))]


_COLUMN_RULES: dict[str, Callable[[ir.Value], tuple[ir.Value, list]]] = {
    TXN_ID: _id,
    USER_ID: _id,
    TS: _timestamp,
    AMOUNT: _amount,
    MERCHANT_ID: _id,
    MCC: _mcc,
}


def typed_and_flags(t: ir.Table) -> tuple[dict[str, ir.Value], list[Flag]]:
    """The typed columns the job reads and every row rule, in schema order, over `t`."""
    typed, flags = {}, []
    for name in COLUMNS:
        typed[name], rules = _COLUMN_RULES[name](t[name])
        flags.extend(Flag(name, rule, expr) for rule, expr in rules)
    return typed, flags


def _column_problem(name: str, dtype: Any) -> Violation | None:
    """A column stored with a type that cannot hold its values fails the file."""
    if dtype.is_boolean():
        ok = False
    elif name in IDS:
        ok = dtype.is_string()
    elif name == TS:
        ok = dtype.is_string() or dtype.is_timestamp() or dtype.is_date()
    else:  # amount, mcc
        ok = dtype.is_string() or dtype.is_numeric()
    if ok:
        return None
    rule = {TS: Rule.BAD_TIMESTAMP, AMOUNT: Rule.BAD_FLOAT}.get(name, Rule.BAD_STRING)
    return Violation(TRANSACTIONS, None, name, rule, f"column stored as {dtype}")


# --------------------------------------------------------------------------- the scan


def _read(con: Any, path: Path) -> ir.Table:
    if path.suffix == ".parquet":
        return con.read_parquet(path)
    if con.name == "duckdb":
        return con.read_csv(path, all_varchar=True)
    return con.read_csv(path, inferSchema=False)  # Spark: every column a string too


def _file_problems(con: Any, path: Path) -> tuple[ir.Table | None, list[Violation]]:
    """The raw table, or why the file as a whole cannot be read as transactions."""

    if path.stat().st_size == 0:
        return None, [_whole(Rule.EMPTY_FILE, path.name)]
    try:
        raw = _read(con, path)
    except (duckdb.Error, OSError, ValueError) as e:
        return None, [_whole(Rule.UNREADABLE_FILE, f"{path.name}: {brief(str(e))}")]
    missing = [c for c in COLUMNS if c not in raw.columns]
    problems = [_whole(Rule.MISSING_COLUMN, "", c) for c in missing]
    schema = raw.schema()
    problems += [v for c in COLUMNS if c not in missing and (v := _column_problem(c, schema[c]))]
    return raw, problems


def _clean_by_statistics(path: Path, columns: tuple[str, ...]) -> set[str]:
    """String columns Parquet statistics prove non-null and non-blank: in every row group the
    null count is 0 and the minimum starts above ' ' (blank text would sort below it)."""
    if path.suffix != ".parquet":
        return set()
    meta = pq.read_metadata(path)
    clean = set(columns)
    for i in range(meta.num_row_groups):
        group = meta.row_group(i)
        for j in range(group.num_columns):
            col = group.column(j)
            s = col.statistics
            proven = (
                s is not None
                and s.has_null_count
                and s.null_count == 0
                and s.has_min_max
                and isinstance(s.min, str)
                and s.min[:1] > " "
            )
            if not proven:
                clean.discard(col.path_in_schema)
    return clean


def _mcc_by_value(con: Any, raw: ir.Table) -> tuple[bool, bool]:
    """(identity, clean) judged once per distinct MCC: identity when every value already is
    its 4-digit text; clean when no value breaks an MCC rule."""
    distinct = raw.group_by(MCC).aggregate(**{_N: raw.count()})
    value, rules = _mcc(distinct[MCC])
    text = raw[MCC].type().is_string()
    same = (value == distinct[MCC]).fill_null(False) if text else ibis.literal(False)
    judged = con.execute(distinct.select(same=same, **{rule.value: expr for rule, expr in rules}))
    clean = not any(judged[rule.value].any() for rule, _ in rules)
    return clean and text and bool(judged["same"].all()), clean


@dataclass
class Scan:
    """Transactions read and counted on the engine; nothing written yet."""

    con: Any
    path: Path
    raw: ir.Table
    typed: dict[str, ir.Value]
    flags: list[Flag]  # the rules that may hold on some row (the rest are proven clean)
    counts: list[int]  # rows per flag
    n_rows: int
    n_bad: int
    fresh_duckdb: Callable[[], Any]

    @property
    def good(self) -> ir.Table:
        """The typed rows the features may read: all rows, or those breaking no rule."""
        table = self.raw
        if self.n_bad:
            table = table.filter(~ibis.or_(*(f.expr for f in self.flags)))
        return table.select(**self.typed)

    def report(self, quarantine_dir: Path | None) -> ValidationReport:
        """Counts and, when rows are bad, each rule's first rows (read with row numbers)."""
        report = ValidationReport(Path(self.path).parent, quarantine_dir)
        report.counts[TRANSACTIONS] = TableCounts(self.n_rows, self.n_rows - self.n_bad, self.n_bad)
        if self.n_bad:
            report.summaries.extend(self._summaries())
        return report

    def _summaries(self) -> list[RuleSummary]:
        con, rows = _numbered(self.fresh_duckdb(), self.path)
        _, flags = typed_and_flags(rows)
        by_rule: dict[Rule, list[Violation]] = {}
        totals: dict[Rule, int] = {}
        for flag, n in zip(self.flags, self.counts, strict=True):
            if not n:
                continue
            twin = next(f for f in flags if (f.column, f.rule) == (flag.column, flag.rule))
            first = con.execute(
                rows.filter(twin.expr)
                .order_by(ROW_COL)
                .limit(EXAMPLES_PER_RULE)
                .select(ROW_COL, flag.column)
            )
            by_rule.setdefault(flag.rule, []).extend(
                Violation(TRANSACTIONS, int(r), flag.column, flag.rule, brief(v))
                for r, v in zip(first[ROW_COL], first[flag.column], strict=True)
            )
            totals[flag.rule] = totals.get(flag.rule, 0) + n
        return [
            RuleSummary(
                TRANSACTIONS,
                rule,
                totals[rule],
                tuple(sorted(found, key=lambda v: v.row or 0)[:EXAMPLES_PER_RULE]),
            )
            for rule, found in by_rule.items()
        ]

    def quarantine(self, quarantine_dir: Path) -> None:
        """QDIR/transactions.parquet: every bad row with its reasons (0 rows when none)."""
        if not self.n_bad:  # no second scan to write an empty file
            empty = pd.DataFrame({c: pd.Series([], dtype=object) for c in self.raw.columns})
            write_quarantine(TRANSACTIONS, empty, [], quarantine_dir)
            return
        con, rows = _numbered(self.fresh_duckdb(), self.path)
        _, flags = typed_and_flags(rows)
        bad = ibis.or_(*(f.expr for f in flags))
        original = [c for c in rows.columns if c != ROW_COL]
        named = {f"__flag{i}": f.expr for i, f in enumerate(flags)}
        picked = con.execute(rows.filter(bad).order_by(ROW_COL).select(*original, ROW_COL, **named))
        if len(picked) != self.n_bad:  # the engine and the row pass must agree, or stop
            raise RuntimeError(
                f"{TRANSACTIONS}: the engine counted {self.n_bad} bad rows, the quarantine "
                f"pass {len(picked)}; nothing published"
            )
        picked = picked.set_axis(picked[ROW_COL].to_numpy())
        checks = []
        for i, f in enumerate(flags):
            mask = picked[f"__flag{i}"].to_numpy(dtype=bool)
            if mask.any():
                values = picked[f.column][mask]
                checks.append(RowCheck(f.column, f.rule, values.index.to_numpy(), values))
        write_quarantine(TRANSACTIONS, picked[original], checks, quarantine_dir)


def _numbered(con: Any, path: Path) -> tuple[Any, ir.Table]:
    """The file with each row's 0-based data row, on DuckDB (insertion order kept)."""
    con.raw_sql("SET preserve_insertion_order = true")
    if path.suffix == ".parquet":
        raw = con.read_parquet(path, file_row_number=True)
        return con, raw.rename({ROW_COL: "file_row_number"})
    raw = con.read_csv(path, all_varchar=True)
    name = f"{raw.get_name()}_numbered"
    con.raw_sql(
        f'CREATE TEMP VIEW "{name}" AS '
        f'SELECT row_number() OVER () - 1 AS "{ROW_COL}", * FROM "{raw.get_name()}"'
    )
    return con, con.table(name)


def scan_transactions(con: Any, data_dir: str | Path, fresh_duckdb: Callable[[], Any]) -> Scan:
    """Read and count; raises ContractError when the file as a whole is unusable (empty,
    unreadable, a column missing or of the wrong type): no row of it can be kept or set aside."""
    try:
        path = table_path(data_dir, TRANSACTIONS)
    except MissingTableError as e:
        raise _failed(Path(data_dir), [_whole(Rule.MISSING_FILE, str(e))]) from e
    except ValueError as e:  # both transactions.parquet and .csv
        raise _failed(Path(data_dir), [_whole(Rule.AMBIGUOUS_FILE, str(e))]) from e
    raw, problems = _file_problems(con, path)
    if problems:
        raise _failed(path, problems)
    typed, flags = typed_and_flags(raw)
    proven = {(c, Rule.NULL) for c in _clean_by_statistics(path, IDS)}
    identity, mcc_clean = _mcc_by_value(con, raw)
    if mcc_clean:
        proven |= {(MCC, Rule.NULL), (MCC, Rule.MCC_NOT_4_DIGITS)}
    if identity:
        typed[MCC] = raw[MCC]
    flags = [f for f in flags if (f.column, f.rule) not in proven]
    sums = {f"__f{i}": f.expr.sum() for i, f in enumerate(flags)}
    bad = ibis.or_(*(f.expr for f in flags)) if flags else ibis.literal(False)
    got = con.execute(raw.aggregate(**{_N: raw.count(), _BAD: bad.sum()}, **sums))
    n_rows = int(got[_N].iloc[0])
    if n_rows == 0:
        raise _failed(path, [_whole(Rule.EMPTY_FILE, path.name)])
    counts = [int(got[f"__f{i}"].fillna(0).iloc[0]) for i in range(len(flags))]
    n_bad = int(got[_BAD].fillna(0).iloc[0])
    return Scan(con, path, raw, typed, flags, counts, n_rows, n_bad, fresh_duckdb)


def _whole(rule: Rule, value: str, column: str | None = None) -> Violation:
    return Violation(TRANSACTIONS, None, column, rule, value)


def _failed(where: Path, problems: list[Violation]) -> ContractError:
    report = ValidationReport(where if where.is_dir() else where.parent, None)
    report.summaries.extend(RuleSummary(TRANSACTIONS, v.rule, 1, (v,)) for v in problems)
    return ContractError(report)
