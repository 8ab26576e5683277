"""The feature module on Spark equals it on DuckDB: snapshots, manifests, point-in-time rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from spark_world import CUTOFF, SparkWorld

from features.job import point_in_time
from features.snapshot import TABLE_KEYS, load_snapshot, publish_snapshot
from features.sources import open_sources
from features.tables import FeatureTables

pytestmark = [
    pytest.mark.spark,
    # pyspark 4.0 passes copy= to pandas 3's astype, which pandas deprecates
    pytest.mark.filterwarnings("ignore:The copy keyword is deprecated"),
]

RUN_TIME = pd.Timestamp("2025-12-01", tz="UTC").to_pydatetime()
# The manifest fields that may differ between two builds of the same content.
PER_BUILD = {"built_at", "engine", "content_hash", "snapshot_id"}


def assert_tables_equal(got: FeatureTables, expected: FeatureTables) -> None:
    """Row for row in key order: same columns, same dtypes, values to float tolerance."""
    for name, keys in TABLE_KEYS.items():
        g = got.as_dict()[name].sort_values(keys).reset_index(drop=True)
        e = expected.as_dict()[name].sort_values(keys).reset_index(drop=True)
        assert len(e) > 0, name
        pd.testing.assert_frame_equal(g, e, check_exact=False, rtol=1e-9, atol=1e-12, obj=name)


def test_a_snapshot_on_spark_equals_the_duckdb_snapshot(spark_world: SparkWorld) -> None:
    spark_tables, spark_manifest = load_snapshot(spark_world.spark_features)
    duck_tables, duck_manifest = load_snapshot(spark_world.duckdb_features)
    assert_tables_equal(spark_tables, duck_tables)
    assert spark_manifest["engine"] == "spark" and duck_manifest["engine"] == "duckdb"
    same = {k: v for k, v in duck_manifest.items() if k not in PER_BUILD}
    assert {k: spark_manifest[k] for k in same} == same  # exclusions by rule, row counts, ...
    assert sum(duck_manifest["exclusions_by_rule"].values()) > 0
    # one Parquet file per table, instants in UTC
    folder = spark_world.spark_features / spark_manifest["snapshot_id"]
    for name, keys in TABLE_KEYS.items():
        path = folder / f"{name}.parquet"
        assert path.is_file(), path
        frame = pq.read_table(path).to_pandas()
        time_col = keys[1] if keys[0] == "user_id" else keys[0]
        assert str(frame[time_col].dt.tz) == "UTC"


def test_point_in_time_on_spark_equals_duckdb(spark_world: SparkWorld) -> None:
    users = pd.read_parquet(spark_world.data / "users.parquet")["user_id"].astype(str)
    rng = np.random.default_rng(3)
    hours = rng.integers(0, 240 * 24, 300)
    pairs = pd.DataFrame(
        {
            "user_id": rng.choice(users.to_numpy(), len(hours)),
            "cutoff": pd.Timestamp("2025-02-01", tz="UTC") + pd.to_timedelta(hours, unit="h"),
        }
    )
    got = {}
    for engine in ("duckdb", "spark"):
        sources = open_sources(spark_world.data, spark_world.home / "erasures", RUN_TIME, engine)
        got[engine] = point_in_time(sources, pairs)
    assert_tables_equal(got["spark"], got["duckdb"])
    assert got["duckdb"].as_dict()["user"]["cutoff"].nunique() > 50


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_sub_second_transactions_agree(spark_world: SparkWorld, tmp_path: Path, fmt: str) -> None:
    """Microsecond timestamps age alike (Spark's epoch seconds would drop them), and a CSV
    source is read as strings on both engines (DuckDB's all_varchar)."""
    data = tmp_path / "data"
    data.mkdir()
    for table in ("users", "consents"):
        (data / f"{table}.parquet").symlink_to(spark_world.data / f"{table}.parquet")
    txns = pd.read_parquet(spark_world.data / "transactions.parquet").sample(5000, random_state=0)
    jitter = np.random.default_rng(0).integers(1, 10**6, len(txns))
    txns["ts"] = txns["ts"] + pd.to_timedelta(jitter, unit="us")
    if fmt == "csv":
        txns["ts"] = txns["ts"].dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        txns.to_csv(data / "transactions.csv", index=False)
    else:
        txns.to_parquet(data / "transactions.parquet", index=False)
    built = {}
    for engine in ("duckdb", "spark"):
        sources = open_sources(data, None, RUN_TIME, engine)
        manifest = publish_snapshot(
            sources, tmp_path / engine, CUTOFF.to_pydatetime(), engine=engine
        )
        built[engine] = (load_snapshot(tmp_path / engine)[0], manifest)
    assert_tables_equal(built["spark"][0], built["duckdb"][0])
    ages = {
        e: t.user_merchant.sort_values(["user_id", "merchant_id"]).reset_index(drop=True)
        for e, (t, _) in built.items()
    }
    assert ages["spark"]["um_days_since_last"].equals(ages["duckdb"]["um_days_since_last"])
    for field in ("exclusions_by_rule", "row_counts", "transactions_read", "transactions_used"):
        assert built["spark"][1][field] == built["duckdb"][1][field], field
