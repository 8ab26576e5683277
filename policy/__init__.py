"""Ground floor: purposes, consent state, sensitive categories and decisions. Pure, no I/O."""

from policy.consent import (
    ADULT_AGE,
    Consent,
    ConsentState,
    ConsentStatus,
    UserFacts,
    active_consent,
    as_utc,
    consent_state,
    eighteenth_birthday,
    is_minor,
)
from policy.decision import LEGAL_REFS, Decision, Reason, decide
from policy.mcc import (
    MCC_TIERS,
    REVIEW_MCCS,
    SENSITIVE_MCCS,
    SensitiveMcc,
    Tier,
    is_sensitive,
    mcc_tier,
)
from policy.purposes import (
    BANNED_PURPOSES,
    OFFER_RANKING,
    OTHER_CONSENTED_PURPOSES,
    PurposeKind,
    classify_purpose,
)
from policy.version import policy_version

__all__ = [
    "ADULT_AGE",
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
    "SensitiveMcc",
    "Tier",
    "UserFacts",
    "active_consent",
    "as_utc",
    "classify_purpose",
    "consent_state",
    "decide",
    "eighteenth_birthday",
    "is_minor",
    "is_sensitive",
    "mcc_tier",
    "policy_version",
]
