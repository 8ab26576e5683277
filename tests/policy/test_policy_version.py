"""policy_version names the rules: stable across processes, different when a rule changes."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import policy.consent
import policy.decision
import policy.mcc
import policy.purposes
import policy.version
from policy import policy_version

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def fresh_cache() -> Iterator[None]:
    policy_version.cache_clear()
    yield
    policy_version.cache_clear()


def _in_fresh_process(hash_seed: str) -> str:
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    out = subprocess.run(
        [sys.executable, "-c", "import policy; print(policy.policy_version())"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def test_format() -> None:
    assert re.fullmatch(r"p1-[0-9a-f]{12}", policy_version())


def test_stable_across_processes_and_hash_seeds() -> None:
    here = policy_version()
    assert _in_fresh_process("1") == here
    assert _in_fresh_process("4242") == here


def test_importing_policy_does_no_work_and_pulls_in_no_heavy_modules() -> None:
    code = (
        "import sys, policy; "
        "print(policy.policy_version.cache_info().currsize, "
        "sorted(m for m in ('pandas', 'numpy', 'features', 'offers') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "0 []"


def _changed(monkeypatch: pytest.MonkeyPatch, module: object, name: str, value: object) -> str:
    before = policy_version()
    monkeypatch.setattr(module, name, value)
    policy_version.cache_clear()
    after = policy_version()
    monkeypatch.undo()
    policy_version.cache_clear()
    assert policy_version() == before
    return after


def test_changes_when_a_banned_purpose_is_added(monkeypatch: pytest.MonkeyPatch) -> None:
    v = policy_version()
    extra = policy.purposes.BANNED_PURPOSES | {"newsletter"}
    assert _changed(monkeypatch, policy.purposes, "BANNED_PURPOSES", extra) != v


def test_changes_when_a_served_purpose_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    v = policy_version()
    extra = policy.purposes.SERVED_PURPOSES | {"fraud_alert"}
    assert _changed(monkeypatch, policy.purposes, "SERVED_PURPOSES", extra) != v


def test_changes_when_an_mcc_moves_tier(monkeypatch: pytest.MonkeyPatch) -> None:
    v = policy_version()
    moved = tuple(
        policy.mcc.SensitiveMcc(m.mcc, policy.mcc.Tier.A, m.group, m.name) if m.mcc == "8111" else m
        for m in policy.mcc.MCC_TIERS
    )
    assert _changed(monkeypatch, policy.mcc, "MCC_TIERS", moved) != v


def test_changes_with_age_validity_refs_and_revision(monkeypatch: pytest.MonkeyPatch) -> None:
    v = policy_version()
    assert _changed(monkeypatch, policy.consent, "ADULT_AGE", 21) != v
    validity = policy.consent.DEFAULT_VALIDITY * 2
    assert _changed(monkeypatch, policy.consent, "DEFAULT_VALIDITY", validity) != v
    refs = {**policy.decision.LEGAL_REFS, policy.decision.Reason.MINOR: ("other",)}
    assert _changed(monkeypatch, policy.decision, "LEGAL_REFS", refs) != v
    revision = policy.version.RULES_REVISION + 1
    assert _changed(monkeypatch, policy.version, "RULES_REVISION", revision) != v


def test_decisions_carry_the_current_version() -> None:
    from datetime import UTC, datetime

    d = policy.decision.decide("data_sale", datetime(2025, 1, 1, tzinfo=UTC), [], None)
    assert d.policy_version == policy_version()
