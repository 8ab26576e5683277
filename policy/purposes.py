"""Purposes a request may name, and which of them this system serves."""

from __future__ import annotations

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


class PurposeKind(StrEnum):
    SERVED = "served"
    NOT_SERVED = "not_served"
    BANNED = "banned"
    UNKNOWN = "unknown"


def classify_purpose(purpose: str) -> PurposeKind:
    """Exact match only: a near-miss spelling is unknown, never silently mapped to a served one."""
    if purpose in BANNED_PURPOSES:
        return PurposeKind.BANNED
    if purpose in SERVED_PURPOSES:
        return PurposeKind.SERVED
    if purpose in OTHER_CONSENTED_PURPOSES:
        return PurposeKind.NOT_SERVED
    return PurposeKind.UNKNOWN
