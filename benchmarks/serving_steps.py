"""Where `Scorer.rank`'s time goes, step by step, on the compiled forest and on leaf sums.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/serving_steps.py --work DIR

DIR is a `benchmarks/serving.py --work DIR` world (built there if missing). Each step is timed
inside real requests (one user x 100 candidates, audit fsync at most once a second) by wrapping
the function that does it with a clock, so a step is charged what it costs among the others,
caches as they are then; `other` is the request's time outside every wrapped step. The two
paths run in alternating rounds. Timing alone in a loop reads 2-3x lower for most steps.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from load import _bench_serving  # benchmarks/serving.py as a module (load.py's loader)


def timed_steps(owner_attrs: list[tuple[Any, str, str]]) -> dict[str, float]:
    """Wrap each (owner, attribute) with a clock adding to its label; returns the totals."""
    spent: dict[str, float] = defaultdict(float)
    for owner, attr, label in owner_attrs:
        real = getattr(owner, attr)

        def clocked(*args: Any, _real: Callable = real, _label: str = label, **kw: Any) -> Any:
            start = time.perf_counter()
            try:
                return _real(*args, **kw)
            finally:
                spent[_label] += time.perf_counter() - start

        setattr(owner, attr, clocked)
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="a serving.py world")
    parser.add_argument("--requests", type=int, default=2000, help="per path")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    bench = _bench_serving()
    home, data = bench.prepare_or_reuse(args.work)

    import serving.scorer as scorer_module
    from serving.audit import SYNC_INTERVAL, AuditLog
    from serving.compiled import CompiledChoice
    from serving.explain import PathExplainer, ReasonWriter
    from serving.leafcode import CompiledForest
    from serving.scorer import Scorer

    def scorer_on(state: Any = None) -> Scorer:
        audit = AuditLog(home / "audit", sync=SYNC_INTERVAL)
        return Scorer(home, data, audit=audit, state=state, allow_past_now=True)

    compiled = scorer_on()
    if compiled.state.compiled.forest is None:
        raise SystemExit(f"no compiled forest: {compiled.state.compiled.why}")
    leaf = scorer_on(replace(compiled.state, compiled=CompiledChoice(None, "off", "benchmark")))
    users, _, live = bench.request_plan(compiled)
    user = users[len(users) // 2]
    candidates = [str(x) for x in compiled.state.offers.offer_id[live]]
    now = bench.CUTOFF.to_pydatetime()
    source = type(compiled.state.source)
    spent = timed_steps(
        [
            (CompiledForest, "leaves_and_scores", "compiled forest: scores and leaves, 100 rows"),
            (PathExplainer, "leaves", "LightGBM pred_leaf, 100 rows"),
            (PathExplainer, "scores", "leaf sums, 100 rows"),
            (scorer_module, "assemble", "feature assembly"),
            (PathExplainer, "compact_of", "reasons: contributions of the top 10"),
            (ReasonWriter, "reasons_compact", "reasons: sentences"),
            (type(compiled.audit), "append", "audit append"),
            (source, "pair_codes", "the users' snapshot rows (pair codes)"),
            (scorer_module, "decide", "policy decision"),
        ]
    )
    totals: dict[str, dict[str, float]] = {p: defaultdict(float) for p in ("compiled", "leaf sums")}
    per_round = args.requests // args.rounds
    for r in range(args.rounds):
        for name, scorer in (("compiled", compiled), ("leaf sums", leaf)):
            for _ in range(30 if r == 0 else 5):
                scorer.rank(user, "offer_ranking", 10, candidates, now)
            spent.clear()
            start = time.perf_counter()
            for _ in range(per_round):
                scorer.rank(user, "offer_ranking", 10, candidates, now)
            totals[name]["request"] += time.perf_counter() - start
            for label, seconds in spent.items():
                totals[name][label] += seconds
    n = per_round * args.rounds
    labels = sorted({k for t in totals.values() for k in t if k != "request"})
    print(f"\n{n} requests per path, {args.rounds} alternating rounds; µs per request\n")
    print("| step | compiled | leaf sums |\n|---|---:|---:|")
    for label in sorted(labels, key=lambda lb: -max(t.get(lb, 0.0) for t in totals.values())):
        print(
            f"| {label} | " + " | ".join(_us(t.get(label, 0.0), n) for t in totals.values()) + " |"
        )
    for name in ("other", "request"):
        cells = []
        for t in totals.values():
            steps = sum(v for k, v in t.items() if k != "request")
            cells.append(_us(t["request"] - steps if name == "other" else t["request"], n))
        print(f"| **{name}** | " + " | ".join(cells) + " |")
    ratio = totals["compiled"]["request"] / totals["leaf sums"]["request"]
    print(f"\nmean Scorer.rank, compiled / leaf sums: {ratio:.2f}")


def _us(seconds: float, n: int) -> str:
    return f"{seconds / n * 1e6:.0f}" if seconds else ""


if __name__ == "__main__":
    main()
