"""One on-disk columnar copy of a snapshot's lookup arrays, memory-mapped by every worker.

Why: each `offers serve` worker built its own FeatureSource from Parquet, so K workers held K
copies, and the (user, cutoff) dict alone grows with the users. Here the arrays a FeatureSource
builds (sorted keys, value blocks, code tables) are written once per snapshot version as Arrow
IPC files under OFFERS_HOME/mapped/<snapshot id>-<content hash>/ and memory-mapped: the pages
belong to the OS page cache, shared by every process that maps them, and only the pages a
lookup touches are read. Users are found through a sorted 64-bit hash of their id (numpy
searchsorted), checked against the mapped id, so no per-process structure grows with users.
The values are the FeatureSource's own arrays: scores are the same bit for bit.

Erasure: the content hash changes when `offers erase` rewrites a snapshot, so the copy of the
old content is never opened again; erasure deletes every copy (serving.erase) and each load
removes copies other than its own.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Sequence
from hashlib import blake2b
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from features import stale
from features.snapshot import load_snapshot
from features.vector import BLOCKS, FeatureSource, KeyedBlock

MAPPED_DIR = "mapped"  # under OFFERS_HOME
FEATURE_COPY_ENV = "OFFERS_FEATURE_COPY"  # "mapped" (default) or "memory" (a copy per process)
COPY_MAPPED, COPY_MEMORY = "mapped", "memory"
FORMAT = 2  # in every copy's name: a copy of another layout (or id hash) is never opened
USERS_FILE, CODES_FILE = "users.arrow", "codes.json"


def mapped_key(manifest: dict[str, Any]) -> str:
    return f"{manifest['snapshot_id']}-{str(manifest['content_hash'])[:16]}-f{FORMAT}"


def hash_ids(ids: Sequence[str]) -> np.ndarray:
    """A process-independent 64-bit hash of each id (BLAKE2b, 8 bytes): ~1 us an id."""
    return np.fromiter(
        (int.from_bytes(blake2b(i.encode(), digest_size=8).digest(), "little", signed=True)
         for i in ids),
        dtype=np.int64,
        count=len(ids),
    )  # fmt: skip


def ensure_mapped(home: Path, manifest: dict[str, Any]) -> Path:
    """The copy of this snapshot version, written (aside, then renamed) when missing."""
    root = Path(home) / MAPPED_DIR
    final = root / mapped_key(manifest)
    if not final.exists():
        tables, _ = load_snapshot(Path(home) / "features", manifest["snapshot_id"])
        root.mkdir(parents=True, exist_ok=True)
        staging = root / f"{stale.STAGING_PREFIX}{stale.owner_tag()}-{uuid.uuid4().hex}"
        try:
            write_mapped(FeatureSource(tables), staging)
            os.rename(staging, final)
        except OSError:
            if not final.exists():  # else another worker placed the same copy first
                raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    stale.sweep(root, (stale.STAGING_PREFIX,), unowned=True)
    for other in root.iterdir():
        if other != final and not other.name.startswith("."):
            shutil.rmtree(other, ignore_errors=True)  # an older version: rows since erased
    return final


def write_mapped(source: FeatureSource, folder: Path) -> None:
    """The source's arrays as Arrow IPC files (one record batch each) plus the code tables."""
    folder.mkdir(parents=True)
    ids = [u for u, _ in source.pair_code_]
    hashes = hash_ids(ids)
    order = np.argsort(hashes, kind="stable")
    users = pa.table(
        {
            "hash_sorted": hashes[order],
            "pair_of_hash": order.astype(np.int64),
            "user_id": pa.array(ids, pa.string()),
            "cutoff_ns": np.array([c for _, c in source.pair_code_], dtype=np.int64),
        }
    )
    _write_ipc(users, folder / USERS_FILE)
    for name, columns in BLOCKS.items():
        block = getattr(source, name)
        flat = pa.array(np.ascontiguousarray(block.values, dtype=np.float64).ravel())
        values = pa.FixedSizeListArray.from_arrays(flat, len(columns))
        _write_ipc(pa.table({"key": block.keys, "values": values}), folder / f"{name}.arrow")
    codes = {
        "format": FORMAT,
        "merchants": list(source.merchant_code_),
        "mccs": list(source.mcc_code_),
        "as_of_ns": [int(t) for t in source.as_of_code_],
        "n_items": {name: int(getattr(source, name).n_items) for name in BLOCKS},
    }
    (folder / CODES_FILE).write_text(json.dumps(codes), encoding="utf-8")


def _write_ipc(table: pa.Table, path: Path) -> None:
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=max(table.num_rows, 1))


def _mapped(path: Path) -> pa.Table:
    """The table over the mapped file: its buffers are views of the mapping, not copies."""
    return pa.ipc.open_file(pa.memory_map(str(path), "r")).read_all()


def _column(table: pa.Table, name: str) -> pa.Array:
    column = table.column(name)
    return column.chunk(0) if column.num_chunks else pa.array([], column.type)


class MappedFeatureSource(FeatureSource):
    """A FeatureSource whose arrays are views of one mapped copy; users found by hash."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        codes = json.loads((self.folder / CODES_FILE).read_text(encoding="utf-8"))
        if codes.get("format") != FORMAT:
            raise ValueError(
                f"{self.folder}: mapped copy format {codes.get('format')}, not {FORMAT}"
            )
        users = _mapped(self.folder / USERS_FILE)
        self._hashes = _column(users, "hash_sorted").to_numpy(zero_copy_only=True)
        self._pair_of_hash = _column(users, "pair_of_hash").to_numpy(zero_copy_only=True)
        self._ids = _column(users, "user_id")
        self._cutoffs = _column(users, "cutoff_ns").to_numpy(zero_copy_only=True)
        blocks = {}
        for name, columns in BLOCKS.items():
            table = _mapped(self.folder / f"{name}.arrow")
            keys = _column(table, "key").to_numpy(zero_copy_only=True)
            flat = _column(table, "values").flatten().to_numpy(zero_copy_only=True)
            values = flat.reshape(len(keys), len(columns))
            blocks[name] = KeyedBlock.presorted(keys, values, codes["n_items"][name])
        self.pair_code_ = {}  # never filled: lookups go through the mapped hash index
        self.merchant_code_ = {m: i for i, m in enumerate(codes["merchants"])}
        self.mcc_code_ = {m: i for i, m in enumerate(codes["mccs"])}
        self.as_of_code_ = {int(t): i for i, t in enumerate(codes["as_of_ns"])}
        for name, block in blocks.items():
            setattr(self, name, block)

    def __reduce__(self) -> tuple[type, tuple[Path]]:
        """Pickled (batch workers) as its folder: the receiver maps the same copy."""
        return (MappedFeatureSource, (self.folder,))

    def pair_codes(self, user_ids: Sequence[str], cutoffs_ns: np.ndarray) -> np.ndarray:
        """Each distinct id is looked up once (a request repeats its user on every row)."""
        out = np.full(len(user_ids), -1, dtype=np.int64)
        if len(user_ids) == 0 or len(self._hashes) == 0:
            return out
        position = {u: i for i, u in enumerate(dict.fromkeys(user_ids))}
        rows_user = np.fromiter((position[u] for u in user_ids), np.int64, len(user_ids))
        cutoffs = np.asarray(cutoffs_ns, dtype=np.int64)
        candidates = self._candidates(list(position))
        single = np.array([p[0] if len(p) == 1 else -1 for p in candidates], dtype=np.int64)
        pair = single[rows_user]
        known = pair >= 0
        hit = known & (self._cutoffs[np.where(known, pair, 0)] == cutoffs)
        out[hit] = pair[hit]
        for u in (i for i, p in enumerate(candidates) if len(p) > 1):  # several cutoffs
            for row in np.flatnonzero(rows_user == u):
                match = [p for p in candidates[u] if self._cutoffs[p] == cutoffs[row]]
                out[row] = match[0] if match else -1
        return out

    def _candidates(self, ids: list[str]) -> list[list[int]]:
        """Per id, its pairs: entries of its hash whose mapped id is the id (collisions out)."""
        wanted = hash_ids(ids)
        lo = np.searchsorted(self._hashes, wanted, side="left")
        hi = np.searchsorted(self._hashes, wanted, side="right")
        return [
            [
                int(self._pair_of_hash[j])
                for j in range(lo[i], hi[i])
                if self._ids[int(self._pair_of_hash[j])].as_py() == user
            ]
            for i, user in enumerate(ids)
        ]

    def has_history(self, user_id: str, cutoff_ns: int) -> bool:
        return bool(self.pair_codes([user_id], np.array([cutoff_ns], np.int64))[0] >= 0)

    def sample_users(self, n: int) -> list[str]:
        return self._ids.slice(0, n).to_pylist()


def feature_copy_mode() -> str:
    """OFFERS_FEATURE_COPY: mapped (default: one copy per host) or memory (one per process)."""
    mode = os.environ.get(FEATURE_COPY_ENV, COPY_MAPPED) or COPY_MAPPED
    if mode not in (COPY_MAPPED, COPY_MEMORY):
        raise ValueError(f"{FEATURE_COPY_ENV}={mode!r}: expected {COPY_MAPPED} or {COPY_MEMORY}")
    return mode
