"""The exposures table's optional experiment columns: validated like every column, old files valid."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.contract import ARM, EXPERIMENT, EXPOSURES, PROPENSITY
from features.validate import load_tables, validate_dir
from offers.synth import generate


@pytest.fixture(scope="module")
def tables() -> dict[str, pd.DataFrame]:
    out = generate(n_users=20, seed=3)
    out.pop("oracle")
    return out


def write(folder: Path, tables: dict[str, pd.DataFrame], exposures: pd.DataFrame) -> Path:
    folder.mkdir()
    for name, frame in {**tables, EXPOSURES: exposures}.items():
        frame.to_parquet(folder / f"{name}.parquet", index=False)
    return folder


def logged(exposures: pd.DataFrame) -> pd.DataFrame:
    out = exposures.copy()
    n = len(out)
    out[EXPERIMENT] = "exp1"
    out[ARM] = np.array(["champion", "challenger", "holdout"])[np.arange(n) % 3]
    out[PROPENSITY] = 0.5
    return out


def rules(report) -> dict[str, int]:
    return {s.rule.value: s.count for s in report.summaries if s.table == EXPOSURES}


def test_files_without_the_columns_stay_valid(tmp_path: Path, tables) -> None:
    report = validate_dir(write(tmp_path / "d", tables, tables[EXPOSURES]))
    assert not report.failed


def test_logged_columns_load_typed(tmp_path: Path, tables) -> None:
    folder = write(tmp_path / "d", tables, logged(tables[EXPOSURES]))
    frame = load_tables(folder, tables=(EXPOSURES,))[EXPOSURES]
    assert frame[PROPENSITY].dtype == np.float64 and (frame[PROPENSITY] == 0.5).all()
    assert set(frame[ARM]) == {"champion", "challenger", "holdout"}


@pytest.mark.parametrize(
    ("column", "rows", "value", "rule"),
    [
        (PROPENSITY, 2, 0.0, "propensity_out_of_range"),
        (PROPENSITY, 1, 1.5, "propensity_out_of_range"),
        (PROPENSITY, 1, -0.1, "propensity_out_of_range"),
        (ARM, 3, "treatment", "unknown_arm"),
        (EXPERIMENT, 1, None, "experiment_not_named"),
        (ARM, 2, None, "arm_missing"),
    ],
)
def test_each_rule_names_its_rows(
    tmp_path: Path, tables, column: str, rows: int, value: object, rule: str
) -> None:
    frame = logged(tables[EXPOSURES])
    frame[column] = frame[column].astype(object)
    frame.loc[: rows - 1, column] = value
    report = validate_dir(write(tmp_path / "d", tables, frame))
    assert report.failed
    assert rules(report) == {rule: rows}
    example = report.summaries[0].examples[0].format()
    assert "exposures row 0" in example and column in example
