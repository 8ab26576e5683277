"""Consent records and their state as of a time: the one definition every stage uses."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from enum import StrEnum

from policy.purposes import OFFER_RANKING

DEFAULT_VALIDITY = timedelta(days=365)  # 12 CFR 1033.421(b): at most one year
DEFAULT_LOOKBACK_DAYS = 365


@dataclass(frozen=True)
class Consent:
    consent_id: str
    user_id: str
    purposes: frozenset[str]
    granted_at: datetime
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    lookback_days: int = DEFAULT_LOOKBACK_DAYS

    @property
    def effective_expiry(self) -> datetime:
        """A missing expiry is never open-ended: the authorisation lapses after one year."""
        default = self.granted_at + DEFAULT_VALIDITY
        return default if self.expires_at is None else min(self.expires_at, default)

    def is_revoked_at(self, t: datetime) -> bool:
        return self.revoked_at is not None and self.revoked_at <= t

    def is_active_at(self, t: datetime) -> bool:
        return self.granted_at <= t < self.effective_expiry and not self.is_revoked_at(t)

    def covers(self, purpose: str) -> bool:
        return purpose in self.purposes

    def earliest_usable_ts(self) -> datetime:
        """Data minimisation: a consent opens transactions from lookback_days before its grant."""
        return self.granted_at - timedelta(days=self.lookback_days)


@dataclass(frozen=True)
class UserFacts:
    """What the policy needs to know of a user besides consents; unknown users have none."""

    user_id: str
    birth_date: date | None = None
    marketing_objection_at: datetime | None = None
    erased_at: datetime | None = None  # withdrawal through `offers erase`: final


class ConsentStatus(StrEnum):
    NONE = "none"
    ACTIVE = "active"
    REVOKED = "revoked"
    EXPIRED = "expired"
    NOT_IN_SCOPE = "not_in_scope"


@dataclass(frozen=True)
class ConsentState:
    status: ConsentStatus
    consent: Consent | None  # the consent the status speaks of

    @property
    def expires_at(self) -> datetime | None:
        return None if self.consent is None else self.consent.effective_expiry


def consent_state(
    consents: Iterable[Consent], at: datetime, purpose: str = OFFER_RANKING
) -> ConsentState:
    """State of a user's consents for `purpose` at `at`.

    Active if any consent granted by `at` covers the purpose and is active (the latest such one
    is named). Otherwise the status speaks of the latest consent covering the purpose (revoked or
    expired), or, when none covers it, of the latest consent of any scope.
    """
    granted = sorted((c for c in consents if c.granted_at <= at), key=lambda c: c.granted_at)
    if not granted:
        return ConsentState(ConsentStatus.NONE, None)
    covering = [c for c in granted if c.covers(purpose)]
    active = [c for c in covering if c.is_active_at(at)]
    if active:
        return ConsentState(ConsentStatus.ACTIVE, active[-1])
    latest = covering[-1] if covering else granted[-1]
    if latest.is_revoked_at(at):
        return ConsentState(ConsentStatus.REVOKED, latest)
    if at >= latest.effective_expiry:
        return ConsentState(ConsentStatus.EXPIRED, latest)
    return ConsentState(ConsentStatus.NOT_IN_SCOPE, latest)


def eighteenth_birthday(birth_date: date) -> date:
    """Born on 29 February: adult on 1 March of a non-leap 18th year (the later, safer date)."""
    try:
        return birth_date.replace(year=birth_date.year + 18)
    except ValueError:
        return date(birth_date.year + 18, 3, 1)


def is_minor(birth_date: date, at: datetime) -> bool:
    return at.date() < eighteenth_birthday(birth_date)
