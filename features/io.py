"""The only place that reads contract tables from disk (Parquet or CSV)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd

from features.contract import TABLES


class MissingTableError(FileNotFoundError):
    pass


def table_path(data_dir: str | Path, table: str) -> Path:
    """DATA_DIR/<table>.parquet, else DATA_DIR/<table>.csv; both present is ambiguous."""
    data_dir = Path(data_dir)
    candidates = [
        p for p in (data_dir / f"{table}.parquet", data_dir / f"{table}.csv") if p.exists()
    ]
    if not candidates:
        raise MissingTableError(
            f"{table}: no {table}.parquet or {table}.csv in {data_dir} (missing file)"
        )
    if len(candidates) > 1:
        raise ValueError(f"{table}: both {table}.parquet and {table}.csv in {data_dir}; keep one")
    return candidates[0]


def read_raw(data_dir: str | Path, table: str) -> pd.DataFrame:
    """As stored, untyped for CSV (every column a string), so validation sees what was written."""
    path = table_path(data_dir, table)
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])


def file_digest(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def source_digests(data_dir: str | Path, tables: tuple[str, ...] = TABLES) -> dict[str, str]:
    return {t: file_digest(table_path(data_dir, t)) for t in tables}
