"""`offers train / promote / predict` end to end on 1k synthetic users and a temporary registry.

One module-scoped world: v1 trained with the defaults (CLI function), promoted as the first
champion (through the popularity gate); v2 trained deliberately weak (one stump), which the
gate refuses, and left as the challenger.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import typer

from features import contract as c
from features import tracking
from features.vector import FEATURE_COLUMNS
from offers import cli
from policy import BANNED_PURPOSES, SENSITIVE_MCCS, policy_version
from training import report
from training.config import TrainConfig
from training.inputs import KEPT
from training.splits import TEST
from training.train import TrainResult

pytestmark = pytest.mark.slow
USER_ID_PATTERN = re.compile(rb"u\d{6}")  # synthetic user ids: u000123


@dataclass
class World:
    root: Path
    home: Path
    data: Path
    first: TrainResult
    second: TrainResult


@pytest.fixture(scope="module")
def world(
    tmp_path_factory: pytest.TempPathFactory, synth_dir: Path, mlflow_template: Path
) -> World:
    root = tmp_path_factory.mktemp("trained")
    home = root / "home"
    home.mkdir()
    shutil.copy(mlflow_template, home / "mlflow.db")
    weak = root / "weak.json"
    weak.write_text(json.dumps({"n_estimators": 1, "num_leaves": 2, "early_stopping_rounds": 0}))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OFFERS_HOME", str(home))
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.chdir(root)
        first = cli.train(data=synth_dir)
        assert cli.promote().promoted
        second = cli.train(data=synth_dir, config=weak, experiment="offer-ranking-weak")
    return World(root, home, synth_dir, first, second)


@pytest.fixture(autouse=True)
def _world_env(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    if "world" in request.fixturenames:
        w: World = request.getfixturevalue("world")
        monkeypatch.setenv("OFFERS_HOME", str(w.home))
        monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
        monkeypatch.chdir(w.root)


def test_training_is_quick_and_beats_popularity(world: World) -> None:
    metrics = world.first.metrics
    # Bounded work, not a wall clock (which fails on a loaded machine; speed is measured in
    # benchmarks/): early stopping ends the run long before n_estimators rounds.
    config = TrainConfig()
    rounds = tracking.client(world.home).get_metric_history(
        world.first.run_id, "iter_validation_ndcg_at_10"
    )
    assert len(rounds) <= world.first.best_iteration + config.early_stopping_rounds
    assert len(rounds) < config.n_estimators, world.first.seconds
    assert metrics.loc["model", "ndcg_at_10"] > metrics.loc["popularity", "ndcg_at_10"] + 0.05
    assert metrics.loc["model", "ndcg_at_10"] > metrics.loc["random", "ndcg_at_10"]
    assert metrics.loc["oracle", "ndcg_at_10"] > metrics.loc["popularity", "ndcg_at_10"]
    assert list(metrics.index) == [
        "model",
        "random",
        "popularity",
        "affinity",
        "logistic",
        "oracle",
    ]
    assert 0 < world.first.gap_closed < 1.5


def test_the_run_logs_params_metrics_lineage_and_artifacts(world: World) -> None:
    client = tracking.client(world.home)
    run = client.get_run(world.first.run_id)
    params, metrics, tags = run.data.params, run.data.metrics, run.data.tags
    assert {"learning_rate", "eval_at", "seed", "promote_tolerance", "test_days"} <= set(params)
    assert params["truncation_level"] == "13" and params["eval_at_used"] == "10,5"
    for prefix in ("", "random_", "popularity_", "affinity_", "logistic_", "oracle_"):
        for name in ("ndcg_at_5", "ndcg_at_10", "map_at_10", "recall_at_10", "roc_auc"):
            assert f"{prefix}test_{name}" in metrics
    assert metrics["test_ndcg_at_10"] == pytest.approx(
        world.first.metrics.loc["model", "ndcg_at_10"]
    )
    assert not any("@" in key for key in metrics)
    history = client.get_metric_history(run.info.run_id, "iter_selection_ndcg_at_10")
    assert [m.step for m in history] == list(range(1, len(history) + 1))
    assert len(history) > world.first.best_iteration  # the pooled curve looked further
    # selection: the chosen settings; the gate's numbers; what the refit saw
    selection = world.first.selection
    assert params["selected_objective"] == selection.settings["objective"]
    assert params["selected_objective"] in ("lambdarank", "rank_xendcg", "binary")
    assert params["selected_rounds"] == str(world.first.best_iteration)
    assert metrics["selection_folds"] == 3 and len(selection.folds) == 3
    assert metrics["gate_popularity_low"] == pytest.approx(world.first.gate.low)
    assert world.first.gate.low > 0
    saw = world.first.refit_saw
    assert tags["refit_slates"] == str(saw["slates"]) and metrics["refit_rows"] == saw["rows"]
    assert saw["last_shown"] >= world.first.windows.as_dict()["valid_end"]  # it saw the test

    assert tags[tracking.TAG_POLICY_VERSION] == policy_version()
    assert tags[tracking.TAG_SNAPSHOT_ID].startswith("pit-")
    assert tags[tracking.TAG_GIT_SHA]
    assert tags["train_end"] == world.first.windows.as_dict()["train_end"]
    inputs = {d.dataset.name: d for d in run.inputs.dataset_inputs}
    assert set(inputs) == {"offers-train", "offers-validation", "offers-test"}
    assert all(len(d.dataset.digest) > 8 for d in inputs.values())

    folder = Path(
        mlflow.artifacts.download_artifacts(run_id=run.info.run_id, dst_path=str(world.root / "dl"))
    )
    files = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    assert {
        "feature_importance_gain.png",
        "metrics/test_metrics.csv",
        "metrics/test_metrics.md",
        "model_card.md",
        "feature_columns.json",
        "data/exclusions.json",
        "selection/model.txt",
        "selection/selection.json",
    } <= files
    assert (folder / "feature_importance_gain.png").read_bytes()[:4] == b"\x89PNG"
    card = (folder / "model_card.md").read_text()
    assert "offer_ranking" in card and all(p in card for p in BANNED_PURPOSES)
    assert "popularity" in card and world.first.windows.as_dict()["test_end"] in card
    assert json.loads((folder / "data/exclusions.json").read_text())[KEPT] > 0


def test_the_model_is_the_native_booster_with_signature_and_synthetic_example(world: World) -> None:
    tracking.client(world.home)  # points MLflow at this world's store
    info = mlflow.models.get_model_info(world.first.model_uri)
    assert info.flavors.keys() >= {"lightgbm", "python_function"}
    assert info.signature is not None
    assert [s.name for s in info.signature.inputs.inputs] == list(FEATURE_COLUMNS)
    assert info.metadata[tracking.META_FEATURE_COLUMNS] == list(FEATURE_COLUMNS)
    local = mlflow.artifacts.download_artifacts(
        artifact_uri=world.first.model_uri, dst_path=str(world.root / "model")
    )
    example = mlflow.models.Model.load(local).load_input_example(local)
    pd.testing.assert_frame_equal(
        example.reset_index(drop=True), report.synthetic_input_example(), check_dtype=False
    )


def test_aliases_and_load_registered_model(world: World) -> None:
    assert (world.first.version, world.second.version) == ("1", "2")
    assert tracking.alias_version(world.home, tracking.CHALLENGER) in ("2",)
    champion = tracking.load_registered_model(world.home)
    assert (champion.name, champion.alias) == (tracking.MODEL_NAME, tracking.CHAMPION)
    assert champion.version in ("1", "2")  # the gate test below may have moved it
    assert champion.feature_columns == list(FEATURE_COLUMNS)
    assert champion.policy_version == policy_version()
    assert champion.snapshot_id and champion.snapshot_id.startswith("pit-")
    assert champion.run_id in (world.first.run_id, world.second.run_id)
    first = tracking.load_model_uri(world.home, "models:/offer-ranker/1")
    assert first.booster.model_to_string() == world.first.booster.model_to_string()
    with pytest.raises(LookupError, match="'nope'"):
        tracking.load_registered_model(world.home, "nope")
    assert tracking.model_uri() == "models:/offer-ranker@champion"


def test_promotion_gate(world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    client = tracking.client(world.home)
    v1 = client.get_model_version(tracking.MODEL_NAME, "1")
    assert v1.tags[tracking.TAG_PROMOTION] == "promoted"
    first = json.loads(v1.tags[tracking.TAG_PROMOTION_DETAIL])
    assert first["champion_before"] is None and first["popularity_gate"]["passed"]  # gated too
    assert first["popularity_gate"]["low"] == pytest.approx(world.first.gate.low)
    # the weak challenger (one stump) does not beat popularity: kept, whatever the tolerance
    lenient = tmp_path / "lenient.toml"
    lenient.write_text("promote_tolerance = 1.0\n")
    assert not world.second.gate.passed and world.second.gate.low <= 0
    for config in (None, lenient):
        with pytest.raises(typer.Exit) as kept:
            cli.promote(config=config)
        assert kept.value.exit_code == 1
        out = capsys.readouterr().out
        assert "challenger v2 vs champion v1" in out
        assert "KEPT: does not beat the popularity baseline on its" in out
        assert f"lower bound {world.second.gate.low:+.4f} is not above 0" in out
        assert "95% paired bootstrap interval" in out and "vs popularity" in out
    assert tracking.alias_version(world.home, tracking.CHAMPION) == "1"
    v2 = client.get_model_version(tracking.MODEL_NAME, "2")
    assert v2.tags[tracking.TAG_PROMOTION] == "kept"
    assert json.loads(v2.tags["gate_popularity"])["passed"] is False
    detail = json.loads(v2.tags[tracking.TAG_PROMOTION_DETAIL])
    assert detail["popularity_gate"]["diff"] == pytest.approx(world.second.gate.diff)
    assert detail["challenger_score"] is None  # never compared with the champion


def test_champion_comparison_uses_selection_stage_models(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A challenger that beats popularity meets the champion on a window neither learned from."""
    other_seed = tmp_path / "seed1.json"
    other_seed.write_text(json.dumps({"seed": 1}))
    third = cli.train(data=world.data, config=other_seed)
    assert third.gate.passed and third.version == "3"
    strict = tmp_path / "strict.toml"
    strict.write_text("promote_tolerance = -1.0\n")  # must beat the champion by 1.0: impossible
    with pytest.raises(typer.Exit):
        cli.promote(config=strict)
    out = capsys.readouterr().out
    assert "KEPT: challenger ndcg_at_10 trails the champion" in out
    assert "champion   ndcg_at_10" in out and "selection-stage models" in out
    detail = json.loads(
        tracking.client(world.home)
        .get_model_version(tracking.MODEL_NAME, "3")
        .tags[tracking.TAG_PROMOTION_DETAIL]
    )
    # the challenger's score is its selection-stage model's, recorded at training on these slates
    assert detail["challenger_score"] == pytest.approx(third.metrics.loc["model", "ndcg_at_10"])
    lenient = tmp_path / "lenient.toml"
    lenient.write_text("promote_tolerance = 1.0\n")
    assert cli.promote(config=lenient).promoted
    assert tracking.alias_version(world.home, tracking.CHAMPION) == "3"
    assert cli.promote().promoted  # promoting the champion again is a no-op that succeeds
    # a challenger whose test window the champion's selection model learned from: no verdict
    end = pd.Timestamp(third.windows.as_dict()["test_end"]) - pd.Timedelta(days=30)
    earlier = tmp_path / "earlier.json"
    earlier.write_text(json.dumps({"test_end": end.isoformat(), "n_estimators": 30}))
    fourth = cli.train(data=world.data, config=earlier)
    assert fourth.gate.passed
    with pytest.raises(typer.Exit):
        cli.promote(config=lenient)
    assert "no honest comparison" in capsys.readouterr().out
    assert tracking.alias_version(world.home, tracking.CHAMPION) == "3"


def test_predict_scores_point_in_time_and_refuses_what_policy_refuses(
    world: World, synth_data, tmp_path: Path
) -> None:
    test = synth_data.splits[TEST]
    take = np.arange(min(40, test.n_rows))
    rows = pd.DataFrame(
        {
            c.USER_ID: test.user_id[take],
            c.OFFER_ID: test.offer_id[take],
            c.SHOWN_AT: pd.to_datetime(test.shown_at[take], utc=True),
        }
    )
    offers = pd.read_parquet(world.data / "offers.parquet")
    sensitive = offers.loc[offers[c.MCC].isin(sorted(SENSITIVE_MCCS)), c.OFFER_ID].iloc[0]
    extra = pd.DataFrame(
        {
            c.USER_ID: [test.user_id[0], test.user_id[0], "nobody"],
            c.OFFER_ID: [sensitive, "no-such-offer", test.offer_id[0]],
            c.SHOWN_AT: [rows[c.SHOWN_AT].iloc[0]] * 3,
        }
    )
    pd.concat([rows, extra]).to_csv(tmp_path / "rows.csv", index=False)
    result = cli.predict(
        data=world.data,
        exposures=tmp_path / "rows.csv",
        out=tmp_path / "scores.parquet",
        model="models:/offer-ranker/1",
    )
    assert (result.n_rows, result.n_scored, result.model) == (
        len(take) + 3,
        len(take),
        "offer-ranker/1",
    )
    out = pd.read_parquet(tmp_path / "scores.parquet")
    assert out["reason"].tolist()[-3:] == ["SENSITIVE_MCC_OFFER", "UNKNOWN_OFFER", "NO_CONSENT"]
    assert out["score"].iloc[-3:].isna().all()
    # same features as training saw: the scores equal the model on the training matrix
    expected = world.first.booster.predict(test.X[take])
    np.testing.assert_allclose(out["score"].iloc[: len(take)].to_numpy(), expected, rtol=1e-12)
    assert out["rank"].iloc[: len(take)].notna().all()


def test_no_mlflow_artifact_or_record_holds_a_user_id(world: World) -> None:
    users = set(pd.read_parquet(world.data / "users.parquet")[c.USER_ID].astype(str))
    stores = [world.home / "mlartifacts", world.home / "mlflow.db"]
    files = [p for s in stores for p in ([s] if s.is_file() else s.rglob("*")) if p.is_file()]
    names = {p.name for p in files}
    assert {"MLmodel", "model.lgb", "input_example.json", "model_card.md"} <= names
    found = {
        str(p): hits
        for p in files
        if (hits := {m.decode() for m in USER_ID_PATTERN.findall(p.read_bytes())} & users)
    }
    assert found == {}
    # the scan can fail: the data itself is full of them
    assert USER_ID_PATTERN.search((world.data / "exposures.parquet").read_bytes())
