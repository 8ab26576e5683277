"""The MCC rule of the feature build's intake against a plain-Python reading of the contract,
and row numbers that stay exact when DuckDB reads a large CSV in parallel."""

from __future__ import annotations

import math
import re
import string
from pathlib import Path

import ibis
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from input_world import ROWS, build, txns, write_world

from features.backend import connect
from features.contract import AMOUNT, MCC
from features.intake import typed_and_flags
from features.validate import ContractError, Rule


def expected_text(v: str | None) -> str | None | Rule:
    """The contract by hand: the 4-digit code, None for null, or the rule broken."""
    if v is None or not v.strip(string.whitespace):
        return None
    t = v.strip(string.whitespace)
    return t[:4] if re.fullmatch(r"[0-9]{4}(\.0+)?", t) else Rule.MCC_NOT_4_DIGITS


def expected_number(v: float | None) -> str | None | Rule:
    if v is None or math.isnan(v):
        return None
    ok = math.isfinite(v) and v.is_integer() and 1000 <= v < 10_000
    return str(int(v)) if ok else Rule.MCC_NOT_4_DIGITS


def _judge(values: pd.Series) -> list[str | None | Rule]:
    """The intake's reading of each value, on DuckDB: its typed text or the first rule broken."""
    frame = txns([ROWS[0]] * len(values))
    frame[MCC] = values.to_numpy()
    t = ibis.memtable(frame)
    typed, flags = typed_and_flags(t)
    mcc_flags = {f.rule: f.expr for f in flags if f.column == MCC}
    got = connect(threads=1).execute(
        t.select(value=typed[MCC], **{str(r): e for r, e in mcc_flags.items()})
    )
    return [
        None
        if row[str(Rule.NULL)]
        else Rule.MCC_NOT_4_DIGITS
        if row[str(Rule.MCC_NOT_4_DIGITS)]
        else row["value"]
        for _, row in got.iterrows()
    ]


@settings(max_examples=30, deadline=None)
@given(st.lists(st.none() | st.text(alphabet="059. \t\na-+e", max_size=8), min_size=1))
def test_mcc_text_is_read_as_the_contract_says(values: list[str | None]) -> None:
    judged = _judge(pd.Series(values, dtype=object))
    assert judged == [expected_text(v) for v in values]


@settings(max_examples=30, deadline=None)
@given(
    st.lists(
        st.none()
        | st.floats(allow_nan=True, allow_infinity=True)
        | st.integers(0, 12_000).map(float)
        | st.sampled_from([5912.0, 5912.5, 999.0, 10_000.0, -5912.0, 1e300]),
        min_size=1,
    )
)
def test_mcc_floats_are_read_as_the_contract_says(values: list[float | None]) -> None:
    judged = _judge(pd.Series(values, dtype="float64"))
    assert judged == [expected_number(v) for v in values]


def test_rows_are_exact_in_a_large_csv_read_in_parallel(tmp_path: Path) -> None:
    n = 300_000
    frame = pd.concat([txns()] * (n // len(ROWS)), ignore_index=True)
    frame["txn_id"] = [f"t{i}" for i in range(n)]
    bad = [123_457, 250_001, n - 1]
    frame.loc[bad, AMOUNT] = ["x1", "x2", "x3"]
    with pytest.raises(ContractError) as err:
        build(write_world(tmp_path / "data", frame), tmp_path / "home")
    for row, value in zip(bad, ["x1", "x2", "x3"], strict=True):
        assert f"transactions row {row}, column amount: bad_float (value '{value}')" in str(
            err.value
        )
