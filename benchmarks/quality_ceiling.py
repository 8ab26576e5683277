"""How far a ranker gets on synthetic data when it knows one hidden term of the oracle exactly.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/quality_ceiling.py --users 20000

A diagnostic, never a feature: it reads the hidden world behind `offers synth`. The model's
features estimate the oracle's terms (offers/synth/oracle.py TERMS) from card history; this
script appends one or more TRUE terms to the feature matrix, fits the same LightGBM (the
config's first candidate, fixed rounds, on the development slates as `offers train`'s
selection-stage model) and scores the test slates. A term whose true value lifts NDCG@10 far
above the features-only fit is where the gap to the oracle lives; when the features-only fit is
already where every encoding of the history lands, the rest is the noise of estimating a
user's taste from a year of purchases (a window data minimisation caps at 365 days).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from features.vector import FEATURE_COLUMNS  # noqa: E402
from offers.synth import SynthWorld, generate_world  # noqa: E402
from offers.synth.oracle import (  # noqa: E402
    CATEGORY_LIFT,
    MERCHANT_LIFT,
    TERMS,
    Exposure,
    logit_terms,
)
from training.baselines import popularity_scores  # noqa: E402
from training.config import TrainConfig  # noqa: E402
from training.dataset import build_dataset  # noqa: E402
from training.metrics import per_slate  # noqa: E402
from training.selection import candidates, development, model_for  # noqa: E402
from training.splits import TEST, Split  # noqa: E402

K = 10
FEATURES_ONLY = "features only"
DEFAULT_VARIANTS = (
    FEATURES_ONLY,
    CATEGORY_LIFT,
    MERCHANT_LIFT,
    f"{CATEGORY_LIFT}+{MERCHANT_LIFT}",
    "+".join(TERMS),
)


def row_terms(world: SynthWorld, split: Split) -> dict[str, np.ndarray]:
    """The oracle's TERMS for every row of a split, from the world the tables were drawn from.

    Synthetic ids are `u<user number>` and `o<offer number>`; shown_at is counted in seconds
    from the world's start, as the oracle counts it. The position is the oracle's own (its
    term is not one of TERMS).
    """
    user = np.array([int(u[1:]) for u in split.user_id], dtype=np.int64)
    offer = np.array([int(o[1:]) for o in split.offer_id], dtype=np.int64)
    if len(user) and (user.max() >= world.people.n or offer.max() >= len(world.offers.merchant)):
        raise ValueError("the split's ids are not from this world (another --users or --seed?)")
    shown = (np.asarray(split.shown_at, dtype=np.int64) - world.t0.value) // 10**9
    exposure = Exposure(
        user, shown, world.offers.merchant[offer], world.offers.reward[offer], np.ones(len(user))
    )
    w = world
    return logit_terms(w.catalog, w.merchants, w.people, w.txns, exposure, w.days)


def with_terms(X: np.ndarray, terms: Mapping[str, np.ndarray], names: Sequence[str]) -> np.ndarray:
    """The feature matrix with the named true terms appended as columns, in that order."""
    unknown = sorted(set(names) - set(terms))
    if unknown:
        raise ValueError(f"unknown oracle terms {unknown}; known: {sorted(terms)}")
    return np.column_stack([X, *(terms[n] for n in names)]) if names else X


def variant_terms(variant: str) -> list[str]:
    """'features only' -> no term; 'a+b' -> the terms a and b."""
    return [] if variant == FEATURES_ONLY else variant.split("+")


def ndcg(split: Split, scores: np.ndarray, seed: int) -> float:
    values = per_slate(split.y, scores, split.group, ks=(K,), seed=seed)[f"ndcg_at_{K}"]
    return float(np.nanmean(values))


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--users", type=int, default=20_000, help="synthetic users to generate")
    p.add_argument("--seed", type=int, default=0, help="synthetic data seed")
    p.add_argument("--rounds", type=int, default=313, help="boosting rounds of every fit")
    p.add_argument("--variants", nargs="*", default=list(DEFAULT_VARIANTS), help="a+b: terms")
    return p.parse_args(argv)


def run(args: argparse.Namespace) -> dict[str, float]:
    """NDCG@10 on the test slates of every variant, popularity and the oracle; prints a table."""
    config = TrainConfig()
    tables, world = generate_world(args.users, args.seed)
    with tempfile.TemporaryDirectory(prefix="offers-ceiling-") as scratch:
        for name, frame in tables.items():
            frame.to_parquet(Path(scratch) / f"{name}.parquet", index=False)
        data = build_dataset(scratch, config, erasures_dir=None, run_time=datetime.now(UTC))
    dev, test = development(data).informative(), data.splits[TEST]
    dev_terms, test_terms = row_terms(world, dev), row_terms(world, test)
    settings = candidates(config)[0]
    popularity = popularity_scores(development(data), config.popularity_prior)  # as score_all
    out = {
        "popularity": ndcg(test, popularity(test), config.seed),
        "oracle": ndcg(test, test.oracle, config.seed),
    }
    for variant in args.variants:
        names = variant_terms(variant)
        model = model_for(config, settings, args.rounds, data.max_slate_size)
        model.fit(
            with_terms(dev.X, dev_terms, names),
            dev.y,
            dev.group,
            feature_name=[*FEATURE_COLUMNS, *names],
        )
        scores = model.predict(with_terms(test.X, test_terms, names))
        out[variant] = ndcg(test, scores, config.seed)
    print(markdown(out, settings, args))
    return out


def markdown(
    results: Mapping[str, float], settings: Mapping[str, object], args: argparse.Namespace
) -> str:
    """The results as a markdown table, each row with its share of the popularity-to-oracle gap."""
    pop, orc = results["popularity"], results["oracle"]
    lines = [
        f"`--users {args.users} --seed {args.seed}`, {settings}, {args.rounds} rounds; "
        f"popularity {pop:.4f}, oracle {orc:.4f}",
        "",
        f"| the model's features plus | NDCG@{K} | share of the popularity-to-oracle gap |",
        "|---|---:|---:|",
    ]
    for name, value in results.items():
        if name not in ("popularity", "oracle"):
            share = (value - pop) / (orc - pop) if orc != pop else float("nan")
            lines.append(f"| {name} | {value:.4f} | {share:.1%} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    run(_args(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
