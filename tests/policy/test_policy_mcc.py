"""The sensitive MCC tiers in code are exactly those of spec/policy.md."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from policy import MCC_TIERS, REVIEW_MCCS, SENSITIVE_MCCS, Tier, is_sensitive, mcc_tier

REPO_ROOT = Path(__file__).resolve().parents[2]
SPEC = REPO_ROOT / ".." / "shared" / "spec" / "policy.md"

# Hard-coded from spec/policy.md, so a change on either side is noticed even without the spec.
EXPECTED: dict[Tier, set[str]] = {
    Tier.A: {
        # health
        "4119", "5047", "5122", "5912", "5975", "5976", "8011", "8021", "8031",
        "8041", "8042", "8043", "8044", "8049", "8050", "8062", "8071", "8099",
        "7277",  # health or sex life
        "8661", "5973",  # religion
        "8651",  # politics
        "8699",  # trade unions
        "7273", "5967",  # sex life
    },
    Tier.B: {"9211", "9222", "9223"},
    Tier.C: {"7995", "7800", "7801", "7802", "5921", "5813", "5993"},
    Tier.REVIEW: {"7297", "8398", "8641", "7261", "8111"},
}  # fmt: skip

CODE = re.compile(r"(?<!\d)\d{4}(?!\d)")


def _tier_codes() -> dict[Tier, set[str]]:
    out: dict[Tier, set[str]] = {t: set() for t in Tier}
    for m in MCC_TIERS:
        out[m.tier].add(m.mcc)
    return out


def _spec_sections() -> dict[str, str]:
    """The "Sensitive MCCs" section split into its Tier A/B/C and Review list paragraphs."""
    if not SPEC.is_file():
        pytest.skip(f"spec not found at {SPEC.resolve()} (the shared checkout is absent)")
    text = SPEC.read_text(encoding="utf-8")
    start = re.search(r"^## Sensitive MCCs.*$", text, re.MULTILINE)
    assert start, "spec/policy.md has no '## Sensitive MCCs' section"
    body = text[start.end() :]
    end = re.search(r"^## ", body, re.MULTILINE)
    body = body[: end.start()] if end else body
    parts = re.split(r"^(Tier A|Tier B|Tier C|Review list)\b", body, flags=re.MULTILINE)
    sections = dict(zip(parts[1::2], parts[2::2], strict=True))
    assert set(sections) == {"Tier A", "Tier B", "Tier C", "Review list"}
    return sections


def test_code_matches_the_hard_coded_lists() -> None:
    assert _tier_codes() == EXPECTED


@pytest.mark.parametrize(
    ("heading", "tier"),
    [("Tier A", Tier.A), ("Tier B", Tier.B), ("Tier C", Tier.C), ("Review list", Tier.REVIEW)],
)
def test_code_matches_the_spec(heading: str, tier: Tier) -> None:
    spec_codes = set(CODE.findall(_spec_sections()[heading]))
    assert spec_codes == _tier_codes()[tier]
    assert spec_codes == EXPECTED[tier]


def test_tier_a_groups_match_the_spec_bullets() -> None:
    groups: dict[str, set[str]] = {}
    for line in _spec_sections()["Tier A"].splitlines():
        bullet = re.match(r"^- ([^:]+):(.*)$", line.strip())
        if bullet:
            name = bullet.group(1).strip().lower().replace(" ", "_")
            groups[name] = set(CODE.findall(bullet.group(2)))
    code_groups: dict[str, set[str]] = {}
    for m in MCC_TIERS:
        if m.tier is Tier.A:
            code_groups.setdefault(m.group, set()).add(m.mcc)
    assert code_groups == groups


def test_every_code_is_four_digits_listed_once_and_named() -> None:
    codes = [m.mcc for m in MCC_TIERS]
    assert len(codes) == len(set(codes))
    assert all(re.fullmatch(r"\d{4}", c) for c in codes)
    assert all(m.name and m.group for m in MCC_TIERS)


def test_sensitive_is_tiers_a_b_c_and_review_is_kept() -> None:
    tiers = _tier_codes()
    assert frozenset(tiers[Tier.A] | tiers[Tier.B] | tiers[Tier.C]) == SENSITIVE_MCCS
    assert frozenset(tiers[Tier.REVIEW]) == REVIEW_MCCS
    assert not SENSITIVE_MCCS & REVIEW_MCCS
    assert is_sensitive("5912") and is_sensitive("9223") and is_sensitive("5993")
    assert not is_sensitive("8111")  # review list: kept
    assert not is_sensitive("5411")  # grocery stores
    assert mcc_tier("8661") is Tier.A
    assert mcc_tier("7261") is Tier.REVIEW
    assert mcc_tier("5411") is None
    assert not is_sensitive(5912)  # type: ignore[arg-type]  # codes are strings, never ints
