"""Batch scoring on Spark equals the local batch: users, decisions, offers, order, scores, audit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from spark_world import CUTOFF, SparkWorld

from serving.audit import AuditLog
from serving.batch import OUTPUT_COLUMNS

pytestmark = [
    pytest.mark.spark,
    # pyspark 4.0 passes copy= to pandas 3's astype, which pandas deprecates
    pytest.mark.filterwarnings("ignore:The copy keyword is deprecated"),
]

PER_REQUEST = {"request_id", "ts"}  # audit fields that differ between two equal decisions


def test_spark_batch_equals_local_batch(registry: SparkWorld, tmp_path: Path) -> None:
    from offers.cli import score_batch_cmd

    audit = AuditLog(registry.home / "audit")
    before = len(audit.records())
    reports, frames, records = {}, {}, {}
    for engine in ("local", "spark"):
        out = tmp_path / f"{engine}.parquet"
        reports[engine] = score_batch_cmd(
            out=out, data=registry.data, k=10, jobs=2, now=CUTOFF.isoformat(), alias="champion",
            allow_past_now=True, engine=engine, spark_master="local[2]",
        )  # fmt: skip
        frames[engine] = pd.read_parquet(out)
        new = audit.records()[before:]
        before += len(new)
        records[engine] = {r["user_id"]: r for r in new}
        assert len(records[engine]) == len(new) == reports[engine].users  # one per user

    local, spark = frames["local"], frames["spark"]
    assert list(spark.columns) == list(OUTPUT_COLUMNS)
    assert spark.dtypes.equals(local.dtypes)
    same = [c for c in OUTPUT_COLUMNS if c not in ("score", "request_id")]
    pd.testing.assert_frame_equal(spark[same], local[same])  # users, offers, ranks, in order
    np.testing.assert_allclose(spark["score"], local["score"], rtol=0, atol=1e-9)
    assert spark["score"].notna().sum() > 1000

    a, b = reports["local"], reports["spark"]
    assert (b.users, b.allowed, b.cold_start, b.rows, b.model, b.snapshot_id) == (
        a.users, a.allowed, a.cold_start, a.rows, a.model, a.snapshot_id,
    )  # fmt: skip
    assert b.denied_by_reason == a.denied_by_reason and len(a.denied_by_reason) > 2
    assert b.n_jobs == 2 and a.allowed > 100

    # the driver wrote one audit record per user decision, the very record a worker would
    assert set(spark["request_id"]) == {r["request_id"] for r in records["spark"].values()}
    assert records["spark"].keys() == records["local"].keys()
    for user, record in records["spark"].items():
        expected = {k: v for k, v in records["local"][user].items() if k not in PER_REQUEST}
        assert {k: v for k, v in record.items() if k not in PER_REQUEST} == expected
        assert record["channel"] == "batch"


def test_a_task_refuses_another_snapshot_than_the_drivers(registry: SparkWorld) -> None:
    """A snapshot published mid-batch must not mix into it: the task stops instead."""
    from types import SimpleNamespace

    from serving.scorer import Scorer
    from serving.spark_batch import _Plan, _task_state

    state = Scorer(registry.home, registry.data, allow_past_now=True).state
    plan = _Plan(
        batch_id="test-batch", home=str(registry.home), data_dir=str(registry.data),
        model_alias="champion", model_name=state.model_name, model_version=state.model_version,
        policy_version=state.policy_version, snapshot_id="another-snapshot", k=10,
        now=CUTOFF.to_pydatetime(), chunk_users=128,
    )  # fmt: skip
    model = SimpleNamespace(value=state.booster.model_to_string())
    with pytest.raises(RuntimeError, match="refusing to mix snapshots"):
        _task_state(plan, model)
