"""Tiny typed contract frames for tests, built by hand so expected values can be worked out."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping

import pandas as pd

from features import contract as c
from features.backend import connect
from features.definitions import CUTOFF
from features.job import point_in_time
from features.snapshot import TABLE_KEYS
from features.sources import register_sources
from features.tables import FeatureTables

UTC = "UTC"


def at(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz=UTC)


def transactions(rows: Iterable[tuple]) -> pd.DataFrame:
    """rows: (user_id, ts, amount, merchant_id, mcc); txn ids are numbered."""
    rows = list(rows)
    frame = pd.DataFrame(rows, columns=[c.USER_ID, c.TS, c.AMOUNT, c.MERCHANT_ID, c.MCC])
    frame.insert(0, c.TXN_ID, [f"t{i}" for i in range(len(rows))])
    frame[c.TS] = pd.to_datetime(frame[c.TS], utc=True).astype("datetime64[us, UTC]")
    frame[c.AMOUNT] = frame[c.AMOUNT].astype("float64")
    for col in (c.TXN_ID, c.USER_ID, c.MERCHANT_ID, c.MCC):
        frame[col] = frame[col].astype(str)
    return frame


def users(
    ids: Iterable[str],
    birth: Mapping[str, dt.date | None] | None = None,
    objection: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    ids = list(ids)
    birth = birth or {}
    objection = objection or {}
    return pd.DataFrame(
        {
            c.USER_ID: ids,
            c.BIRTH_DATE: pd.Series([birth.get(u, dt.date(1980, 1, 1)) for u in ids], dtype=object),
            c.MARKETING_OBJECTION_AT: pd.to_datetime(
                [objection.get(u) for u in ids], utc=True
            ).astype("datetime64[us, UTC]"),
        }
    )


def consents(rows: Iterable[dict]) -> pd.DataFrame:
    """rows: dicts with user_id, granted_at and optional purposes, expires_at, revoked_at, lookback_days."""
    rows = list(rows)
    frame = pd.DataFrame(
        {
            c.CONSENT_ID: [f"c{i}" for i in range(len(rows))],
            c.USER_ID: [r[c.USER_ID] for r in rows],
            c.PURPOSES: [list(r.get(c.PURPOSES, ["offer_ranking"])) for r in rows],
            c.GRANTED_AT: [r[c.GRANTED_AT] for r in rows],
            c.EXPIRES_AT: [r.get(c.EXPIRES_AT) for r in rows],
            c.REVOKED_AT: [r.get(c.REVOKED_AT) for r in rows],
            c.LOOKBACK_DAYS: [int(r.get(c.LOOKBACK_DAYS, 365)) for r in rows],
        }
    )
    for col in (c.GRANTED_AT, c.EXPIRES_AT, c.REVOKED_AT):
        frame[col] = pd.to_datetime(frame[col], utc=True).astype("datetime64[us, UTC]")
    return frame


def features_at(
    txns: pd.DataFrame,
    user_frame: pd.DataFrame,
    consent_frame: pd.DataFrame,
    pairs: Iterable[tuple[str, str]],
    erased: Mapping[str, dt.datetime] | None = None,
    run_time: str = "2030-01-01",
) -> FeatureTables:
    """Point-in-time features for (user_id, cutoff) pairs on a fresh DuckDB."""
    sources = register_sources(
        connect(threads=1), txns, user_frame, consent_frame, erased or {}, at(run_time)
    )
    pair_frame = pd.DataFrame(list(pairs), columns=[c.USER_ID, CUTOFF])
    pair_frame[CUTOFF] = pd.to_datetime(pair_frame[CUTOFF], utc=True)
    return point_in_time(sources, pair_frame)


def assert_same_rows(
    got: pd.DataFrame, expected: pd.DataFrame, keys: list[str], rtol: float = 1e-9
) -> None:
    """Point-in-time tables come unordered; compare them in key order."""
    pd.testing.assert_frame_equal(
        got.sort_values(keys).reset_index(drop=True),
        expected.sort_values(keys).reset_index(drop=True),
        check_exact=False,
        rtol=rtol,
    )


def assert_same_tables(a: FeatureTables, b: FeatureTables, rtol: float = 1e-12) -> None:
    for name, frame in a.as_dict().items():
        assert_same_rows(frame, b.as_dict()[name], TABLE_KEYS[name], rtol)
