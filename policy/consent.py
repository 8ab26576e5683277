"""Consent records and their state as of a time: the one definition every stage uses."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum

from policy.purposes import OFFER_RANKING

DEFAULT_VALIDITY = timedelta(days=365)  # 12 CFR 1033.421(b): at most one year
DEFAULT_LOOKBACK_DAYS = 365
ADULT_AGE = 18  # EU DSA art. 28(2): no profiling-based offers to minors


def as_utc(t: datetime) -> datetime:
    """Naive means UTC (the data contract's rule); aware times are converted, never mixed."""
    if t.tzinfo is UTC:
        return t
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def _opt_utc(t: datetime | None) -> datetime | None:
    return None if t is None else as_utc(t)


@dataclass(frozen=True)
class Consent:
    consent_id: str
    user_id: str
    purposes: frozenset[str]
    granted_at: datetime
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    lookback_days: int = DEFAULT_LOOKBACK_DAYS

    def __post_init__(self) -> None:
        # Normalised once here so that every comparison below is UTC against UTC.
        object.__setattr__(self, "purposes", frozenset(self.purposes))
        object.__setattr__(self, "granted_at", as_utc(self.granted_at))
        object.__setattr__(self, "expires_at", _opt_utc(self.expires_at))
        object.__setattr__(self, "revoked_at", _opt_utc(self.revoked_at))

    @property
    def effective_expiry(self) -> datetime:
        """A missing expiry is never open-ended, and no authorisation outlives one year."""
        default = self.granted_at + DEFAULT_VALIDITY
        return default if self.expires_at is None else min(self.expires_at, default)

    def is_revoked_at(self, t: datetime) -> bool:
        return self.revoked_at is not None and self.revoked_at <= as_utc(t)

    def is_active_at(self, t: datetime) -> bool:
        """This record alone; whether it is the one that counts is consent_state's business."""
        t = as_utc(t)
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

    def __post_init__(self) -> None:
        if isinstance(self.birth_date, datetime):  # a datetime is a date, but compares as neither
            object.__setattr__(self, "birth_date", self.birth_date.date())
        object.__setattr__(self, "marketing_objection_at", _opt_utc(self.marketing_objection_at))
        object.__setattr__(self, "erased_at", _opt_utc(self.erased_at))

    def is_erased_at(self, t: datetime) -> bool:
        return self.erased_at is not None and self.erased_at <= as_utc(t)


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
    def consent_id(self) -> str | None:
        return None if self.consent is None else self.consent.consent_id

    @property
    def expires_at(self) -> datetime | None:
        return None if self.consent is None else self.consent.effective_expiry

    @property
    def is_active(self) -> bool:
        return self.status is ConsentStatus.ACTIVE


def consent_state(
    consents: Iterable[Consent], at: datetime, purpose: str = OFFER_RANKING
) -> ConsentState:
    """State of a user's consents for `purpose` at `at`: the latest authorisation decides.

    Only consents granted by `at` count. The latest one covering the purpose decides (a
    re-authorisation supersedes older rows, so revoking or letting the latest lapse is final
    even if an older row would still run); a newer consent for other purposes only does not
    hide it. When no consent covers the purpose, the latest consent of any scope is named:
    revoked, expired, else not in scope. Ties on granted_at break on consent_id.
    """
    at = as_utc(at)
    granted = [c for c in consents if c.granted_at <= at]
    if not granted:
        return ConsentState(ConsentStatus.NONE, None)
    covering = [c for c in granted if c.covers(purpose)]
    latest = max(covering or granted, key=lambda c: (c.granted_at, c.consent_id))
    if latest.is_revoked_at(at):
        return ConsentState(ConsentStatus.REVOKED, latest)
    if at >= latest.effective_expiry:
        return ConsentState(ConsentStatus.EXPIRED, latest)
    if not latest.covers(purpose):
        return ConsentState(ConsentStatus.NOT_IN_SCOPE, latest)
    return ConsentState(ConsentStatus.ACTIVE, latest)


def active_consent(
    consents: Iterable[Consent], at: datetime, purpose: str = OFFER_RANKING
) -> Consent | None:
    """The consent that lets data be used for `purpose` at `at` (feature time), else None."""
    state = consent_state(consents, at, purpose)
    return state.consent if state.is_active else None


def eighteenth_birthday(birth_date: date) -> date:
    """Born on 29 February: adult on 1 March of a non-leap 18th year (the later, safer date)."""
    try:
        return birth_date.replace(year=birth_date.year + ADULT_AGE)
    except ValueError:
        return date(birth_date.year + ADULT_AGE, 3, 1)


def is_minor(birth_date: date, at: datetime) -> bool:
    """Age counts in whole days of the UTC calendar, like every other time in the system."""
    return as_utc(at).date() < eighteenth_birthday(birth_date)
