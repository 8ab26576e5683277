"""A banned purpose written in another case or spacing is still a banned attempt (issue 11.9).

Normalisation can only make a decision stricter or more precise: it never makes a purpose served.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
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
)
from policy.purposes import normalise_purpose

NOW = datetime(2025, 6, 1, 12, tzinfo=UTC)
# A fully consenting adult: every purpose in the consent, so only the purpose row can deny.
EVERYTHING = frozenset({OFFER_RANKING, *OTHER_CONSENTED_PURPOSES, *BANNED_PURPOSES})
CONSENTS = [Consent("c1", "u1", EVERYTHING, datetime(2025, 5, 1, tzinfo=UTC))]
ADULT = UserFacts("u1", date(1990, 1, 1), None, None)
# Unicode whitespace that str.split and \s both know (no-break, ideographic, tab, newline...).
SPACES = st.text(st.sampled_from(" \t\n\r\x0b\x0c\u00a0\u2003\u3000"), max_size=3)


def _reason(purpose: str) -> Reason:
    return decide(purpose, NOW, CONSENTS, ADULT).reason


@st.composite
def case_and_space_variants(draw: st.DrawFn, words: list[str]) -> str:
    """One of `words`, each letter in a drawn case, with drawn whitespace around it."""
    word = draw(st.sampled_from(words))
    flips = draw(st.lists(st.booleans(), min_size=len(word), max_size=len(word)))
    cased = "".join(ch.upper() if up else ch.lower() for ch, up in zip(word, flips, strict=True))
    return draw(SPACES) + cased + draw(SPACES)


@settings(max_examples=400, deadline=None)
@given(case_and_space_variants(sorted(BANNED_PURPOSES)))
def test_any_case_or_whitespace_variant_of_a_banned_purpose_is_banned(purpose: str) -> None:
    assert _reason(purpose) is Reason.BANNED_PURPOSE


@settings(max_examples=200, deadline=None)
@given(case_and_space_variants(sorted(OTHER_CONSENTED_PURPOSES)))
def test_any_variant_of_a_consented_but_unserved_purpose_is_not_served(purpose: str) -> None:
    assert _reason(purpose) is Reason.PURPOSE_NOT_SERVED


@settings(max_examples=300, deadline=None)
@given(case_and_space_variants([OFFER_RANKING]).filter(lambda p: p != OFFER_RANKING))
def test_only_the_exact_spelling_of_offer_ranking_is_served(purpose: str) -> None:
    """Fail closed: `OFFER_RANKING` or ` offer_ranking` is unknown, denied, never mapped."""
    d = decide(purpose, NOW, CONSENTS, ADULT)
    assert not d.allowed and d.reason is Reason.UNKNOWN_PURPOSE


@pytest.mark.parametrize(
    "purpose",
    [
        "TARGETED_ADVERTISING",
        " targeted_advertising",
        "targeted advertising",
        "Targeted-Advertising",
        "\ttargeted__advertising\n",
        "ＡＵＤＩＥＮＣＥ＿ＥＸＰＯＲＴ",  # fullwidth forms (NFKC)
    ],
)
def test_the_spellings_from_the_issue_are_banned_attempts(purpose: str) -> None:
    assert _reason(purpose) is Reason.BANNED_PURPOSE


def test_normalisation_is_exact_on_examples() -> None:
    assert normalise_purpose("  Data -_ Sale ") == "data_sale"
    assert normalise_purpose("datasale") == "datasale"
    assert _reason("datasale") is Reason.UNKNOWN_PURPOSE  # no fuzzy matching beyond separators
