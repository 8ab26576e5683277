"""`offers experiment ...` end to end: admin token, simulate, report (MLflow), erasure."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from features import contract as c
from features import tracking
from offers.cli import app
from offers.experiments.report import experiment_report
from serving.erase import erase
from serving.experiments import find_experiment, load_experiments

ADMIN = "cli-admin-token"
CREATE = ["experiment", "create", "e1", "--start", "2030-01-01", "--end", "2030-02-01",
          "--champion", "0.5", "--holdout", "0.5"]  # fmt: skip


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("OFFERS_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path / "home"


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output + (result.stderr if result.stderr_bytes else "")


def test_changes_need_the_admin_token(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OFFERS_ADMIN_TOKEN", raising=False)
    code, out = run(*CREATE, "--admin-token", ADMIN)
    assert code == 2 and "set OFFERS_ADMIN_TOKEN" in out
    monkeypatch.setenv("OFFERS_ADMIN_TOKEN", ADMIN)
    code, out = run(*CREATE, "--admin-token", "guess")
    assert code == 2 and "does not match" in out and load_experiments(home) == []
    code, out = run(*CREATE, "--admin-token", ADMIN)
    assert code == 0 and find_experiment(home, "e1").shares == {"champion": 0.5, "holdout": 0.5}
    assert (home / "serving" / "reload-requested").exists()  # running servers reload
    code, out = run(*CREATE[:-4], "--champion", "0.5", "--holdout", "0.6", "--admin-token", ADMIN)
    assert code == 2 and "shares sum to 1.1, not 1" in out
    code, out = run("experiment", "stop", "e1", "--admin-token", ADMIN)
    assert code == 0 and load_experiments(home) == []  # stopped before it started: gone
    code, out = run("experiment", "stop", "e1", "--admin-token", ADMIN)
    assert code == 2 and "no experiment named 'e1'" in out


@pytest.mark.slow
def test_report_logs_to_mlflow_and_erasure_reaches_its_output(simulated: Path) -> None:
    sim = simulated
    code, out = run("experiment", "report", "sim", "--data", str(sim / "data"),
                    "--candidate", "challenger", "--on-arms", "champion,holdout",
                    "--resamples", "200")  # fmt: skip
    assert code == 0, out
    for text in ("champion_vs_holdout", "challenger_vs_champion", "sample ratio: chi2",
                 "ips of challenger", "snips of challenger", "MLflow run"):  # fmt: skip
        assert text in out
    run_id = out.split("MLflow run ")[1].split()[0]
    metrics = tracking.client(sim / "home").get_run(run_id).data.metrics
    assert {"champion.users", "lift.champion_vs_holdout.low", "srm_p_value"} <= set(metrics)
    champion = tracking.version_info(sim / "home", tracking.alias_version(sim / "home", "champion"))
    assert "online.sim.champion.redemptions_per_user" in champion["tags"]
    assert not any("user" in k and "u0" in str(v) for k, v in metrics.items())
    users_file = sim / "home" / "experiments" / "sim" / "users.parquet"
    before = experiment_report(sim / "home", sim / "data", "sim", resamples=50)
    users = pd.read_parquet(users_file)
    victim, quitter = users[c.USER_ID].iloc[0], users[c.USER_ID].iloc[1]
    receipt = erase(sim / "home", sim / "data", victim)
    stores = {s.store: s for s in receipt.stores}
    assert stores["experiment output"].rows_removed == 1 and receipt.complete
    assert victim not in set(pd.read_parquet(users_file)[c.USER_ID])
    again = experiment_report(sim / "home", sim / "data", "sim", resamples=50)
    assert again.left_out_users == before.left_out_users + 1
    assert victim not in set(pd.read_parquet(users_file)[c.USER_ID])
    assert int(again.arms["users"].sum()) == len(users) - 1
    # a withdrawal (the latest consent revoked) leaves the analysis as an erasure does
    consents = pd.read_parquet(sim / "data" / "consents.parquet")
    mine = consents[c.USER_ID] == quitter
    consents.loc[mine, c.REVOKED_AT] = consents.loc[mine, c.GRANTED_AT] + pd.Timedelta(days=1)
    consents.to_parquet(sim / "data" / "consents.parquet", index=False)
    third = experiment_report(sim / "home", sim / "data", "sim", resamples=50)
    assert third.left_out_users == before.left_out_users + 2
    assert quitter not in set(pd.read_parquet(users_file)[c.USER_ID])
