"""The decision table of spec/policy.md, first match wins, deny by default."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from policy.consent import (
    Consent,
    ConsentState,
    ConsentStatus,
    UserFacts,
    as_utc,
    consent_state,
    is_minor,
)
from policy.purposes import OFFER_RANKING, PurposeKind, classify_purpose
from policy.version import policy_version


class Reason(StrEnum):
    """Reason codes in the order of the decision table (rows 1..10)."""

    BANNED_PURPOSE = "BANNED_PURPOSE"
    UNKNOWN_PURPOSE = "UNKNOWN_PURPOSE"
    PURPOSE_NOT_SERVED = "PURPOSE_NOT_SERVED"
    NO_CONSENT = "NO_CONSENT"
    CONSENT_REVOKED = "CONSENT_REVOKED"
    CONSENT_EXPIRED = "CONSENT_EXPIRED"
    PURPOSE_NOT_IN_SCOPE = "PURPOSE_NOT_IN_SCOPE"
    MARKETING_OBJECTION = "MARKETING_OBJECTION"
    MINOR = "MINOR"
    AGE_UNKNOWN = "AGE_UNKNOWN"
    OK = "OK"


# Facts for messages and the audit log, not legal advice (spec/policy.md "Why").
LEGAL_REFS: dict[Reason, tuple[str, ...]] = {
    Reason.BANNED_PURPOSE: (
        "12 CFR 1033.421(a)",
        "GDPR art. 5(1)(b)",
        "PSD2 art. 66(3)(g)",
        "PSD2 art. 67(2)(f)",
    ),
    Reason.UNKNOWN_PURPOSE: ("GDPR art. 5(1)(b)", "PSD2 art. 67(2)(f)"),
    Reason.PURPOSE_NOT_SERVED: ("GDPR art. 5(1)(b)", "PSD2 art. 67(2)(f)"),
    Reason.NO_CONSENT: ("GDPR art. 6(1)(a)", "12 CFR 1033.421(a)"),
    Reason.CONSENT_REVOKED: ("GDPR art. 7(3)", "GDPR art. 17(1)(b)"),
    Reason.CONSENT_EXPIRED: ("12 CFR 1033.421(b)",),
    Reason.PURPOSE_NOT_IN_SCOPE: ("GDPR art. 5(1)(b)", "PSD2 art. 66(3)(g)", "PSD2 art. 67(2)(f)"),
    Reason.MARKETING_OBJECTION: ("GDPR art. 21(2)-(3)",),
    Reason.MINOR: ("EU DSA art. 28(2)",),
    Reason.AGE_UNKNOWN: ("EU DSA art. 28(2)",),
    Reason.OK: ("GDPR art. 6(1)(a)", "12 CFR 1033.421(a)"),
}


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: Reason
    consent: ConsentState
    policy_version: str

    @property
    def decision(self) -> str:
        return "allow" if self.allowed else "deny"

    @property
    def reason_code(self) -> str:
        return self.reason.value

    @property
    def legal_refs(self) -> tuple[str, ...]:
        return LEGAL_REFS[self.reason]


_NO_CONSENT = ConsentState(ConsentStatus.NONE, None)

_STATUS_REASON = {
    ConsentStatus.REVOKED: Reason.CONSENT_REVOKED,  # row 4
    ConsentStatus.EXPIRED: Reason.CONSENT_EXPIRED,  # row 5
    ConsentStatus.NOT_IN_SCOPE: Reason.PURPOSE_NOT_IN_SCOPE,  # row 6
}


def decide(
    purpose: str,
    now: datetime,
    consents: Iterable[Consent],
    user: UserFacts | None,
) -> Decision:
    """Decide one scoring request; `user` None (unknown) reads exactly like no consent.

    Erasure (`user.erased_at <= now`) is a final withdrawal: it reads as a revoked consent.
    """
    now = as_utc(now)
    kind = classify_purpose(purpose)
    state = _NO_CONSENT if user is None else consent_state(consents, now, OFFER_RANKING)
    if user is not None and state.consent is not None and user.is_erased_at(now):
        state = ConsentState(ConsentStatus.REVOKED, state.consent)
    if kind is PurposeKind.BANNED:  # row 1
        return _deny(Reason.BANNED_PURPOSE, state)
    if kind is PurposeKind.UNKNOWN:  # row 2
        return _deny(Reason.UNKNOWN_PURPOSE, state)
    if kind is PurposeKind.NOT_SERVED:  # row 2
        return _deny(Reason.PURPOSE_NOT_SERVED, state)
    if user is None or state.status is ConsentStatus.NONE:  # row 3
        return _deny(Reason.NO_CONSENT, _NO_CONSENT)
    if state.status in _STATUS_REASON:  # rows 4-6
        return _deny(_STATUS_REASON[state.status], state)
    if user.marketing_objection_at is not None and user.marketing_objection_at <= now:  # row 7
        return _deny(Reason.MARKETING_OBJECTION, state)
    if user.birth_date is not None and is_minor(user.birth_date, now):  # row 8
        return _deny(Reason.MINOR, state)
    if user.birth_date is None:  # row 9
        return _deny(Reason.AGE_UNKNOWN, state)
    return Decision(True, Reason.OK, state, policy_version())  # row 10


def _deny(reason: Reason, state: ConsentState) -> Decision:
    return Decision(False, reason, state, policy_version())
