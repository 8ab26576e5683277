"""Sensitive merchant category codes (ISO 18245) as data, tiered as in spec/policy.md."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Tier(StrEnum):
    A = "A"  # GDPR art. 9 inference: always excluded
    B = "B"  # criminal or legal situation: excluded
    C = "C"  # vulnerability: excluded by this system's policy
    REVIEW = "review"  # kept, but named so that a deployment can move them


@dataclass(frozen=True)
class SensitiveMcc:
    mcc: str
    tier: Tier
    group: str
    name: str


def _codes(tier: Tier, group: str, entries: dict[str, str]) -> list[SensitiveMcc]:
    return [SensitiveMcc(mcc, tier, group, name) for mcc, name in entries.items()]


MCC_TIERS: tuple[SensitiveMcc, ...] = tuple(
    _codes(
        Tier.A,
        "health",
        {
            "4119": "ambulance services",
            "5047": "medical, dental, ophthalmic, hospital equipment",
            "5122": "drugs, drug proprietaries, druggist sundries",
            "5912": "drug stores and pharmacies",
            "5975": "hearing aids",
            "5976": "orthopedic goods, prosthetic devices",
            "8011": "doctors and physicians",
            "8021": "dentists and orthodontists",
            "8031": "osteopaths",
            "8041": "chiropractors",
            "8042": "optometrists and ophthalmologists",
            "8043": "opticians, eyeglasses",
            "8044": "optical goods and eyeglasses (legacy)",
            "8049": "podiatrists",
            "8050": "nursing and personal care facilities",
            "8062": "hospitals",
            "8071": "medical and dental laboratories",
            "8099": "medical services not elsewhere classified",
        },
    )
    + _codes(Tier.A, "health_or_sex_life", {"7277": "counseling services"})
    + _codes(
        Tier.A,
        "religion",
        {"8661": "religious organizations", "5973": "religious goods stores"},
    )
    + _codes(Tier.A, "politics", {"8651": "political organizations"})
    + _codes(Tier.A, "trade_unions", {"8699": "membership organizations n.e.c."})
    + _codes(
        Tier.A,
        "sex_life",
        {
            "7273": "dating and escort services",
            "5967": "direct marketing, inbound teleservices",
        },
    )
    + _codes(
        Tier.B,
        "criminal_or_legal",
        {
            "9211": "court costs incl. alimony and child support",
            "9222": "fines",
            "9223": "bail and bond payments",
        },
    )
    + _codes(
        Tier.C,
        "gambling",
        {
            "7995": "betting, casino gambling",
            "7800": "government-owned lotteries",
            "7801": "government-licensed online casinos",
            "7802": "government-licensed horse/dog racing",
        },
    )
    + _codes(Tier.C, "alcohol", {"5921": "package stores, beer, wine, liquor", "5813": "bars"})
    + _codes(Tier.C, "tobacco", {"5993": "cigar stores and stands"})
    + _codes(
        Tier.REVIEW,
        "review",
        {
            "7297": "massage parlors",
            "8398": "charitable organizations",
            "8641": "civic and fraternal associations",
            "7261": "funeral services",
            "8111": "legal services",
        },
    )
)

EXCLUDED_TIERS: frozenset[Tier] = frozenset({Tier.A, Tier.B, Tier.C})

# The set every stage checks: feature jobs drop these before aggregation, serving never ranks them.
SENSITIVE_MCCS: frozenset[str] = frozenset(m.mcc for m in MCC_TIERS if m.tier in EXCLUDED_TIERS)
REVIEW_MCCS: frozenset[str] = frozenset(m.mcc for m in MCC_TIERS if m.tier is Tier.REVIEW)


def is_sensitive(mcc: str) -> bool:
    """True for tiers A, B and C: such a transaction or offer never feeds features or a slate."""
    return mcc in SENSITIVE_MCCS


def mcc_tier(mcc: str) -> Tier | None:
    """The tier a code is named in (review included), None for an ordinary code."""
    return _TIER_BY_MCC.get(mcc)


_TIER_BY_MCC: dict[str, Tier] = {m.mcc: m.tier for m in MCC_TIERS}
