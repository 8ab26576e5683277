"""The decision table of spec/policy.md, row by row, in order, and at its exact boundaries."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from policy import (
    BANNED_PURPOSES,
    LEGAL_REFS,
    OFFER_RANKING,
    Consent,
    ConsentStatus,
    Decision,
    Reason,
    UserFacts,
    active_consent,
    consent_state,
    decide,
    eighteenth_birthday,
    is_minor,
    policy_version,
)

US = timedelta(microseconds=1)
NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
ADULT = date(1990, 1, 1)
SPEC_BANNED = (
    "targeted_advertising",
    "audience_export",
    "lookalike_modeling",
    "third_party_sharing",
    "data_sale",
    "cross_sell_unrelated",
    "credit_or_eligibility_decision",
)


def consent(
    cid: str = "c1",
    purposes: tuple[str, ...] = (OFFER_RANKING,),
    granted_at: datetime = NOW - timedelta(days=30),
    expires_at: datetime | None = None,
    revoked_at: datetime | None = None,
) -> Consent:
    return Consent(cid, "u1", frozenset(purposes), granted_at, expires_at, revoked_at)


def user(
    birth_date: date | None = ADULT,
    objection: datetime | None = None,
    erased_at: datetime | None = None,
) -> UserFacts:
    return UserFacts("u1", birth_date, objection, erased_at)


def reason(
    purpose: str = OFFER_RANKING,
    now: datetime = NOW,
    consents: list[Consent] | None = None,
    facts: UserFacts | None = None,
) -> Reason:
    return decide(purpose, now, [consent()] if consents is None else consents, facts).reason


# --- every row of the table -------------------------------------------------------------------

ROWS: list[tuple[str, str, list[Consent], UserFacts | None, Reason]] = [
    ("1 banned", "targeted_advertising", [consent()], user(), Reason.BANNED_PURPOSE),
    ("2 unknown", "marketing", [consent()], user(), Reason.UNKNOWN_PURPOSE),
    ("2 not served", "fraud_alert", [consent()], user(), Reason.PURPOSE_NOT_SERVED),
    ("3 no consent", OFFER_RANKING, [], user(), Reason.NO_CONSENT),
    (
        "4 revoked",
        OFFER_RANKING,
        [consent(revoked_at=NOW - timedelta(days=1))],
        user(),
        Reason.CONSENT_REVOKED,
    ),
    (
        "5 expired",
        OFFER_RANKING,
        [consent(expires_at=NOW - timedelta(days=1))],
        user(),
        Reason.CONSENT_EXPIRED,
    ),
    (
        "6 not in scope",
        OFFER_RANKING,
        [consent(purposes=("fraud_alert", "balance_display"))],
        user(),
        Reason.PURPOSE_NOT_IN_SCOPE,
    ),
    (
        "7 objection",
        OFFER_RANKING,
        [consent()],
        user(objection=NOW - timedelta(days=1)),
        Reason.MARKETING_OBJECTION,
    ),
    ("8 minor", OFFER_RANKING, [consent()], user(birth_date=date(2010, 1, 1)), Reason.MINOR),
    ("9 age unknown", OFFER_RANKING, [consent()], user(birth_date=None), Reason.AGE_UNKNOWN),
    ("10 ok", OFFER_RANKING, [consent()], user(), Reason.OK),
]


@pytest.mark.parametrize(
    ("purpose", "consents", "facts", "expected"),
    [r[1:] for r in ROWS],
    ids=[r[0] for r in ROWS],
)
def test_each_row_of_the_decision_table(
    purpose: str, consents: list[Consent], facts: UserFacts | None, expected: Reason
) -> None:
    d = decide(purpose, NOW, consents, facts)
    assert d.reason is expected
    assert d.reason_code == expected.value
    assert d.allowed is (expected is Reason.OK)
    assert d.decision == ("allow" if expected is Reason.OK else "deny")
    assert d.legal_refs and all(isinstance(r, str) and r for r in d.legal_refs)
    assert d.policy_version == policy_version()


def test_every_reason_code_has_legal_refs_and_the_spec_spelling() -> None:
    assert [r.value for r in Reason] == [
        "BANNED_PURPOSE",
        "UNKNOWN_PURPOSE",
        "PURPOSE_NOT_SERVED",
        "NO_CONSENT",
        "CONSENT_REVOKED",
        "CONSENT_EXPIRED",
        "PURPOSE_NOT_IN_SCOPE",
        "MARKETING_OBJECTION",
        "MINOR",
        "AGE_UNKNOWN",
        "OK",
    ]
    assert set(LEGAL_REFS) == set(Reason)
    assert all(refs for refs in LEGAL_REFS.values())


def test_the_banned_list_is_the_specs() -> None:
    assert frozenset(SPEC_BANNED) == BANNED_PURPOSES


@pytest.mark.parametrize("purpose", SPEC_BANNED)
def test_every_banned_purpose_is_denied_even_for_a_fully_consenting_adult(purpose: str) -> None:
    everything = (OFFER_RANKING, *SPEC_BANNED)
    assert reason(purpose, consents=[consent(purposes=everything)], facts=user()) is (
        Reason.BANNED_PURPOSE
    )


@pytest.mark.parametrize(
    "purpose", ["", "Offer_Ranking", "offer_ranking ", "offer-ranking", "OFFER_RANKING", "ads"]
)
def test_near_misses_of_offer_ranking_are_unknown_never_mapped(purpose: str) -> None:
    assert reason(purpose, facts=user()) is Reason.UNKNOWN_PURPOSE


@pytest.mark.parametrize("purpose", ["fraud_alert", "balance_display"])
def test_consented_purposes_the_scorer_does_not_serve(purpose: str) -> None:
    consents = [consent(purposes=(OFFER_RANKING, purpose))]
    assert reason(purpose, consents=consents, facts=user()) is Reason.PURPOSE_NOT_SERVED


# --- first match wins -------------------------------------------------------------------------

MINOR_BIRTH = date(2010, 1, 1)
REVOKED = [consent(revoked_at=NOW - timedelta(days=1))]
EXPIRED = [consent(expires_at=NOW - timedelta(days=1))]
OUT_OF_SCOPE = [consent(purposes=("fraud_alert",))]
OBJECTED = NOW - timedelta(days=1)

ORDER: list[tuple[str, str, list[Consent], UserFacts | None, Reason]] = [
    ("banned, no consent", "data_sale", [], user(), Reason.BANNED_PURPOSE),
    ("banned, unknown user", "audience_export", [], None, Reason.BANNED_PURPOSE),
    ("banned, minor, revoked", "data_sale", REVOKED, user(MINOR_BIRTH), Reason.BANNED_PURPOSE),
    ("unknown purpose, no consent", "spam", [], user(), Reason.UNKNOWN_PURPOSE),
    ("unknown purpose, minor", "spam", [consent()], user(MINOR_BIRTH), Reason.UNKNOWN_PURPOSE),
    ("not served, revoked", "balance_display", REVOKED, user(), Reason.PURPOSE_NOT_SERVED),
    (
        "no consent, minor, objection",
        OFFER_RANKING,
        [],
        user(MINOR_BIRTH, OBJECTED),
        Reason.NO_CONSENT,
    ),
    ("no consent, age unknown", OFFER_RANKING, [], user(None), Reason.NO_CONSENT),
    ("revoked, minor", OFFER_RANKING, REVOKED, user(MINOR_BIRTH), Reason.CONSENT_REVOKED),
    ("revoked, objection", OFFER_RANKING, REVOKED, user(ADULT, OBJECTED), Reason.CONSENT_REVOKED),
    (
        "revoked and past expiry",
        OFFER_RANKING,
        [consent(expires_at=NOW - timedelta(days=1), revoked_at=NOW - timedelta(days=2))],
        user(),
        Reason.CONSENT_REVOKED,
    ),
    (
        "revoked, not in scope",
        OFFER_RANKING,
        [consent(purposes=("fraud_alert",), revoked_at=NOW - timedelta(days=1))],
        user(),
        Reason.CONSENT_REVOKED,
    ),
    (
        "expired, not in scope",
        OFFER_RANKING,
        [consent(purposes=("fraud_alert",), expires_at=NOW - timedelta(days=1))],
        user(),
        Reason.CONSENT_EXPIRED,
    ),
    ("expired, minor", OFFER_RANKING, EXPIRED, user(MINOR_BIRTH), Reason.CONSENT_EXPIRED),
    ("expired, age unknown", OFFER_RANKING, EXPIRED, user(None), Reason.CONSENT_EXPIRED),
    (
        "not in scope, objection",
        OFFER_RANKING,
        OUT_OF_SCOPE,
        user(ADULT, OBJECTED),
        Reason.PURPOSE_NOT_IN_SCOPE,
    ),
    (
        "not in scope, minor",
        OFFER_RANKING,
        OUT_OF_SCOPE,
        user(MINOR_BIRTH),
        Reason.PURPOSE_NOT_IN_SCOPE,
    ),
    (
        "objection, minor",
        OFFER_RANKING,
        [consent()],
        user(MINOR_BIRTH, OBJECTED),
        Reason.MARKETING_OBJECTION,
    ),
    (
        "objection, age unknown",
        OFFER_RANKING,
        [consent()],
        user(None, OBJECTED),
        Reason.MARKETING_OBJECTION,
    ),
]


@pytest.mark.parametrize(
    ("purpose", "consents", "facts", "expected"),
    [r[1:] for r in ORDER],
    ids=[r[0] for r in ORDER],
)
def test_first_match_wins(
    purpose: str, consents: list[Consent], facts: UserFacts | None, expected: Reason
) -> None:
    assert decide(purpose, NOW, consents, facts).reason is expected


# --- boundaries -------------------------------------------------------------------------------


def test_granted_at_is_inclusive() -> None:
    g = datetime(2025, 3, 1, 9, 30, tzinfo=UTC)
    cs = [consent(granted_at=g)]
    assert reason(now=g, consents=cs, facts=user()) is Reason.OK
    assert reason(now=g - US, consents=cs, facts=user()) is Reason.NO_CONSENT


def test_expires_at_is_exclusive() -> None:
    e = datetime(2025, 7, 1, tzinfo=UTC)
    cs = [consent(expires_at=e)]
    assert reason(now=e - US, consents=cs, facts=user()) is Reason.OK
    assert reason(now=e, consents=cs, facts=user()) is Reason.CONSENT_EXPIRED


def test_default_expiry_is_granted_at_plus_365_days() -> None:
    g = datetime(2024, 2, 29, 8, tzinfo=UTC)  # a leap year: 365 days, not "same date next year"
    cs = [consent(granted_at=g, expires_at=None)]
    end = g + timedelta(days=365)
    assert end == datetime(2025, 2, 28, 8, tzinfo=UTC)
    assert reason(now=end - US, consents=cs, facts=user()) is Reason.OK
    d = decide(OFFER_RANKING, end, cs, user())
    assert d.reason is Reason.CONSENT_EXPIRED
    assert d.consent.expires_at == end


def test_an_explicit_expiry_beyond_one_year_is_capped_at_one_year() -> None:
    """12 CFR 1033.421(b): authorisation lasts at most one year, whatever the record says."""
    g = datetime(2024, 1, 10, tzinfo=UTC)
    cs = [consent(granted_at=g, expires_at=g + timedelta(days=500))]
    assert reason(now=g + timedelta(days=365) - US, consents=cs, facts=user()) is Reason.OK
    assert reason(now=g + timedelta(days=365), consents=cs, facts=user()) is Reason.CONSENT_EXPIRED


def test_revoked_at_is_inclusive() -> None:
    r = datetime(2025, 5, 20, 17, 5, tzinfo=UTC)
    cs = [consent(revoked_at=r)]
    assert reason(now=r - US, consents=cs, facts=user()) is Reason.OK
    assert reason(now=r, consents=cs, facts=user()) is Reason.CONSENT_REVOKED


def test_marketing_objection_is_inclusive() -> None:
    o = datetime(2025, 5, 25, 6, tzinfo=UTC)
    assert reason(now=o - US, facts=user(objection=o)) is Reason.OK
    assert reason(now=o, facts=user(objection=o)) is Reason.MARKETING_OBJECTION


def test_eighteenth_birthday() -> None:
    born = date(2007, 6, 1)
    last_minor_instant = datetime(2025, 5, 31, 23, 59, 59, 999999, tzinfo=UTC)
    assert reason(now=last_minor_instant, facts=user(born)) is Reason.MINOR
    assert reason(now=datetime(2025, 6, 1, tzinfo=UTC), facts=user(born)) is Reason.OK


def test_born_on_29_february_is_adult_on_1_march() -> None:
    born = date(2004, 2, 29)
    assert eighteenth_birthday(born) == date(2022, 3, 1)
    cs = [consent(granted_at=datetime(2022, 1, 1, tzinfo=UTC))]
    feb28 = datetime(2022, 2, 28, 23, 59, tzinfo=UTC)
    mar1 = datetime(2022, 3, 1, tzinfo=UTC)
    assert reason(now=feb28, consents=cs, facts=user(born)) is Reason.MINOR
    assert reason(now=mar1, consents=cs, facts=user(born)) is Reason.OK


def test_age_is_counted_on_the_utc_calendar() -> None:
    born = date(2007, 6, 1)
    # 01:00 in UTC+2 on the birthday is still 23:00 UTC the day before.
    local = datetime(2025, 6, 1, 1, 0, tzinfo=timezone(timedelta(hours=2)))
    assert is_minor(born, local)
    assert reason(now=local, facts=user(born)) is Reason.MINOR


def test_naive_times_mean_utc() -> None:
    naive_now = NOW.replace(tzinfo=None)
    naive_consent = Consent("c1", "u1", frozenset({OFFER_RANKING}), naive_now)
    assert naive_consent.granted_at == NOW
    assert decide(OFFER_RANKING, naive_now, [consent()], user()) == decide(
        OFFER_RANKING, NOW, [consent()], user()
    )
    assert reason(now=naive_now, consents=[naive_consent], facts=user()) is Reason.OK
    assert reason(now=naive_now - US, consents=[naive_consent], facts=user()) is Reason.NO_CONSENT


def test_record_methods_accept_naive_times_and_birth_datetimes() -> None:
    c = consent(revoked_at=NOW)
    assert c.is_active_at(NOW.replace(tzinfo=None) - US)
    assert c.is_revoked_at(NOW.replace(tzinfo=None))
    assert UserFacts("u1", datetime(1990, 1, 1, 23, 0)).birth_date == date(1990, 1, 1)  # type: ignore[arg-type]


def test_purposes_given_as_a_list_are_normalised() -> None:
    c = Consent("c1", "u1", [OFFER_RANKING], NOW)  # type: ignore[arg-type]
    assert c.purposes == frozenset({OFFER_RANKING})
    hash(c)


# --- several consents per user ----------------------------------------------------------------


def test_reauthorisation_after_expiry_allows() -> None:
    old = consent("c_old", granted_at=datetime(2023, 5, 1, tzinfo=UTC))  # lapsed 2024-04-30
    new = consent("c_new", granted_at=datetime(2024, 6, 1, tzinfo=UTC))
    between = datetime(2024, 5, 15, tzinfo=UTC)
    assert reason(now=between, consents=[old, new], facts=user()) is Reason.CONSENT_EXPIRED
    d = decide(OFFER_RANKING, datetime(2024, 7, 1, tzinfo=UTC), [new, old], user())
    assert d.reason is Reason.OK
    assert d.consent.consent.consent_id == "c_new"


def test_reauthorisation_after_revocation_allows() -> None:
    old = consent(
        "c_old", granted_at=NOW - timedelta(days=100), revoked_at=NOW - timedelta(days=50)
    )
    new = consent("c_new", granted_at=NOW - timedelta(days=10))
    assert reason(now=NOW - timedelta(days=20), consents=[old, new], facts=user()) is (
        Reason.CONSENT_REVOKED
    )
    assert decide(OFFER_RANKING, NOW, [old, new], user()).consent.consent_id == "c_new"


def test_a_newer_consent_for_other_purposes_does_not_hide_an_active_offer_ranking_one() -> None:
    ranking = consent("c_rank", granted_at=NOW - timedelta(days=60))
    fraud = consent("c_fraud", purposes=("fraud_alert",), granted_at=NOW - timedelta(days=5))
    fraud_revoked = consent(
        "c_fraud2",
        purposes=("fraud_alert",),
        granted_at=NOW - timedelta(days=3),
        revoked_at=NOW - timedelta(days=1),
    )
    d = decide(OFFER_RANKING, NOW, [ranking, fraud, fraud_revoked], user())
    assert d.reason is Reason.OK
    assert d.consent.consent_id == "c_rank"


def test_revoking_the_latest_authorisation_is_final_even_if_an_older_one_would_run() -> None:
    older = consent("c1", granted_at=NOW - timedelta(days=90))  # on its own, active until 2026
    latest = consent("c2", granted_at=NOW - timedelta(days=30), revoked_at=NOW - timedelta(days=1))
    d = decide(OFFER_RANKING, NOW, [older, latest], user())
    assert d.reason is Reason.CONSENT_REVOKED
    assert d.consent.consent_id == "c2"
    assert active_consent([older, latest], NOW) is None


def test_consents_granted_in_the_future_do_not_count() -> None:
    future = consent("c_future", granted_at=NOW + timedelta(days=1))
    assert reason(consents=[future], facts=user()) is Reason.NO_CONSENT
    current = consent("c_now")
    future_revoked = consent("c_future", granted_at=NOW + US, revoked_at=NOW + timedelta(days=2))
    d = decide(OFFER_RANKING, NOW, [current, future_revoked], user())
    assert d.reason is Reason.OK
    assert d.consent.consent_id == "c_now"
    lapsed = consent("c_lapsed", expires_at=NOW - timedelta(days=1))
    assert reason(consents=[lapsed, future], facts=user()) is Reason.CONSENT_EXPIRED


def test_unknown_user_reads_exactly_like_a_known_user_without_consents() -> None:
    unknown = decide(OFFER_RANKING, NOW, [], None)
    known = decide(OFFER_RANKING, NOW, [], user())
    only_future = decide(OFFER_RANKING, NOW, [consent(granted_at=NOW + US)], user())
    assert unknown == known == only_future
    assert unknown.reason is Reason.NO_CONSENT
    assert unknown.consent.consent is None
    assert unknown.consent.status is ConsentStatus.NONE


def test_the_order_of_consent_records_does_not_matter() -> None:
    cs = [
        consent("a", granted_at=NOW - timedelta(days=400)),
        consent("b", granted_at=NOW - timedelta(days=200), revoked_at=NOW - timedelta(days=150)),
        consent("c", purposes=("fraud_alert",), granted_at=NOW - timedelta(days=20)),
        consent("d", granted_at=NOW - timedelta(days=100)),
        consent("e", granted_at=NOW - timedelta(days=100)),  # same instant as d: id breaks tie
    ]
    expected = decide(OFFER_RANKING, NOW, cs, user())
    assert expected.consent.consent_id == "e"
    rng = random.Random(7)
    for _ in range(20):
        shuffled = cs[:]
        rng.shuffle(shuffled)
        assert decide(OFFER_RANKING, NOW, shuffled, user()) == expected


def test_consent_state_names_the_consent_it_speaks_of() -> None:
    c = consent("c9", expires_at=NOW + timedelta(days=3))
    state = consent_state([c], NOW)
    assert state.status is ConsentStatus.ACTIVE
    assert state.consent_id == "c9"
    assert state.expires_at == NOW + timedelta(days=3)
    assert consent_state([], NOW).expires_at is None
    assert active_consent([c], NOW) is c
    assert active_consent([c], NOW, "fraud_alert") is None


def test_decide_accepts_any_iterable_of_consents() -> None:
    assert decide(OFFER_RANKING, NOW, iter([consent()]), user()).allowed


# --- erasure ----------------------------------------------------------------------------------


def test_erasure_reads_as_revoked_from_erased_at_on() -> None:
    e = datetime(2025, 5, 30, 10, tzinfo=UTC)
    assert reason(now=e - US, facts=user(erased_at=e)) is Reason.OK
    d = decide(OFFER_RANKING, e, [consent()], user(erased_at=e))
    assert d.reason is Reason.CONSENT_REVOKED
    assert d.consent.consent_id == "c1"
    assert reason(now=e + timedelta(days=400), facts=user(erased_at=e)) is Reason.CONSENT_REVOKED


def test_erasure_keeps_the_table_order() -> None:
    e = NOW - timedelta(days=1)
    assert reason("data_sale", facts=user(erased_at=e)) is Reason.BANNED_PURPOSE
    assert reason(consents=[], facts=user(erased_at=e)) is Reason.NO_CONSENT
    assert reason(facts=user(MINOR_BIRTH, OBJECTED, erased_at=e)) is Reason.CONSENT_REVOKED
    assert reason(consents=EXPIRED, facts=user(erased_at=e)) is Reason.CONSENT_REVOKED


def test_decision_is_a_value() -> None:
    d = decide(OFFER_RANKING, NOW, [consent()], user())
    assert isinstance(d, Decision)
    with pytest.raises(AttributeError):
        d.allowed = False  # type: ignore[misc]
