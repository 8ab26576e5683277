"""The feature build on Spark checks what it reads as the DuckDB build does: the same
normalised MCCs, the same refusals, the same quarantine file."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from input_world import build, txns, typed, write_world

from features.contract import AMOUNT, MCC, TRANSACTIONS
from features.validate import ContractError

pytestmark = [
    pytest.mark.spark,
    pytest.mark.filterwarnings("ignore:The copy keyword is deprecated"),
]


def _with_mcc(values: list[str]) -> pd.DataFrame:
    frame = txns()
    frame[MCC] = values
    return frame


@pytest.mark.parametrize(
    ("frame", "fmt"),
    [
        (typed(txns(), mcc="float"), "parquet"),
        (_with_mcc(["5411 ", " 5912", "5812.0", "5411", "5812"]), "csv"),
    ],
    ids=["parquet float", "csv blanks and float text"],
)
def test_spark_reads_foreign_mccs_as_duckdb_does(spark, tmp_path: Path, frame, fmt) -> None:
    # content hashes compare within one engine (Parquet schemas differ between the two)
    clean = build(write_world(tmp_path / "clean", txns()), tmp_path / "clean-home", engine="spark")
    data = write_world(tmp_path / "data", frame, fmt)
    manifest = build(data, tmp_path / "spark", engine="spark")
    assert manifest["content_hash"] == clean["content_hash"]
    assert manifest["exclusions_by_rule"]["sensitive_mcc"] == 1


def test_spark_refuses_and_quarantines_as_duckdb_does(spark, tmp_path: Path) -> None:
    frame = txns()
    frame.loc[2, AMOUNT] = "abc"
    frame.loc[3, MCC] = "59a2"
    data = write_world(tmp_path / "data", frame)
    with pytest.raises(ContractError) as err:
        build(data, tmp_path / "strict", engine="spark")
    assert "transactions row 2, column amount: bad_float (value 'abc')" in str(err.value)
    assert "transactions row 3, column mcc: mcc_not_4_digits (value '59a2')" in str(err.value)

    duck = build(data, tmp_path / "duck", quarantine_dir=tmp_path / "qd")
    sparky = build(data, tmp_path / "spark", engine="spark", quarantine_dir=tmp_path / "qs")
    for manifest, qdir in ((sparky, "qs"), (duck, "qd")):
        assert manifest["input_check"].pop("quarantine_dir") == str(tmp_path / qdir)
    same = ("input_check", "exclusions_by_rule", "row_counts", "transactions_used")
    assert {k: sparky[k] for k in same} == {k: duck[k] for k in same}
    assert sparky["input_check"]["tables"][TRANSACTIONS]["rejected"] == 2
    pd.testing.assert_frame_equal(
        pd.read_parquet(tmp_path / "qs" / f"{TRANSACTIONS}.parquet"),
        pd.read_parquet(tmp_path / "qd" / f"{TRANSACTIONS}.parquet"),
    )
