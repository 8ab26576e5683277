"""The closed-loop coverage study (issue 16): how often the report's 95% intervals cover the
simulated truth over seeded experiments, and what a simulated experiment costs.

Each seed is one experiment with its own assignment salt, exploration draws and redemption
draws, served through the real Scorer in process (serving.Scorer.rank_many) on one synthetic
world; the truths come from the oracle (offers/experiments/simulate.py says how).

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/experiments.py \
        --users 2000 --weeks 4 --seeds 50 [--resamples 2000] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

# This folder holds features.py and serving.py: they must not shadow the packages.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

from offers.experiments.simulate import coverage_study  # noqa: E402
from offers.experiments.simworld import SimConfig, build_sim_world  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--weeks", type=int, default=4)
    parser.add_argument("--seeds", type=int, default=50)
    parser.add_argument("--resamples", type=int, default=2000)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        world = build_sim_world(Path(tmp), SimConfig(n_users=args.users, weeks=args.weeks))
        built = time.perf_counter() - t0
        t1 = time.perf_counter()
        study = coverage_study(world, range(args.seeds), args.resamples)
        spent = time.perf_counter() - t1
    requests = sum(len(users) for _, users in world.requests)
    summary = study.groupby("quantity", sort=False).agg(
        coverage=("covered", "mean"), truth=("truth", "mean"), estimate=("value", "mean"),
        ci_width=("high", "mean"))  # fmt: skip
    summary["ci_width"] -= study.groupby("quantity", sort=False)["low"].mean()
    print(f"world: {args.users} users, {args.weeks} weeks, {requests} requests per experiment, "
          f"built in {built:.1f} s")  # fmt: skip
    print(f"{args.seeds} experiments in {spent:.1f} s ({spent / args.seeds:.2f} s each, "
          f"{requests * args.seeds / spent:,.0f} requests/s through the Scorer and the analysis)")  # fmt: skip
    print("| quantity | coverage of the truth | mean truth | mean estimate | mean 95% CI width |")
    print("|---|---:|---:|---:|---:|")
    for q, r in summary.iterrows():
        print(f"| {q} | {r.coverage:.0%} | {r.truth:.4f} | {r.estimate:.4f} | {r.ci_width:.4f} |")
    if args.json:
        args.json.write_text(json.dumps({"seconds": spent, "summary": summary.reset_index()
                                         .to_dict("records")}, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
