"""`offers features build` checks what it reads before anything is published (fails closed).

Foreign representations of good values (an MCC held as a float, padded with blanks) are
normalised explicitly, so a sensitive code stays sensitive; anything else is refused with an
error naming table, row, column and rule, and CURRENT does not move.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from input_world import ROWS, build, current, run_build, txns, typed, write_world

from features.contract import AMOUNT, MCC, TS, USER_ID
from features.snapshot import CURRENT, load_snapshot
from features.validate import ContractError


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> dict:
    """The manifest of the world written cleanly (CSV text, canonical MCCs)."""
    root = tmp_path_factory.mktemp("clean")
    return build(write_world(root / "data", txns()), root / "home")


def _with_mcc(values: list) -> pd.DataFrame:
    frame = txns()
    frame[MCC] = pd.Series(values, dtype=object)
    return frame


# The same five MCCs (5411, 5912, 5812, 5411, 5812) as bank extracts hold them.
REPRESENTATIONS = {
    "parquet float": (typed(txns(), mcc="float"), "parquet"),
    "parquet int": (typed(txns(), mcc="int"), "parquet"),
    "csv blanks": (_with_mcc(["5411 ", " 5912", "5812\t", "5411", " 5812 "]), "csv"),
    "csv float text": (_with_mcc(["5411.0", "5912.0", "5812.00", "5411", "5812"]), "csv"),
    "parquet text with blanks": (typed(_with_mcc(["5411", "5912 ", "5812", "5411", "5812"])), "pq"),
}


@pytest.mark.parametrize("name", REPRESENTATIONS)
def test_foreign_mcc_forms_build_the_same_snapshot(tmp_path: Path, clean: dict, name: str):
    frame, fmt = REPRESENTATIONS[name]
    data = write_world(tmp_path / "data", frame, "csv" if fmt == "csv" else "parquet")
    manifest = build(data, tmp_path / "home")
    assert manifest["content_hash"] == clean["content_hash"]
    assert manifest["exclusions_by_rule"]["sensitive_mcc"] == 1  # 5912 is read as 5912
    tables, _ = load_snapshot(tmp_path / "home" / "features")
    assert sorted(tables.user_mcc[MCC].unique()) == ["5411", "5812"]
    assert sorted(tables.mcc_pop[MCC].unique()) == ["5411", "5812"]


def test_offsets_in_csv_timestamps_are_converted(tmp_path: Path, clean: dict) -> None:
    frame = txns()
    frame.loc[0, TS] = "2024-06-01T12:00:00+02:00"  # the same instant as 10:00Z
    frame.loc[3, TS] = "2024-05-20 09:00:00"  # naive means UTC
    manifest = build(write_world(tmp_path / "data", frame), tmp_path / "home")
    assert manifest["content_hash"] == clean["content_hash"]


BAD_MCC = {  # stored value -> (rule, value as the message shows it)
    "parquet 5912.5": ([5411.0, 5912.5, 5812.0, 5411.0, 5812.0], "mcc_not_4_digits", "5912.5"),
    "parquet 59120": ([5411, 59120, 5812, 5411, 5812], "mcc_not_4_digits", "59120"),
    "parquet 742 (no padding)": ([5411, 742, 5812, 5411, 5812], "mcc_not_4_digits", "742"),
    "parquet NaN": ([5411.0, np.nan, 5812.0, 5411.0, 5812.0], "null", "null"),
    "csv 59a2": (["5411", "59a2", "5812", "5411", "5812"], "mcc_not_4_digits", "'59a2'"),
    "csv 5912.5": (["5411", "5912.5", "5812", "5411", "5812"], "mcc_not_4_digits", "'5912.5'"),
    "csv blank": (["5411", "  ", "5812", "5411", "5812"], "null", "'  '"),
}


@pytest.mark.parametrize("case", BAD_MCC)
def test_bad_mcc_is_refused_naming_table_row_column_rule(tmp_path: Path, case: str) -> None:
    values, rule, shown = BAD_MCC[case]
    if case.startswith("parquet"):
        frame = typed(txns())
        frame[MCC] = pd.Series(values)
        data = write_world(tmp_path / "data", frame, "parquet")
    else:
        data = write_world(tmp_path / "data", _with_mcc(values))
    with pytest.raises(ContractError) as err:
        build(data, tmp_path / "home")
    assert f"transactions row 1, column mcc: {rule} (value {shown})" in str(err.value)
    assert not (tmp_path / "home" / "features").exists()  # nothing written at all


def _published(tmp_path: Path) -> tuple[Path, str]:
    """A home with one good snapshot published; returns (home, its id)."""
    home = tmp_path / "home"
    manifest = build(write_world(tmp_path / "good", txns()), home)
    return home, manifest["snapshot_id"]


def _refused(home: Path, data: Path, before: str):
    result = run_build(home, data)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert current(home) == before  # CURRENT unchanged
    snapshots = [p.name for p in (home / "features").iterdir() if not p.name.startswith(".")]
    assert sorted(snapshots) == sorted([before, CURRENT])  # nothing else published
    return result


def test_bad_amount_is_a_named_error_not_a_traceback(tmp_path: Path) -> None:
    home, before = _published(tmp_path)
    frame = txns()
    frame.loc[2, AMOUNT] = "abc"
    frame.loc[4, AMOUNT] = "inf"
    result = _refused(home, write_world(tmp_path / "data", frame), before)
    assert "transactions row 2, column amount: bad_float (value 'abc')" in result.output
    assert "transactions row 4, column amount: not_finite (value 'inf')" in result.output
    assert len(result.output.splitlines()) < 20


def test_int_user_id_column_is_refused(tmp_path: Path) -> None:
    home, before = _published(tmp_path)
    frame = typed(txns())
    frame[USER_ID] = np.arange(len(frame), dtype="int64")
    result = _refused(home, write_world(tmp_path / "data", frame, "parquet"), before)
    assert "transactions, column user_id: bad_string" in result.output
    assert "int64" in result.output


@pytest.mark.parametrize("how", ["header only csv", "zero-byte csv", "zero-row parquet"])
def test_empty_transactions_are_refused_in_one_line(tmp_path: Path, how: str) -> None:
    home, before = _published(tmp_path)
    data = write_world(tmp_path / "data", txns([]), "parquet" if "parquet" in how else "csv")
    if how == "zero-byte csv":
        (data / "transactions.csv").write_bytes(b"")
    if how == "zero-row parquet":
        typed(txns()).iloc[:0].to_parquet(data / "transactions.parquet", index=False)
    result = _refused(home, data, before)
    assert result.output.strip().count("\n") == 0, result.output  # one line
    assert "transactions: empty_file" in result.output


def test_all_transactions_excluded_is_refused_in_one_line(tmp_path: Path) -> None:
    home, before = _published(tmp_path)
    only_sensitive = txns([r for r in ROWS if r[4] == "5912"])
    result = _refused(home, write_world(tmp_path / "data", only_sensitive), before)
    assert result.output.strip().count("\n") == 0, result.output
    assert "0 of 1 usable" in result.output and "sensitive_mcc: 1" in result.output


def test_blank_and_null_ids_in_parquet_are_refused(tmp_path: Path) -> None:
    """Parquet statistics speed the id check up; a blank or null id must still be found."""
    frame = typed(txns())
    frame[USER_ID] = pd.Series(["a", " ", "a", None, "b"], dtype=object)
    with pytest.raises(ContractError) as err:
        build(write_world(tmp_path / "data", frame, "parquet"), tmp_path / "home")
    assert "transactions row 1, column user_id: null (value ' ')" in str(err.value)
    assert "transactions row 3, column user_id: null (value null)" in str(err.value)


def test_bad_users_and_transactions_are_reported_together(tmp_path: Path) -> None:
    frame = txns()
    frame.loc[0, TS] = "yesterday"
    data = write_world(tmp_path / "data", frame)
    users = pd.read_parquet(data / "users.parquet")
    users.loc[1, USER_ID] = None
    users.to_parquet(data / "users.parquet", index=False)
    with pytest.raises(ContractError) as err:
        build(data, tmp_path / "home")
    assert "transactions row 0, column ts: bad_timestamp (value 'yesterday')" in str(err.value)
    assert "users row 1, column user_id: null" in str(err.value)
