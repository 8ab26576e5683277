"""Properties that must hold for every user state, not only the hand-picked ones."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from policy import (
    BANNED_PURPOSES,
    OFFER_RANKING,
    OTHER_CONSENTED_PURPOSES,
    Consent,
    Reason,
    UserFacts,
    decide,
    eighteenth_birthday,
)

LO = datetime(2018, 1, 1)
HI = datetime(2028, 1, 1)

instants = st.datetimes(min_value=LO, max_value=HI, timezones=st.just(UTC))
some_purposes = st.frozensets(
    st.sampled_from(
        sorted({OFFER_RANKING, *OTHER_CONSENTED_PURPOSES, *BANNED_PURPOSES, "newsletter"})
    ),
    max_size=4,
)


@st.composite
def consents(draw: st.DrawFn, user_id: str = "u1") -> Consent:
    granted = draw(instants)
    expires = draw(
        st.none()
        | st.timedeltas(timedelta(microseconds=1), timedelta(days=800)).map(granted.__add__)
    )
    revoked = draw(
        st.none() | st.timedeltas(timedelta(0), timedelta(days=800)).map(granted.__add__)
    )
    return Consent(
        consent_id=draw(st.text("abcdef0123", min_size=1, max_size=6)),
        user_id=user_id,
        purposes=draw(some_purposes),
        granted_at=granted,
        expires_at=expires,
        revoked_at=revoked,
        lookback_days=draw(st.integers(0, 730)),
    )


users = st.none() | st.builds(
    UserFacts,
    user_id=st.just("u1"),
    birth_date=st.none() | st.dates(date(1930, 1, 1), date(2027, 12, 31)),
    marketing_objection_at=st.none() | instants,
    erased_at=st.none() | instants,
)
# consent_id is unique in valid data (the contract rejects duplicates), so it breaks ties totally.
consent_lists = st.lists(consents(), max_size=5, unique_by=lambda c: c.consent_id)


@settings(max_examples=300, deadline=None)
@given(
    purpose=st.sampled_from(sorted(BANNED_PURPOSES)),
    now=instants,
    cs=consent_lists,
    facts=users,
)
def test_a_banned_purpose_is_denied_whatever_the_users_state(
    purpose: str, now: datetime, cs: list[Consent], facts: UserFacts | None
) -> None:
    d = decide(purpose, now, cs, facts)
    assert not d.allowed
    assert d.reason is Reason.BANNED_PURPOSE


@settings(max_examples=300, deadline=None)
@given(
    purpose=st.text(max_size=20).filter(lambda p: p != OFFER_RANKING)
    | st.sampled_from(sorted(OTHER_CONSENTED_PURPOSES | BANNED_PURPOSES)),
    now=instants,
    cs=consent_lists,
    facts=users,
)
def test_only_offer_ranking_is_ever_allowed(
    purpose: str, now: datetime, cs: list[Consent], facts: UserFacts | None
) -> None:
    d = decide(purpose, now, cs, facts)
    assert not d.allowed
    assert d.reason in {Reason.BANNED_PURPOSE, Reason.UNKNOWN_PURPOSE, Reason.PURPOSE_NOT_SERVED}


@settings(max_examples=300, deadline=None)
@given(now=instants, cs=consent_lists, facts=users)
def test_allow_means_active_covering_consent_adult_and_no_objection(
    now: datetime, cs: list[Consent], facts: UserFacts | None
) -> None:
    d = decide(OFFER_RANKING, now, cs, facts)
    assert d.allowed is (d.reason is Reason.OK)
    if not d.allowed:
        assert d.reason is not Reason.OK
        return
    assert facts is not None
    chosen = d.consent.consent
    assert chosen is not None and chosen in cs
    assert chosen.covers(OFFER_RANKING)
    assert chosen.granted_at <= now < chosen.effective_expiry
    assert chosen.revoked_at is None or chosen.revoked_at > now
    assert chosen.effective_expiry <= chosen.granted_at + timedelta(days=365)
    # the latest authorisation for offer_ranking granted by now is the one that allows
    later = [c for c in cs if c.covers(OFFER_RANKING) and chosen.granted_at < c.granted_at <= now]
    assert not later
    assert facts.birth_date is not None and eighteenth_birthday(facts.birth_date) <= now.date()
    assert facts.marketing_objection_at is None or facts.marketing_objection_at > now
    assert facts.erased_at is None or facts.erased_at > now


@settings(max_examples=200, deadline=None)
@given(now=instants, cs=consent_lists, facts=users, data=st.data())
def test_the_decision_does_not_depend_on_record_order(
    now: datetime, cs: list[Consent], facts: UserFacts | None, data: st.DataObject
) -> None:
    shuffled = data.draw(st.permutations(cs))
    assert decide(OFFER_RANKING, now, shuffled, facts) == decide(OFFER_RANKING, now, cs, facts)


@settings(max_examples=200, deadline=None)
@given(now=instants, cs=consent_lists)
def test_an_unknown_user_is_indistinguishable_from_one_without_consents(
    now: datetime, cs: list[Consent]
) -> None:
    assert decide(OFFER_RANKING, now, cs, None) == decide(OFFER_RANKING, now, [], UserFacts("u1"))
