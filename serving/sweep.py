"""Remove one user's rows from any file that can hold rows: the file-level half of erasure.

Why by content and not by name: a killed writer leaves rows in files no reader lists (feature
`.staging-*` folders, `.<name>.<hex>.tmp` files of batch scoring, erasure's own temp files), and
they are the user's rows all the same. So every file is classified:
- a temp file of erasure itself (`ERASE_MARK` in its name): deleted, it is never published;
- a table (Parquet by its magic bytes, CSV by suffix) that reads: rewritten without the user's
  rows (aside, fsync, rename), or left alone when it holds none;
- a table that does not read, in a hidden place (a crashed writer's leftover): deleted, since
  its bytes may hold the user's rows and cannot be filtered;
- a table that does not read in a published place: reported, the erasure is then incomplete.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from features.contract import USER_ID

PARQUET_MAGIC = b"PAR1"
CSV_SUFFIX = ".csv"
ERASE_MARK = ".erase-"  # in the name of every temp file erasure writes
TMP_SUFFIX = ".tmp"

# Outcomes of one file.
SCRUBBED = "scrubbed"
DELETED = "deleted"
UNREADABLE = "unreadable"


@dataclass(frozen=True)
class FileResult:
    path: Path
    outcome: str  # SCRUBBED (rows_removed may be 0), DELETED or UNREADABLE
    rows_removed: int
    note: str = ""


def is_own_temp(path: Path) -> bool:
    return ERASE_MARK in path.name and TMP_SUFFIX in path.name


def table_kind(path: Path) -> str | None:
    """ "parquet", "csv" or None (not a table): Parquet by magic, so temp names count too."""
    if path.suffix == CSV_SUFFIX or f"{CSV_SUFFIX}." in path.name:
        return "csv"
    try:
        with open(path, "rb") as f:
            head = f.read(len(PARQUET_MAGIC))
    except OSError:
        return None
    return "parquet" if head == PARQUET_MAGIC or path.suffix == ".parquet" else None


def replace_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """Write aside (an ERASE_MARK name), fsync, rename; the temp file goes in `finally`."""
    tmp = path.with_name(f".{path.name}{ERASE_MARK}{uuid.uuid4().hex}{TMP_SUFFIX}{path.suffix}")
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_parquet(table: pa.Table, path: Path) -> None:
    """The rewrite's write step (a name the fault suite can make fail)."""
    pq.write_table(table, path)


def _scrub_parquet(path: Path, user_id: str) -> int:
    table = pq.read_table(path)
    if USER_ID not in table.column_names:
        return 0
    mine = pc.fill_null(pc.equal(table.column(USER_ID).cast(pa.string()), user_id), False)
    n = int(pc.sum(mine).as_py() or 0)
    if n:
        kept = table.filter(pc.invert(mine))
        replace_atomically(path, lambda tmp: write_parquet(kept, tmp))
    return n


def _scrub_csv(path: Path, user_id: str) -> int:
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    if USER_ID not in frame.columns:
        return 0
    mine = frame[USER_ID] == user_id
    if mine.any():
        replace_atomically(path, lambda tmp: frame.loc[~mine].to_csv(tmp, index=False))
    return int(mine.sum())


# A file that is not a whole table (truncated by a crash), as opposed to a disk error.
_NOT_A_TABLE = (
    pa.ArrowInvalid,
    pd.errors.ParserError,
    pd.errors.EmptyDataError,
    UnicodeDecodeError,
)


def scrub_file(path: Path, user_id: str, hidden: bool) -> FileResult | None:
    """One file's outcome (None: not a table). OSError (a full disk, say) propagates."""
    if is_own_temp(path):
        path.unlink(missing_ok=True)
        return FileResult(path, DELETED, 0, "temp file of an interrupted erasure")
    kind = table_kind(path)
    if kind is None:
        return None
    try:
        n = _scrub_parquet(path, user_id) if kind == "parquet" else _scrub_csv(path, user_id)
    except _NOT_A_TABLE as exc:
        if hidden:
            path.unlink(missing_ok=True)
            return FileResult(path, DELETED, 0, "unreadable leftover of a crashed writer")
        return FileResult(path, UNREADABLE, 0, f"cannot be read ({exc}); check it by hand")
    return FileResult(path, SCRUBBED, n)


def is_hidden(path: Path, root: Path) -> bool:
    """Under a dot-named file or folder (staging, temp): never published, safe to delete."""
    return any(part.startswith(".") for part in path.relative_to(root).parts)
