"""The Spark side of the feature job: one SparkSession and the Ibis PySpark backend on it.

Why a module of its own: `features.definitions` stays backend-free; everything that knows about
Spark (the session's configuration, the master URL) lives here and is imported only when
`engine="spark"` is chosen. pyspark itself is imported inside the functions, so the default
install (DuckDB only) never needs it.

One Spark context per process: `spark_session()` starts it once (master, driver memory, UTC)
and hands back the running session afterwards, so a CLI that first calls
`spark_session(master)` and then `features.backend.connect("spark")` (or a test suite that builds
many snapshots) pays the JVM start-up once; each backend then works in a session of its own.
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import sys
from typing import Any

from features import stale

DEFAULT_MASTER = "local[2]"
MASTER_ENV = "OFFERS_SPARK_MASTER"
# spark-submit starts the JVM first and tells the Python driver where it is through this
# variable; the master then comes from spark-submit's --master and is not overridden here.
_SUBMIT_GATEWAY_ENV = "PYSPARK_GATEWAY_PORT"

# Small on purpose: the tables are aggregates, and on a laptop or CI runner the default 200
# shuffle partitions cost more in task overhead than they save. Raise them on a cluster with
# `--conf spark.sql.shuffle.partitions=...` (spark-submit) or `conf=` below.
DEFAULT_CONF: dict[str, str] = {
    "spark.sql.session.timeZone": "UTC",  # instants stay UTC whatever the machine's zone
    "spark.sql.shuffle.partitions": "4",
    "spark.default.parallelism": "4",
    "spark.driver.memory": "4g",
    "spark.sql.execution.arrow.pyspark.enabled": "true",  # toPandas/createDataFrame via Arrow
    "spark.sql.execution.arrow.pyspark.fallback.enabled": "false",  # fail, never go slow
    "spark.sql.adaptive.enabled": "true",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.driver.extraJavaOptions": "-Duser.timezone=UTC",
    "spark.executor.extraJavaOptions": "-Duser.timezone=UTC",
}


def default_master() -> str | None:
    """The master to ask for: $OFFERS_SPARK_MASTER, spark-submit's (None), else local[2]."""
    if os.environ.get(MASTER_ENV):
        return os.environ[MASTER_ENV]
    if os.environ.get(_SUBMIT_GATEWAY_ENV):
        return None
    return DEFAULT_MASTER


def spark_session(
    master: str | None = None,
    conf: dict[str, str] | None = None,
    app_name: str = "offers",
) -> Any:
    """The process's SparkSession, started on first call with the project's configuration.

    A later call returns the running session (a JVM cannot change its master or driver
    memory once started); runtime SQL settings from `conf` are applied to it either way.
    """
    from pyspark.sql import SparkSession

    settings = {**DEFAULT_CONF, **(conf or {})}
    active = SparkSession.getActiveSession()
    if active is None:
        # Python workers run this interpreter (the venv with the project), never a `python3`
        # found on PATH, and LightGBM's OpenMP threads must not spin between calls.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        builder = SparkSession.builder.appName(app_name)
        master = master or default_master()
        if master:
            builder = builder.master(master)
        # Managed tables (Ibis's create_table of an expression) and spills go to a private
        # folder, never the working directory, removed when the process exits.
        # Named for this process, so a later build sweeps it if this one is killed.
        scratch = stale.spill_dir("offers-spark-")
        atexit.register(shutil.rmtree, scratch, ignore_errors=True)
        settings.setdefault("spark.sql.warehouse.dir", str(scratch / "warehouse"))
        settings.setdefault("spark.local.dir", str(scratch / "local"))
        for key, value in settings.items():
            builder = builder.config(key, value)
        session = builder.getOrCreate()
        session.sparkContext.setLogLevel("WARN")
        return session
    for key, value in settings.items():
        if _is_runtime_sql(key):
            active.conf.set(key, value)
    return active


def spark_backend(master: str | None = None, conf: dict[str, str] | None = None) -> Any:
    """An Ibis PySpark backend on the process's Spark context (UTC, local[2] unless told otherwise).

    Each backend gets its own session on the shared context (`newSession`): its own temporary
    views, as each DuckDB connection is its own database, so two jobs in one process never see
    each other's `user_gates` or `pit_pairs`; the JVM, executors and cache are shared.
    """
    settings = {**DEFAULT_CONF, **(conf or {})}
    session = spark_session(master, conf).newSession()
    runtime = {k: v for k, v in settings.items() if _is_runtime_sql(k)}
    return _utc_backend_class()().connect(session, **runtime)


def _is_runtime_sql(key: str) -> bool:
    return key.startswith("spark.sql.") and key != "spark.sql.warehouse.dir"


@functools.cache
def _utc_backend_class() -> type:
    """Ibis's PySpark backend, with instants handed back as UTC instants.

    Spark's TIMESTAMP is an instant (the session renders it in UTC), but Ibis 12 maps it to a
    naive timestamp, so Arrow results would lose the zone DuckDB keeps. Marking naive columns
    as UTC reinterprets nothing: Arrow keeps the same microseconds since the epoch.
    """
    import ibis
    from ibis.backends.pyspark import Backend
    from ibis.backends.pyspark.datatypes import PySparkSchema

    ibis.load_backend("pyspark")  # registers ibis.options.pyspark, which the compiler reads

    class UtcPySparkBackend(Backend):
        compiler = _microsecond_compiler_class()()

        def to_pyarrow(self, expr: Any, /, **kwargs: Any) -> Any:
            return _as_utc(super().to_pyarrow(expr, **kwargs))

        def create_table(self, name: str, /, obj: Any = None, **kwargs: Any) -> Any:
            """Frames from the driver become session views: no warehouse write, no re-read."""
            if obj is None or isinstance(obj, ibis.Expr) or set(kwargs) - {"overwrite"}:
                return super().create_table(name, obj, **kwargs)
            if not kwargs.get("overwrite") and self._session.catalog.tableExists(name):
                raise ValueError(f"table {name!r} exists; pass overwrite=True to replace it")
            table = ibis.memtable(obj)
            frame = table.op().data.to_frame()
            schema = PySparkSchema.from_ibis(table.schema())
            self._session.createDataFrame(frame, schema=schema).createOrReplaceTempView(name)
            return self.table(name)

    return UtcPySparkBackend


@functools.cache
def _microsecond_compiler_class() -> type:
    """Ibis's PySpark compiler, with `epoch_seconds()` keeping microseconds as DuckDB does.

    DuckDB's `epoch(ts)` is a double with the microseconds; Spark's `unix_timestamp` (what
    Ibis 12 emits) drops them, so sub-second timestamps would age differently on the two
    engines (feature ages, the 30/90/365-day window edges). `unix_micros / 1e6` is the very
    division DuckDB does, so the two agree to the bit and DuckDB's results stay unchanged.
    """
    import ibis.expr.datatypes as dt
    from ibis.backends.sql.compilers.pyspark import PySparkCompiler

    class MicrosecondPySparkCompiler(PySparkCompiler):
        def visit_ExtractEpochSeconds(self, op: Any, *, arg: Any) -> Any:
            micros = self.f.unix_micros(self.cast(arg, dt.timestamp))
            # a double numerator: Spark reads `1000000.0` as a decimal, and decimal division
            # rounds differently
            return self.cast(micros, dt.float64) / 1_000_000.0

    return MicrosecondPySparkCompiler


def _as_utc(data: Any) -> Any:
    """Naive timestamp columns of an Arrow table (or a lone array) marked UTC."""
    import pyarrow as pa

    def utc(t: pa.DataType) -> pa.DataType:
        return pa.timestamp(t.unit, tz="UTC") if pa.types.is_timestamp(t) and not t.tz else t

    if isinstance(data, pa.Table):
        return data.cast(pa.schema([f.with_type(utc(f.type)) for f in data.schema]))
    if isinstance(data, pa.Array | pa.ChunkedArray):
        return data.cast(utc(data.type))
    return data


def stop_session() -> None:
    """Stop the process's session (tests and the CLI end with it; the JVM exits with Python)."""
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        active.stop()
