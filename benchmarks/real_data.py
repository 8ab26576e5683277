"""Ranking quality on real data (The Complete Journey): the model vs every baseline, same slates.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/real_data.py [--data DIR] [--withdrawals]

Development protocol (issue 12): only data before 2017-10-30 is used. The script cuts the
imported tables there before anything else (exposures shown from the cutoff on, transactions at
or after it and redemptions at or after it are removed), so the later months stay untouched
for the independent check. Then, as a user would:

1. `offers train` (training.train.train, default TrainConfig, MLflow under a temporary
   OFFERS_HOME) on the tables cut again at 2017-08-01: the model never sees a later exposure
   or redemption, whatever protocol train() follows inside;
2. the registered model and every baseline (random, popularity, affinity, logistic; the
   learned ones fitted on all exposures shown before 2017-08-01, redemptions after it censored)
   score the same test slates, shown 2017-08-01 .. 2017-10-30; so does a reference row,
   `refit_100`: the same LightGBM fitted on every exposure before 2017-08-01 for 100 fixed
   rounds (the issue's refit experiment), to show what the data allow;
3. NDCG@10 per slate (slates with a redemption), and the paired bootstrap 95% interval of the
   model-minus-baseline difference (slates resampled; `training.gate.paired_difference`, the
   promotion gate's own bootstrap), overall and per campaign type (A/B/C).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from features import tracking  # noqa: E402
from features.contract import (  # noqa: E402
    EXPOSURES,
    OFFERS,
    REDEEMED_AT,
    SHOWN_AT,
    STARTS_AT,
    TABLES,
    TRANSACTIONS,
    TS,
)
from features.io import table_path  # noqa: E402
from offers.complete_journey import CAMPAIGNS_FILE, import_complete_journey  # noqa: E402
from offers.complete_journey.campaigns import offer_campaign  # noqa: E402
from offers.settings import load_settings  # noqa: E402
from training.baselines import fit_baselines  # noqa: E402
from training.config import TrainConfig  # noqa: E402
from training.dataset import build_dataset  # noqa: E402
from training.gate import paired_difference  # noqa: E402
from training.metrics import per_slate  # noqa: E402
from training.selection import (  # noqa: E402
    Selection,
    candidates,
    development,
    fit_selected,
)
from training.splits import TEST, TRAIN, VALID, Split, TrainingData, Windows  # noqa: E402
from training.train import train  # noqa: E402
from training.versions import columns_for  # noqa: E402

DEV_CUTOFF = pd.Timestamp("2017-10-30", tz="UTC")  # never evaluate or tune on later data
TEST_START = pd.Timestamp("2017-08-01", tz="UTC")  # train before, test from here to DEV_CUTOFF
EARLIEST = pd.Timestamp("2016-01-01", tz="UTC")  # before the first campaign (2016-11-14)
K = 10
MODEL = "model"
REFIT = "refit_100"  # reference, not a baseline: the refit on every exposure, 100 rounds
REFIT_ROUNDS = 100
ALL = "all"


# ------------------------------------------------------------------------------- evaluation


def slate_ndcg(split: Split, scores: np.ndarray, k: int = K, seed: int = 0) -> np.ndarray:
    """NDCG@k per slate of `split` (NaN for a slate without a redemption), as evaluate() ties."""
    return per_slate(split.y, scores, split.group, ks=(k,), seed=seed)[f"ndcg_at_{k}"]


def compare(
    per_slate_ndcg: Mapping[str, np.ndarray],
    groups: np.ndarray,
    reference: str = MODEL,
    n_boot: int = 2000,
    seed: int = 0,
) -> pd.DataFrame:
    """One row per (group, scorer): mean NDCG, and reference-minus-scorer with its interval.

    `groups` holds one label per slate; ALL covers every slate. Slates without a redemption
    carry no signal and are left out (as in training.metrics.evaluate).
    """
    groups = np.asarray(groups, dtype=object)
    ref = per_slate_ndcg[reference]
    rows = []
    for group in [ALL, *sorted(set(groups.tolist()))]:
        mask = (groups == group) if group != ALL else np.ones(len(groups), dtype=bool)
        mask &= ~np.isnan(ref)
        for name, values in per_slate_ndcg.items():
            diff, lo, hi = (
                (np.nan, np.nan, np.nan)
                if name == reference
                else paired_difference(ref[mask], values[mask], n_boot, seed)
            )
            rows.append(
                {
                    "group": group,
                    "scorer": name,
                    "n_slates": int(mask.sum()),
                    f"ndcg_at_{K}": float(np.mean(values[mask])) if mask.any() else np.nan,
                    "diff": diff,
                    "ci_low": lo,
                    "ci_high": hi,
                }
            )
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------- data


def cut_before(src: Path, dst: Path, cutoff: pd.Timestamp) -> dict[str, int]:
    """Copy the contract tables, keeping only what was known before `cutoff`; rows cut per table.

    Exposures shown at or after it go, and so do redemptions at or after it (the exposure stays,
    unredeemed as far as anyone knew); transactions at or after it; offers starting at or after
    it. Users and consents stay whole: a withdrawal must reach training whenever it happened.
    """
    dst.mkdir(parents=True, exist_ok=True)
    cut: dict[str, int] = {}
    for table in TABLES:
        frame = pd.read_parquet(table_path(src, table))
        n = len(frame)
        if table == EXPOSURES:
            frame = frame.loc[frame[SHOWN_AT] < cutoff].copy()
            late = frame[REDEEMED_AT] >= cutoff
            cut["redemptions"] = int(late.sum())
            frame.loc[late, REDEEMED_AT] = pd.NaT
        elif table == TRANSACTIONS:
            frame = frame.loc[frame[TS] < cutoff]
        elif table == OFFERS:
            frame = frame.loc[frame[STARTS_AT] < cutoff]
        cut[table] = n - len(frame)
        frame.to_parquet(dst / f"{table}.parquet", index=False)
    side = src / CAMPAIGNS_FILE
    if side.exists():
        campaigns = pd.read_parquet(side)
        campaigns.loc[campaigns[STARTS_AT] < cutoff].to_parquet(dst / CAMPAIGNS_FILE, index=False)
    return cut


def slate_campaign_types(split: Split, data_dir: Path) -> np.ndarray:
    """Campaign type (A/B/C) per slate, from the offer ids and DIR/cj_campaigns.parquet."""
    first_offer = pd.Series(split.per_slate(split.offer_id))
    side = data_dir / CAMPAIGNS_FILE
    if not side.exists():
        return np.full(split.n_slates, "unknown", dtype=object)
    types = pd.read_parquet(side).set_index("campaign_id")["campaign_type"]
    return offer_campaign(first_offer).map(types).fillna("unknown").to_numpy(dtype=object)


# ------------------------------------------------------------------------------- run


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, help="tables from `offers import complete-journey`")
    p.add_argument("--withdrawals", action="store_true", help="import the withdrawals variant")
    p.add_argument(
        "--no-assume-adult",
        action="store_true",
        help="import households without demographics with a null birth date (AGE_UNKNOWN)",
    )
    p.add_argument("--work", type=Path, help="keep the cut tables and OFFERS_HOME here")
    p.add_argument("--config", type=Path, help="training config (default: the defaults)")
    p.add_argument("--boot", type=int, default=2000, help="bootstrap resamples")
    p.add_argument("--json", type=Path, help="also write the comparison table as JSON here")
    return p.parse_args(argv)


def evaluation_data(dev_dir: Path, config: TrainConfig, run_time: datetime) -> TrainingData:
    """TRAIN: every exposure shown before TEST_START (labels censored there); TEST: the rest."""
    windows = Windows(EARLIEST, TEST_START, TEST_START, DEV_CUTOFF)
    data = build_dataset(
        dev_dir,
        config,
        erasures_dir=None,
        run_time=run_time,
        windows=windows,
        splits=(TRAIN, VALID, TEST),  # VALID is empty: train_end == valid_end
        on_step=lambda s: print(f"  eval: {s}", file=sys.stderr),
    )
    print(f"evaluation exposures by policy reason: {data.exclusions}")
    for name in (TRAIN, TEST):
        print(f"{name} split of the evaluation: {data.splits[name].summary()}")
    return data


def _scores(
    home: Path, model_uri: str, dev_dir: Path, config: TrainConfig, run_time: datetime
) -> tuple[dict[str, np.ndarray], Split]:
    """Per-slate NDCG@10 of the registered model and every baseline on the test slates."""
    data = evaluation_data(dev_dir, config, run_time)
    test = data.splits[TEST]
    ranker = tracking.load_model_uri(home, model_uri)
    scores = {MODEL: ranker.booster.predict(columns_for(test.X, ranker.feature_columns))}
    baselines = fit_baselines(data.splits[TRAIN], config, with_oracle=False)
    scores.update({name: score(test) for name, score in baselines.items()})
    # Learns only from slates before the test window (train's own refit would see it too).
    fixed = Selection(candidates(config)[0], REFIT_ROUNDS, float("nan"), [])
    refit = fit_selected(development(data), config, fixed, data.max_slate_size)
    scores[REFIT] = refit.predict(test.X)
    return {n: slate_ndcg(test, s, seed=config.seed) for n, s in scores.items()}, test


def run(args: argparse.Namespace) -> pd.DataFrame:
    config = TrainConfig.from_file(args.config) if args.config else TrainConfig()
    run_time = datetime.now(UTC)
    with tempfile.TemporaryDirectory(prefix="offers-realdata-") as scratch:
        work = args.work or Path(scratch)
        source = args.data
        if source is None:
            source = work / "imported"
            report = import_complete_journey(
                source, withdrawals=args.withdrawals, assume_adult=not args.no_assume_adult
            )
            print(f"imported {report.written}; dropped {report.dropped}; {report.facts}")
        dev_dir, train_dir = work / "dev", work / "train"
        print(f"cut at {DEV_CUTOFF.date()}: {cut_before(source, dev_dir, DEV_CUTOFF)}")
        print(f"cut at {TEST_START.date()}: {cut_before(dev_dir, train_dir, TEST_START)}")
        os.environ["OFFERS_HOME"] = str(work / "home")
        home = load_settings().home
        t = time.perf_counter()
        result = train(
            train_dir,
            home=home,
            erasures_dir=load_settings().erasures_dir,
            config=config,
            run_time=run_time,
            on_step=lambda s: print(f"  train: {s}", file=sys.stderr),
        )
        print(
            f"trained {result.model_uri} in {time.perf_counter() - t:.0f} s: "
            f"{result.best_iteration} trees, windows {result.windows.as_dict()}"
        )
        print(
            f"train()'s own test window (inside the training data):\n{result.metrics.to_string()}"
        )
        ndcg, test = _scores(home, result.model_uri, dev_dir, config, run_time)
        groups = slate_campaign_types(test, dev_dir)
    table = compare(ndcg, groups, n_boot=args.boot, seed=config.seed)
    print(markdown(table))
    if args.json:
        args.json.write_text(table.to_json(orient="records", indent=1) + "\n", encoding="utf-8")
    return table


def markdown(table: pd.DataFrame) -> str:
    """The comparison as a markdown table (differences: model minus the scorer)."""
    lines = [
        f"| campaigns | scorer | slates | NDCG@{K} | model - scorer [95% CI] |",
        "|---|---|---|---|---|",
    ]
    for row in table.itertuples(index=False):
        ci = (
            "-"
            if np.isnan(row.diff)
            else f"{row.diff:+.4f} [{row.ci_low:+.4f}, {row.ci_high:+.4f}]"
        )
        ndcg = getattr(row, f"ndcg_at_{K}")
        lines.append(f"| {row.group} | {row.scorer} | {row.n_slates} | {ndcg:.4f} | {ci} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    run(_args(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
