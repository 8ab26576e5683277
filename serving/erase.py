"""Erasure (GDPR art. 17(1)(b), 7(3)): a user's rows leave every store under OFFERS_HOME.

Order matters: the erasure is recorded first (fsynced), so that from that instant every feature
job, training run and Scorer treats the user as withdrawn (CONSENT_REVOKED) even if a later step
fails; if it cannot be recorded (a full disk), nothing is removed and `ErasureNotRecorded` says
so. Then rows are removed from every feature snapshot (manifests updated), from every other file
under OFFERS_HOME that holds rows (staging folders and temp files of killed jobs included, see
serving/sweep.py), and from the recorded `score-batch` outputs outside it; erasure's own temp
files go in `finally`. Last, a tombstone goes to the audit log, the one store that keeps the user
id (with the time and what was erased, nothing else). A step that fails (ENOSPC, say) is named
on the receipt, which is then incomplete: the user stays denied and a rerun finishes the
removal, leftovers of the crashed run included. The source tables in DATA_DIR are the bank's
system of record and are not touched; running servers drop their copy on `POST /v1/reload`.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from pyarrow import ArrowInvalid

from features.erasures import record_erasure
from features.mapped import MAPPED_DIR
from features.online.stores import OnlineStoreError, erase_in_store, registered_stores
from features.snapshot import erase_user, list_snapshots
from policy import policy_version
from serving.audit import EVENT, EVENT_ERASURE, AuditLog, AuditUnavailable, new_request_id
from serving.experiments import EXPERIMENTS_DIR
from serving.outputs import OUTPUTS_DIR, leftovers, recorded_outputs
from serving.sweep import (
    DELETED,
    ERASE_MARK,
    UNREADABLE,
    FileResult,
    is_hidden,
    is_own_temp,
    scrub_file,
)

# OFFERS_HOME entries that the sweep leaves alone, and why.
AUDIT_DIR = "audit"  # keeps the tombstone: compliance record
ERASURES_DIR = "erasures"  # the register itself: ids and times only
FEATURES_DIR = "features"  # published snapshots go through features.snapshot.erase_user first
MLFLOW_ARTIFACTS = "mlartifacts"  # digests, metrics, synthetic examples: no customer rows
MLFLOW_DB = "mlflow.db"  # the tracking store: params, metrics, tags; no customer rows
SKIPPED_DIRS = (AUDIT_DIR, ERASURES_DIR, MLFLOW_ARTIFACTS, OUTPUTS_DIR)
RERUN = "rerun `offers erase --user {user}` to finish the removal"


class ErasureNotRecorded(RuntimeError):
    """The register could not be written: nothing was removed and the user is not yet denied."""


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
    problems: list[str] = field(default_factory=list)  # empty: every store was reached

    @property
    def rows_removed(self) -> int:
        return sum(s.rows_removed or 0 for s in self.stores)

    @property
    def complete(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {
            "user_id": self.user_id,
            "erased_at": self.erased_at.isoformat(),
            "tombstone_id": self.tombstone_id,
            "rows_removed": self.rows_removed,
            "complete": self.complete,
            "problems": list(self.problems),
            "stores": [asdict(s) for s in self.stores],
        }


def _published(home: Path) -> set[Path]:
    """Tables of published snapshots: erase_user's alone, so that their manifests stay true."""
    folders = [home / FEATURES_DIR / m["snapshot_id"] for m in list_snapshots(home / FEATURES_DIR)]
    return {p for f in folders for p in f.iterdir() if not p.name.startswith(".")}


def _snapshot_stores(home: Path, user_id: str) -> list[StoreReceipt]:
    """Published snapshots, manifests updated (row counts, content hash)."""
    stores = []
    for snapshot_id, tables in erase_user(home / FEATURES_DIR, user_id).items():
        for table, n in tables.items():
            location = home / FEATURES_DIR / snapshot_id / f"{table}.parquet"
            stores.append(
                StoreReceipt(f"feature snapshot {snapshot_id}: {table}", str(location), n)
            )
    return stores


def _candidates(home: Path, exclude: tuple[Path, ...]) -> list[Path]:
    """Every file under OFFERS_HOME outside the skipped folders, `exclude` and the MLflow db."""
    skipped = tuple(home / d for d in SKIPPED_DIRS) + exclude
    found = []
    for folder, dirs, files in os.walk(home):
        here = Path(folder)
        dirs[:] = sorted(d for d in dirs if not any((here / d) == s for s in skipped))
        found += [here / f for f in sorted(files) if not f.startswith(MLFLOW_DB)]
    return found


def _store_of(result: FileResult, home: Path) -> StoreReceipt:
    hidden = is_hidden(result.path, home)
    if result.outcome == DELETED:
        store = "leftover file"
    elif result.path.parts[len(home.parts)] == FEATURES_DIR:
        store = "feature staging" if hidden else "feature file"
    elif result.path.parts[len(home.parts)] == EXPERIMENTS_DIR:
        store = "experiment output"  # per-user tables of `offers experiment report`
    else:
        store = "temp file" if hidden else "cached table"
    removed = None if result.outcome == UNREADABLE else result.rows_removed
    return StoreReceipt(store, str(result.path.relative_to(home)), removed, result.note)


def _scrub(path: Path, user_id: str, hidden: bool, problems: list[str]) -> FileResult | None:
    """One file's outcome; a disk error or an unreadable published table becomes a problem."""
    try:
        result = scrub_file(path, user_id, hidden)
    except OSError as exc:
        problems.append(f"{path}: rows not removed ({exc})")
        return None
    if result is not None and result.outcome == UNREADABLE:
        problems.append(f"{path}: {result.note}")
    return result


def _sweep(
    home: Path, user_id: str, exclude: tuple[Path, ...], covered: set[Path], problems: list[str]
) -> list[StoreReceipt]:
    results = [
        _scrub(path, user_id, is_hidden(path, home), problems)
        for path in _candidates(home, exclude)
        if path not in covered
    ]
    return [_store_of(r, home) for r in results if r is not None]


def _output_stores(home: Path, user_id: str, problems: list[str]) -> list[StoreReceipt]:
    """Recorded batch outputs outside OFFERS_HOME (inside it, the sweep reaches them)."""
    stores = []
    for out in recorded_outputs(home):
        if out.is_relative_to(home):
            continue
        for path in [*leftovers(out), *([out] if out.exists() else [])]:
            result = _scrub(path, user_id, path != out, problems)
            if result is not None and result.outcome != UNREADABLE:
                stores.append(
                    StoreReceipt("batch output", str(path), result.rows_removed, result.note)
                )
        if not out.exists():
            stores.append(
                StoreReceipt("batch output", str(out), None, "recorded, no longer exists")
            )
    return stores


def _own_temps(home: Path) -> None:
    """`finally`: erasure's temp files, wherever a step failed before its own cleanup."""
    beside_outputs = [p for out in recorded_outputs(home) for p in leftovers(out)]
    for path in [*home.rglob(f"*{ERASE_MARK}*"), *beside_outputs]:
        if path.is_file() and is_own_temp(path):
            path.unlink(missing_ok=True)


def _fixed_stores(home: Path, data_dir: Path | None) -> list[StoreReceipt]:
    """Stores with nothing to count, and why."""
    stores = [
        StoreReceipt(
            "online copy (running servers)",
            "memory",
            None,
            "servers on this OFFERS_HOME deny CONSENT_REVOKED within OFFERS_RELOAD_WATCH_S "
            "(default 2 s; no reload or restart) and drop the user's in-memory feature rows",
        ),
        StoreReceipt(
            "MLflow",
            str(home / MLFLOW_ARTIFACTS),
            0,
            "holds no customer rows: dataset digests, metrics and a synthetic input example",
        ),
    ]
    if data_dir is not None:
        stores.append(
            StoreReceipt(
                "source tables",
                str(data_dir),
                None,
                "the bank's system of record, outside OFFERS_HOME: not modified here",
            )
        )
    return stores


def _remove_rows(
    home: Path, data_dir: Path | None, user_id: str, problems: list[str]
) -> list[StoreReceipt]:
    """Every store that holds rows: snapshots, then the sweep, then recorded batch outputs."""
    stores: list[StoreReceipt] = []
    covered = _published(home)
    try:
        stores = _snapshot_stores(home, user_id)
    except (OSError, ArrowInvalid) as exc:  # a full disk, or a damaged published table
        problems.append(f"{home / FEATURES_DIR}: snapshot rewrite failed ({exc})")
    exclude = (data_dir.resolve(),) if data_dir is not None else ()
    stores += _mapped_copies(home, problems)
    stores += _sweep(home, user_id, exclude, covered, problems)
    stores += _output_stores(home, user_id, problems)
    stores += _online_stores(home, user_id, problems)
    return stores


def _mapped_copies(home: Path, problems: list[str]) -> list[StoreReceipt]:
    """Serving's mapped copies (features.mapped): deleted whole, rebuilt from the erased
    snapshot on the next load (running servers reload within OFFERS_RELOAD_WATCH_S)."""
    stores = []
    root = home / MAPPED_DIR
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        try:
            shutil.rmtree(folder)
        except OSError as exc:
            problems.append(f"{folder}: mapped feature copy not deleted ({exc})")
            continue
        stores.append(
            StoreReceipt("mapped feature copy", str(folder), None, "deleted; rebuilt on load")
        )
    return stores


def _online_stores(home: Path, user_id: str, problems: list[str]) -> list[StoreReceipt]:
    """Every online store published from this home: the user's keys in every namespace.

    An unreachable store is a problem (the receipt is then incomplete), never a silent skip.
    """
    try:
        refs = registered_stores(home)
    except OnlineStoreError as exc:
        problems.append(str(exc))
        return []
    stores = []
    for ref in refs:
        try:
            deleted = erase_in_store(ref, user_id)
        except OnlineStoreError as exc:
            problems.append(str(exc))
            continue
        stores.append(
            StoreReceipt(f"online store {ref.url}", f"prefix {ref.prefix}", deleted, "keys deleted")
        )
    return stores


def erase(
    home: str | Path,
    data_dir: str | Path | None,
    user_id: str,
    at: datetime | None = None,
    audit: AuditLog | None = None,
) -> Receipt:
    """Record the erasure, remove the user's rows everywhere they can be, tombstone it.

    Raises ErasureNotRecorded when the register cannot be written (nothing removed then); any
    later failure is listed in `Receipt.problems` (the user is denied; rerun to finish).
    """
    if not user_id:
        raise ValueError("erase: empty user id")
    home = Path(home).resolve()
    data = Path(data_dir) if data_dir is not None else None
    try:
        erased_at = record_erasure(home / ERASURES_DIR, user_id, at)
    except OSError as exc:
        raise ErasureNotRecorded(
            f"erasure of {user_id!r} NOT recorded ({exc}): nothing was removed and the user is "
            f"not yet denied; free disk space and rerun `offers erase --user {user_id}`"
        ) from exc
    stores = [StoreReceipt("erasure register", str(home / ERASURES_DIR), None, "recorded first")]
    problems: list[str] = []
    try:
        stores += _remove_rows(home, data, user_id, problems)
    finally:
        _own_temps(home)
    stores += _fixed_stores(home, data)
    tombstone_id = new_request_id()
    try:
        (audit or AuditLog(home / AUDIT_DIR)).append(
            _tombstone(tombstone_id, user_id, erased_at, stores)
        )
    except AuditUnavailable as exc:  # the register still denies the user
        problems.append(f"{home / AUDIT_DIR}: tombstone not written ({exc})")
    if problems:
        problems.append(RERUN.format(user=user_id))
    return Receipt(user_id, erased_at, tombstone_id, stores, problems)


def _tombstone(
    tombstone_id: str, user_id: str, erased_at: datetime, stores: list[StoreReceipt]
) -> dict[str, Any]:
    return {
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
