"""Erasure (GDPR art. 17(1)(b), 7(3)): a user's rows leave every store under OFFERS_HOME.

Order matters: the erasure is recorded first (fsynced), so that from that instant every feature
job, training run and Scorer treats the user as withdrawn (CONSENT_REVOKED) even if a later step
fails; then rows are removed from every feature snapshot and from any cached table under
OFFERS_HOME; last, a tombstone goes to the audit log, which is the one store that keeps the
user id (with the time and what was erased, nothing else). The source tables in DATA_DIR are the
bank's system of record and are not touched here; running servers drop their in-memory copy on
`POST /v1/reload`.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.compute as pc
import pyarrow.parquet as pq

from features.contract import USER_ID
from features.erasures import record_erasure
from features.job import erase_user
from policy import policy_version
from serving.audit import EVENT, EVENT_ERASURE, AuditLog, new_request_id

# OFFERS_HOME folders that the cache scan leaves alone, and why.
AUDIT_DIR = "audit"  # keeps the tombstone: compliance record
ERASURES_DIR = "erasures"  # the register itself: ids and times only
FEATURES_DIR = "features"  # handled by features.job.erase_user (manifests updated too)
MLFLOW_ARTIFACTS = "mlartifacts"  # digests, metrics, synthetic examples: no customer rows
SKIPPED_DIRS = (AUDIT_DIR, ERASURES_DIR, FEATURES_DIR, MLFLOW_ARTIFACTS)
TABLE_SUFFIXES = (".parquet", ".csv")


@dataclass(frozen=True)
class StoreReceipt:
    store: str
    location: str
    rows_removed: int | None  # None: nothing to count (see note)
    note: str = ""


@dataclass(frozen=True)
class Receipt:
    user_id: str
    erased_at: datetime
    tombstone_id: str
    stores: list[StoreReceipt] = field(default_factory=list)

    @property
    def rows_removed(self) -> int:
        return sum(s.rows_removed or 0 for s in self.stores)

    def to_dict(self) -> dict[str, Any]:
        return {
            "user_id": self.user_id,
            "erased_at": self.erased_at.isoformat(),
            "tombstone_id": self.tombstone_id,
            "rows_removed": self.rows_removed,
            "stores": [asdict(s) for s in self.stores],
        }


def _erase_parquet(path: Path, user_id: str) -> int:
    schema = pq.read_schema(path)
    if USER_ID not in schema.names:
        return 0
    ids = pq.read_table(path, columns=[USER_ID]).column(USER_ID).cast("string")
    mine = int(pc.sum(pc.equal(ids, user_id)).as_py() or 0)
    if mine:
        table = pq.read_table(path)
        keep = pc.invert(
            pc.fill_null(pc.equal(table.column(USER_ID).cast("string"), user_id), False)
        )
        _replace(path, lambda tmp: pq.write_table(table.filter(keep), tmp))
    return mine


def _erase_csv(path: Path, user_id: str) -> int:
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    if USER_ID not in frame.columns:
        return 0
    mine = frame[USER_ID] == user_id
    if mine.any():
        _replace(path, lambda tmp: frame.loc[~mine].to_csv(tmp, index=False))
    return int(mine.sum())


def _replace(path: Path, write: Any) -> None:
    """Write aside, fsync, rename: a reader sees the old file or the new one."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp{path.suffix}")
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def cached_tables(home: Path, exclude: tuple[Path, ...] = ()) -> list[Path]:
    """Parquet and CSV files under OFFERS_HOME outside the skipped folders and `exclude`."""
    skipped = tuple(home / d for d in SKIPPED_DIRS) + tuple(p.resolve() for p in exclude)
    found = []
    for path in sorted(home.rglob("*")):
        if path.suffix not in TABLE_SUFFIXES or not path.is_file() or path.name.startswith("."):
            continue
        resolved = path.resolve()
        if any(resolved.is_relative_to(s.resolve()) for s in skipped):
            continue
        found.append(path)
    return found


def erase(
    home: str | Path,
    data_dir: str | Path | None,
    user_id: str,
    at: datetime | None = None,
    audit: AuditLog | None = None,
) -> Receipt:
    """Record the erasure, remove the user's rows everywhere under OFFERS_HOME, tombstone it."""
    if not user_id:
        raise ValueError("erase: empty user id")
    home = Path(home).resolve()
    erased_at = record_erasure(home / ERASURES_DIR, user_id, at)
    stores: list[StoreReceipt] = [
        StoreReceipt("erasure register", str(home / ERASURES_DIR), None, "erasure recorded first")
    ]
    for snapshot_id, tables in erase_user(home / FEATURES_DIR, user_id).items():
        for table, n in tables.items():
            location = str(home / FEATURES_DIR / snapshot_id / f"{table}.parquet")
            stores.append(StoreReceipt(f"feature snapshot {snapshot_id}: {table}", location, n))
    exclude = (Path(data_dir),) if data_dir is not None else ()
    for path in cached_tables(home, exclude):
        n = (
            _erase_parquet(path, user_id)
            if path.suffix == ".parquet"
            else _erase_csv(path, user_id)
        )
        stores.append(StoreReceipt("cached table", str(path.relative_to(home)), n))
    stores.append(
        StoreReceipt(
            "online copy (running servers)",
            "memory",
            None,
            "servers on this OFFERS_HOME deny CONSENT_REVOKED within OFFERS_RELOAD_WATCH_S "
            "(default 2 s; no reload or restart) and drop the user's in-memory feature rows",
        )
    )
    stores.append(
        StoreReceipt(
            "MLflow",
            str(home / MLFLOW_ARTIFACTS),
            0,
            "holds no customer rows: dataset digests, metrics and a synthetic input example",
        )
    )
    if data_dir is not None:
        stores.append(
            StoreReceipt(
                "source tables",
                str(data_dir),
                None,
                "the bank's system of record, outside OFFERS_HOME: not modified here",
            )
        )
    tombstone_id = new_request_id()
    (audit or AuditLog(home / AUDIT_DIR)).append(
        {
            EVENT: EVENT_ERASURE,
            "request_id": tombstone_id,
            "user_id": user_id,
            "erased_at": erased_at.isoformat(),
            "policy_version": policy_version(),
            "stores": [
                {"store": s.store, "rows_removed": s.rows_removed}
                for s in stores
                if s.rows_removed is not None
            ],
        }
    )
    return Receipt(user_id, erased_at, tombstone_id, stores)
