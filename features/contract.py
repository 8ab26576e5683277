"""The data contract of DESIGN.md as code: table names, column names and their types.

Every module names columns through these constants; validation (features/validate.py) enforces
them at the edge, once.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

# --- table names (file stem: DATA_DIR/<table>.parquet or .csv) ---
TRANSACTIONS = "transactions"
USERS = "users"
CONSENTS = "consents"
OFFERS = "offers"
EXPOSURES = "exposures"
TABLES = (TRANSACTIONS, USERS, CONSENTS, OFFERS, EXPOSURES)

# --- columns ---
TXN_ID = "txn_id"
USER_ID = "user_id"
TS = "ts"
AMOUNT = "amount"
MERCHANT_ID = "merchant_id"
MCC = "mcc"
CURRENCY = "currency"

BIRTH_DATE = "birth_date"
MARKETING_OBJECTION_AT = "marketing_objection_at"
COUNTRY = "country"

CONSENT_ID = "consent_id"
PURPOSES = "purposes"
GRANTED_AT = "granted_at"
EXPIRES_AT = "expires_at"
REVOKED_AT = "revoked_at"
LOOKBACK_DAYS = "lookback_days"

OFFER_ID = "offer_id"
TITLE = "title"
STARTS_AT = "starts_at"
ENDS_AT = "ends_at"
REWARD = "reward"

SHOWN_AT = "shown_at"
SLATE_ID = "slate_id"
POSITION = "position"
REDEEMED_AT = "redeemed_at"
# Optional exposure columns of online experiments (serving/experiments.py): which experiment and
# arm served the slate, and the logging policy's probability of that offer at that position.
EXPERIMENT = "experiment"
ARM = "arm"
PROPENSITY = "propensity"
EXPERIMENT_ARMS = ("champion", "challenger", "holdout")  # serving.experiments.ARMS

# Synthetic data only: the hidden redemption probability, kept apart from the contract tables.
ORACLE = "oracle"
P_REDEEM = "p_redeem"


class Kind(StrEnum):
    STRING = "string"
    TIMESTAMP = "timestamp"  # UTC; naive input means UTC
    DATE = "date"
    FLOAT = "float"
    INT = "int"
    STRING_LIST = "list<string>"


@dataclass(frozen=True)
class Column:
    name: str
    kind: Kind
    required: bool = True  # the column must be present
    nullable: bool = False


SCHEMAS: dict[str, tuple[Column, ...]] = {
    TRANSACTIONS: (
        Column(TXN_ID, Kind.STRING),
        Column(USER_ID, Kind.STRING),
        Column(TS, Kind.TIMESTAMP),
        Column(AMOUNT, Kind.FLOAT),
        Column(MERCHANT_ID, Kind.STRING),
        Column(MCC, Kind.STRING),
        Column(CURRENCY, Kind.STRING, required=False, nullable=True),
    ),
    USERS: (
        Column(USER_ID, Kind.STRING),
        Column(BIRTH_DATE, Kind.DATE, nullable=True),
        Column(MARKETING_OBJECTION_AT, Kind.TIMESTAMP, nullable=True),
        Column(COUNTRY, Kind.STRING, required=False, nullable=True),
    ),
    CONSENTS: (
        Column(CONSENT_ID, Kind.STRING),
        Column(USER_ID, Kind.STRING),
        Column(PURPOSES, Kind.STRING_LIST),
        Column(GRANTED_AT, Kind.TIMESTAMP),
        Column(EXPIRES_AT, Kind.TIMESTAMP, nullable=True),
        Column(REVOKED_AT, Kind.TIMESTAMP, nullable=True),
        Column(LOOKBACK_DAYS, Kind.INT, required=False, nullable=True),
    ),
    OFFERS: (
        Column(OFFER_ID, Kind.STRING),
        Column(MERCHANT_ID, Kind.STRING),
        Column(MCC, Kind.STRING),
        Column(TITLE, Kind.STRING),
        Column(STARTS_AT, Kind.TIMESTAMP),
        Column(ENDS_AT, Kind.TIMESTAMP),
        Column(REWARD, Kind.FLOAT, required=False, nullable=True),
    ),
    EXPOSURES: (
        Column(USER_ID, Kind.STRING),
        Column(OFFER_ID, Kind.STRING),
        Column(SHOWN_AT, Kind.TIMESTAMP),
        Column(SLATE_ID, Kind.STRING, required=False, nullable=True),
        Column(POSITION, Kind.INT, required=False, nullable=True),
        Column(REDEEMED_AT, Kind.TIMESTAMP, nullable=True),
        Column(EXPERIMENT, Kind.STRING, required=False, nullable=True),
        Column(ARM, Kind.STRING, required=False, nullable=True),
        Column(PROPENSITY, Kind.FLOAT, required=False, nullable=True),
    ),
}

UNIQUE_KEYS: dict[str, str] = {
    TRANSACTIONS: TXN_ID,
    USERS: USER_ID,
    CONSENTS: CONSENT_ID,
    OFFERS: OFFER_ID,
}
