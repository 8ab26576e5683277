"""Households as users: their purchase lines, birth dates from age brackets, consents by rule."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date

import numpy as np
import pandas as pd

from features.contract import (
    AMOUNT,
    BIRTH_DATE,
    CONSENT_ID,
    COUNTRY,
    CURRENCY,
    EXPIRES_AT,
    GRANTED_AT,
    LOOKBACK_DAYS,
    MARKETING_OBJECTION_AT,
    MCC,
    MERCHANT_ID,
    PURPOSES,
    REVOKED_AT,
    TRANSACTIONS,
    TS,
    TXN_ID,
    USER_ID,
)
from offers.complete_journey.source import ImportReport, hash_int, utc
from policy.purposes import OFFER_RANKING

# --- rules for users and consents ---
AGE_REFERENCE = date(2017, 1, 1)  # a bracket's mid age is reached here (the data's first day)
ASSUMED_ADULT_BIRTH = date(1970, 7, 1)  # 46 at the data's start: inside the commonest bracket
GRANTED_AT_1 = pd.Timestamp("2016-11-01", tz="UTC")  # before the first campaign and purchase
GRANTED_AT_2 = pd.Timestamp("2017-10-25", tz="UTC")  # re-authorisation before the first lapses
CONSENT_DAYS = 365  # 12 CFR 1033.421(b): an authorisation lasts at most one year
WITHDRAW_SHARE_PER_MILLE = 100  # ~10% of households withdraw in the --withdrawals variant
WITHDRAW_FROM = pd.Timestamp("2017-06-01", tz="UTC")  # withdrawals fall in June-July 2017
WITHDRAW_SPAN_DAYS = 61
COUNTRY_US, CURRENCY_USD = "US", "USD"


def transactions_table(
    lines: pd.DataFrame, products: pd.DataFrame, report: ImportReport
) -> pd.DataFrame:
    """One row per purchase line with a catalogued product and a non-zero sales value."""
    report.source_rows[TRANSACTIONS] = len(lines)
    known = lines["product_id"].isin(products["product_id"])
    report.drop(TRANSACTIONS, "product_not_in_catalogue", int((~known).sum()))
    zero = known & (lines["sales_value"] == 0)
    report.drop(TRANSACTIONS, "zero_sales_value", int(zero.sum()))
    kept = lines.loc[known & ~zero].merge(products, on="product_id", how="left", validate="m:1")
    out = pd.DataFrame(
        {
            TXN_ID: kept["basket_id"].astype(str) + "-" + kept["product_id"].astype(str),
            USER_ID: kept["household_id"].astype(str),
            TS: utc(kept["transaction_timestamp"]),
            AMOUNT: kept["sales_value"].astype("float64"),
            MERCHANT_ID: kept[MERCHANT_ID].astype(str),
            MCC: kept[MCC].astype(str),
            CURRENCY: CURRENCY_USD,
        }
    )
    if out[TXN_ID].duplicated().any():
        raise ValueError("transactions: basket_id-product_id is not unique in the source")
    return out.sort_values([TS, TXN_ID], kind="stable").reset_index(drop=True)


def _bracket_birth(bracket: str) -> date:
    """A date inside an age bracket like `45-54` or `65+`: its mid age at AGE_REFERENCE."""
    lo, _, hi = bracket.rstrip("+").partition("-")
    age = (int(lo) + int(hi)) // 2 if hi else int(lo) + 5
    return date(AGE_REFERENCE.year - age - 1, 7, 1)  # mid-year: the age holds through 2017


def users_table(
    households: Iterable[int], demographics: pd.DataFrame, assume_adult: bool, report: ImportReport
) -> pd.DataFrame:
    """Every household seen anywhere; birth date from its bracket, else the assumed-adult rule."""
    ids = np.array(sorted({int(h) for h in households}), dtype=np.int64)
    brackets = dict(zip(demographics["household_id"], demographics["age"], strict=True))
    births = [
        _bracket_birth(brackets[h])
        if isinstance(brackets.get(h), str)
        else (ASSUMED_ADULT_BIRTH if assume_adult else None)
        for h in ids
    ]
    has_bracket = np.array([isinstance(brackets.get(h), str) for h in ids])
    report.facts["users_with_age_bracket"] = int(has_bracket.sum())
    report.facts["users_assumed_adult" if assume_adult else "users_age_unknown"] = int(
        (~has_bracket).sum()
    )
    outside = set(demographics["household_id"]) - set(ids.tolist())
    report.drop("demographics", "household_without_any_activity", len(outside))
    return pd.DataFrame(
        {
            USER_ID: ids.astype(str),
            BIRTH_DATE: pd.Series(births, dtype=object),
            MARKETING_OBJECTION_AT: pd.Series([pd.NaT] * len(ids), dtype="datetime64[us, UTC]"),
            COUNTRY: COUNTRY_US,
        }
    )


def withdraws(household: str) -> bool:
    """The --withdrawals variant's ~10% of households, by hash (same id, same answer)."""
    return hash_int(f"withdraw:{household}") % 1000 < WITHDRAW_SHARE_PER_MILLE


def withdrawal_time(household: str) -> pd.Timestamp:
    """A day in June-July 2017 at 00:00 UTC, by hash."""
    days = hash_int(f"withdraw-day:{household}") % WITHDRAW_SPAN_DAYS
    return WITHDRAW_FROM + pd.Timedelta(days=days)


def consent_rows(user_ids: Iterable[str], withdrawals: bool) -> pd.DataFrame:
    """Two yearly authorisations per household (2016-11-01, re-authorised 2017-10-25), 365-day
    look-back, purpose offer_ranking; with `withdrawals`, a withdrawing household revokes its
    first one mid-2017 and never re-authorises."""
    rows = []
    for user in user_ids:
        gone = withdrawals and withdraws(user)
        grants = (GRANTED_AT_1,) if gone else (GRANTED_AT_1, GRANTED_AT_2)
        for i, granted in enumerate(grants, start=1):
            revoked = withdrawal_time(user) if gone else pd.NaT
            rows.append((f"{user}-auth{i}", user, granted, revoked))
    frame = pd.DataFrame(rows, columns=[CONSENT_ID, USER_ID, GRANTED_AT, REVOKED_AT])
    return pd.DataFrame(
        {
            CONSENT_ID: frame[CONSENT_ID],
            USER_ID: frame[USER_ID],
            PURPOSES: pd.Series([[OFFER_RANKING]] * len(frame), dtype=object),
            GRANTED_AT: frame[GRANTED_AT].astype("datetime64[us, UTC]"),
            EXPIRES_AT: (frame[GRANTED_AT] + pd.Timedelta(days=CONSENT_DAYS)).astype(
                "datetime64[us, UTC]"
            ),
            REVOKED_AT: pd.to_datetime(frame[REVOKED_AT], utc=True).astype("datetime64[us, UTC]"),
            LOOKBACK_DAYS: np.full(len(frame), CONSENT_DAYS, dtype=np.int64),
        }
    )
