"""A tiny world on disk for feature-build tests: two consenting users whose transactions are
mostly usable, written the ways foreign extracts hold them (CSV text, typed Parquet)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from frames import at, consents, users
from typer.testing import CliRunner

from features import contract as c
from features.job import build_snapshot
from features.snapshot import CURRENT

CUTOFF = "2024-07-01T00:00:00+00:00"
COLUMNS = [c.TXN_ID, c.USER_ID, c.TS, c.AMOUNT, c.MERCHANT_ID, c.MCC]
ROWS = [  # user, ts, amount, merchant, mcc
    ("a", "2024-06-01T10:00:00Z", "12.5", "m1", "5411"),
    ("a", "2024-06-02T10:00:00Z", "30.0", "m3", "5912"),  # sensitive: pharmacy
    ("a", "2024-06-10T08:30:00Z", "7.25", "m2", "5812"),
    ("b", "2024-05-20T09:00:00Z", "40.0", "m1", "5411"),
    ("b", "2024-06-15T18:00:00Z", "-3.0", "m2", "5812"),
]


def txns(rows: list[tuple] = ROWS, first_id: int = 0) -> pd.DataFrame:
    """Transactions as text, as a CSV holds them; txn ids numbered from first_id."""
    frame = pd.DataFrame(rows, columns=COLUMNS[1:], dtype=object)
    frame.insert(0, c.TXN_ID, [f"t{i}" for i in range(first_id, first_id + len(rows))])
    return frame


def typed(frame: pd.DataFrame, mcc: str = "str") -> pd.DataFrame:
    """The same rows with native Parquet types; mcc as 'str', 'float' or 'int'."""
    out = frame.copy()
    out[c.TS] = pd.to_datetime(out[c.TS], utc=True).astype("datetime64[us, UTC]")
    out[c.AMOUNT] = out[c.AMOUNT].astype("float64")
    out[c.MCC] = out[c.MCC].astype("float64" if mcc == "float" else mcc)
    for col in (c.TXN_ID, c.USER_ID, c.MERCHANT_ID):
        out[col] = out[col].astype(str)
    return out


def write_world(folder: Path, transactions: pd.DataFrame, fmt: str = "csv") -> Path:
    """users and consents (Parquet) plus transactions as CSV, or Parquet with their dtypes."""
    folder.mkdir(parents=True, exist_ok=True)
    users(["a", "b"]).to_parquet(folder / f"{c.USERS}.parquet", index=False)
    consents(
        [{c.USER_ID: "a", c.GRANTED_AT: "2024-01-01"}, {c.USER_ID: "b", c.GRANTED_AT: "2024-02-01"}]
    ).to_parquet(folder / f"{c.CONSENTS}.parquet", index=False)
    for stale in folder.glob(f"{c.TRANSACTIONS}.*"):
        stale.unlink()
    if fmt == "csv":
        transactions.to_csv(folder / f"{c.TRANSACTIONS}.csv", index=False)
    else:
        transactions.to_parquet(folder / f"{c.TRANSACTIONS}.parquet", index=False)
    return folder


def build(data: Path, home: Path, cutoff: str = CUTOFF, **kwargs) -> dict:
    """`build_snapshot` into home/features (erasures in home/erasures)."""
    return build_snapshot(
        data,
        home / "features",
        as_of=at(cutoff).to_pydatetime(),
        erasures_dir=home / "erasures",
        **kwargs,
    )


def run_build(home: Path, data: Path, *args: str, cutoff: str = CUTOFF):
    """`offers features build` through the CLI, OFFERS_HOME=home."""
    from offers.cli import app

    argv = ["features", "build", "--data", str(data), "--as-of", cutoff, *map(str, args)]
    return CliRunner().invoke(app, argv, env={"OFFERS_HOME": str(home)})


def current(home: Path) -> str | None:
    pointer = home / "features" / CURRENT
    return pointer.read_text().strip() if pointer.exists() else None
