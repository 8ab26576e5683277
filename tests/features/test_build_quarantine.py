"""`offers features build --quarantine QDIR`: bad rows go aside with their reasons, worded and
laid out as `offers validate --quarantine` writes them, and nothing foreign reaches a feature."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from input_world import build, current, run_build, txns, typed, write_world

from features.contract import AMOUNT, CONSENTS, MCC, TRANSACTIONS, TS, USER_ID, USERS
from features.validate import check_tables
from features.validate_output import REASON, ROW

BAD_ROWS = [  # user, ts, amount, merchant, mcc: each breaks one rule
    ("a", "2024-06-03T10:00:00Z", "abc", "m1", "5411"),
    ("b", "2024-06-04T10:00:00Z", "9.0", "m2", "59a2"),
    ("a", "yesterday", "5.0", "m1", "5411"),
    ("", "2024-06-05T10:00:00Z", "5.0", "m1", "5411"),
    ("b", "2024-06-06T10:00:00Z", "nan", "m2", "5812.5"),
]
REASONS = [
    "bad_float: amount='abc'",
    "mcc_not_4_digits: mcc='59a2'",
    "bad_timestamp: ts='yesterday'",
    "null: user_id=null",
    "not_finite: amount='nan'; mcc_not_4_digits: mcc='5812.5'",
]


def _mixed() -> pd.DataFrame:
    """The clean world with the bad rows interleaved (rows 1, 3, 5, 7, 9 of the file)."""
    good, bad = txns(), txns(BAD_ROWS, first_id=100)
    parts = [frame for pair in zip(good.iloc, bad.iloc, strict=True) for frame in pair]
    return pd.DataFrame(parts).reset_index(drop=True)


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("clean")
    return build(write_world(root / "data", txns()), root / "home")


def test_quarantine_sets_bad_rows_aside_and_builds_from_the_rest(tmp_path: Path, clean) -> None:
    home, qdir = tmp_path / "home", tmp_path / "q"
    data = write_world(tmp_path / "data", _mixed())
    result = run_build(home, data, "--quarantine", qdir)
    assert result.exit_code == 0, result.output
    assert "quarantined rows per table" in result.output

    q = pd.read_parquet(qdir / f"{TRANSACTIONS}.parquet")
    assert q[ROW].tolist() == [1, 3, 5, 7, 9]
    assert q[REASON].tolist() == REASONS
    assert list(q.columns) == [*txns().columns, ROW, REASON]  # original columns as text
    assert q[AMOUNT].tolist() == ["abc", "9.0", "5.0", "5.0", "nan"]
    for table in (USERS, CONSENTS):  # every table read gets its file, 0 rows when clean
        assert len(pd.read_parquet(qdir / f"{table}.parquet")) == 0

    from features.snapshot import read_manifest

    manifest = read_manifest(home / "features")
    assert manifest["content_hash"] == clean["content_hash"]  # a quarantined row changes nothing
    assert manifest["input_check"]["mode"] == "quarantine"
    assert manifest["input_check"]["tables"][TRANSACTIONS] == {
        "read": 10,
        "kept": 5,
        "rejected": 5,
    }
    assert manifest["input_check"]["rejected_by_rule"] == {
        "transactions/null": 1,
        "transactions/bad_timestamp": 1,
        "transactions/bad_float": 1,
        "transactions/not_finite": 1,
        "transactions/mcc_not_4_digits": 2,
    }
    assert manifest["transactions_read"] == 5  # nothing dropped without a count


def test_reasons_are_worded_as_validate_words_them(tmp_path: Path) -> None:
    data = write_world(tmp_path / "data", _mixed())
    run_build(tmp_path / "home", data, "--quarantine", tmp_path / "q")
    report, _ = check_tables(data, tmp_path / "vq", (TRANSACTIONS, USERS, CONSENTS))
    assert not report.failed
    ours = pd.read_parquet(tmp_path / "q" / f"{TRANSACTIONS}.parquet")
    theirs = pd.read_parquet(tmp_path / "vq" / f"{TRANSACTIONS}.parquet")
    # validate also rejects row 7 for its unknown (blank) user; the rest is word for word
    theirs = theirs[theirs[ROW] != 7].reset_index(drop=True)
    pd.testing.assert_frame_equal(ours[ours[ROW] != 7].reset_index(drop=True), theirs)


def test_strict_build_refuses_what_quarantine_would_set_aside(tmp_path: Path) -> None:
    home = tmp_path / "home"
    result = run_build(home, write_world(tmp_path / "data", _mixed()))
    assert result.exit_code == 2
    assert "transactions row 1, column amount: bad_float (value 'abc')" in result.output
    assert "transactions row 7, column user_id: null (value null)" in result.output
    assert current(home) is None and not (tmp_path / "q").exists()


def test_a_column_of_the_wrong_type_cannot_be_quarantined(tmp_path: Path) -> None:
    frame = typed(txns())
    frame[USER_ID] = np.arange(len(frame), dtype="int64")
    data = write_world(tmp_path / "data", frame, "parquet")
    result = run_build(tmp_path / "home", data, "--quarantine", tmp_path / "q")
    assert result.exit_code == 2
    assert "transactions, column user_id: bad_string" in result.output
    assert not (tmp_path / "q").exists()  # nothing written


# --------------------------------------------------------------------------- metamorphic

SENSITIVE_EXTRA = [  # (user, ts, amount, merchant): rows at sensitive merchants
    ("a", "2024-06-20T10:00:00Z", "55.0", "m3"),
    ("b", "2024-06-21T11:00:00Z", "12.0", "m9"),
    ("b", "2024-04-02T08:00:00Z", "3.5", "m3"),
]


@pytest.mark.parametrize(
    ("stored", "fmt"),
    [("5912.0", "parquet float"), (" 5912", "csv"), ("5912", "parquet int"), ("5921 ", "csv")],
)
def test_adding_sensitive_rows_in_any_form_changes_no_feature(
    tmp_path: Path, stored: str, fmt: str
) -> None:
    def world(frame: pd.DataFrame, name: str) -> dict:
        if fmt == "csv":
            data = write_world(tmp_path / name, frame)
        else:
            data = write_world(tmp_path / name, typed(frame, mcc=fmt.split()[1]), "parquet")
        return build(data, tmp_path / f"home-{name}")

    base = world(txns(), "base")
    extra = txns([(*r, stored) for r in SENSITIVE_EXTRA], first_id=100)
    more = world(pd.concat([txns(), extra], ignore_index=True), "more")
    assert more["content_hash"] == base["content_hash"]
    sensitive = more["exclusions_by_rule"]["sensitive_mcc"]
    assert sensitive == base["exclusions_by_rule"]["sensitive_mcc"] + len(SENSITIVE_EXTRA)


@pytest.mark.parametrize("bad", range(len(BAD_ROWS)))
def test_a_quarantined_row_changes_nothing(tmp_path: Path, clean: dict, bad: int) -> None:
    frame = pd.concat([txns(), txns([BAD_ROWS[bad]], first_id=100)], ignore_index=True)
    data = write_world(tmp_path / "data", frame)
    manifest = build(data, tmp_path / "home", quarantine_dir=tmp_path / "q")
    assert manifest["content_hash"] == clean["content_hash"]
    assert manifest["input_check"]["tables"][TRANSACTIONS]["rejected"] == 1
    q = pd.read_parquet(tmp_path / "q" / f"{TRANSACTIONS}.parquet")
    assert q[REASON].tolist() == [REASONS[bad]]


def test_quarantine_on_parquet_names_typed_values(tmp_path: Path, clean: dict) -> None:
    frame = typed(txns(), mcc="float")
    frame.loc[len(frame)] = ["t9", "a", pd.Timestamp("2024-06-09", tz="UTC"), 1.0, "m1", 5411.5]
    frame.loc[len(frame)] = ["t8", "b", pd.NaT, 2.0, "m1", 5411.0]
    data = write_world(tmp_path / "data", frame, "parquet")
    manifest = build(data, tmp_path / "home", quarantine_dir=tmp_path / "q")
    assert manifest["content_hash"] == clean["content_hash"]
    q = pd.read_parquet(tmp_path / "q" / f"{TRANSACTIONS}.parquet")
    assert q[REASON].tolist() == ["mcc_not_4_digits: mcc=5411.5", "null: ts=null"]
    assert q[MCC].tolist() == ["5411.5", "5411.0"] and q[TS].isna().tolist() == [False, True]


def test_quarantine_of_clean_input_writes_empty_files(tmp_path: Path, clean: dict) -> None:
    data = write_world(tmp_path / "data", txns())
    manifest = build(data, tmp_path / "home", quarantine_dir=tmp_path / "q")
    assert manifest["content_hash"] == clean["content_hash"]
    q = pd.read_parquet(tmp_path / "q" / f"{TRANSACTIONS}.parquet")
    assert len(q) == 0 and list(q.columns) == [*txns().columns, ROW, REASON]
