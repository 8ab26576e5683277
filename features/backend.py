"""The engine a feature job runs on: a fresh DuckDB (default) or the Spark session, set up once.

The feature definitions (features/definitions.py) are backend-free Ibis; everything that
depends on the engine (memory, spill folder, time zone, a compiler fix) is set here.
"""

from __future__ import annotations

import functools
import shutil
import weakref
from typing import Any

import ibis.expr.types as ir
import psutil

from features import stale

ENGINES = ("duckdb", "spark")
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


def cache(table: ir.Table) -> ir.Table:
    """Keep an intermediate that several outputs read, instead of recomputing it per output."""
    return table.cache()
