"""The data contract at the edge: one test per rule, quarantine, time zones, typed frames."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from features.contract import (
    AMOUNT,
    ARM,
    BIRTH_DATE,
    CONSENT_ID,
    CONSENTS,
    COUNTRY,
    CURRENCY,
    ENDS_AT,
    EXPERIMENT,
    EXPIRES_AT,
    EXPOSURES,
    GRANTED_AT,
    LOOKBACK_DAYS,
    MARKETING_OBJECTION_AT,
    MCC,
    MERCHANT_ID,
    OFFER_ID,
    OFFERS,
    POSITION,
    PROPENSITY,
    PURPOSES,
    REDEEMED_AT,
    REVOKED_AT,
    REWARD,
    SCHEMAS,
    SHOWN_AT,
    SLATE_ID,
    STARTS_AT,
    TABLES,
    TITLE,
    TRANSACTIONS,
    TS,
    TXN_ID,
    USER_ID,
    USERS,
    Kind,
)
from features.validate import (
    ContractError,
    Rule,
    load_tables,
    validate_dir,
)
from features.validate_output import REASON, ROW
from offers.cli import app
from offers.cli import validate as validate_cmd

Tables = dict[str, pd.DataFrame]


# --------------------------------------------------------------------------- dataset helper


def valid_tables() -> Tables:
    """A tiny valid 5-table dataset, every cell written as CSV text; tests break one thing."""
    return {
        USERS: pd.DataFrame(
            {
                USER_ID: ["u1", "u2", "u3"],
                BIRTH_DATE: ["1990-05-17", "", "2001-12-31"],
                MARKETING_OBJECTION_AT: ["", "2024-02-01T00:00:00Z", ""],
                COUNTRY: ["FR", "DE", ""],
            }
        ),
        TRANSACTIONS: pd.DataFrame(
            {
                TXN_ID: ["t1", "t2", "t3", "t4"],
                USER_ID: ["u1", "u1", "u2", "u3"],
                TS: [
                    "2024-01-05T10:00:00Z",
                    "2024-01-06 12:30:00",
                    "2024-01-07T09:00:00+01:00",
                    "2024-01-08T00:00:00Z",
                ],
                AMOUNT: ["12.50", "-3.00", "40", "7.25"],
                MERCHANT_ID: ["m1", "m2", "m1", "m3"],
                MCC: ["5411", "5812", "5411", "0742"],
                CURRENCY: ["EUR", "EUR", "", "USD"],
            }
        ),
        CONSENTS: pd.DataFrame(
            {
                CONSENT_ID: ["c1", "c2", "c3"],
                USER_ID: ["u1", "u2", "u3"],
                PURPOSES: ['["offer_ranking","analytics"]', "offer_ranking", "offer_ranking|x"],
                GRANTED_AT: ["2024-01-01T00:00:00Z", "2024-01-02T00:00:00Z", "2024-01-03"],
                EXPIRES_AT: ["2025-01-01T00:00:00Z", "", ""],
                REVOKED_AT: ["", "2024-01-02T00:00:00Z", ""],
                LOOKBACK_DAYS: ["90", "", "30.0"],
            }
        ),
        OFFERS: pd.DataFrame(
            {
                OFFER_ID: ["o1", "o2"],
                MERCHANT_ID: ["m1", "m2"],
                MCC: ["5411", "5812"],
                TITLE: ["10% off", "Free dessert"],
                STARTS_AT: ["2024-01-01T00:00:00Z", "2024-01-01T00:00:00Z"],
                ENDS_AT: ["2024-03-01T00:00:00Z", "2024-02-01T00:00:00Z"],
                REWARD: ["5.0", ""],
            }
        ),
        EXPOSURES: pd.DataFrame(
            {
                USER_ID: ["u1", "u2", "u1"],
                OFFER_ID: ["o1", "o2", "o2"],
                SHOWN_AT: ["2024-01-10T08:00:00Z", "2024-01-11T08:00:00Z", "2024-01-10T08:00:00Z"],
                SLATE_ID: ["s1", "s2", "s1"],
                POSITION: ["1", "", "2"],
                REDEEMED_AT: ["2024-01-12T08:00:00Z", "", ""],
            }
        ),
    }


def _native(table: str, df: pd.DataFrame) -> pd.DataFrame:
    """The same table with native Parquet types (timestamps, floats, ints, dates, lists)."""
    out = df.copy()
    for col in SCHEMAS[table]:
        if col.name not in out.columns:
            continue
        s = pd.Series(
            [None if pd.isna(v) or v == "" else v for v in out[col.name].astype(object)],
            dtype=object,
        )
        if col.kind == Kind.TIMESTAMP:
            out[col.name] = pd.to_datetime(s, utc=True, format="ISO8601")
        elif col.kind == Kind.FLOAT:
            out[col.name] = pd.to_numeric(s).astype("float64")
        elif col.kind == Kind.INT:
            out[col.name] = pd.to_numeric(s).astype("Int64")
        elif col.kind == Kind.DATE:
            out[col.name] = [None if v is None else dt.date.fromisoformat(v) for v in s]
        elif col.kind == Kind.STRING_LIST:
            out[col.name] = [
                None if v is None else json.loads(v) if v.startswith("[") else v.split("|")
                for v in s
            ]
        else:
            out[col.name] = s
    return out


def write(data_dir: Path, tables: Tables, fmt: str = "csv", native: bool = True) -> Path:
    """Write every table as CSV or Parquet (native types unless native=False)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    for name, df in tables.items():
        if fmt == "csv":
            df.to_csv(data_dir / f"{name}.csv", index=False)
        else:
            (_native(name, df) if native else df).to_parquet(
                data_dir / f"{name}.parquet", index=False
            )
    return data_dir


def dataset(
    tmp_path: Path, edit: Callable[[Tables], object] | None = None, fmt: str = "csv"
) -> Path:
    tables = valid_tables()
    if edit is not None:
        edit(tables)
    return write(tmp_path / "data", tables, fmt)


def run_cli(*args: str | Path):
    return CliRunner().invoke(app, ["validate", *map(str, args)])


def assert_names(text: str, table: str, row: int | None, column: str | None, rule: Rule) -> None:
    """The message names table, row, column and rule on one line."""
    where = table if row is None else f"{table} row {row}"
    col = f", column {column}" if column else ""
    assert f"{where}{col}: {rule}" in text, text


def set_cell(table: str, row: int, column: str, value: str) -> Callable[[Tables], None]:
    def edit(t: Tables) -> None:
        t[table].loc[row, column] = value

    return edit


# --------------------------------------------------------------------------- good data


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_valid_dataset_passes(tmp_path: Path, fmt: str) -> None:
    data = dataset(tmp_path, fmt=fmt)
    result = run_cli(data)
    assert result.exit_code == 0, result.output
    assert "OK" in result.output
    report = validate_dir(data)
    assert not report.failed and not report.summaries
    assert {t: (c.read, c.kept, c.rejected) for t, c in report.counts.items()} == {
        USERS: (3, 3, 0),
        TRANSACTIONS: (4, 4, 0),
        CONSENTS: (3, 3, 0),
        OFFERS: (2, 2, 0),
        EXPOSURES: (3, 3, 0),
    }


def test_plain_function_exit_codes(tmp_path: Path) -> None:
    validate_cmd(dataset(tmp_path))  # no exception: exit 0
    bad = dataset(tmp_path / "bad", set_cell(TRANSACTIONS, 0, MCC, "541"))
    with pytest.raises(typer.Exit) as exc:
        validate_cmd(bad)
    assert exc.value.exit_code == 2


# --------------------------------------------------------------------------- file-level rules


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_missing_file(tmp_path: Path, fmt: str) -> None:
    data = dataset(tmp_path, fmt=fmt)
    (data / f"{OFFERS}.{fmt}").unlink()
    result = run_cli(data)
    assert result.exit_code == 2
    assert_names(result.output, OFFERS, None, None, Rule.MISSING_FILE)
    # exposures cannot be checked against a missing offers table: said, not skipped silently
    assert "offer_id references not checked: offers is unusable" in result.output


def test_missing_file_fails_quarantine_too(tmp_path: Path) -> None:
    data = dataset(tmp_path)
    (data / f"{USERS}.csv").unlink()
    result = run_cli(data, "--quarantine", tmp_path / "q")
    assert result.exit_code == 2
    assert_names(result.output, USERS, None, None, Rule.MISSING_FILE)
    assert not (tmp_path / "q").exists()


def test_empty_csv_file_zero_bytes(tmp_path: Path) -> None:
    data = dataset(tmp_path)
    (data / f"{EXPOSURES}.csv").write_text("")
    result = run_cli(data)
    assert result.exit_code == 2
    assert_names(result.output, EXPOSURES, None, None, Rule.EMPTY_FILE)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_empty_file_header_only(tmp_path: Path, fmt: str) -> None:
    def edit(t: Tables) -> None:
        t[EXPOSURES] = t[EXPOSURES].iloc[0:0]

    result = run_cli(dataset(tmp_path, edit, fmt))
    assert result.exit_code == 2
    assert_names(result.output, EXPOSURES, None, None, Rule.EMPTY_FILE)


def test_unreadable_parquet(tmp_path: Path) -> None:
    data = dataset(tmp_path, fmt="parquet")
    (data / f"{OFFERS}.parquet").write_bytes(b"not a parquet file")
    result = run_cli(data)
    assert result.exit_code == 2
    assert_names(result.output, OFFERS, None, None, Rule.UNREADABLE_FILE)


def test_ambiguous_file(tmp_path: Path) -> None:
    data = dataset(tmp_path)
    write(data, {USERS: valid_tables()[USERS]}, "parquet")
    result = run_cli(data)
    assert result.exit_code == 2
    assert_names(result.output, USERS, None, None, Rule.AMBIGUOUS_FILE)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_missing_required_column(tmp_path: Path, fmt: str) -> None:
    def edit(t: Tables) -> None:
        t[TRANSACTIONS] = t[TRANSACTIONS].drop(columns=[AMOUNT])

    result = run_cli(dataset(tmp_path, edit, fmt))
    assert result.exit_code == 2
    assert_names(result.output, TRANSACTIONS, None, AMOUNT, Rule.MISSING_COLUMN)


def test_missing_required_column_fails_quarantine_too(tmp_path: Path) -> None:
    def edit(t: Tables) -> None:
        t[CONSENTS] = t[CONSENTS].drop(columns=[PURPOSES])

    result = run_cli(dataset(tmp_path, edit), "--quarantine", tmp_path / "q")
    assert result.exit_code == 2
    assert_names(result.output, CONSENTS, None, PURPOSES, Rule.MISSING_COLUMN)


# --------------------------------------------------------------------------- row-level rules

# (edit, table, row, column, rule, formats)
ROW_CASES: dict[str, tuple[Callable[[Tables], None], str, int, str, Rule, tuple[str, ...]]] = {
    "null_user_id": (
        set_cell(TRANSACTIONS, 1, USER_ID, ""),
        TRANSACTIONS,
        1,
        USER_ID,
        Rule.NULL,
        ("csv", "parquet"),
    ),
    "null_blank_title": (
        set_cell(OFFERS, 1, TITLE, "   "),
        OFFERS,
        1,
        TITLE,
        Rule.NULL,
        ("csv",),
    ),
    "null_granted_at": (
        set_cell(CONSENTS, 2, GRANTED_AT, ""),
        CONSENTS,
        2,
        GRANTED_AT,
        Rule.NULL,
        ("csv", "parquet"),
    ),
    "bad_timestamp_words": (
        set_cell(TRANSACTIONS, 2, TS, "yesterday"),
        TRANSACTIONS,
        2,
        TS,
        Rule.BAD_TIMESTAMP,
        ("csv",),
    ),
    "bad_timestamp_month_13": (
        set_cell(EXPOSURES, 0, SHOWN_AT, "2024-13-01T00:00:00Z"),
        EXPOSURES,
        0,
        SHOWN_AT,
        Rule.BAD_TIMESTAMP,
        ("csv",),
    ),
    "bad_timestamp_nullable_column": (
        set_cell(USERS, 1, MARKETING_OBJECTION_AT, "soon"),
        USERS,
        1,
        MARKETING_OBJECTION_AT,
        Rule.BAD_TIMESTAMP,
        ("csv",),
    ),
    "bad_date": (
        set_cell(USERS, 0, BIRTH_DATE, "17/05/1990"),
        USERS,
        0,
        BIRTH_DATE,
        Rule.BAD_DATE,
        ("csv",),
    ),
    "bad_float": (
        set_cell(TRANSACTIONS, 3, AMOUNT, "12,50"),
        TRANSACTIONS,
        3,
        AMOUNT,
        Rule.BAD_FLOAT,
        ("csv",),
    ),
    "bad_float_reward": (
        set_cell(OFFERS, 0, REWARD, "five"),
        OFFERS,
        0,
        REWARD,
        Rule.BAD_FLOAT,
        ("csv",),
    ),
    "bad_int_fraction": (
        set_cell(CONSENTS, 0, LOOKBACK_DAYS, "1.5"),
        CONSENTS,
        0,
        LOOKBACK_DAYS,
        Rule.BAD_INT,
        ("csv",),
    ),
    "bad_int_position": (
        set_cell(EXPOSURES, 2, POSITION, "second"),
        EXPOSURES,
        2,
        POSITION,
        Rule.BAD_INT,
        ("csv",),
    ),
    "bad_string_list_json": (
        set_cell(CONSENTS, 1, PURPOSES, '["offer_ranking", 3]'),
        CONSENTS,
        1,
        PURPOSES,
        Rule.BAD_STRING_LIST,
        ("csv",),
    ),
    "bad_string_list_broken_json": (
        set_cell(CONSENTS, 1, PURPOSES, '["offer_ranking"'),
        CONSENTS,
        1,
        PURPOSES,
        Rule.BAD_STRING_LIST,
        ("csv",),
    ),
    "empty_list_json": (
        set_cell(CONSENTS, 0, PURPOSES, "[]"),
        CONSENTS,
        0,
        PURPOSES,
        Rule.EMPTY_LIST,
        ("csv", "parquet"),
    ),
    "empty_list_blank_element": (
        set_cell(CONSENTS, 0, PURPOSES, "offer_ranking||analytics"),
        CONSENTS,
        0,
        PURPOSES,
        Rule.EMPTY_LIST,
        ("csv", "parquet"),
    ),
    "not_finite_amount": (
        set_cell(TRANSACTIONS, 0, AMOUNT, "inf"),
        TRANSACTIONS,
        0,
        AMOUNT,
        Rule.NOT_FINITE,
        ("csv", "parquet"),
    ),
    "not_finite_amount_nan_text": (
        set_cell(TRANSACTIONS, 2, AMOUNT, "NaN"),
        TRANSACTIONS,
        2,
        AMOUNT,
        Rule.NOT_FINITE,
        ("csv",),
    ),
    "not_finite_reward": (
        set_cell(OFFERS, 1, REWARD, "-Infinity"),
        OFFERS,
        1,
        REWARD,
        Rule.NOT_FINITE,
        ("csv", "parquet"),
    ),
    "mcc_three_digits": (
        set_cell(TRANSACTIONS, 2, MCC, "541"),
        TRANSACTIONS,
        2,
        MCC,
        Rule.MCC_NOT_4_DIGITS,
        ("csv", "parquet"),
    ),
    "mcc_letters_offers": (
        set_cell(OFFERS, 1, MCC, "58a2"),
        OFFERS,
        1,
        MCC,
        Rule.MCC_NOT_4_DIGITS,
        ("csv", "parquet"),
    ),
    "mcc_five_digits": (
        set_cell(TRANSACTIONS, 0, MCC, "54110"),
        TRANSACTIONS,
        0,
        MCC,
        Rule.MCC_NOT_4_DIGITS,
        ("csv",),
    ),
    "lookback_zero": (
        set_cell(CONSENTS, 2, LOOKBACK_DAYS, "0"),
        CONSENTS,
        2,
        LOOKBACK_DAYS,
        Rule.LOOKBACK_DAYS_NOT_POSITIVE,
        ("csv", "parquet"),
    ),
    "lookback_negative": (
        set_cell(CONSENTS, 0, LOOKBACK_DAYS, "-30"),
        CONSENTS,
        0,
        LOOKBACK_DAYS,
        Rule.LOOKBACK_DAYS_NOT_POSITIVE,
        ("csv",),
    ),
    "expires_equal_granted": (
        set_cell(CONSENTS, 0, EXPIRES_AT, "2024-01-01T01:00:00+01:00"),
        CONSENTS,
        0,
        EXPIRES_AT,
        Rule.EXPIRES_NOT_AFTER_GRANTED,
        ("csv", "parquet"),
    ),
    "expires_before_granted": (
        set_cell(CONSENTS, 1, EXPIRES_AT, "2023-12-31T00:00:00Z"),
        CONSENTS,
        1,
        EXPIRES_AT,
        Rule.EXPIRES_NOT_AFTER_GRANTED,
        ("csv",),
    ),
    "revoked_before_granted": (
        set_cell(CONSENTS, 1, REVOKED_AT, "2024-01-01T23:59:59Z"),
        CONSENTS,
        1,
        REVOKED_AT,
        Rule.REVOKED_BEFORE_GRANTED,
        ("csv", "parquet"),
    ),
    "ends_equal_starts": (
        set_cell(OFFERS, 0, ENDS_AT, "2024-01-01T00:00:00Z"),
        OFFERS,
        0,
        ENDS_AT,
        Rule.ENDS_NOT_AFTER_STARTS,
        ("csv", "parquet"),
    ),
    "ends_before_starts": (
        set_cell(OFFERS, 1, ENDS_AT, "2023-06-01"),
        OFFERS,
        1,
        ENDS_AT,
        Rule.ENDS_NOT_AFTER_STARTS,
        ("csv",),
    ),
    "unknown_user_transaction": (
        set_cell(TRANSACTIONS, 3, USER_ID, "u9"),
        TRANSACTIONS,
        3,
        USER_ID,
        Rule.UNKNOWN_USER,
        ("csv", "parquet"),
    ),
    "unknown_user_consent": (
        set_cell(CONSENTS, 1, USER_ID, "u9"),
        CONSENTS,
        1,
        USER_ID,
        Rule.UNKNOWN_USER,
        ("csv",),
    ),
    "unknown_user_exposure": (
        set_cell(EXPOSURES, 1, USER_ID, "u9"),
        EXPOSURES,
        1,
        USER_ID,
        Rule.UNKNOWN_USER,
        ("csv",),
    ),
    "user_rejected": (
        set_cell(USERS, 2, BIRTH_DATE, "2001-02-30"),
        CONSENTS,
        2,
        USER_ID,
        Rule.USER_REJECTED,
        ("csv",),
    ),
    "unknown_offer": (
        set_cell(EXPOSURES, 2, OFFER_ID, "o9"),
        EXPOSURES,
        2,
        OFFER_ID,
        Rule.UNKNOWN_OFFER,
        ("csv", "parquet"),
    ),
    "offer_rejected": (
        set_cell(OFFERS, 0, MCC, "58"),
        EXPOSURES,
        0,
        OFFER_ID,
        Rule.OFFER_REJECTED,
        ("csv",),
    ),
}


@pytest.mark.parametrize(
    ("case", "fmt"),
    [(case, fmt) for case, spec in ROW_CASES.items() for fmt in spec[-1]],
)
def test_row_rule(tmp_path: Path, case: str, fmt: str) -> None:
    edit, table, row, column, rule, _ = ROW_CASES[case]
    data = dataset(tmp_path, edit, fmt)
    result = run_cli(data)
    assert result.exit_code == 2, result.output
    assert_names(result.output, table, row, column, rule)
    report = validate_dir(data)
    summary = report.summary(table, rule)
    assert summary is not None and summary.count == 1
    assert (summary.examples[0].row, summary.examples[0].column) == (row, column)


def test_duplicate_key_names_every_row(tmp_path: Path) -> None:
    data = dataset(tmp_path, set_cell(TRANSACTIONS, 3, TXN_ID, "t2"))
    result = run_cli(data)
    assert result.exit_code == 2
    assert_names(result.output, TRANSACTIONS, 1, TXN_ID, Rule.DUPLICATE_KEY)
    assert_names(result.output, TRANSACTIONS, 3, TXN_ID, Rule.DUPLICATE_KEY)
    assert validate_dir(data).summary(TRANSACTIONS, Rule.DUPLICATE_KEY).count == 2


@pytest.mark.parametrize(
    ("table", "key"), [(USERS, USER_ID), (CONSENTS, CONSENT_ID), (OFFERS, OFFER_ID)]
)
def test_duplicate_key_other_tables(tmp_path: Path, table: str, key: str) -> None:
    data = dataset(tmp_path, set_cell(table, 1, key, valid_tables()[table].loc[0, key]), "parquet")
    result = run_cli(data)
    assert result.exit_code == 2
    assert_names(result.output, table, 0, key, Rule.DUPLICATE_KEY)
    assert_names(result.output, table, 1, key, Rule.DUPLICATE_KEY)


def test_bad_string_in_parquet(tmp_path: Path) -> None:
    """A Parquet string column stored as floats is not a string column."""
    data = dataset(tmp_path, fmt="parquet")
    df = _native(TRANSACTIONS, valid_tables()[TRANSACTIONS])
    df[MERCHANT_ID] = [1.5, 2.5, np.nan, 4.5]
    df.to_parquet(data / f"{TRANSACTIONS}.parquet", index=False)
    result = run_cli(data)
    assert result.exit_code == 2
    assert_names(result.output, TRANSACTIONS, 0, MERCHANT_ID, Rule.BAD_STRING)
    assert_names(result.output, TRANSACTIONS, 2, MERCHANT_ID, Rule.NULL)
    assert validate_dir(data).summary(TRANSACTIONS, Rule.BAD_STRING).count == 3


def test_parquet_integer_mcc_loses_leading_zero(tmp_path: Path) -> None:
    data = dataset(tmp_path, fmt="parquet")
    df = _native(TRANSACTIONS, valid_tables()[TRANSACTIONS])
    df[MCC] = df[MCC].astype("int64")  # "0742" -> 742
    df.to_parquet(data / f"{TRANSACTIONS}.parquet", index=False)
    result = run_cli(data)
    assert result.exit_code == 2
    assert_names(result.output, TRANSACTIONS, 3, MCC, Rule.MCC_NOT_4_DIGITS)
    assert "(value 742)" in result.output or "(value '742')" in result.output


def test_report_shows_first_five_rows_and_total(tmp_path: Path) -> None:
    def edit(t: Tables) -> None:
        n = 12
        t[TRANSACTIONS] = pd.DataFrame(
            {
                TXN_ID: [f"t{i}" for i in range(n)],
                USER_ID: ["u1"] * n,
                TS: ["2024-01-05T10:00:00Z"] * n,
                AMOUNT: ["1.0"] * n,
                MERCHANT_ID: ["m1"] * n,
                MCC: ["5411", "54"] * (n // 2),
            }
        )

    data = dataset(tmp_path, edit)
    report = validate_dir(data)
    summary = report.summary(TRANSACTIONS, Rule.MCC_NOT_4_DIGITS)
    assert summary.count == 6
    assert [v.row for v in summary.examples] == [1, 3, 5, 7, 9]
    text = report.format()
    assert "transactions / mcc_not_4_digits: 6" in text
    assert "... and 1 more" in text
    assert "transactions row 11" not in text


def test_several_rules_reported_together(tmp_path: Path) -> None:
    def edit(t: Tables) -> None:
        t[TRANSACTIONS].loc[0, AMOUNT] = "abc"
        t[USERS].loc[1, BIRTH_DATE] = "never"
        t[OFFERS].loc[0, ENDS_AT] = "2023-01-01T00:00:00Z"

    report = validate_dir(dataset(tmp_path, edit))
    assert report.failed
    text = report.format()
    assert_names(text, TRANSACTIONS, 0, AMOUNT, Rule.BAD_FLOAT)
    assert_names(text, USERS, 1, BIRTH_DATE, Rule.BAD_DATE)
    assert_names(text, OFFERS, 0, ENDS_AT, Rule.ENDS_NOT_AFTER_STARTS)
    # consequences are reported too: u2's rows and o1's exposure
    assert_names(text, TRANSACTIONS, 2, USER_ID, Rule.USER_REJECTED)
    assert_names(text, EXPOSURES, 0, OFFER_ID, Rule.OFFER_REJECTED)


def test_load_tables_strict_raises_with_report(tmp_path: Path) -> None:
    data = dataset(tmp_path, set_cell(TRANSACTIONS, 1, MCC, "12345"))
    with pytest.raises(ContractError) as exc:
        load_tables(data)
    assert "transactions row 1, column mcc: mcc_not_4_digits (value '12345')" in str(exc.value)
    assert exc.value.report.failed


# --------------------------------------------------------------------------- quarantine


def test_quarantine_keeps_good_rows_and_writes_reasons(tmp_path: Path) -> None:
    def edit(t: Tables) -> None:
        t[USERS].loc[2, BIRTH_DATE] = "31/12/2001"  # u3 rejected -> its txn t4, consent c3
        t[TRANSACTIONS].loc[1, MCC] = "58"  # t2: two reasons
        t[TRANSACTIONS].loc[1, AMOUNT] = "inf"
        t[TRANSACTIONS].loc[2, USER_ID] = "u9"  # t3 unknown user
        t[OFFERS].loc[1, ENDS_AT] = "2023-01-01T00:00:00Z"  # o2 rejected -> exposures 1, 2

    data = dataset(tmp_path, edit)
    qdir = tmp_path / "q"
    result = run_cli(data, "--quarantine", qdir)
    assert result.exit_code == 0, result.output
    report = validate_dir(data, qdir)
    assert not report.failed
    assert {t: (c.read, c.kept, c.rejected) for t, c in report.counts.items()} == {
        USERS: (3, 2, 1),
        TRANSACTIONS: (4, 1, 3),
        CONSENTS: (3, 2, 1),
        OFFERS: (2, 1, 1),
        EXPOSURES: (3, 1, 2),
    }
    assert "quarantine" in result.output and "4" in result.output

    q = {t: pd.read_parquet(qdir / f"{t}.parquet") for t in TABLES}
    assert q[USERS][USER_ID].tolist() == ["u3"]
    assert q[USERS][REASON].tolist() == ["bad_date: birth_date='31/12/2001'"]
    assert q[TRANSACTIONS][ROW].tolist() == [1, 2, 3]
    assert q[TRANSACTIONS][REASON].tolist() == [
        "not_finite: amount='inf'; mcc_not_4_digits: mcc='58'",
        "unknown_user: user_id='u9'",
        "user_rejected: user_id='u3'",
    ]
    assert q[TRANSACTIONS][MCC].tolist() == ["58", "5411", "0742"]
    assert q[CONSENTS][CONSENT_ID].tolist() == ["c3"]
    assert q[CONSENTS][REASON].tolist() == ["user_rejected: user_id='u3'"]
    assert q[OFFERS][REASON].tolist() == ["ends_not_after_starts: ends_at='2023-01-01T00:00:00Z'"]
    assert q[EXPOSURES][ROW].tolist() == [1, 2]
    assert q[EXPOSURES][REASON].tolist() == ["offer_rejected: offer_id='o2'"] * 2
    # original columns as text, plus row and reason
    assert list(q[TRANSACTIONS].columns) == [*valid_tables()[TRANSACTIONS].columns, ROW, REASON]

    frames = load_tables(data, qdir)
    assert frames[USERS][USER_ID].tolist() == ["u1", "u2"]
    assert frames[TRANSACTIONS][TXN_ID].tolist() == ["t1"]
    assert frames[CONSENTS][CONSENT_ID].tolist() == ["c1", "c2"]
    assert frames[OFFERS][OFFER_ID].tolist() == ["o1"]
    assert frames[EXPOSURES][[USER_ID, OFFER_ID]].values.tolist() == [["u1", "o1"]]
    for t in TABLES:  # nothing dropped without a count
        assert len(frames[t]) + len(q[t]) == report.counts[t].read


def test_quarantine_parquet_lists_as_json_and_empty_files(tmp_path: Path) -> None:
    data = dataset(tmp_path, set_cell(CONSENTS, 0, PURPOSES, "[]"), "parquet")
    qdir = tmp_path / "q"
    report = validate_dir(data, qdir)
    assert not report.failed
    q = pd.read_parquet(qdir / f"{CONSENTS}.parquet")
    assert q[PURPOSES].tolist() == ["[]"]
    assert q[REASON].tolist() == ["empty_list: purposes=[]"]
    assert q[GRANTED_AT].tolist() == ["2024-01-01T00:00:00+00:00"]
    # every table gets a file, even with nothing rejected, so stale files never linger
    assert len(pd.read_parquet(qdir / f"{TRANSACTIONS}.parquet")) == 0


# --------------------------------------------------------------------------- time zones


def test_mixed_time_zones_normalised_to_utc(tmp_path: Path) -> None:
    stamps = [
        "2024-03-31T01:30:00+02:00",  # offset
        "2024-03-31 00:00:00Z",  # Z
        "2024-03-30T23:59:59.5",  # naive means UTC
        "2024-03-31T05:00:00-05:00",  # negative offset
        "2024-03-31",  # date only: midnight UTC
    ]

    def edit(t: Tables) -> None:
        n = len(stamps)
        t[TRANSACTIONS] = pd.DataFrame(
            {
                TXN_ID: [f"t{i}" for i in range(n)],
                USER_ID: ["u1"] * n,
                TS: stamps,
                AMOUNT: ["1"] * n,
                MERCHANT_ID: ["m1"] * n,
                MCC: ["5411"] * n,
            }
        )

    ts = load_tables(dataset(tmp_path, edit))[TRANSACTIONS][TS]
    assert str(ts.dtype) == "datetime64[us, UTC]"
    assert ts.tolist() == [
        pd.Timestamp("2024-03-30T23:30:00", tz="UTC"),
        pd.Timestamp("2024-03-31T00:00:00", tz="UTC"),
        pd.Timestamp("2024-03-30T23:59:59.500000", tz="UTC"),
        pd.Timestamp("2024-03-31T10:00:00", tz="UTC"),
        pd.Timestamp("2024-03-31T00:00:00", tz="UTC"),
    ]


@pytest.mark.parametrize(
    ("stamps", "expected"),
    [
        (  # all zoned: one Arrow cast
            ["2024-03-31T01:30:00+02:00", "2024-03-31T05:00:00-05:00", "2024-03-31T07:00:00Z"],
            ["2024-03-30T23:30:00", "2024-03-31T10:00:00", "2024-03-31T07:00:00"],
        ),
        (  # all naive: UTC
            ["2024-03-31T01:30:00", "2024-03-31 05:00:00.25", "2024-03-31"],
            ["2024-03-31T01:30:00", "2024-03-31T05:00:00.25", "2024-03-31T00:00:00"],
        ),
        (  # blanks around a value are tolerated, blank cells are null
            [" 2024-03-31T01:30:00+02:00 ", "2024-03-31T07:00:00Z", "  "],
            ["2024-03-30T23:30:00", "2024-03-31T07:00:00", None],
        ),
    ],
    ids=["zoned", "naive", "blanks"],
)
def test_uniform_zones_normalised_to_utc(
    tmp_path: Path, stamps: list[str], expected: list[str | None]
) -> None:
    def edit(t: Tables) -> None:
        t[EXPOSURES][REDEEMED_AT] = stamps

    redeemed = load_tables(dataset(tmp_path, edit))[EXPOSURES][REDEEMED_AT]
    assert str(redeemed.dtype) == "datetime64[us, UTC]"
    assert redeemed.tolist() == [
        pd.NaT if e is None else pd.Timestamp(e, tz="UTC") for e in expected
    ]


def test_numbers_with_blanks_and_huge_ints(tmp_path: Path) -> None:
    def edit(t: Tables) -> None:
        t[TRANSACTIONS].loc[0, AMOUNT] = " 12.5 "
        t[CONSENTS].loc[0, LOOKBACK_DAYS] = "1e30"

    data = dataset(tmp_path, edit)
    report = validate_dir(data)
    assert report.summary(TRANSACTIONS, Rule.BAD_FLOAT) is None
    assert_names(report.format(), CONSENTS, 0, LOOKBACK_DAYS, Rule.BAD_INT)


def test_parquet_nan_amount_is_null(tmp_path: Path) -> None:
    data = dataset(tmp_path, fmt="parquet")
    df = _native(TRANSACTIONS, valid_tables()[TRANSACTIONS])
    df[AMOUNT] = [1.0, np.nan, np.inf, 2.0]
    df.to_parquet(data / f"{TRANSACTIONS}.parquet", index=False)
    result = run_cli(data)
    assert result.exit_code == 2
    assert_names(result.output, TRANSACTIONS, 1, AMOUNT, Rule.NULL)
    assert_names(result.output, TRANSACTIONS, 2, AMOUNT, Rule.NOT_FINITE)


def test_parquet_zoned_and_naive_timestamps_normalised(tmp_path: Path) -> None:
    data = dataset(tmp_path, fmt="parquet")
    df = _native(OFFERS, valid_tables()[OFFERS])
    df[STARTS_AT] = pd.to_datetime(["2024-01-01 09:00", "2024-01-01 09:00"]).tz_localize(
        "Europe/Paris"
    )
    df[ENDS_AT] = pd.to_datetime(["2024-03-01 00:00", "2024-02-01 00:00"])  # naive, ns
    df.to_parquet(data / f"{OFFERS}.parquet", index=False)
    offers = load_tables(data)[OFFERS]
    assert str(offers[STARTS_AT].dtype) == str(offers[ENDS_AT].dtype) == "datetime64[us, UTC]"
    assert offers[STARTS_AT].tolist() == [pd.Timestamp("2024-01-01T08:00:00", tz="UTC")] * 2
    assert offers[ENDS_AT].iloc[1] == pd.Timestamp("2024-02-01T00:00:00", tz="UTC")


def test_consent_order_compared_after_normalisation(tmp_path: Path) -> None:
    """10:00+02:00 is 08:00Z: a revocation at 09:00Z is after the grant, not before."""

    def edit(t: Tables) -> None:
        t[CONSENTS].loc[1, GRANTED_AT] = "2024-01-02T10:00:00+02:00"
        t[CONSENTS].loc[1, REVOKED_AT] = "2024-01-02T09:00:00"

    assert not validate_dir(dataset(tmp_path, edit)).failed


# --------------------------------------------------------------------------- typed frames


EXPECTED_DTYPES = {
    TRANSACTIONS: {
        TXN_ID: "str",
        USER_ID: "str",
        TS: "datetime64[us, UTC]",
        AMOUNT: "float64",
        MERCHANT_ID: "str",
        MCC: "str",
        CURRENCY: "str",
    },
    USERS: {
        USER_ID: "str",
        BIRTH_DATE: "object",
        MARKETING_OBJECTION_AT: "datetime64[us, UTC]",
        COUNTRY: "str",
    },
    CONSENTS: {
        CONSENT_ID: "str",
        USER_ID: "str",
        PURPOSES: "object",
        GRANTED_AT: "datetime64[us, UTC]",
        EXPIRES_AT: "datetime64[us, UTC]",
        REVOKED_AT: "datetime64[us, UTC]",
        LOOKBACK_DAYS: "int64",
    },
    OFFERS: {
        OFFER_ID: "str",
        MERCHANT_ID: "str",
        MCC: "str",
        TITLE: "str",
        STARTS_AT: "datetime64[us, UTC]",
        ENDS_AT: "datetime64[us, UTC]",
        REWARD: "float64",
    },
    EXPOSURES: {
        USER_ID: "str",
        OFFER_ID: "str",
        SHOWN_AT: "datetime64[us, UTC]",
        SLATE_ID: "str",
        POSITION: "Int64",
        REDEEMED_AT: "datetime64[us, UTC]",
        EXPERIMENT: "str",  # optional experiment columns (absent here: all null)
        ARM: "str",
        PROPENSITY: "float64",
    },
}


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_good_dataset_loads_with_contract_dtypes(tmp_path: Path, fmt: str) -> None:
    frames = load_tables(dataset(tmp_path, fmt=fmt))
    assert set(frames) == set(TABLES)
    for table, expected in EXPECTED_DTYPES.items():
        df = frames[table]
        assert {c: str(d) for c, d in df.dtypes.items()} == expected, table
        assert isinstance(df.index, pd.RangeIndex)

    users = frames[USERS]
    assert users[BIRTH_DATE].tolist() == [dt.date(1990, 5, 17), None, dt.date(2001, 12, 31)]
    assert users[COUNTRY].isna().tolist() == [False, False, True]
    consents = frames[CONSENTS]
    assert consents[PURPOSES].tolist() == [
        ["offer_ranking", "analytics"],
        ["offer_ranking"],
        ["offer_ranking", "x"],
    ]
    assert all(type(p) is list for p in consents[PURPOSES])
    assert consents[LOOKBACK_DAYS].tolist() == [90, 365, 30]
    assert consents[GRANTED_AT].iloc[2] == pd.Timestamp("2024-01-03", tz="UTC")
    assert consents[EXPIRES_AT].isna().tolist() == [False, True, True]
    assert frames[EXPOSURES][POSITION].tolist() == [1, pd.NA, 2]
    assert frames[TRANSACTIONS][AMOUNT].tolist() == [12.5, -3.0, 40.0, 7.25]
    assert frames[TRANSACTIONS][MCC].tolist() == ["5411", "5812", "5411", "0742"]
    assert frames[TRANSACTIONS][TS].iloc[2] == pd.Timestamp("2024-01-07T08:00:00", tz="UTC")
    assert np.isnan(frames[OFFERS][REWARD].iloc[1])


def test_absent_optional_columns_are_added_as_null(tmp_path: Path) -> None:
    def edit(t: Tables) -> None:
        t[TRANSACTIONS] = t[TRANSACTIONS].drop(columns=[CURRENCY])
        t[USERS] = t[USERS].drop(columns=[COUNTRY])
        t[CONSENTS] = t[CONSENTS].drop(columns=[LOOKBACK_DAYS])
        t[OFFERS] = t[OFFERS].drop(columns=[REWARD])
        t[EXPOSURES] = t[EXPOSURES].drop(columns=[SLATE_ID, POSITION])
        t[EXPOSURES]["extra"] = ["a", "b", "c"]

    data = dataset(tmp_path, edit)
    report = validate_dir(data)
    assert not report.failed
    assert "exposures: columns outside the contract ignored: extra" in report.format()
    frames = load_tables(data)
    for table, expected in EXPECTED_DTYPES.items():
        assert {c: str(d) for c, d in frames[table].dtypes.items()} == expected, table
    assert frames[TRANSACTIONS][CURRENCY].isna().all()
    assert frames[CONSENTS][LOOKBACK_DAYS].tolist() == [365, 365, 365]
    assert frames[OFFERS][REWARD].isna().all()
    assert frames[EXPOSURES][POSITION].isna().all()


def test_revoked_at_equal_to_granted_is_allowed(tmp_path: Path) -> None:
    """Boundary: revoked_at >= granted_at holds at equality (c2 in the base dataset)."""
    report = validate_dir(dataset(tmp_path))
    assert report.summary(CONSENTS, Rule.REVOKED_BEFORE_GRANTED) is None
