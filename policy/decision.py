"""The decision table of spec/policy.md, first match wins, deny by default."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from policy.consent import Consent, ConsentState, ConsentStatus, UserFacts, consent_state, is_minor
from policy.purposes import OFFER_RANKING, PurposeKind, classify_purpose
from policy.version import policy_version


class Reason(StrEnum):
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


# Facts for messages and the audit log, not legal advice.
LEGAL_REFS: dict[Reason, tuple[str, ...]] = {
    Reason.BANNED_PURPOSE: ("12 CFR 1033.421(a)", "GDPR art. 5(1)(b)", "PSD2 art. 66(3)(g)"),
    Reason.UNKNOWN_PURPOSE: ("GDPR art. 5(1)(b)", "PSD2 art. 67(2)(f)"),
    Reason.PURPOSE_NOT_SERVED: ("GDPR art. 5(1)(b)", "PSD2 art. 67(2)(f)"),
    Reason.NO_CONSENT: ("GDPR art. 6(1)(a)", "12 CFR 1033.421(a)"),
    Reason.CONSENT_REVOKED: ("GDPR art. 7(3)", "GDPR art. 17(1)(b)"),
    Reason.CONSENT_EXPIRED: ("12 CFR 1033.421(b)",),
    Reason.PURPOSE_NOT_IN_SCOPE: ("GDPR art. 5(1)(b)", "PSD2 art. 66(3)(g)"),
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
    def legal_refs(self) -> tuple[str, ...]:
        return LEGAL_REFS[self.reason]


def decide(
    purpose: str,
    now: datetime,
    consents: Iterable[Consent],
    user: UserFacts | None,
) -> Decision:
    """Decide one scoring request; `user` None (unknown) reads exactly like no consent."""
    consents = list(consents)
    kind = classify_purpose(purpose)
    state = consent_state(consents, now, OFFER_RANKING)
    if user is not None and user.erased_at is not None and user.erased_at <= now:
        state = ConsentState(ConsentStatus.REVOKED, state.consent)
    if kind is PurposeKind.BANNED:
        return _deny(Reason.BANNED_PURPOSE, state)
    if kind is PurposeKind.UNKNOWN:
        return _deny(Reason.UNKNOWN_PURPOSE, state)
    if kind is PurposeKind.NOT_SERVED:
        return _deny(Reason.PURPOSE_NOT_SERVED, state)
    if user is None or state.status is ConsentStatus.NONE:
        return _deny(Reason.NO_CONSENT, ConsentState(ConsentStatus.NONE, None))
    status_reason = {
        ConsentStatus.REVOKED: Reason.CONSENT_REVOKED,
        ConsentStatus.EXPIRED: Reason.CONSENT_EXPIRED,
        ConsentStatus.NOT_IN_SCOPE: Reason.PURPOSE_NOT_IN_SCOPE,
    }
    if state.status in status_reason:
        return _deny(status_reason[state.status], state)
    if user.marketing_objection_at is not None and user.marketing_objection_at <= now:
        return _deny(Reason.MARKETING_OBJECTION, state)
    if user.birth_date is not None and is_minor(user.birth_date, now):
        return _deny(Reason.MINOR, state)
    if user.birth_date is None:
        return _deny(Reason.AGE_UNKNOWN, state)
    return Decision(True, Reason.OK, state, policy_version())


def _deny(reason: Reason, state: ConsentState) -> Decision:
    return Decision(False, reason, state, policy_version())
