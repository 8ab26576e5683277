"""Purposes a request may name, and which of them this system serves."""

from __future__ import annotations

import re
import unicodedata
from enum import StrEnum

OFFER_RANKING = "offer_ranking"

# Consented purposes that exist in consent records but that the Scorer does not serve.
OTHER_CONSENTED_PURPOSES: frozenset[str] = frozenset({"fraud_alert", "balance_display"})

# Banned whatever any consent says (spec/policy.md "Purposes").
BANNED_PURPOSES: frozenset[str] = frozenset(
    {
        "targeted_advertising",
        "audience_export",
        "lookalike_modeling",
        "third_party_sharing",
        "data_sale",
        "cross_sell_unrelated",
        "credit_or_eligibility_decision",
    }
)

SERVED_PURPOSES: frozenset[str] = frozenset({OFFER_RANKING})
KNOWN_PURPOSES: frozenset[str] = SERVED_PURPOSES | OTHER_CONSENTED_PURPOSES | BANNED_PURPOSES

_SEPARATORS = re.compile(r"[\s_\-]+")


class PurposeKind(StrEnum):
    SERVED = "served"
    NOT_SERVED = "not_served"
    BANNED = "banned"
    UNKNOWN = "unknown"


def normalise_purpose(purpose: str) -> str:
    """NFKC, case-folded, trimmed, runs of spaces/underscores/hyphens as one underscore.

    Used only to recognise a banned or not-served purpose written another way, so that
    `TARGETED_ADVERTISING` counts as the banned attempt it is; it never makes a purpose served.
    """
    return _SEPARATORS.sub("_", unicodedata.normalize("NFKC", purpose).casefold()).strip("_")


def classify_purpose(purpose: str) -> PurposeKind:
    """Served only on the exact spelling (fail closed: `OFFER_RANKING` is unknown, denied);
    banned and not-served purposes are recognised in any case, spacing or separator."""
    if purpose in SERVED_PURPOSES:
        return PurposeKind.SERVED
    normal = normalise_purpose(purpose)
    if normal in BANNED_PURPOSES:
        return PurposeKind.BANNED
    if normal in OTHER_CONSENTED_PURPOSES:
        return PurposeKind.NOT_SERVED
    return PurposeKind.UNKNOWN
