"""A feature snapshot: built in one pass, staged aside, published by swapping `CURRENT`.

A snapshot is Parquet tables plus `manifest.json`, written aside and published by swapping the
`CURRENT` pointer, so a killed job never leaves a half snapshot behind. Build (pure Ibis
expressions over the sources) -> stage (tables, content hash, manifest in a staging folder)
-> publish (rename, pointer swap). The readers and the erasure of a user are here too.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import ibis
import ibis.expr.types as ir
import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from features import definitions as fd
from features import stale
from features.affinity import affinity_features, merchants_with_several_mccs
from features.backend import cache
from features.contract import MCC, MERCHANT_ID, TRANSACTIONS, USER_ID
from features.instants import instant_ns
from features.population import snapshot_population
from features.sources import Sources
from features.tables import (
    MCC_POP,
    MERCHANT_POP,
    USER,
    USER_MCC,
    USER_MERCHANT,
    FeatureTables,
)
from policy import policy_version

CURRENT = "CURRENT"
MANIFEST = "manifest.json"
FEATURE_SET = "merchant_affinity_v1"

TABLE_KEYS: dict[str, list[str]] = {
    USER_MERCHANT: [USER_ID, fd.CUTOFF, MERCHANT_ID],
    USER_MCC: [USER_ID, fd.CUTOFF, MCC],
    USER: [USER_ID, fd.CUTOFF],
    MERCHANT_POP: [fd.AS_OF, MERCHANT_ID],
    MCC_POP: [fd.AS_OF, MCC],
}


class NothingUsableError(ValueError):
    """The inputs leave no transaction to build features from: nothing is published."""


def affinity_tables(
    con: Any, base: ir.Table, cutoff: ir.TimestampValue | None = None
) -> dict[str, ir.Table]:
    """Affinity tables from cached window aggregates, skipping the merchant rollup if it is
    the identity (one MCC per merchant: a cheap check on a table already in memory)."""
    several = int(con.execute(merchants_with_several_mccs(base)))
    return affinity_features(
        base, materialize=cache, one_mcc_per_merchant=several == 0, cutoff=cutoff
    )


def named_tables(
    affinity: dict[str, ir.Table], population: dict[str, ir.Table]
) -> dict[str, ir.Table]:
    """The five feature tables under their snapshot names (features/tables.py)."""
    return {
        USER_MERCHANT: affinity["user_merchant"],
        USER_MCC: affinity["user_mcc"],
        USER: affinity["user"],
        MERCHANT_POP: population["merchant"],
        MCC_POP: population["mcc"],
    }


def population_as_of(cutoff: datetime) -> pd.Timestamp:
    """The as-of instant of a cutoff's population features (the first of its month)."""
    return pd.Timestamp(int(fd.population_as_of_ns(np.array([instant_ns(cutoff)]))[0]), tz="UTC")


# ---------------------------------------------------------------- build -> stage -> publish


def publish_snapshot(
    sources: Sources,
    features_dir: str | Path,
    cutoff: datetime,
    half_life_days: float = fd.DEFAULT_HALF_LIFE_DAYS,
    engine: str = "duckdb",
    on_table_written: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Write every table aside, then swap CURRENT; any failure leaves the old snapshot current.

    The write steps are named functions (`_write_table`, `_write_manifest`, `_place_snapshot`,
    `_write_pointer`, `_swap_pointer`) so the fault tests can stop the job at each of them.
    """
    built = _build(sources, cutoff, half_life_days)
    features_dir = Path(features_dir)
    features_dir.mkdir(parents=True, exist_ok=True)
    staging = features_dir / f"{stale.STAGING_PREFIX}{stale.owner_tag()}-{uuid.uuid4().hex}"
    staging.mkdir()
    try:
        manifest = _stage(sources, built, staging, engine, on_table_written)
        _place_snapshot(staging, features_dir / manifest["snapshot_id"])
        _publish(features_dir, manifest["snapshot_id"])
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return manifest


@dataclass(frozen=True)
class _Built:
    """A snapshot's tables as expressions, with what the manifest says about their inputs."""

    cutoff: datetime
    population_as_of: pd.Timestamp
    half_life_days: float
    tables: dict[str, ir.Table]
    exclusions: dict[str, int]
    kept: int


def _build(sources: Sources, cutoff: datetime, half_life_days: float) -> _Built:
    """One pass over the transactions: counts, window sums and population buyers all read it.

    Raises NothingUsableError (nothing written) when no transaction is usable at the cutoff.
    """
    as_of = population_as_of(cutoff)
    cutoff_lit = ibis.literal(pd.Timestamp(cutoff), type="timestamp('UTC')")
    as_of_lit = ibis.literal(as_of, type="timestamp('UTC')")
    status = cache(
        fd.snapshot_status(sources.users, sources.windows, sources.gates, cutoff_lit, as_of_lit)
    )
    aggregates = cache(
        fd.classified_aggregates(
            sources.transactions, status, cutoff_lit, as_of_lit, half_life_days
        )
    )
    exclusions, kept = _exclusions(sources.con, aggregates)
    if kept == 0:
        raise NothingUsableError(
            f"{TRANSACTIONS}: 0 of {sum(exclusions.values())} usable at cutoff "
            f"{pd.Timestamp(cutoff).isoformat()} ({_nonzero(exclusions)}); "
            "no snapshot published, CURRENT unchanged"
        )
    affinity = affinity_tables(sources.con, fd.kept_aggregates(aggregates), cutoff_lit)
    tables = named_tables(affinity, snapshot_population(aggregates, status, as_of_lit))
    return _Built(cutoff, as_of, half_life_days, tables, exclusions, kept)


def _stage(
    sources: Sources,
    built: _Built,
    staging: Path,
    engine: str,
    on_table_written: Callable[[str], None] | None,
) -> dict[str, Any]:
    """Every table and then the manifest into the staging folder; the manifest back."""
    row_counts = {}
    for name, expr in built.tables.items():
        path = staging / f"{name}.parquet"
        _write_table(sources.con, expr, path)
        row_counts[name] = _parquet_rows(path)
        if on_table_written:
            on_table_written(name)
    manifest = _manifest(sources, built, engine, row_counts, _content_hash(staging, row_counts))
    _write_manifest(staging, manifest)
    return manifest


def _manifest(
    sources: Sources,
    built: _Built,
    engine: str,
    row_counts: dict[str, int],
    content_hash: str,
) -> dict[str, Any]:
    """What a snapshot holds and how it was made; its id ends in the content hash."""
    return {
        "snapshot_id": f"{built.cutoff.strftime('%Y%m%dT%H%M%SZ')}-{content_hash[:10]}",
        "feature_set": FEATURE_SET,
        "cutoff": pd.Timestamp(built.cutoff).isoformat(),
        "population_as_of": built.population_as_of.isoformat(),
        "built_at": sources.run_time.isoformat(),
        "engine": engine,
        fd.HALF_LIFE_PARAM: built.half_life_days,
        "policy_version": policy_version(),
        "source_digests": sources.digests,
        "input_check": sources.input_check,
        "users_erased": sources.n_erased,
        "transactions_read": built.kept + sum(built.exclusions.values()),
        "transactions_used": built.kept,
        "exclusions_by_rule": built.exclusions,
        "row_counts": row_counts,
        "features": {
            **fd.affinity_feature_docs(),
            **fd.USER_FEATURES,
            **fd.POPULATION_FEATURES,
        },
        "content_hash": content_hash,
    }


def _exclusions(con: Any, aggregates: ir.Table) -> tuple[dict[str, int], int]:
    """Transactions excluded per rule (every rule present, 0 when none) and those kept."""
    counts = con.execute(fd.exclusion_counts(aggregates))
    exclusions = {rule: 0 for rule in fd.EXCLUSION_RULES}
    exclusions.update(
        {
            fd.rule_name(int(r)): int(n)
            for r, n in zip(counts[fd.RULE], counts[fd.N_ROWS], strict=True)
        }
    )
    return exclusions, exclusions.pop(fd.RULE_KEPT, 0)


def _nonzero(counts: dict[str, int]) -> str:
    return ", ".join(f"{k}: {v:,}" for k, v in counts.items() if v) or "no transaction read"


def _write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))


def _place_snapshot(staging: Path, final: Path) -> None:
    """Move the finished folder to its id (one rename); identical content may exist already."""
    if final.exists():
        shutil.rmtree(staging)
    else:
        os.replace(staging, final)


def _write_table(con: Any, table: ir.Table, path: Path) -> None:
    """One Parquet file per table, whatever the engine; rows in no particular order.

    Readers index by key, and sorting millions of string keys cost a tenth of the job, so the
    content hash is computed order-free instead. DuckDB streams the file itself. Spark would
    write a folder of part files, so its rows are collected through Arrow and written here:
    the tables are aggregates, small next to the transactions.
    """
    if con.name == "duckdb":
        # No dictionary pages: float and user-id columns never fit one, and trying first made
        # writes ~1.5x slower for ~12% smaller files.
        con.to_parquet(table, path, dictionary_size_limit=1)
    else:
        pq.write_table(con.to_pyarrow(table), path)


def _parquet_rows(path: Path) -> int:
    return pq.read_metadata(path).num_rows


def _content_hash(folder: Path, row_counts: dict[str, int]) -> str:
    """Digest of the tables' rows whatever their order: per table, the sum of DuckDB's row
    hashes (a 128-bit sum, so no overflow), with the schema and the row counts."""
    h = hashlib.sha256(json.dumps(row_counts, sort_keys=True).encode())
    with duckdb.connect() as con:
        for name in sorted(row_counts):
            path = str(folder / f"{name}.parquet")
            schema = pq.read_schema(path).to_string(show_schema_metadata=False)
            (rows_digest,) = con.execute(
                "SELECT coalesce(sum(hash(t)::HUGEINT), 0)::VARCHAR FROM read_parquet(?) AS t",
                [path],
            ).fetchone()
            h.update(f"{name}\n{schema}\n{rows_digest}\n".encode())
    return h.hexdigest()


def _publish(features_dir: Path, snapshot_id: str) -> None:
    """Atomic pointer swap: readers see the old snapshot or the new one, never neither."""
    tmp = features_dir / f"{stale.POINTER_PREFIX}{stale.owner_tag()}-{uuid.uuid4().hex}"
    try:
        _write_pointer(tmp, snapshot_id)
        _swap_pointer(tmp, features_dir / CURRENT)
    finally:
        tmp.unlink(missing_ok=True)  # gone after the swap; a killed job's is swept later


def _write_pointer(tmp: Path, snapshot_id: str) -> None:
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(snapshot_id + "\n")
        f.flush()
        os.fsync(f.fileno())


def _swap_pointer(tmp: Path, pointer: Path) -> None:
    os.replace(tmp, pointer)


# ---------------------------------------------------------------- readers and erasure


def current_snapshot_id(features_dir: str | Path) -> str:
    pointer = Path(features_dir) / CURRENT
    if not pointer.exists():
        raise FileNotFoundError(
            f"no published feature snapshot in {features_dir}: run `offers features build` first"
        )
    return pointer.read_text().strip()


def list_snapshots(features_dir: str | Path) -> list[dict[str, Any]]:
    folder = Path(features_dir)
    if not folder.exists():
        return []
    manifests = [
        json.loads((d / MANIFEST).read_text())
        for d in sorted(folder.iterdir())
        if d.is_dir() and not d.name.startswith(".") and (d / MANIFEST).exists()
    ]
    return sorted(manifests, key=lambda m: m["built_at"])


def read_manifest(features_dir: str | Path, snapshot_id: str | None = None) -> dict[str, Any]:
    snapshot_id = snapshot_id or current_snapshot_id(features_dir)
    path = Path(features_dir) / snapshot_id / MANIFEST
    if not path.exists():
        raise FileNotFoundError(f"no snapshot {snapshot_id!r} in {features_dir}")
    return json.loads(path.read_text())


def load_snapshot(
    features_dir: str | Path, snapshot_id: str | None = None
) -> tuple[FeatureTables, dict[str, Any]]:
    manifest = read_manifest(features_dir, snapshot_id)
    folder = Path(features_dir) / manifest["snapshot_id"]
    tables = {name: pd.read_parquet(folder / f"{name}.parquet") for name in TABLE_KEYS}
    return FeatureTables(**tables), manifest


def erase_user(features_dir: str | Path, user_id: str) -> dict[str, dict[str, int]]:
    """Remove a user's rows from every snapshot: snapshot -> table -> rows removed.

    Each table file is rewritten aside and swapped in with os.replace, the manifest last, so
    a reader never sees a half-written file. Population shares are aggregates over all users
    and carry no row of anyone; they are recomputed without the user at the next build.
    """
    receipt: dict[str, dict[str, int]] = {}
    for manifest in list_snapshots(features_dir):
        folder = Path(features_dir) / manifest["snapshot_id"]
        removed: dict[str, int] = {}
        for name, keys in TABLE_KEYS.items():
            if USER_ID not in keys:
                continue
            path = folder / f"{name}.parquet"
            frame = pd.read_parquet(path)
            mine = frame[USER_ID].astype(str) == user_id
            removed[name] = int(mine.sum())
            if removed[name]:
                tmp = folder / f".{name}.{uuid.uuid4().hex}.parquet"
                frame.loc[~mine].reset_index(drop=True).to_parquet(tmp, index=False)
                os.replace(tmp, path)
        if any(removed.values()):
            counts = {n: _parquet_rows(folder / f"{n}.parquet") for n in TABLE_KEYS}
            manifest["row_counts"] = counts
            manifest["content_hash"] = _content_hash(folder, counts)
            manifest["users_erased_after_build"] = manifest.get("users_erased_after_build", 0) + 1
            tmp = folder / f".{MANIFEST}.{uuid.uuid4().hex}"
            tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True))
            os.replace(tmp, folder / MANIFEST)
        receipt[manifest["snapshot_id"]] = removed
    return receipt
