"""Registry hygiene after a killed `offers train` (real MLflow, real SIGKILL at a named step):
the run it left RUNNING is marked FAILED on the next train or promote, the version it left
without an alias is reported (never deleted), and the next train completes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from features import tracking

ROOT = Path(__file__).resolve().parents[2]

KILL_SCRIPT = r"""
import os, signal, sys
import lightgbm as lgb
import numpy as np
from features import tracking
from features.vector import FEATURE_COLUMNS

step, home = sys.argv[1], sys.argv[2]

def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)

with tracking.start_run(home) as run:
    print(run.run_id, flush=True)
    if step == "in-run":  # killed while logging: the run stays RUNNING
        die()
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(50, len(FEATURE_COLUMNS))), rng.normal(size=50)
    booster = lgb.train({"verbose": -1, "num_threads": 1}, lgb.Dataset(X, y), 2)
    from training.report import synthetic_input_example
    logged = run.log_ranker(booster, FEATURE_COLUMNS, synthetic_input_example(FEATURE_COLUMNS))
if step == "before-alias":  # registered, killed before `challenger` was set
    tracking.registry.set_alias = die  # the module register_version calls it in
    tracking.register_version(home, logged, run.run_id, {})
raise SystemExit("not killed")
"""


def _killed_at(step: str, home: Path) -> str:
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    env.pop("MLFLOW_TRACKING_URI", None)
    done = subprocess.run(
        [sys.executable, "-c", KILL_SCRIPT, step, str(home)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == -9, done.stderr[-2000:]
    return done.stdout.split()[0]


def _status(home: Path, run_id: str) -> str:
    return tracking.client(home).get_run(run_id).info.status


def _other_runs(home: Path) -> tuple[str, str]:
    """A RUNNING run of a live process here (this one), and one of another host."""
    c = tracking.client(home)
    experiment = c.get_experiment_by_name(tracking.EXPERIMENT).experiment_id
    here = {tracking.TAG_PID: str(os.getpid()), tracking.TAG_HOST: socket.gethostname()}
    there = {tracking.TAG_PID: "1", tracking.TAG_HOST: "another-host"}
    return (
        c.create_run(experiment, tags=here).info.run_id,
        c.create_run(experiment, tags=there).info.run_id,
    )


@pytest.mark.slow
def test_after_a_killed_train_the_next_train_and_promote_clean_up_and_complete(
    home: Path, synth_dir: Path, capsys
) -> None:
    from offers import cli

    dead = _killed_at("in-run", home)
    orphaned_run = _killed_at("before-alias", home)
    assert _status(home, dead) == "RUNNING"
    alive, elsewhere = _other_runs(home)
    weak = home.parent / "weak.json"
    weak.write_text(json.dumps({"n_estimators": 1, "num_leaves": 2, "early_stopping_rounds": 0}))

    result = cli.train(data=synth_dir, config=weak)

    assert result.hygiene.failed_runs == [dead] and result.hygiene.orphan_versions == ["1"]
    assert _status(home, dead) == "FAILED"
    assert _status(home, alive) == "RUNNING"  # its process is this one
    assert _status(home, elsewhere) == "RUNNING"  # nothing can be known from this host
    assert _status(home, orphaned_run) == "FINISHED"
    assert "registry: marked FAILED: run " + dead in capsys.readouterr().out
    assert result.version == "2" and tracking.alias_version(home, tracking.CHALLENGER) == "2"
    assert _status(home, result.run_id) == "FINISHED"

    try:  # the weak model may pass or fail the popularity gate: either is a decision, not a crash
        cli.promote()
    except typer.Exit as kept:
        assert kept.exit_code == 1
    out = capsys.readouterr().out
    assert "PROMOTED" in out or "KEPT: does not beat the popularity baseline" in out
    assert "registry: version 1 of offer-ranker holds no alias" in out  # reported again
    again = tracking.registry_hygiene(home, tracking.EXPERIMENT)
    assert again.failed_runs == [] and again.orphan_versions == ["1"]  # still not deleted
    versions = tracking.client(home).search_model_versions(f"name = '{tracking.MODEL_NAME}'")
    assert sorted(str(v.version) for v in versions) == ["1", "2"]
