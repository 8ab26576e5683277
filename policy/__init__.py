"""Ground floor: purposes, consent state, sensitive categories and decisions. Pure, no I/O."""

from policy.consent import (
    Consent,
    ConsentState,
    ConsentStatus,
    UserFacts,
    consent_state,
    eighteenth_birthday,
    is_minor,
)
from policy.decision import LEGAL_REFS, Decision, Reason, decide
from policy.mcc import MCC_TIERS, REVIEW_MCCS, SENSITIVE_MCCS, Tier, is_sensitive, mcc_tier
from policy.purposes import (
    BANNED_PURPOSES,
    OFFER_RANKING,
    OTHER_CONSENTED_PURPOSES,
    PurposeKind,
    classify_purpose,
)
from policy.version import policy_version

__all__ = [
    "BANNED_PURPOSES",
    "LEGAL_REFS",
    "MCC_TIERS",
    "OFFER_RANKING",
    "OTHER_CONSENTED_PURPOSES",
    "REVIEW_MCCS",
    "SENSITIVE_MCCS",
    "Consent",
    "ConsentState",
    "ConsentStatus",
    "Decision",
    "PurposeKind",
    "Reason",
    "Tier",
    "UserFacts",
    "classify_purpose",
    "consent_state",
    "decide",
    "eighteenth_birthday",
    "is_minor",
    "mcc_tier",
    "policy_version",
]
