"""Boosting on top of the linear model (issue 12): LightGBM stacked on the logistic baseline.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/real_data_stacked.py --data DIR

Two ways to stack, on the slates and protocol of benchmarks/real_data.py (its cut, windows,
NDCG and paired bootstrap; the logistic is training.baselines' own, same preprocessing):

- `init`: LightGBM starts from the logistic's log-odds (`init_score`), so its trees learn only
  what the linear model leaves; a row's score is the logistic's log-odds plus the forest's raw
  score. Training rows get the in-sample log-odds of the logistic fitted on them.
- `feature`: the logistic's log-odds is one more feature. On training rows it is out of fold
  (`--blocks` time blocks, an instant never split: each block is scored by a logistic fitted
  on the other blocks), so a row's own label never feeds it; test rows get the logistic fitted
  on every training row (the baseline itself).

Objectives `binary` (every exposure) and `lambdarank` (slates with a redemption and a
non-redemption), a grid of leaves, learning rates and fixed rounds. The best of the grid on
the test slates is optimistic; so every setting is also scored on time-ordered folds over the
training slates (training.selection.fold_starts, the logistic refitted on each fold's past)
and the setting with the best pooled fold NDCG@10 is the one a selection rule would pick.
`--synthetic DIR` runs the same on `offers synth` tables with the windows `offers train` uses.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
if str(ROOT / "benchmarks") not in sys.path:  # last: its features.py, serving.py are scripts
    sys.path.append(str(ROOT / "benchmarks"))

import real_data as rd  # noqa: E402

from features.vector import FEATURE_COLUMNS  # noqa: E402
from training.baselines import (  # noqa: E402
    LOGISTIC,
    logistic_scores,
    oracle_scores,
    popularity_scores,
)
from training.config import TrainConfig  # noqa: E402
from training.dataset import build_dataset  # noqa: E402
from training.gate import paired_difference  # noqa: E402
from training.selection import development, fold_starts, model_for  # noqa: E402
from training.splits import NEVER, TEST, TRAIN, Split  # noqa: E402

INIT, FEATURE = "init", "feature"  # the two ways to stack
APPROACHES = (INIT, FEATURE)
OBJECTIVES = ("binary", "lambdarank")
LEAVES = (3, 7, 15)
RATES = (0.05, 0.02)
ROUNDS = (10, 25, 50, 100, 200)
LINEAR_COLUMN = "linear_log_odds"  # the logistic's log-odds, carried as X's last column
EPS = 1e-12

LinearScorer = Callable[[Split], np.ndarray]


@dataclass(frozen=True)
class Setting:
    """One point of the grid; `rounds` is read off a longer fit (boosting is sequential)."""

    approach: str
    objective: str
    num_leaves: int
    learning_rate: float
    rounds: int

    def label(self) -> str:
        return (
            f"{self.approach} {self.objective} {self.num_leaves}L "
            f"lr{self.learning_rate:g} {self.rounds}r"
        )


# ------------------------------------------------------------------------------- arithmetic


def log_odds(p: np.ndarray) -> np.ndarray:
    """log(p / (1 - p)), clipped away from 0 and 1 so that a certain row stays finite."""
    p = np.clip(np.asarray(p, dtype=np.float64), EPS, 1.0 - EPS)
    return np.log(p) - np.log1p(-p)


def linear_model(train: Split, config: TrainConfig) -> LinearScorer:
    """The logistic baseline fitted on `train`, as log-odds (ranks exactly as its probability)."""
    score = logistic_scores(train, config)
    return lambda split: log_odds(score(split))


def time_blocks(slate_ns: np.ndarray, n_blocks: int) -> np.ndarray:
    """Block per slate: contiguous in time, about equal slate counts, no instant split."""
    if n_blocks < 2:
        raise ValueError(f"out-of-fold scores need at least 2 blocks, got {n_blocks}")
    slate_ns = np.asarray(slate_ns, dtype=np.int64)
    _, inverse, counts = np.unique(slate_ns, return_inverse=True, return_counts=True)
    before = np.cumsum(counts) - counts  # slates at earlier instants
    return np.minimum(before * n_blocks // len(slate_ns), n_blocks - 1)[inverse]


def out_of_fold(train: Split, config: TrainConfig, n_blocks: int) -> np.ndarray:
    """Log-odds per row from a logistic fitted on the other time blocks (never its own)."""
    block = time_blocks(train.slate_shown_ns(), n_blocks)
    if len(np.unique(block)) < 2:
        raise ValueError(f"out-of-fold scores need slates at 2 instants or more in {train.name!r}")
    row_block = np.repeat(block, train.group)
    out = np.full(train.n_rows, np.nan)
    for b in np.unique(block):
        fitted = linear_model(train.take_slates(block != b), config)
        out[row_block == b] = fitted(train.take_slates(block == b))
    return out


def with_linear(split: Split, linear: np.ndarray) -> Split:
    """The split with the logistic's log-odds appended as X's last column."""
    return replace(split, X=np.column_stack([split.X, linear]))


def stacked_score(booster: lgb.Booster, split: Split, approach: str, rounds: int) -> np.ndarray:
    """`init`: linear log-odds + the forest's raw score; `feature`: the forest's raw score."""
    if approach == INIT:
        features = np.ascontiguousarray(split.X[:, :-1])
        forest = booster.predict(features, raw_score=True, num_iteration=rounds)
        return split.X[:, -1] + forest
    return booster.predict(split.X, raw_score=True, num_iteration=rounds)


# ------------------------------------------------------------------------------- fitting


def fit_forest(
    train: Split, approach: str, objective: str, num_leaves: int, config: TrainConfig
) -> lgb.Booster:
    """LightGBM on a split carrying the linear column: as `init_score` or as a feature.

    `config.learning_rate` and `config.n_estimators` (the rounds) apply; the rest of the
    parameters are the ones `offers train` uses (training.selection.model_for).
    """
    data = train if objective == "binary" else train.informative()
    settings = {
        "objective": objective,
        "num_leaves": num_leaves,
        "min_child_samples": config.min_child_samples[0],
    }
    size = int(data.group.max()) if data.n_slates else 1
    params = model_for(config, settings, config.n_estimators, size).lgb_params()
    init = approach == INIT
    names = list(FEATURE_COLUMNS) + ([] if init else [LINEAR_COLUMN])
    dataset = lgb.Dataset(
        np.ascontiguousarray(data.X[:, :-1]) if init else data.X,
        label=data.y,
        group=data.group,
        init_score=np.ascontiguousarray(data.X[:, -1]) if init else None,
        feature_name=names,
        params={"verbosity": -1},
        free_raw_data=False,
    )
    return lgb.train(params, dataset, num_boost_round=config.n_estimators)


def stack(
    train: Split, target: Split, config: TrainConfig, approach: str, n_blocks: int
) -> tuple[Split, Split]:
    """Train and target splits with the linear column each approach needs."""
    linear = linear_model(train, config)
    on_train = out_of_fold(train, config, n_blocks) if approach == FEATURE else linear(train)
    return with_linear(train, on_train), with_linear(target, linear(target))


def grid_ndcg(
    train: Split,
    target: Split,
    config: TrainConfig,
    grid: argparse.Namespace,
) -> dict[Setting, np.ndarray]:
    """NDCG@10 per target slate of every grid setting (one fit per setting, read at rounds)."""
    out: dict[Setting, np.ndarray] = {}
    for approach in grid.approaches:
        tr, ta = stack(train, target, config, approach, grid.blocks)
        for objective in grid.objectives:
            for leaves in grid.leaves:
                for rate in grid.rates:
                    cfg = config.with_overrides(learning_rate=rate, n_estimators=max(grid.rounds))
                    booster = fit_forest(tr, approach, objective, leaves, cfg)
                    for r in grid.rounds:
                        key = Setting(approach, objective, leaves, rate, r)
                        out[key] = rd.slate_ndcg(ta, stacked_score(booster, ta, approach, r))
                    print(f"  fitted {approach} {objective} {leaves}L lr{rate:g}", file=sys.stderr)
    return out


def fold_ndcg(
    dev: Split, config: TrainConfig, grid: argparse.Namespace
) -> tuple[dict[Setting, float], int, float]:
    """Pooled NDCG@10 of every setting, and of the logistic, over time-ordered folds.

    Fold k learns from the slates before its start with the labels known then (the logistic
    refitted there too) and is scored on the next block: training.selection's folds, except
    that `binary` and the logistic learn from every exposure, as on the test run.
    """
    slate_ns = dev.slate_shown_ns()
    starts = fold_starts(
        dev.informative().slate_shown_ns(),
        config.n_folds,
        config.fold_share,
        config.min_fold_slates,
    )
    pooled: dict[Setting, list[np.ndarray]] = {}
    linear: list[np.ndarray] = []
    for start, end in zip(starts, [*starts[1:], NEVER], strict=True):
        past = dev.known_at(start).take_slates(slate_ns < start)
        block = dev.take_slates((slate_ns >= start) & (slate_ns < end)).informative()
        print(f"  fold from {pd.Timestamp(start, tz='UTC').date()}: {block.n_slates} slates")
        linear.append(rd.slate_ndcg(block, linear_model(past, config)(block)))
        for key, values in grid_ndcg(past, block, config, grid).items():
            pooled.setdefault(key, []).append(values)
    means = {k: float(np.nanmean(np.concatenate(v))) for k, v in pooled.items()}
    return means, len(starts), float(np.nanmean(np.concatenate(linear))) if linear else np.nan


# ------------------------------------------------------------------------------- report


def diff_table(
    test_ndcg: dict[Setting, np.ndarray],
    linear_ndcg: np.ndarray,
    folds: dict[Setting, float],
    n_boot: int,
    seed: int,
) -> pd.DataFrame:
    """One row per setting: test NDCG@10, minus the logistic's [95% paired CI], fold NDCG."""
    mask = ~np.isnan(linear_ndcg)
    rows = []
    for key, values in test_ndcg.items():
        diff, lo, hi = paired_difference(values[mask], linear_ndcg[mask], n_boot, seed)
        rows.append(
            {
                "setting": key.label(),
                "ndcg_at_10": float(np.mean(values[mask])),
                "diff": diff,
                "ci_low": lo,
                "ci_high": hi,
                "fold_ndcg_at_10": folds.get(key, np.nan),
            }
        )
    return pd.DataFrame(rows)


def markdown(table: pd.DataFrame, linear: float, n_slates: int, linear_folds: float) -> str:
    """The grid as a markdown table (differences: stacked minus logistic)."""
    lines = [
        f"logistic regression: NDCG@10 {linear:.4f} over {n_slates} test slates, "
        f"pooled fold NDCG@10 {linear_folds:.4f}",
        "",
        "| setting | NDCG@10 | stacked - logistic [95% CI] | fold NDCG@10 |",
        "|---|---:|---|---:|",
    ]
    for row in table.itertuples(index=False):
        ci = f"{row.diff:+.4f} [{row.ci_low:+.4f}, {row.ci_high:+.4f}]"
        lines.append(f"| {row.setting} | {row.ndcg_at_10:.4f} | {ci} | {row.fold_ndcg_at_10:.4f} |")
    return "\n".join(lines)


def gap_line(train: Split, test: Split, config: TrainConfig, linear: float) -> str:
    """Synthetic data: popularity and the oracle on the test slates, for the gap share."""
    pop = np.nanmean(rd.slate_ndcg(test, popularity_scores(train, config.popularity_prior)(test)))
    oracle = np.nanmean(rd.slate_ndcg(test, oracle_scores(test)))
    share = (linear - pop) / (oracle - pop)
    return (
        f"popularity NDCG@10 {pop:.4f}, oracle {oracle:.4f}: the logistic closes {share:.1%} "
        "of the gap; a setting closes (its NDCG@10 - popularity) / (oracle - popularity)"
    )


def per_group(
    test_ndcg: dict[Setting, np.ndarray],
    linear_ndcg: np.ndarray,
    chosen: Sequence[tuple[str, Setting]],
    groups: np.ndarray,
    n_boot: int,
    seed: int,
) -> str:
    """Per campaign type, each chosen setting minus the logistic (real_data.compare)."""
    parts = []
    for why, key in chosen:
        ndcg = {key.label(): test_ndcg[key], LOGISTIC: linear_ndcg}
        table = rd.compare(ndcg, groups, reference=key.label(), n_boot=n_boot, seed=seed)
        parts.append(f"{why}: {key.label()}\n{rd.markdown(table)}")
    return "\n\n".join(parts)


# ------------------------------------------------------------------------------- run


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", type=Path, help="tables from `offers import complete-journey`")
    source.add_argument("--synthetic", type=Path, help="tables from `offers synth`")
    p.add_argument("--approaches", nargs="+", default=list(APPROACHES), choices=APPROACHES)
    p.add_argument("--objectives", nargs="+", default=list(OBJECTIVES), choices=OBJECTIVES)
    p.add_argument("--leaves", nargs="+", type=int, default=list(LEAVES))
    p.add_argument("--rates", nargs="+", type=float, default=list(RATES))
    p.add_argument("--rounds", nargs="+", type=int, default=list(ROUNDS))
    p.add_argument("--blocks", type=int, default=5, help="time blocks of the out-of-fold score")
    p.add_argument("--min-fold-slates", type=int, help="override the config's min_fold_slates")
    p.add_argument("--no-folds", action="store_true", help="skip the fold selection")
    p.add_argument("--boot", type=int, default=2000, help="bootstrap resamples")
    p.add_argument("--json", type=Path, help="also write the grid table as JSON here")
    args = p.parse_args(argv)
    if min(args.rounds) < 1 or min(args.leaves) < 2 or args.blocks < 2:
        p.error("--rounds must be >= 1, --leaves >= 2 and --blocks >= 2")
    return args


def load(args: argparse.Namespace, config: TrainConfig) -> tuple[Split, Split, np.ndarray]:
    """Training split, test split and a group label per test slate, as each benchmark cuts them.

    Real data: real_data.py's cut at DEV_CUTOFF and its windows (train before TEST_START, test
    to DEV_CUTOFF), groups = campaign types. Synthetic: `offers train`'s windows, training on
    the development slates (as benchmarks/quality.py's baselines), one group.
    """
    run_time = datetime.now(UTC)
    if args.synthetic is not None:
        data = build_dataset(
            args.synthetic,
            config,
            erasures_dir=None,
            run_time=run_time,
            on_step=lambda s: print(f"  {s}", file=sys.stderr),
        )
        test = data.splits[TEST]
        return development(data), test, np.full(test.n_slates, "synthetic", dtype=object)
    with tempfile.TemporaryDirectory(prefix="offers-stacked-") as scratch:
        dev_dir = Path(scratch) / "dev"
        print(f"cut at {rd.DEV_CUTOFF.date()}: {rd.cut_before(args.data, dev_dir, rd.DEV_CUTOFF)}")
        data = rd.evaluation_data(dev_dir, config, run_time)
        test = data.splits[TEST]
        return data.splits[TRAIN], test, rd.slate_campaign_types(test, dev_dir)


def run(args: argparse.Namespace) -> pd.DataFrame:
    config = TrainConfig().with_overrides(num_threads=1, min_fold_slates=args.min_fold_slates)
    train, test, groups = load(args, config)
    linear_ndcg = rd.slate_ndcg(test, linear_model(train, config)(test))
    if test.oracle is not None:
        print(gap_line(train, test, config, float(np.nanmean(linear_ndcg))))
    test_ndcg = grid_ndcg(train, test, config, args)
    folds, n_folds, linear_folds = (
        ({}, 0, np.nan) if args.no_folds else fold_ndcg(train, config, args)
    )
    table = diff_table(test_ndcg, linear_ndcg, folds, args.boot, config.seed)
    n_slates = int(np.sum(~np.isnan(linear_ndcg)))
    print(markdown(table, float(np.nanmean(linear_ndcg)), n_slates, linear_folds))
    keys = list(test_ndcg)
    chosen = [("best on the test slates (optimistic)", keys[int(table["diff"].idxmax())])]
    for approach in args.approaches if folds else []:
        mine = table.index[[k.approach == approach for k in keys]]
        pick = keys[int(table.loc[mine, "fold_ndcg_at_10"].idxmax())]
        why = f"{approach}: best pooled NDCG@10 on {n_folds} folds ({folds[pick]:.4f}"
        chosen.append((f"{why}; the logistic's {linear_folds:.4f})", pick))
    print()
    print(per_group(test_ndcg, linear_ndcg, chosen, groups, args.boot, config.seed))
    if args.json:
        args.json.write_text(table.to_json(orient="records", indent=1) + "\n", encoding="utf-8")
    return table


def main(argv: list[str] | None = None) -> int:
    run(_args(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
