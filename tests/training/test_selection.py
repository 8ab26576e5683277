"""Settings selection: expanding folds cut by slate counts, labels as known at each fold's start,
rounds from the pooled curve, a refit on everything; deterministic."""

from __future__ import annotations

import numpy as np
import pytest

from features.vector import FEATURE_COLUMNS
from training.config import TrainConfig
from training.selection import (
    TREE_CATEGORICAL,
    Selection,
    candidates,
    development,
    fit_models,
    fit_selected,
    fold_datasets,
    fold_starts,
    make_folds,
    model_for,
    pooled_curve,
    select,
)
from training.splits import NEVER, Split

DAY = 86_400 * 10**9


def test_folds_are_equal_counts_and_fewer_when_slates_are_few() -> None:
    t = np.arange(1, 11) * DAY  # ten slates, one a day
    assert fold_starts(t, n_folds=3, share=0.6, min_slates=2) == [5 * DAY, 7 * DAY, 9 * DAY]
    assert fold_starts(t, n_folds=3, share=0.6, min_slates=3) == [5 * DAY, 8 * DAY]
    assert fold_starts(t, n_folds=3, share=0.6, min_slates=10) == [5 * DAY]  # at least one
    assert fold_starts(t[:1], n_folds=3, share=0.6, min_slates=1) == []  # nothing to learn from


def test_slates_at_one_instant_stay_in_one_fold() -> None:
    t = np.array([1, 1, 1, 1, 1, 2, 2, 2, 2, 2]) * DAY  # two campaigns, five slates each
    # quantile boundaries fall at day 1 (nothing before it: dropped) and twice at day 2
    assert fold_starts(t, n_folds=3, share=0.6, min_slates=2) == [2 * DAY]


def _slates(n: int, redeem_after_days: float) -> Split:
    """n slates of two rows, one a day; the first row of each is redeemed some days later."""
    rng = np.random.default_rng(0)
    rows = 2 * n
    shown = np.repeat(np.arange(1, n + 1) * DAY, 2)
    positive = np.tile([True, False], n)
    redeemed = np.where(positive, shown + int(redeem_after_days * DAY), NEVER)
    return Split(
        name="dev",
        X=rng.random((rows, len(FEATURE_COLUMNS))),
        y=positive.astype(float),
        group=np.full(n, 2),
        user_id=np.repeat([f"u{i}" for i in range(n)], 2).astype(object),
        offer_id=np.tile(["a", "b"], n).astype(object),
        merchant_id=np.tile(["ma", "mb"], n).astype(object),
        shown_at=shown,
        position=np.tile([1.0, 2.0], n),
        new_user=np.zeros(rows, dtype=bool),
        redeemed_ns=redeemed,
    )


def test_a_fold_learns_only_from_the_past_with_the_labels_known_then() -> None:
    dev = _slates(10, redeem_after_days=2.5)
    config = TrainConfig(n_folds=3, fold_share=0.6, min_fold_slates=2)
    folds = make_folds(dev, config)
    assert [f.start_ns for f in folds] == [5 * DAY, 7 * DAY, 9 * DAY]
    for fold in folds:
        assert fold.train.shown_at.max() < fold.start_ns
        assert (
            fold.start_ns <= fold.valid.shown_at.min() and fold.valid.shown_at.max() < fold.end_ns
        )
        # a redemption 2.5 days after the slate is unknown at the fold's start for the last two
        # slates before it, which then carry no positive and leave the training slates
        assert fold.train.n_slates == fold.start_ns // DAY - 1 - 2
        assert (fold.train.redeemed_ns < fold.start_ns)[fold.train.y > 0].all()
    assert [f.valid.n_slates for f in folds] == [2, 2, 2]


def test_too_few_slates_to_validate_on_make_no_fold() -> None:
    dev = _slates(10, redeem_after_days=2.5)
    assert make_folds(dev, TrainConfig(fold_share=0.05)) == []  # 10 x 0.05: no slate to validate


def test_rounds_come_from_the_pooled_curve_of_all_folds(synth_data) -> None:
    config = TrainConfig(
        objectives="lambdarank", num_leaves=7, n_estimators=12, early_stopping_rounds=0
    )
    dev = development(synth_data)
    folds = make_folds(dev, config)
    assert len(folds) == 3
    model = model_for(config, candidates(config)[0], 12, synth_data.max_slate_size)
    curve = pooled_curve(model, folds, 12, patience=0, datasets=fold_datasets(folds, False))
    # the same fits one fold at a time: the pooled curve is their slate-weighted mean
    per_fold = []
    for fold in folds:
        single = model_for(config, candidates(config)[0], 12, synth_data.max_slate_size)
        single.fit(
            fold.train.X,
            fold.train.y,
            fold.train.group,
            eval_set=[(fold.valid.X, fold.valid.y)],
            eval_group=[fold.valid.group],
            feature_name=list(FEATURE_COLUMNS),
            categorical_feature=list(TREE_CATEGORICAL),
        )
        per_fold.append(single.evals_result_["validation"]["ndcg@10"])
    weights = np.array([f.valid.n_slates for f in folds], dtype=float)
    np.testing.assert_allclose(curve, weights @ np.array(per_fold) / weights.sum(), rtol=1e-12)
    chosen = select(dev, config, synth_data.max_slate_size)
    assert chosen.rounds == int(np.argmax(curve)) + 1
    assert chosen.score == pytest.approx(curve.max())


def test_the_pooled_curve_stops_once_it_stalls(synth_data) -> None:
    config = TrainConfig(objectives="binary", num_leaves=7, n_estimators=300)
    folds = make_folds(development(synth_data), config)
    model = model_for(config, candidates(config)[0], 300, synth_data.max_slate_size)
    curve = pooled_curve(model, folds, 300, patience=5, datasets=fold_datasets(folds, False))
    best = int(np.argmax(curve))
    assert len(curve) == best + 6  # five rounds without a new best after it, then stop


def test_selection_model_sees_development_refit_sees_everything(synth_data) -> None:
    config = TrainConfig(num_leaves=7, n_estimators=20, early_stopping_rounds=5)
    fitted = fit_models(synth_data, config)
    again = fit_models(synth_data, config)
    assert fitted.refit.booster_.model_to_string() == again.refit.booster_.model_to_string()
    assert fitted.model.booster_.model_to_string() == again.model.booster_.model_to_string()
    assert fitted.selection.candidates == again.selection.candidates
    assert len(fitted.selection.candidates) == 3  # three objectives x one tree size
    rounds = fitted.selection.rounds
    assert fitted.model.booster_.current_iteration() == rounds
    assert fitted.refit.booster_.current_iteration() == rounds
    windows = synth_data.windows.as_dict()
    assert fitted.refit_saw["last_shown"] >= windows["valid_end"]  # the test window too
    dev = development(synth_data).informative()
    assert fitted.refit_saw["slates"] > dev.n_slates
    assert dev.slate_shown_ns().max() < synth_data.windows.valid_end.value


def test_the_offer_mcc_is_split_as_a_number_without_the_sparse_category_warning(capfd) -> None:
    # MCC codes span 0-9999: as a LightGBM category they are "sparse values" (a warning per
    # Dataset); the trees split them as a number, so the model's o_mcc bins are a numeric range
    dev = _slates(40, redeem_after_days=0.5)
    mcc = FEATURE_COLUMNS.index("o_mcc")
    dev.X[:, mcc] = np.tile([5411.0, 5912.0, 7011.0, 4121.0], 20)
    dev.y[:] = np.tile([1.0, 0.0], 40)
    config = TrainConfig(objectives="binary", num_leaves=3, min_child_samples=2)
    selection = Selection(candidates(config)[0], 5, float("nan"), [])
    model = fit_selected(dev, config, selection, max_slate_size=2)
    info = model.booster_.dump_model()["feature_infos"]["o_mcc"]
    assert info["min_value"] == 4121.0 and info["max_value"] == 7011.0 and info["values"] == []
    assert "sparse values" not in "".join(capfd.readouterr())
