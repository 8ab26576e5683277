"""`offers policy explain` on a tiny typed dataset: the printed reason and the exit code."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from offers.cli import app, explain
from policy import LEGAL_REFS, Reason, policy_version

TS = "datetime64[us, UTC]"
runner = CliRunner()


def ts(*values: str | None) -> pd.Series:
    return pd.Series(pd.to_datetime(list(values), utc=True, format="ISO8601")).astype(TS)


@pytest.fixture
def data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Five contract tables; u_ok consents, u_rev revoked, u_minor is 16, u_none never consented."""
    monkeypatch.setenv("OFFERS_HOME", str(tmp_path / "home"))
    out = tmp_path / "data"
    out.mkdir()
    users = ["u_ok", "u_rev", "u_minor", "u_none", "u_noage"]
    pd.DataFrame(
        {
            "user_id": users,
            "birth_date": pd.Series(
                [date(1985, 4, 2), date(1990, 1, 1), date(2009, 3, 3), date(1970, 1, 1), None],
                dtype=object,
            ),
            "marketing_objection_at": ts(None, None, None, None, None),
            "country": ["DE", "FR", "DE", "NL", "DE"],
        }
    ).to_parquet(out / "users.parquet")
    pd.DataFrame(
        {
            "consent_id": ["c_ok", "c_rev", "c_minor", "c_noage"],
            "user_id": ["u_ok", "u_rev", "u_minor", "u_noage"],
            "purposes": [["offer_ranking"], ["offer_ranking", "fraud_alert"]]
            + [["offer_ranking"]] * 2,
            "granted_at": ts("2025-01-10T09:00:00Z", *["2025-01-01T00:00:00Z"] * 3),
            "expires_at": ts("2025-12-31T00:00:00Z", None, None, None),
            "revoked_at": ts(None, "2025-03-01T12:00:00Z", None, None),
            "lookback_days": np.array([365, 365, 365, 90], dtype="int64"),
        }
    ).to_parquet(out / "consents.parquet")
    pd.DataFrame(
        {
            "txn_id": ["t1"],
            "user_id": ["u_ok"],
            "ts": ts("2025-01-05T10:00:00Z"),
            "amount": [12.5],
            "merchant_id": ["m1"],
            "mcc": ["5411"],
            "currency": ["EUR"],
        }
    ).to_parquet(out / "transactions.parquet")
    pd.DataFrame(
        {
            "offer_id": ["o1"],
            "merchant_id": ["m1"],
            "mcc": ["5411"],
            "title": ["10% off groceries"],
            "starts_at": ts("2025-01-01T00:00:00Z"),
            "ends_at": ts("2025-12-31T00:00:00Z"),
            "reward": [1.5],
        }
    ).to_parquet(out / "offers.parquet")
    pd.DataFrame(
        {
            "user_id": ["u_ok"],
            "offer_id": ["o1"],
            "shown_at": ts("2025-02-01T08:00:00Z"),
            "slate_id": ["s1"],
            "position": pd.array([1], dtype="Int64"),
            "redeemed_at": ts(None),
        }
    ).to_parquet(out / "exposures.parquet")
    return out


def run(data: Path, user: str, purpose: str = "offer_ranking", at: str | None = "2025-06-01"):
    args = ["policy", "explain", "--data", str(data), "--user", user, "--purpose", purpose]
    return runner.invoke(app, args + ([] if at is None else ["--at", at]))


def fields(output: str) -> dict[str, str]:
    return {
        k.strip(): v.strip() for k, _, v in (line.partition(":") for line in output.splitlines())
    }


def test_allow_prints_everything_and_exits_0(data: Path) -> None:
    result = run(data, "u_ok")
    assert result.exit_code == 0, result.output
    f = fields(result.output)
    assert f["decision"] == "allow"
    assert f["reason_code"] == "OK"
    assert f["legal_refs"] == "; ".join(LEGAL_REFS[Reason.OK])
    assert f["consent_id"] == "c_ok"
    assert f["consent_state"] == "active"
    assert f["expires_at"] == "2025-12-31T00:00:00+00:00"
    assert f["at"] == "2025-06-01T00:00:00+00:00"
    assert f["policy_version"] == policy_version()


@pytest.mark.parametrize(
    ("user", "purpose", "at", "reason", "consent_id", "state"),
    [
        ("u_rev", "offer_ranking", "2025-06-01", "CONSENT_REVOKED", "c_rev", "revoked"),
        ("u_rev", "offer_ranking", "2025-03-01T11:59:59.999999Z", "OK", "c_rev", "active"),
        (
            "u_rev",
            "offer_ranking",
            "2025-03-01T13:00:00+01:00",
            "CONSENT_REVOKED",
            "c_rev",
            "revoked",
        ),
        ("u_minor", "offer_ranking", "2025-06-01", "MINOR", "c_minor", "active"),
        ("u_noage", "offer_ranking", "2025-06-01", "AGE_UNKNOWN", "c_noage", "active"),
        ("u_none", "offer_ranking", "2025-06-01", "NO_CONSENT", "-", "none"),
        ("nobody", "offer_ranking", "2025-06-01", "NO_CONSENT", "-", "none"),
        ("u_ok", "offer_ranking", "2025-01-10T08:59:59", "NO_CONSENT", "-", "none"),
        ("u_ok", "offer_ranking", "2025-12-31T00:00:00Z", "CONSENT_EXPIRED", "c_ok", "expired"),
        ("u_ok", "targeted_advertising", "2025-06-01", "BANNED_PURPOSE", "c_ok", "active"),
        ("u_ok", "fraud_alert", "2025-06-01", "PURPOSE_NOT_SERVED", "c_ok", "active"),
        ("u_ok", "ads", "2025-06-01", "UNKNOWN_PURPOSE", "c_ok", "active"),
    ],
)
def test_deny_prints_the_reason_and_exits_1(
    data: Path, user: str, purpose: str, at: str, reason: str, consent_id: str, state: str
) -> None:
    result = run(data, user, purpose, at)
    f = fields(result.output)
    assert f["reason_code"] == reason, result.output
    assert result.exit_code == (0 if reason == "OK" else 1)
    assert f["decision"] == ("allow" if reason == "OK" else "deny")
    assert f["legal_refs"] == "; ".join(LEGAL_REFS[Reason(reason)])
    assert f["consent_id"] == consent_id
    assert f["consent_state"] == state


def test_unknown_user_output_is_the_same_as_a_known_user_without_consent(data: Path) -> None:
    known, unknown = fields(run(data, "u_none").output), fields(run(data, "nobody").output)
    known.pop("user_id"), unknown.pop("user_id")
    assert known == unknown


def test_default_instant_is_now(data: Path) -> None:
    before = datetime.now(UTC)
    result = run(data, "u_ok", at=None)
    at = datetime.fromisoformat(fields(result.output)["at"])
    assert before <= at <= datetime.now(UTC)


def test_erasure_register_is_honoured(data: Path) -> None:
    from features.erasures import record_erasure
    from offers.settings import load_settings

    # once recorded, an erasure holds at every instant, before its own time too (as the Scorer)
    record_erasure(load_settings().erasures_dir, "u_ok", datetime(2025, 5, 1, tzinfo=UTC))
    for at in ("2025-04-30", "2025-05-01"):
        result = run(data, "u_ok", at=at)
        assert result.exit_code == 1
        assert fields(result.output)["reason_code"] == "CONSENT_REVOKED"


def test_bad_instant_exits_2(data: Path) -> None:
    result = run(data, "u_ok", at="next tuesday")
    assert result.exit_code == 2
    assert "--at" in result.output


def test_invalid_data_exits_2(data: Path) -> None:
    (data / "offers.parquet").unlink()
    result = run(data, "u_ok")
    assert result.exit_code == 2
    assert "offers" in result.output


def test_help_documents_the_exit_codes() -> None:
    result = runner.invoke(app, ["policy", "explain", "--help"])
    assert result.exit_code == 0
    assert "0 allow, 1 deny" in " ".join(result.output.split())


def test_explain_is_a_plain_function(data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    explain(data, "u_ok", "offer_ranking", "2025-06-01")  # allow: returns normally
    assert fields(capsys.readouterr().out)["reason_code"] == "OK"
    with pytest.raises(typer.Exit) as exc:
        explain(data, "u_ok", "data_sale")
    assert exc.value.exit_code == 1
    assert fields(capsys.readouterr().out)["reason_code"] == "BANNED_PURPOSE"
