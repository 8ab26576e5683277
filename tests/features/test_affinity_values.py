"""Exact feature values on hand-made frames (code tests for features.definitions)."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from frames import assert_same_rows, at, consents, features_at, transactions, users

from features.backend import connect
from features.job import point_in_time
from features.sources import register_sources

CUT = "2024-07-01"


@pytest.fixture(scope="module")
def tables():
    txns = transactions(
        [
            (
                "u1",
                "2024-06-01",
                10.0,
                "m1",
                "5411",
            ),  # exactly 30 days old: outside the 30-d window
            ("u1", "2024-06-20", 20.0, "m1", "5411"),
            ("u1", "2024-06-25", -4.0, "m1", "5411"),  # refund: lowers spend, not counts
            ("u1", "2024-05-01", 5.0, "m2", "5812"),
            ("u1", "2024-07-01", 999.0, "m1", "5411"),  # at the cutoff: never used
            ("u1", "2024-06-28", 50.0, "m3", "5912"),  # pharmacy: sensitive, never used
            ("u2", "2024-06-10", 7.0, "m1", "5411"),
            ("u2", "2024-06-11", -30.0, "m2", "5812"),  # refund larger than spend: floored at 0
        ]
    )
    u = users(["u1", "u2"])
    cons = consents(
        [
            {"user_id": "u1", "granted_at": "2024-01-01"},
            {"user_id": "u2", "granted_at": "2024-01-01"},
        ]
    )
    return features_at(txns, u, cons, [("u1", CUT), ("u2", CUT)])


def _row(frame, **keys):
    mask = True
    for k, v in keys.items():
        mask = mask & (frame[k] == v)
    rows = frame.loc[mask]
    assert len(rows) == 1, f"expected one row for {keys}, got {len(rows)}"
    return rows.iloc[0]


def test_user_merchant_windows_recency_decay_share_trend(tables):
    r = _row(tables.user_merchant, user_id="u1", merchant_id="m1")
    assert (r.um_n_30d, r.um_n_90d, r.um_n_365d) == (1, 2, 2)
    assert (r.um_spend_30d, r.um_spend_90d, r.um_spend_365d) == (16.0, 26.0, 26.0)
    assert r.um_days_since_last == 11.0
    decayed = 10 * 2 ** (-30 / 30) + 20 * 2 ** (-11 / 30) - 4 * 2 ** (-6 / 30)
    assert r.um_decayed_spend == pytest.approx(decayed, rel=1e-12)
    assert r.um_share_365d == pytest.approx(26 / 31)
    assert r.um_trend == pytest.approx(math.log((16 + 1) / (10 / 2 + 1)))


def test_old_purchase_only_has_zero_recent_spend_and_negative_trend(tables):
    r = _row(tables.user_merchant, user_id="u1", merchant_id="m2")
    assert (r.um_n_30d, r.um_n_90d, r.um_spend_30d) == (0, 1, 0.0)
    assert r.um_days_since_last == 61.0
    assert r.um_trend == pytest.approx(math.log(1 / (5 / 2 + 1)))


def test_refund_larger_than_spend_floors_at_zero_and_keeps_counts(tables):
    r = _row(tables.user_merchant, user_id="u2", merchant_id="m2")
    assert r.um_spend_365d == 0.0 and r.um_decayed_spend == 0.0
    assert r.um_n_365d == 0  # a refund is not a purchase
    assert math.isnan(r.um_days_since_last)


def test_user_mcc_mirrors_single_merchant_categories(tables):
    r = _row(tables.user_mcc, user_id="u1", mcc="5411")
    assert (r.uc_n_90d, r.uc_spend_90d, r.uc_days_since_last) == (2, 26.0, 11.0)


def test_sensitive_and_after_cutoff_transactions_leave_no_trace(tables):
    assert "m3" not in set(tables.user_merchant.merchant_id)
    assert "5912" not in set(tables.user_mcc.mcc)
    r = _row(tables.user, user_id="u1")
    assert r.u_spend_365d == 31.0  # neither the 999 at the cutoff nor the pharmacy 50


def test_user_features(tables):
    r = _row(tables.user, user_id="u1")
    assert (r.u_active_days_365d, r.u_n_txn_365d, r.u_n_merchants_365d) == (4, 3, 2)
    p = [26 / 31, 5 / 31]
    assert r.u_entropy_365d == pytest.approx(-sum(x * math.log(x) for x in p))
    r2 = _row(tables.user, user_id="u2")
    assert (r2.u_spend_365d, r2.u_n_merchants_365d, r2.u_entropy_365d) == (7.0, 1, 0.0)


def test_population_shares_count_allowed_users(tables):
    m1 = _row(tables.merchant_pop, merchant_id="m1")
    assert m1.m_pop_90d == 1.0  # both allowed users bought at m1 in the 90 days before July 1
    assert m1.as_of == at("2024-07-01")
    assert _row(tables.merchant_pop, merchant_id="m2").m_pop_90d == 0.5  # u2 only refunded there
    assert _row(tables.mcc_pop, mcc="5812").c_pop_90d == 0.5


def test_half_life_is_a_parameter():
    txns = transactions([("u1", "2024-06-01", 8.0, "m1", "5411")])
    sources = register_sources(
        connect(threads=1),
        txns,
        users(["u1"]),
        consents([{"user_id": "u1", "granted_at": "2024-01-01"}]),
        {},
        at("2030-01-01"),
    )
    pairs = pd.DataFrame({"user_id": ["u1"], "cutoff": [at("2024-07-01")]})
    decayed = point_in_time(sources, pairs, half_life_days=15.0).user_merchant.um_decayed_spend
    assert decayed.iloc[0] == pytest.approx(8 * 2 ** (-30 / 15))


def test_a_merchant_under_two_mccs_rolls_up_per_merchant_and_splits_per_mcc():
    txns = transactions(
        [
            ("u1", "2024-06-01", 10.0, "m1", "5411"),
            ("u1", "2024-06-11", 5.0, "m1", "5812"),  # the same merchant, recoded
            ("u1", "2024-06-21", 3.0, "m2", "5812"),
        ]
    )
    cons = consents([{"user_id": "u1", "granted_at": "2024-01-01"}])
    tables = features_at(txns, users(["u1"]), cons, [("u1", CUT)])
    m1 = _row(tables.user_merchant, user_id="u1", merchant_id="m1")
    assert (m1.um_n_365d, m1.um_spend_365d, m1.um_days_since_last) == (2, 15.0, 20.0)
    assert m1.um_share_365d == pytest.approx(15 / 18)
    assert len(tables.user_merchant) == 2
    grocery = _row(tables.user_mcc, user_id="u1", mcc="5411")
    dining = _row(tables.user_mcc, user_id="u1", mcc="5812")
    assert (grocery.uc_n_365d, grocery.uc_spend_365d) == (1, 10.0)
    assert (dining.uc_n_365d, dining.uc_spend_365d, dining.uc_days_since_last) == (2, 8.0, 10.0)
    user = _row(tables.user, user_id="u1")
    assert (user.u_n_merchants_365d, user.u_active_days_365d, user.u_spend_365d) == (2, 3, 18.0)
    p = [15 / 18, 3 / 18]
    assert user.u_entropy_365d == pytest.approx(-sum(x * math.log(x) for x in p), rel=1e-12)


def test_the_merchant_rollup_shortcut_changes_no_value():
    """One MCC per merchant skips the per-merchant rollup; forcing it gives the same tables."""
    from features import definitions as fd
    from features.affinity import affinity_features, merchants_with_several_mccs

    txns = transactions(
        [
            ("u1", "2024-06-01", 10.0, "m1", "5411"),
            ("u1", "2024-06-20", 20.0, "m1", "5411"),
            ("u1", "2024-06-25", -4.0, "m1", "5411"),
            ("u2", "2024-05-01", 5.0, "m2", "5812"),
        ]
    )
    cons = consents([{"user_id": u, "granted_at": "2024-01-01"} for u in ("u1", "u2")])
    sources = register_sources(
        connect(threads=1), txns, users(["u1", "u2"]), cons, {}, at("2030-01-01")
    )
    pairs = sources.con.create_table(
        "p", pd.DataFrame({"user_id": ["u1", "u2"], "cutoff": [at(CUT)] * 2}), overwrite=True
    )
    allowed = fd.allowed_pairs(pairs, sources.windows, sources.gates)
    base = fd.window_aggregates(fd.usable_transactions(sources.transactions, allowed))
    assert sources.con.execute(merchants_with_several_mccs(base)) == 0
    short = affinity_features(base, one_mcc_per_merchant=True)
    full = affinity_features(base, one_mcc_per_merchant=False)
    for name, keys in (
        ("user_merchant", ["user_id", "merchant_id"]),
        ("user_mcc", ["user_id", "mcc"]),
        ("user", ["user_id"]),
    ):
        got, expected = (sources.con.execute(t[name]) for t in (short, full))
        assert len(got) > 0
        assert_same_rows(got, expected, keys, rtol=0)


def test_active_days_count_every_day_of_the_window():
    """A purchase every day for a year: 365 distinct days, across all six bitmap words."""
    days = pd.date_range("2023-07-02 12:00", "2024-06-30 12:00", freq="D", tz="UTC")
    txns = transactions([("u1", str(d), 1.0, "m1", "5411") for d in days])
    cons = consents([{"user_id": "u1", "granted_at": "2024-01-01"}])
    tables = features_at(txns, users(["u1"]), cons, [("u1", CUT)])
    r = _row(tables.user, user_id="u1")
    assert len(days) == 365
    assert (r.u_active_days_365d, r.u_n_txn_365d) == (365, 365)
