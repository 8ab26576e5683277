"""The feature job: the only feature module that reads sources and writes snapshots.

A snapshot is Parquet tables plus `manifest.json`, written aside and published by swapping the
`CURRENT` pointer, so a killed job never leaves a half snapshot behind.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import shutil
import uuid
import weakref
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import ibis
import ibis.expr.types as ir
import numpy as np
import pandas as pd
import psutil
import pyarrow.parquet as pq

from features import definitions as fd
from features import stale
from features.contract import (
    AMOUNT,
    CONSENTS,
    MCC,
    MERCHANT_ID,
    TRANSACTIONS,
    TS,
    TXN_ID,
    USER_ID,
    USERS,
)
from features.eligibility import consent_windows, user_gates
from features.erasures import read_erasures
from features.intake import scan_transactions
from features.io import file_digest, table_path
from features.tables import (
    MCC_POP,
    MERCHANT_POP,
    USER,
    USER_MCC,
    USER_MERCHANT,
    FeatureTables,
)
from features.validate import ContractError, ValidationReport, check_tables
from policy import policy_version

CURRENT = "CURRENT"
MANIFEST = "manifest.json"
log = logging.getLogger(__name__)
FEATURE_SET = "merchant_affinity_v1"
ENGINES = ("duckdb", "spark")

TABLE_KEYS: dict[str, list[str]] = {
    USER_MERCHANT: [USER_ID, fd.CUTOFF, MERCHANT_ID],
    USER_MCC: [USER_ID, fd.CUTOFF, MCC],
    USER: [USER_ID, fd.CUTOFF],
    MERCHANT_POP: [fd.AS_OF, MERCHANT_ID],
    MCC_POP: [fd.AS_OF, MCC],
}


@dataclass
class Sources:
    """Inputs registered on one backend, with the gates evaluated when the job runs."""

    con: Any
    transactions: ir.Table
    users: ir.Table
    windows: ir.Table
    gates: ir.Table
    pending_digests: dict[str, str] | Future[dict[str, str]]
    run_time: datetime
    n_erased: int
    input_check: dict[str, Any] = field(default_factory=dict)  # manifest field

    @property
    def digests(self) -> dict[str, str]:
        """Source file digests; computed beside the job, so the first read may wait for them."""
        if isinstance(self.pending_digests, Future):
            self.pending_digests = self.pending_digests.result()
        return self.pending_digests


DUCKDB_MEMORY_SHARE = 0.25  # of physical memory; past it DuckDB spills to a temp folder


def connect(engine: str = "duckdb", threads: int | None = None) -> Any:
    """A fresh backend; DuckDB in memory by default, its session pinned to UTC.

    DuckDB's own default takes 80% of memory; a quarter keeps a 50M-transaction snapshot
    near 5 GiB peak (it spills cached intermediates instead of growing) at a few % of speed.
    """
    if engine == "duckdb":
        con = _duckdb_backend_class()().connect(**({"threads": threads} if threads else {}))
        con.raw_sql("SET TimeZone = 'UTC'")
        limit_mb = int(psutil.virtual_memory().total * DUCKDB_MEMORY_SHARE / 2**20)
        spill = stale.spill_dir("offers-duckdb-")  # named for this process: see features.stale
        weakref.finalize(con, shutil.rmtree, spill, True)
        con.raw_sql(f"SET memory_limit = '{limit_mb}MB'")
        con.raw_sql(f"SET temp_directory = '{spill}'")
        # Row order carries no meaning in any table here (readers index by key, the content
        # hash is order-free), so DuckDB may write and cache in parallel without keeping it.
        con.raw_sql("SET preserve_insertion_order = false")
        return con
    if engine == "spark":
        from features.spark import spark_backend

        return spark_backend()
    raise ValueError(f"engine {engine!r} is not one of {ENGINES}")


@functools.cache
def _duckdb_backend_class() -> type:
    """Ibis's DuckDB backend, reading an instant's epoch without first casting it to local time.

    Ibis 12 emits `epoch(CAST(ts AS TIMESTAMP))`; on a TIMESTAMPTZ that cast goes through ICU
    for every row (about 0.5 s per 10M rows, several times per feature pass). `epoch_us(ts) /
    1e6` needs no time zone and is the very division the Spark compiler emits, so both
    engines (and DuckDB before this change) agree to the bit.
    """
    import ibis.expr.datatypes as dt
    from ibis.backends.duckdb import Backend
    from ibis.backends.sql.compilers.duckdb import DuckDBCompiler

    class EpochCompiler(DuckDBCompiler):
        def visit_ExtractEpochSeconds(self, op: Any, *, arg: Any) -> Any:
            return self.cast(self.f.epoch_us(arg), dt.float64) / 1_000_000.0

    class EpochDuckDBBackend(Backend):
        compiler = EpochCompiler()

    return EpochDuckDBBackend


def open_sources(
    data_dir: str | Path,
    erasures_dir: str | Path | None = None,
    run_time: datetime | None = None,
    engine: str = "duckdb",
    con: Any = None,
    quarantine_dir: str | Path | None = None,
) -> Sources:
    """Register transactions (scanned by the engine) and the small gate tables (from pandas).

    Every table passes the data contract first, so nothing foreign reaches a feature: users
    and consents in pandas (features/validate.py), transactions on the engine
    (features/intake.py: scanned, never loaded, so 50M rows fit in memory). Strict by default:
    any bad row raises ContractError naming table, row, column and rule. With quarantine_dir,
    bad rows go there with their reasons (as `offers validate --quarantine`) and the rest is
    used; a file unusable as a whole raises in both modes.
    """
    data_dir = Path(data_dir)
    qdir = None if quarantine_dir is None else Path(quarantine_dir)
    con = con if con is not None else connect(engine)
    # Hashing a large transactions file takes seconds; hashlib releases the GIL, so a thread
    # digests the sources while the engine scans them.
    hashing = ThreadPoolExecutor(max_workers=1, thread_name_prefix="source-digests")
    digests = hashing.submit(
        lambda: {t: file_digest(table_path(data_dir, t)) for t in (TRANSACTIONS, USERS, CONSENTS)}
    )
    hashing.shutdown(wait=False)
    scan = scan_transactions(con, data_dir, fresh_duckdb=connect)
    small_report, small = check_tables(data_dir, qdir, (USERS, CONSENTS))
    report = _combined(scan.report(qdir), small_report)
    if report.failed:
        raise ContractError(report)
    if qdir is not None:
        scan.quarantine(qdir)
    sources = register_sources(
        con,
        scan.good,
        small[USERS],
        small[CONSENTS],
        read_erasures(erasures_dir) if erasures_dir else {},
        run_time or datetime.now(UTC),
        digests,
    )
    sources.input_check = _input_check(report)
    return sources


def _combined(first: ValidationReport, second: ValidationReport) -> ValidationReport:
    return ValidationReport(
        first.data_dir,
        first.quarantine_dir,
        counts={**first.counts, **second.counts},
        summaries=first.summaries + second.summaries,
        notes=first.notes + second.notes,
    )


def _input_check(report: ValidationReport) -> dict[str, Any]:
    """What the contract check read, kept and set aside: the manifest's `input_check`."""
    check: dict[str, Any] = {
        "mode": "strict" if report.strict else "quarantine",
        "tables": {
            t: {"read": c.read, "kept": c.kept, "rejected": c.rejected}
            for t, c in report.counts.items()
        },
        "rejected_by_rule": {f"{s.table}/{s.rule}": s.count for s in report.summaries},
    }
    if not report.strict:
        check["quarantine_dir"] = str(Path(report.quarantine_dir).resolve())
    return check


def register_sources(
    con: Any,
    transactions: ir.Table | pd.DataFrame,
    users: pd.DataFrame,
    consents: pd.DataFrame,
    erased: Mapping[str, datetime],
    run_time: datetime,
    digests: dict[str, str] | Future[dict[str, str]] | None = None,
) -> Sources:
    """Sources from typed frames (transactions may already be a backend table)."""
    if isinstance(transactions, pd.DataFrame):
        columns = [TXN_ID, USER_ID, TS, AMOUNT, MERCHANT_ID, MCC]
        transactions = con.create_table("transactions", transactions[columns], overwrite=True)
    windows = consent_windows(consents)
    gates = user_gates(users, windows, run_time, erased)
    return Sources(
        con=con,
        transactions=transactions,
        users=con.create_table("users_ids", users[[USER_ID]].astype(str), overwrite=True),
        windows=con.create_table("consent_windows", windows, overwrite=True),
        gates=con.create_table("user_gates", gates, overwrite=True),
        pending_digests={} if digests is None else digests,
        run_time=run_time,
        n_erased=sum(1 for t in erased.values() if t <= run_time),
    )


def _as_of_table(con: Any, name: str, cutoffs: pd.Series) -> ir.Table:
    """The distinct population as-of instants of some cutoffs, as a backend table."""
    ns = pd.to_datetime(cutoffs, utc=True).dt.tz_localize(None).astype("datetime64[ns]")
    months = np.unique(fd.population_as_of_ns(ns.to_numpy().view("int64")))
    frame = pd.DataFrame({fd.AS_OF: pd.to_datetime(months, utc=True).astype("datetime64[us, UTC]")})
    return con.create_table(name, frame, overwrite=True)


def _population_as_of(cutoff: datetime) -> pd.Timestamp:
    return pd.Timestamp(
        int(fd.population_as_of_ns(np.array([pd.Timestamp(cutoff).value]))[0]), tz="UTC"
    )


def _affinity(
    con: Any, base: ir.Table, cutoff: ir.TimestampValue | None = None
) -> dict[str, ir.Table]:
    """Affinity tables from cached window aggregates, skipping the merchant rollup if it is
    the identity (one MCC per merchant: a cheap check on a table already in memory)."""
    several = int(con.execute(fd.merchants_with_several_mccs(base)))
    return fd.affinity_features(
        base, materialize=_cache, one_mcc_per_merchant=several == 0, cutoff=cutoff
    )


def _cache(table: ir.Table) -> ir.Table:
    return table.cache()


def _named(affinity: dict[str, ir.Table], population: dict[str, ir.Table]) -> dict[str, ir.Table]:
    return {
        USER_MERCHANT: affinity["user_merchant"],
        USER_MCC: affinity["user_mcc"],
        USER: affinity["user"],
        MERCHANT_POP: population["merchant"],
        MCC_POP: population["mcc"],
    }


def point_in_time(
    sources: Sources, pairs: pd.DataFrame, half_life_days: float = fd.DEFAULT_HALF_LIFE_DAYS
) -> FeatureTables:
    """Features for many (user_id, cutoff) pairs at once: one range join, not a loop.

    Population features come as of the first instant of each cutoff's month.
    """
    frame = (
        pairs[[USER_ID, fd.CUTOFF]]
        .drop_duplicates()
        .astype({USER_ID: str, fd.CUTOFF: "datetime64[us, UTC]"})
    )
    pair_table = sources.con.create_table("pit_pairs", frame, overwrite=True)
    as_of = _as_of_table(sources.con, "pit_as_of", frame[fd.CUTOFF])
    allowed = fd.allowed_pairs(pair_table, sources.windows, sources.gates)
    usable = fd.usable_transactions(sources.transactions, allowed)  # the range join, once
    base = _cache(fd.window_aggregates(usable, half_life_days))
    population = fd.population_features(
        sources.transactions, sources.users, sources.windows, sources.gates, as_of, _cache
    )
    exprs = _named(_affinity(sources.con, base), population)
    # Unordered: assembly indexes by key, and sorting millions of string keys costs seconds.
    # Through Arrow: the same dtypes as a snapshot read back from Parquet, and several times
    # faster than Ibis's own pandas conversion for millions of string keys.
    return FeatureTables(**{n: sources.con.to_pyarrow(e).to_pandas() for n, e in exprs.items()})


# ---------------------------------------------------------------- snapshots


class NothingUsableError(ValueError):
    """The inputs leave no transaction to build features from: nothing is published."""


def build_snapshot(
    data_dir: str | Path,
    features_dir: str | Path,
    as_of: datetime | None = None,
    erasures_dir: str | Path | None = None,
    half_life_days: float = fd.DEFAULT_HALF_LIFE_DAYS,
    engine: str = "duckdb",
    quarantine_dir: str | Path | None = None,
    on_note: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Build and publish a snapshot as of one cutoff (default: now) for every allowed user.

    First sweeps what killed builds left (staging folders, spill folders of dead processes),
    telling `on_note` (default: the log); then checks the inputs (`open_sources`).
    """
    note = on_note or log.warning
    for path in stale.sweep_features_dir(features_dir) + stale.sweep_spill():
        note(f"swept {path}, left by a build that was killed")
    run_time = datetime.now(UTC)
    sources = open_sources(data_dir, erasures_dir, run_time, engine, quarantine_dir=quarantine_dir)
    return publish_snapshot(sources, features_dir, as_of or run_time, half_life_days, engine)


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
    features_dir = Path(features_dir)
    con = sources.con
    population_as_of = _population_as_of(cutoff)
    cutoff_lit = ibis.literal(pd.Timestamp(cutoff), type="timestamp('UTC')")
    as_of_lit = ibis.literal(population_as_of, type="timestamp('UTC')")
    status = _cache(
        fd.snapshot_status(sources.users, sources.windows, sources.gates, cutoff_lit, as_of_lit)
    )
    # One pass over the transactions: counts, window sums and population buyers all read it.
    aggregates = _cache(
        fd.classified_aggregates(
            sources.transactions, status, cutoff_lit, as_of_lit, half_life_days
        )
    )
    exclusions, kept = _exclusions(con, aggregates)
    if kept == 0:
        raise NothingUsableError(
            f"{TRANSACTIONS}: 0 of {sum(exclusions.values())} usable at cutoff "
            f"{pd.Timestamp(cutoff).isoformat()} ({_nonzero(exclusions)}); "
            "no snapshot published, CURRENT unchanged"
        )
    base = fd.kept_aggregates(aggregates)
    exprs = _named(
        _affinity(con, base, cutoff_lit), fd.snapshot_population(aggregates, status, as_of_lit)
    )
    features_dir.mkdir(parents=True, exist_ok=True)
    staging = features_dir / f"{stale.STAGING_PREFIX}{stale.owner_tag()}-{uuid.uuid4().hex}"
    staging.mkdir()
    try:
        row_counts = {}
        for name, expr in exprs.items():
            path = staging / f"{name}.parquet"
            _write_table(con, expr, path)
            row_counts[name] = _parquet_rows(path)
            if on_table_written:
                on_table_written(name)
        content_hash = _content_hash(staging, row_counts)
        snapshot_id = f"{cutoff.strftime('%Y%m%dT%H%M%SZ')}-{content_hash[:10]}"
        manifest = {
            "snapshot_id": snapshot_id,
            "feature_set": FEATURE_SET,
            "cutoff": pd.Timestamp(cutoff).isoformat(),
            "population_as_of": population_as_of.isoformat(),
            "built_at": sources.run_time.isoformat(),
            "engine": engine,
            "half_life_days": half_life_days,
            "policy_version": policy_version(),
            "source_digests": sources.digests,
            "input_check": sources.input_check,
            "users_erased": sources.n_erased,
            "transactions_read": kept + sum(exclusions.values()),
            "transactions_used": kept,
            "exclusions_by_rule": exclusions,
            "row_counts": row_counts,
            "features": {
                **fd.affinity_feature_docs(),
                **fd.USER_FEATURES,
                **fd.POPULATION_FEATURES,
            },
            "content_hash": content_hash,
        }
        _write_manifest(staging, manifest)
        _place_snapshot(staging, features_dir / snapshot_id)
        _publish(features_dir, snapshot_id)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return manifest


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
