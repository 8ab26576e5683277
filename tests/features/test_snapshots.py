"""Snapshots: (b) equals (a), exclusion counts add up, publishing is atomic, erasure rewrites."""

from __future__ import annotations

import json

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from frames import assert_same_rows, at, consents, transactions, users
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features import definitions as fd
from features.backend import connect
from features.job import point_in_time
from features.snapshot import (
    CURRENT,
    MANIFEST,
    TABLE_KEYS,
    NothingUsableError,
    _content_hash,
    current_snapshot_id,
    erase_user,
    list_snapshots,
    load_snapshot,
    publish_snapshot,
)
from features.sources import register_sources

USER_IDS = ["a", "b", "c", "d"]
MERCHANTS = [("m1", "5411"), ("m2", "5812"), ("m3", "5912")]


def _world(rows):
    return (
        transactions(rows),
        users(USER_IDS),
        consents(
            [
                {"user_id": "a", "granted_at": "2024-01-01"},
                {"user_id": "b", "granted_at": "2024-03-01", "lookback_days": 30},
                {"user_id": "c", "granted_at": "2024-01-01", "revoked_at": "2024-06-15"},
                {"user_id": "c", "granted_at": "2024-06-20"},  # re-authorised
            ]
        ),
    )


def _sources(txns, u, cons, erased=None):
    return register_sources(connect(threads=1), txns, u, cons, erased or {}, at("2030-01-01"))


@st.composite
def world_rows(draw):
    n = draw(st.integers(min_value=1, max_value=25))
    start = at("2023-06-01")
    return [
        (
            draw(st.sampled_from(USER_IDS)),
            start + pd.Timedelta(hours=draw(st.integers(min_value=0, max_value=24 * 500))),
            draw(st.floats(min_value=-20, max_value=300, allow_nan=False).filter(lambda a: a != 0)),
            *draw(st.sampled_from(MERCHANTS)),
        )
        for _ in range(n)
    ]


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    world_rows(),
    st.lists(
        st.tuples(st.sampled_from(USER_IDS), st.integers(min_value=0, max_value=24 * 400)),
        min_size=1,
        max_size=3,
    ),
)
def test_point_in_time_rows_equal_a_snapshot_at_each_cutoff(tmp_path_factory, rows, pair_specs):
    txns, u, cons = _world(rows)
    pairs = pd.DataFrame(
        [(user, at("2024-02-01") + pd.Timedelta(hours=h)) for user, h in pair_specs],
        columns=["user_id", "cutoff"],
    )
    many = point_in_time(_sources(txns, u, cons), pairs)
    for cutoff in pairs.cutoff.unique():
        home = tmp_path_factory.mktemp("snap")
        try:
            publish_snapshot(_sources(txns, u, cons), home, cutoff.to_pydatetime())
        except NothingUsableError:  # refused: then no pair has an affinity row either
            for name in ("user_merchant", "user_mcc"):
                got = many.as_dict()[name]
                assert got[got.cutoff == cutoff].empty, name
            assert not (home / CURRENT).exists()
            continue
        one, _ = load_snapshot(home)
        wanted = set(pairs.loc[pairs.cutoff == cutoff, "user_id"])
        for name in ("user_merchant", "user_mcc", "user"):
            got = many.as_dict()[name]
            got = got[(got.cutoff == cutoff) & got.user_id.isin(wanted)]
            expected = one.as_dict()[name]
            expected = expected[expected.user_id.isin(wanted)]
            assert_same_rows(got, expected, TABLE_KEYS[name])
        for name in ("merchant_pop", "mcc_pop"):
            got = many.as_dict()[name]
            got = got[got.as_of == cutoff.replace(day=1, hour=0, minute=0, second=0, microsecond=0)]
            assert_same_rows(got, one.as_dict()[name], TABLE_KEYS[name])


def test_exclusion_counts_name_every_rule_and_add_up(tmp_path):
    rows = [
        ("a", "2024-06-01", 10.0, "m1", "5411"),  # kept
        ("a", "2024-06-02", 10.0, "m3", "5912"),  # sensitive
        ("a", "2024-07-02", 10.0, "m1", "5411"),  # after the cutoff
        ("a", "2022-12-01", 10.0, "m1", "5411"),  # before the lookback (granted 2024-01-01 - 365 d)
        ("b", "2024-01-15", 10.0, "m1", "5411"),  # before b's 30-day lookback
        ("d", "2024-06-01", 10.0, "m1", "5411"),  # d never consented
        ("c", "2024-06-01", 10.0, "m1", "5411"),  # c re-authorised, but is erased
    ]
    txns, u, cons = _world(rows)
    sources = _sources(txns, u, cons, erased={"c": at("2024-12-01").to_pydatetime()})
    manifest = publish_snapshot(sources, tmp_path, at("2024-07-01").to_pydatetime())
    assert manifest["exclusions_by_rule"] == {
        fd.RULE_AFTER_CUTOFF: 1,
        fd.RULE_NO_CONSENT: 1,
        fd.RULE_POLICY_DENIED: 0,
        fd.RULE_BEFORE_LOOKBACK: 2,
        fd.RULE_OUTSIDE_WINDOW: 0,
        fd.RULE_SENSITIVE: 1,
        fd.RULE_WITHDRAWN: 1,
    }
    assert manifest["transactions_read"] == len(rows)
    assert manifest["transactions_used"] == 1


def test_manifest_describes_the_snapshot(tmp_path):
    txns, u, cons = _world([("a", "2024-06-01", 10.0, "m1", "5411")])
    manifest = publish_snapshot(_sources(txns, u, cons), tmp_path, at("2024-07-01").to_pydatetime())
    on_disk = json.loads((tmp_path / manifest["snapshot_id"] / MANIFEST).read_text())
    assert on_disk == manifest
    assert manifest["cutoff"] == "2024-07-01T00:00:00+00:00"
    assert manifest["row_counts"] == {
        "user_merchant": 1,
        "user_mcc": 1,
        "user": 1,
        "merchant_pop": 1,
        "mcc_pop": 1,
    }
    assert set(manifest["features"]) >= {"um_n_30d", "uc_trend", "u_entropy_365d", "m_pop_90d"}
    assert current_snapshot_id(tmp_path) == manifest["snapshot_id"]
    assert len(manifest["content_hash"]) == 64


def test_same_inputs_give_the_same_snapshot_id(tmp_path):
    txns, u, cons = _world([("a", "2024-06-01", 10.0, "m1", "5411")])
    first = publish_snapshot(
        _sources(txns, u, cons), tmp_path / "x", at("2024-07-01").to_pydatetime()
    )
    second = publish_snapshot(
        _sources(txns, u, cons), tmp_path / "y", at("2024-07-01").to_pydatetime()
    )
    assert first["snapshot_id"] == second["snapshot_id"]


def test_a_job_that_fails_halfway_leaves_the_published_snapshot(tmp_path):
    txns, u, cons = _world([("a", "2024-06-01", 10.0, "m1", "5411")])
    old = publish_snapshot(_sources(txns, u, cons), tmp_path, at("2024-07-01").to_pydatetime())
    before = sorted(p.name for p in tmp_path.iterdir())

    def crash(table_name: str) -> None:
        raise RuntimeError(f"killed after writing {table_name}")

    with pytest.raises(RuntimeError, match="killed after writing"):
        publish_snapshot(
            _sources(txns, u, cons),
            tmp_path,
            at("2024-08-01").to_pydatetime(),
            on_table_written=crash,
        )
    assert current_snapshot_id(tmp_path) == old["snapshot_id"]
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no staging folder left
    tables, manifest = load_snapshot(tmp_path)
    assert manifest == old and len(tables.user) == 1


def test_erase_user_removes_rows_from_every_snapshot(tmp_path):
    rows = [("a", "2024-06-01", 10.0, "m1", "5411"), ("b", "2024-06-01", 5.0, "m2", "5812")]
    txns, u, cons = _world(rows)
    for cutoff in ("2024-07-01", "2024-08-01"):
        publish_snapshot(_sources(txns, u, cons), tmp_path, at(cutoff).to_pydatetime())
    receipt = erase_user(tmp_path, "a")
    assert len(receipt) == 2
    for removed in receipt.values():
        assert removed == {"user_merchant": 1, "user_mcc": 1, "user": 1}
    for m in list_snapshots(tmp_path):
        tables, manifest = load_snapshot(tmp_path, m["snapshot_id"])
        assert "a" not in set(tables.user.user_id) and set(tables.user.user_id) == {"b"}
        assert manifest["row_counts"]["user"] == 1
    assert erase_user(tmp_path, "a") == {
        sid: {"user_merchant": 0, "user_mcc": 0, "user": 0} for sid in receipt
    }


def test_content_hash_ignores_row_order_and_sees_every_value(tmp_path):
    txns, u, cons = _world(
        [
            ("a", "2024-06-01", 10.0, "m1", "5411"),
            ("a", "2024-06-02", 12.0, "m2", "5812"),
            ("c", "2024-06-25", 7.0, "m2", "5812"),
        ]
    )
    manifest = publish_snapshot(_sources(txns, u, cons), tmp_path, at("2024-07-01").to_pydatetime())
    folder = tmp_path / manifest["snapshot_id"]
    counts = manifest["row_counts"]
    assert _content_hash(folder, counts) == manifest["content_hash"]
    path = folder / "user_merchant.parquet"
    table = pq.read_table(path)
    assert table.num_rows == 3
    pq.write_table(table.take([2, 0, 1]), path)  # the same rows in another order
    assert _content_hash(folder, counts) == manifest["content_hash"]
    spend = table.column("um_spend_30d").to_pylist()
    spend[0] += 0.01
    column = table.schema.get_field_index("um_spend_30d")
    pq.write_table(table.set_column(column, "um_spend_30d", pa.array(spend)), path)
    assert _content_hash(folder, counts) != manifest["content_hash"]


def test_population_counts_users_allowed_at_the_month_start_but_not_at_the_cutoff(tmp_path):
    """c revoked on June 15 (re-authorised June 20): a snapshot on June 17 uses none of c's rows
    for features, yet c was allowed on June 1, the population as-of, so c's May purchase counts
    there, exactly as the point-in-time path counts it."""
    txns, u, cons = _world(
        [
            ("c", "2024-05-10", 10.0, "m2", "5812"),
            ("a", "2024-05-15", 5.0, "m1", "5411"),
        ]
    )
    cutoff = at("2024-06-17")
    manifest = publish_snapshot(_sources(txns, u, cons), tmp_path, cutoff.to_pydatetime())
    tables, _ = load_snapshot(tmp_path)
    assert set(tables.user_merchant.user_id) == {"a"}
    assert manifest["exclusions_by_rule"][fd.RULE_NO_CONSENT] == 1
    assert manifest["transactions_used"] == 1
    shares = dict(zip(tables.merchant_pop.merchant_id, tables.merchant_pop.m_pop_90d, strict=True))
    assert shares == {"m1": pytest.approx(1 / 3), "m2": pytest.approx(1 / 3)}  # a, b, c allowed
    assert set(tables.merchant_pop.as_of) == {at("2024-06-01")}
    pit = point_in_time(
        _sources(txns, u, cons), pd.DataFrame({"user_id": ["a"], "cutoff": [cutoff]})
    )
    assert_same_rows(pit.merchant_pop, tables.merchant_pop, TABLE_KEYS["merchant_pop"])
    assert_same_rows(pit.mcc_pop, tables.mcc_pop, TABLE_KEYS["mcc_pop"])
