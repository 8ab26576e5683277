"""The training config: every knob typed, loadable from JSON or TOML, typos refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from features.definitions import HALF_LIFE_PARAM
from training.config import TrainConfig
from training.model import LambdaRankModel


def test_defaults_are_sane() -> None:
    config = TrainConfig()
    assert config.eval_at[0] == 10 and config.stopping_k == 10
    assert config.resolved_truncation_level == max(config.eval_at) + 3
    assert config.label_gain == (0.0, 1.0)
    assert config.experiment == "offer-ranking"


def test_json_and_toml_round_trip(tmp_path: Path) -> None:
    (tmp_path / "c.json").write_text(json.dumps({"seed": 5, "eval_at": [10, 3], "train_days": 90}))
    (tmp_path / "c.toml").write_text("[train]\nseed = 5\neval_at = [10, 3]\ntrain_days = 90\n")
    a = TrainConfig.from_file(tmp_path / "c.json")
    b = TrainConfig.from_file(tmp_path / "c.toml")
    assert a == b and a.seed == 5 and a.eval_at == (10, 3) and a.train_days == 90
    assert a.resolved_truncation_level == 13


def test_unknown_keys_and_bad_values_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown config keys.*lerning_rate"):
        TrainConfig.from_dict({"lerning_rate": 0.1})
    with pytest.raises(ValueError, match="eval_at"):
        TrainConfig(eval_at=(0,))
    (tmp_path / "c.yaml").write_text("seed: 1\n")
    with pytest.raises(ValueError, match="json or .toml"):
        TrainConfig.from_file(tmp_path / "c.yaml")


def test_params_are_flat_strings() -> None:
    params = TrainConfig(train_days=None).as_params()
    assert params["eval_at"] == "10,5" and params["train_days"] == ""
    assert params["truncation_level"] == "13"
    assert all(isinstance(v, str) for v in params.values())


def test_the_selection_grid_accepts_one_value_or_a_list_and_refuses_unknown_objectives() -> None:
    one = TrainConfig(num_leaves=7, objectives="binary")
    assert one.num_leaves == (7,) and one.objectives == ("binary",)
    listed = TrainConfig.from_dict({"num_leaves": [7, 15], "min_child_samples": [20, 50]})
    assert listed.num_leaves == (7, 15) and listed.min_child_samples == (20, 50)
    assert TrainConfig().objectives == ("lambdarank", "rank_xendcg", "binary")
    assert listed.as_params()["num_leaves"] == "7,15"
    with pytest.raises(ValueError, match=r"objectives \['gbdt'\] unknown"):
        TrainConfig(objectives=("gbdt",))
    with pytest.raises(ValueError, match="num_leaves must name at least one value"):
        TrainConfig(num_leaves=())
    with pytest.raises(ValueError, match="n_folds"):
        TrainConfig(n_folds=0)


def test_model_params_hand_every_lightgbm_setting_to_the_model() -> None:
    """Each hyper-parameter of the model comes from the config or from the selection, by name."""
    config = TrainConfig(learning_rate=0.1, lambda_l2=2.0, truncation_level=9, seed=7)
    settings = {"objective": "binary", "num_leaves": 7, "min_child_samples": 5}
    chosen = {"n_estimators": 12, "eval_at": (5,), "early_stopping_rounds": 0}
    model = LambdaRankModel(**config.model_params(settings, **chosen))
    assert model.get_params() == {
        "objective": "binary",
        "n_estimators": 12,
        "learning_rate": 0.1,
        "num_leaves": 7,
        "min_child_samples": 5,
        "feature_fraction": 0.8,
        "bagging_fraction": 0.8,
        "bagging_freq": 1,
        "lambda_l2": 2.0,
        "eval_at": (5,),
        "label_gain": (0.0, 1.0),
        "truncation_level": 9,
        "early_stopping_rounds": 0,
        "seed": 7,
        "num_threads": 2,
    }
    assert set(config.model_params()) <= set(model.get_params())


def test_half_life_is_recorded_under_the_key_promote_and_predict_read() -> None:
    """Run params come from the field names; the readers look the half-life up by its key."""
    assert TrainConfig(half_life_days=12.5).as_params()[HALF_LIFE_PARAM] == "12.5"
