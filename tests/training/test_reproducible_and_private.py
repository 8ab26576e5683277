"""Same data and seed: the same model, byte for byte. Revoked or erased users: no trace in it.

Comparing `booster.model_to_string()` is the strongest check there is: any difference in any
feature value, label, row order or tree would show.
"""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features import contract as c
from features.erasures import record_erasure
from tests.training.conftest import RUN_TIME
from training.config import TrainConfig
from training.dataset import build_dataset
from training.inputs import KEPT, REASON_WITHDRAWN, load_inputs, policy_reasons
from training.splits import SPLITS
from training.train import fit_ranker

pytestmark = pytest.mark.slow
# Selection on folds and the refit both run; two objectives (one with its own random stream) and
# one tree size keep it quick.
CONFIG = TrainConfig(
    n_estimators=80,
    early_stopping_rounds=0,
    objectives=("lambdarank", "rank_xendcg"),
    num_leaves=15,
)


def _model(data_dir: Path, erasures: Path | None, config: TrainConfig = CONFIG) -> str:
    data = build_dataset(data_dir, config, erasures_dir=erasures, run_time=RUN_TIME)
    return fit_ranker(data, config).booster_.model_to_string()


def test_same_data_and_seed_give_an_identical_model(synth_dir: Path) -> None:
    first = _model(synth_dir, None)
    assert first == _model(synth_dir, None)
    assert first != _model(synth_dir, None, CONFIG.with_overrides(seed=CONFIG.seed + 1))


def _reasons_by_user(data_dir: Path) -> pd.DataFrame:
    inputs = load_inputs(data_dir)
    ex = inputs.exposures
    mcc = inputs.offers.set_index(c.OFFER_ID).loc[ex[c.OFFER_ID], c.MCC].to_numpy()
    reasons = policy_reasons(
        ex[c.USER_ID].to_numpy(dtype=object),
        ex[c.SHOWN_AT],
        mcc,
        inputs.users,
        inputs.consents,
        {},
        RUN_TIME,
    )
    return pd.DataFrame({c.USER_ID: ex[c.USER_ID].to_numpy(dtype=object), "reason": reasons})


def _scramble(data_dir: Path, users: set[str]) -> None:
    """Rewrite everything these users ever did: amounts, merchants, redemptions, exposure times."""
    rng = np.random.default_rng(0)
    txns = pd.read_parquet(data_dir / "transactions.parquet")
    mine = txns[c.USER_ID].isin(users).to_numpy()
    txns.loc[mine, c.AMOUNT] = txns.loc[mine, c.AMOUNT] * 3 + 1
    merchants = txns[[c.MERCHANT_ID, c.MCC]].drop_duplicates(c.MERCHANT_ID)
    pick = merchants.iloc[rng.integers(0, len(merchants), mine.sum())]
    txns.loc[mine, c.MERCHANT_ID] = pick[c.MERCHANT_ID].to_numpy()
    txns.loc[mine, c.MCC] = pick[c.MCC].to_numpy()
    txns.to_parquet(data_dir / "transactions.parquet", index=False)

    ex = pd.read_parquet(data_dir / "exposures.parquet")
    mine = ex[c.USER_ID].isin(users).to_numpy()
    redeemed = ex[c.REDEEMED_AT].notna().to_numpy()
    ex.loc[mine & redeemed, c.REDEEMED_AT] = pd.NaT
    ex.loc[mine & ~redeemed, c.REDEEMED_AT] = ex.loc[mine & ~redeemed, c.SHOWN_AT] + pd.Timedelta(
        hours=1
    )
    ex.to_parquet(data_dir / "exposures.parquet", index=False)


def test_revoked_and_erased_users_leave_no_trace_in_the_model(
    synth_dir: Path, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    shutil.copytree(synth_dir, data)
    reasons = _reasons_by_user(data)
    revoked = set(reasons.loc[reasons["reason"] == REASON_WITHDRAWN, c.USER_ID])
    usable = reasons.loc[reasons["reason"] == KEPT, c.USER_ID].value_counts()
    erased = set(usable.index[:15])  # users whose exposures would otherwise be trained on
    assert len(revoked) > 20 and len(erased) == 15 and not erased & revoked

    erasures = tmp_path / "erasures"
    for user in sorted(erased):
        record_erasure(erasures, user, RUN_TIME - timedelta(days=1))
    before = build_dataset(data, CONFIG, erasures_dir=erasures, run_time=RUN_TIME)
    assert not erased & {u for s in SPLITS for u in before.splits[s].user_id}
    assert before.exclusions[REASON_WITHDRAWN] == (reasons[c.USER_ID].isin(revoked | erased)).sum()
    model_before = fit_ranker(before, CONFIG).booster_.model_to_string()

    _scramble(data, revoked | erased)
    assert _reasons_by_user(data)["reason"].value_counts()[REASON_WITHDRAWN] == len(
        reasons.loc[reasons["reason"] == REASON_WITHDRAWN]
    )
    after = build_dataset(data, CONFIG, erasures_dir=erasures, run_time=RUN_TIME)
    for name in SPLITS:
        assert after.splits[name].digest() == before.splits[name].digest(), name
    assert fit_ranker(after, CONFIG).booster_.model_to_string() == model_before

    # the same scrambling of users the model may learn from does change it: the check can fail
    others = set(usable.index[15:30])
    _scramble(data, others)
    changed = build_dataset(data, CONFIG, erasures_dir=erasures, run_time=RUN_TIME)
    assert fit_ranker(changed, CONFIG).booster_.model_to_string() != model_before
