"""Typed contract frames -> policy objects, so serving, the CLI and audits decide with `policy`.

Input is the typed-frame contract of `features.validate.load_tables`: timestamps tz-aware
`datetime64[us, UTC]` (NaT for null), `birth_date` as `datetime.date` or None, `purposes` a list
of str, `lookback_days` int64. Columns are read as whole arrays (no per-row pandas access), so
100k users convert in well under a second.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime

import numpy as np
import pandas as pd

from features.contract import (
    BIRTH_DATE,
    CONSENT_ID,
    EXPIRES_AT,
    GRANTED_AT,
    LOOKBACK_DAYS,
    MARKETING_OBJECTION_AT,
    PURPOSES,
    REVOKED_AT,
    USER_ID,
)
from policy import Consent, UserFacts, as_utc
from policy.consent import DEFAULT_LOOKBACK_DAYS


def consents_by_user(consents: pd.DataFrame) -> dict[str, list[Consent]]:
    """Every consent row as a policy Consent, grouped by user in file order (none dropped)."""
    ids = _strings(consents[CONSENT_ID])
    users = _strings(consents[USER_ID])
    purposes = consents[PURPOSES].to_numpy(dtype=object)
    granted = _datetimes(consents[GRANTED_AT])
    expires = _datetimes(consents[EXPIRES_AT])
    revoked = _datetimes(consents[REVOKED_AT])
    lookback = _lookback(consents)
    scopes: dict[object, frozenset[str]] = {}  # few distinct purpose lists: share them
    out: dict[str, list[Consent]] = {}
    for cid, uid, ps, g, e, r, lb in zip(
        ids, users, purposes, granted, expires, revoked, lookback, strict=True
    ):
        if g is None:  # the contract never lets this through; never invent a grant time
            raise ValueError(f"consents: consent {cid!r} has no {GRANTED_AT}")
        key = tuple(ps) if isinstance(ps, list | np.ndarray) else ps
        scope = scopes.get(key)
        if scope is None:
            scope = scopes[key] = _purposes(ps)
        out.setdefault(uid, []).append(Consent(cid, uid, scope, g, e, r, lb))
    return out


def user_facts(
    users: pd.DataFrame, erased: Mapping[str, datetime] | None = None
) -> dict[str, UserFacts]:
    """UserFacts per row of `users`, with erasure times from the register when given.

    An erased user whose users row is gone stays absent: the policy then reads them as unknown
    (NO_CONSENT), which reveals nothing about whether they ever existed.
    """
    ids = _strings(users[USER_ID])
    if len(set(ids)) != len(ids):
        dupes = sorted(pd.Series(ids)[pd.Series(ids).duplicated()].unique())[:5]
        raise ValueError(f"users: duplicate {USER_ID} {dupes}; validate the tables first")
    births = _dates(users[BIRTH_DATE])
    objections = _datetimes(users[MARKETING_OBJECTION_AT])
    erased_at = {str(u): _to_utc(t) for u, t in (erased or {}).items()}
    return {
        uid: UserFacts(uid, b, o, erased_at.get(uid))
        for uid, b, o in zip(ids, births, objections, strict=True)
    }


def _strings(s: pd.Series) -> list[str]:
    return [str(v) for v in s.to_numpy(dtype=object)]


def _datetimes(s: pd.Series) -> list[datetime | None]:
    """Python datetimes in UTC, None for NaT; naive input means UTC, as everywhere."""
    if pd.api.types.is_datetime64_dtype(s.dtype):  # naive
        s = s.dt.tz_localize("UTC")
    elif not isinstance(s.dtype, pd.DatetimeTZDtype):
        s = pd.to_datetime(s, utc=True, format="ISO8601")
    elif str(s.dtype.tz) != "UTC":
        s = s.dt.tz_convert("UTC")
    values = s.dt.to_pydatetime().to_numpy(dtype=object) if len(s) else np.array([], object)
    missing = s.isna().to_numpy()
    return [None if m else v for v, m in zip(values, missing, strict=True)]


def _dates(s: pd.Series) -> list[date | None]:
    if pd.api.types.is_datetime64_any_dtype(s.dtype):
        s = s.dt.date
    return [
        None if v is None or v is pd.NaT or (isinstance(v, float) and np.isnan(v))
        else v.date() if isinstance(v, datetime)
        else v
        for v in s.to_numpy(dtype=object)
    ]  # fmt: skip


def _lookback(consents: pd.DataFrame) -> list[int]:
    if LOOKBACK_DAYS not in consents:
        return [DEFAULT_LOOKBACK_DAYS] * len(consents)
    values = consents[LOOKBACK_DAYS].astype("Float64").fillna(DEFAULT_LOOKBACK_DAYS)
    return values.astype("int64").tolist()


def _purposes(value: object) -> frozenset[str]:
    """A list (or array, from Parquet) of purposes; a missing list consents to nothing."""
    if isinstance(value, list | tuple | np.ndarray):
        return frozenset(str(p) for p in value)
    if isinstance(value, str):  # never iterate a string into letters
        return frozenset({value})
    return frozenset()


def _to_utc(t: datetime) -> datetime:
    return as_utc(t.to_pydatetime() if isinstance(t, pd.Timestamp) else t)
