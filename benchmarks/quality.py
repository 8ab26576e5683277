"""Ranking quality on synthetic data: model vs baselines vs the oracle, on the test window.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/quality.py --users 100000

Generates `offers synth` data (or reads --data DIR), builds the lawful slates, selects and
fits the model exactly as `offers train` does (same config, same code, no MLflow), scores the
selection-stage model (fit before the test window; the refit that `train` registers has seen
the test window and is not scored) and every baseline on the same test slates and prints a
markdown table, with the share of the popularity-to-oracle NDCG@10 gap the model closes
(target: at least 80%) and the gate's paired bootstrap vs popularity.

Also printed, for reading the gap: the oracle with its position term removed. Synthetic
redemption depends on the logged slate position, which no ranker can know when it ranks; the
full oracle knows it, so part of the gap is out of any position-blind ranker's reach.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from offers.synth import write_synthetic  # noqa: E402
from offers.synth.oracle import COEF_POSITION  # noqa: E402
from training import report  # noqa: E402
from training.config import TrainConfig  # noqa: E402
from training.dataset import build_dataset  # noqa: E402
from training.gate import popularity_gate  # noqa: E402
from training.metrics import evaluate  # noqa: E402
from training.selection import fit_models  # noqa: E402
from training.splits import TEST, TRAIN, VALID  # noqa: E402
from training.train import score_all  # noqa: E402

TARGET = 0.80


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--users", type=int, default=100_000, help="synthetic users to generate")
    p.add_argument("--seed", type=int, default=0, help="synthetic data seed")
    p.add_argument("--data", type=Path, help="existing synthetic data (skip generation)")
    p.add_argument("--work", type=Path, help="where to write generated data (default: temp)")
    p.add_argument("--config", type=Path, help="training config (.json/.toml)")
    return p.parse_args(argv)


def _position_free_oracle(p: np.ndarray, position: np.ndarray) -> np.ndarray:
    """The oracle's logit without its -COEF_POSITION * log(position) term."""
    return np.log(p / (1 - p)) + COEF_POSITION * np.log(position)


def run(args: argparse.Namespace) -> dict[str, float]:
    config = TrainConfig.from_file(args.config) if args.config else TrainConfig()
    timings: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="offers-quality-") as scratch:
        data_dir = args.data or (args.work or Path(scratch)) / f"synth-{args.users}-{args.seed}"
        if args.data is None:
            t = time.perf_counter()
            counts = write_synthetic(data_dir, n_users=args.users, seed=args.seed)
            timings["synth"] = time.perf_counter() - t
            print(f"generated {counts} in {timings['synth']:.0f} s", file=sys.stderr)
        t = time.perf_counter()
        data = build_dataset(
            data_dir,
            config,
            erasures_dir=None,
            run_time=datetime.now(UTC),
            on_step=lambda s: print(f"  {s}", file=sys.stderr),
        )
        timings["dataset"] = time.perf_counter() - t
    t = time.perf_counter()
    fitted = fit_models(data, config)
    model = fitted.model
    timings["fit"] = time.perf_counter() - t
    t = time.perf_counter()
    results = score_all(model, data, config)
    gate = popularity_gate(model, data, config)
    test = data.splits[TEST]
    if test.oracle is not None:
        free = _position_free_oracle(test.oracle, test.position)
        results["oracle (no position)"] = evaluate(test.y, free, test.group, seed=config.seed)
    timings["evaluate"] = time.perf_counter() - t

    table = report.metrics_frame(results)
    gap = report.gap_closed(table)
    w = data.windows.as_dict()
    print(f"## Ranking quality, `offers synth --users {args.users} --seed {args.seed}`\n")
    print(
        f"Test window {w['valid_end'][:10]} .. {w['test_end'][:10]}; train from "
        f"{w['train_start'][:10]}, validation from {w['train_end'][:10]}. "
        f"Rows: train {data.splits[TRAIN].n_rows:,}, validation {data.splits[VALID].n_rows:,}, "
        f"test {test.n_rows:,} ({test.n_slates:,} slates). Selected on "
        f"{len(fitted.selection.folds)} folds: {fitted.selection.settings}, "
        f"{fitted.selection.rounds} rounds.\n"
    )
    print(report.markdown_table(table))
    print()
    print(gate.format())
    for candidate in fitted.selection.candidates:
        print(f"  candidate {candidate}")
    print()
    out = {"ndcg_at_10": float(table.loc[report.MODEL, "ndcg_at_10"])}
    if gap is not None:
        verdict = "meets" if gap >= TARGET else "misses"
        print(
            f"Model closes **{gap:.1%}** of the popularity-to-oracle NDCG@10 gap "
            f"({verdict} the {TARGET:.0%} target)."
        )
        out["gap_closed"] = gap
        if "oracle (no position)" in table.index:
            pop = table.loc["popularity", "ndcg_at_10"]
            free = table.loc["oracle (no position)", "ndcg_at_10"]
            share = (out["ndcg_at_10"] - pop) / (free - pop)
            print(
                f"Against the position-free oracle (the ceiling for a ranker that cannot see "
                f"the logged position): **{share:.1%}**."
            )
            out["gap_closed_position_free"] = share
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    print(
        "\nSeconds: "
        + ", ".join(f"{k} {v:.0f}" for k, v in timings.items())
        + f"; dataset steps {data.timings}; peak RSS {peak_gb:.1f} GB."
    )
    return out


def main(argv: list[str] | None = None) -> int:
    run(_args(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
