"""Metamorphic and property tests: what must not influence features does not.

Each example builds a small world of users in every consent state, then changes only data
that must be invisible (after the cutoff, sensitive MCCs, users without consent, revoked,
erased, minors, objectors, before the lookback) and asserts every feature table is unchanged.
"""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest
from frames import assert_same_tables, at, consents, features_at, transactions, users
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

CUT = "2024-07-01"
MERCHANTS = [("m1", "5411"), ("m2", "5812"), ("m3", "5541"), ("m4", "5311")]
SENSITIVE = [("s1", "5912"), ("s2", "7995"), ("s3", "9222"), ("s4", "8661")]

# Users that may feed features, and users that must leave no trace, by reason.
OK_USERS = ["ok1", "ok2", "ok3"]
HIDDEN_USERS = ["none", "revoked", "erased", "minor", "objector", "expired", "other_purpose"]

USERS = users(
    OK_USERS + HIDDEN_USERS,
    birth={"minor": dt.date(2010, 1, 1)},
    objection={"objector": "2024-03-01"},
)
CONSENTS = consents(
    [{"user_id": u, "granted_at": "2024-01-01", "lookback_days": 90} for u in OK_USERS]
    + [
        {"user_id": "revoked", "granted_at": "2024-01-01", "revoked_at": "2024-05-01"},
        {"user_id": "erased", "granted_at": "2024-01-01"},
        {"user_id": "minor", "granted_at": "2024-01-01"},
        {"user_id": "objector", "granted_at": "2024-01-01"},
        {"user_id": "expired", "granted_at": "2023-01-01"},
        {"user_id": "other_purpose", "granted_at": "2024-01-01", "purposes": ["balance_display"]},
    ]
)
ERASED = {"erased": at("2024-12-01").to_pydatetime()}
LOOKBACK_START = at("2024-01-01") - pd.Timedelta(days=90)

days_before_cut = st.integers(min_value=0, max_value=400)
amounts = st.floats(min_value=-50, max_value=500, allow_nan=False).filter(lambda a: a != 0)


def _txn(user, days, amount, merchant):
    ts = at(CUT) - pd.Timedelta(days=days, hours=1)
    return (user, ts, amount, *merchant)


@st.composite
def visible_rows(draw):
    """Transactions of allowed users at ordinary merchants, inside the lookback."""
    n = draw(st.integers(min_value=1, max_value=12))
    return [
        _txn(
            draw(st.sampled_from(OK_USERS)),
            draw(st.integers(min_value=0, max_value=270)),  # lookback starts 272 days before CUT
            draw(amounts),
            draw(st.sampled_from(MERCHANTS)),
        )
        for _ in range(n)
    ]


@st.composite
def invisible_rows(draw):
    """Rows that must change nothing, one kind per draw."""
    n = draw(st.integers(min_value=1, max_value=10))
    rows = []
    for _ in range(n):
        kind = draw(st.sampled_from(["hidden_user", "sensitive", "before_lookback", "after_cut"]))
        amount = draw(amounts)
        if kind == "hidden_user":
            user = draw(st.sampled_from(HIDDEN_USERS))
            merchant = draw(st.sampled_from(MERCHANTS + SENSITIVE))
            rows.append(_txn(user, draw(days_before_cut), amount, merchant))
        elif kind == "sensitive":
            user = draw(st.sampled_from(OK_USERS))
            rows.append(_txn(user, draw(days_before_cut), amount, draw(st.sampled_from(SENSITIVE))))
        elif kind == "before_lookback":
            user = draw(st.sampled_from(OK_USERS))
            days = draw(st.integers(min_value=273, max_value=500))
            rows.append(_txn(user, days, amount, draw(st.sampled_from(MERCHANTS))))
        else:
            user = draw(st.sampled_from(OK_USERS + HIDDEN_USERS))
            ts = at(CUT) + pd.Timedelta(minutes=draw(st.integers(min_value=0, max_value=10**6)))
            rows.append((user, ts, amount, *draw(st.sampled_from(MERCHANTS))))
    return rows


def _features(rows):
    return features_at(
        transactions(rows),
        USERS,
        CONSENTS,
        [(u, CUT) for u in OK_USERS + HIDDEN_USERS],
        erased=ERASED,
    )


FAST = settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(visible_rows(), invisible_rows())
def test_invisible_rows_change_no_feature_of_anyone(visible, invisible):
    baseline = _features(visible)
    assert_same_tables(baseline, _features(visible + invisible))


@FAST
@given(visible_rows(), invisible_rows(), st.floats(min_value=0.1, max_value=10))
def test_changing_invisible_rows_changes_nothing(visible, invisible, factor):
    changed = [(u, ts, a * factor + 1.0, m, mcc) for (u, ts, a, m, mcc) in invisible]
    assert_same_tables(_features(visible + invisible), _features(visible + changed))


@FAST
@given(visible_rows(), invisible_rows())
def test_hidden_users_have_no_rows(visible, invisible):
    tables = _features(visible + invisible)
    for name in ("user_merchant", "user_mcc", "user"):
        frame = tables.as_dict()[name]
        assert not set(frame.user_id) & set(HIDDEN_USERS), name
    assert not set(tables.user_merchant.merchant_id) & {m for m, _ in SENSITIVE}


@FAST
@given(visible_rows(), st.lists(st.integers(min_value=0, max_value=10**6), min_size=1, max_size=8))
def test_rows_at_or_after_the_cutoff_change_nothing(visible, minutes):
    future = [("ok1", at(CUT) + pd.Timedelta(minutes=m), 42.0, "m1", "5411") for m in minutes]
    assert_same_tables(_features(visible), _features(visible + future))


def test_an_erasure_after_the_cutoff_still_removes_the_user():
    rows = [_txn("erased", 5, 20.0, MERCHANTS[0]), _txn("ok1", 5, 10.0, MERCHANTS[0])]
    tables = _features(rows)
    assert set(tables.user.user_id) == {"ok1"}
    assert tables.merchant_pop.m_pop_90d.iloc[0] == pytest.approx(1 / 3)  # ok1 of ok1..ok3
