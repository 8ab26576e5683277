"""`make demo`: the whole system end to end on synthetic data, read top to bottom.

Synthetic data covers 2024-2025, so the demo replays the decision time at the end of that
period (DEMO_NOW): consents are judged then, as the bank's service would have judged them.
Each step imports what it runs, so `next_steps` (and this module) load without LightGBM.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.rule import Rule
from rich.table import Table

from offers.tables import key_table, metrics_table

DEMO_USERS = 10_000  # synthetic customers; about 1M transactions
DEMO_SEED = 7  # same seed, same data, same models
SNAPSHOT_AS_OF = datetime(2025, 12, 1, tzinfo=UTC)  # the feature cutoff served to the scorer
DEMO_NOW = datetime(2025, 12, 1, 12, tzinfo=UTC)  # the replayed request time
SHOWN_USERS = 3  # allowed (and denied) users ranked in process
TOP_K = 5  # offers shown per allowed user in process
BATCH_K = 10  # offers per user in the batch file
# Two configurations: the default, and deeper trees that the promotion gate must judge.
CONFIGS = ({}, {"num_leaves": 31, "min_child_samples": 50})


def _step(console: Console, title: str, fn: Callable[[], Any]) -> Any:
    console.print(Rule(title))
    started = time.perf_counter()
    result = fn()
    console.print(f"[dim]{title}: {time.perf_counter() - started:.1f} s[/dim]")
    return result


def run_demo(home: Path, users: int = DEMO_USERS, seed: int = DEMO_SEED) -> dict[str, Any]:
    """Five stages in order, each printed under its own rule with its duration."""
    console = Console()
    home.mkdir(parents=True, exist_ok=True)
    data, erasures = home / "demo-data", home / "erasures"
    counts = _data(console, data, users, seed)  # 1. synthetic tables, contract-checked
    manifest = _features(console, home, data, erasures)  # 2. the feature snapshot
    _models(console, home, data, erasures, seed)  # 3. train twice, each through the gate
    example = _rank(console, home, data)  # 4. the policy, then the ranking, in process
    batch = _batch(console, home, data)  # 5. every user, parallel processes
    console.print(Rule("next"))
    console.print(next_steps(home, data, example), soft_wrap=True, highlight=False, markup=False)
    return {"data": data, "counts": counts, "snapshot": manifest["snapshot_id"], "batch": batch}


def _data(console: Console, data: Path, users: int, seed: int) -> dict[str, int]:
    """Synthetic tables with a hidden redemption model, then the contract check."""
    from features.validate import validate_dir
    from offers.synth import write_synthetic

    counts = _step(
        console, f"synthesise {users:,} users", lambda: write_synthetic(data, users, seed)
    )
    console.print({k: f"{v:,}" for k, v in counts.items()})
    report = _step(console, "validate the contract tables", lambda: validate_dir(data))
    console.print(report.format())
    if report.failed:
        raise SystemExit(2)
    return counts


def _features(console: Console, home: Path, data: Path, erasures: Path) -> dict[str, Any]:
    """A consent-filtered snapshot as of the end of the period, published atomically."""
    from features.job import build_snapshot

    manifest = _step(
        console,
        "build the feature snapshot",
        lambda: build_snapshot(
            data, home / "features", as_of=SNAPSHOT_AS_OF, erasures_dir=erasures
        ),
    )
    console.print(
        f"snapshot {manifest['snapshot_id']}: {manifest['transactions_used']:,} of "
        f"{manifest['transactions_read']:,} transactions used; excluded {manifest['exclusions_by_rule']}"
    )
    return manifest


def _models(console: Console, home: Path, data: Path, erasures: Path, seed: int) -> None:
    """Each configuration registered as challenger, then judged by the promotion gate."""
    from offers.cli.common import progress_printer
    from training.config import TrainConfig
    from training.promote import promote
    from training.train import train

    for overrides in CONFIGS:
        config = TrainConfig(seed=seed).with_overrides(**overrides)
        result = _step(
            console,
            f"train LambdaRank {overrides or '(defaults)'}",
            lambda config=config: train(
                data, home=home, erasures_dir=erasures, config=config, on_step=progress_printer()
            ),
        )
        console.print(metrics_table(result.metrics, title="model vs baselines (test window)"))
        console.print(f"run {result.run_id}, registered version {result.version}")
        decision = _step(
            console,
            "promotion gate",
            lambda: promote(
                home=home, erasures_dir=erasures, data_dir=data, on_step=progress_printer()
            ),
        )
        console.print(decision.format())


def _rank(console: Console, home: Path, data: Path) -> str:
    """A few allowed users ranked, a few denied ones (one per reason), one refused purpose.

    Returns a user worth explaining next (a denied one when there is one).
    """
    from serving.scorer import Scorer

    scorer = Scorer(home, data, allow_past_now=True)
    user_ids = sorted(scorer.state.users)
    decisions = scorer.decide_many(user_ids, "offer_ranking", DEMO_NOW)
    allowed = [u for u, d in zip(user_ids, decisions, strict=True) if d.allowed][:SHOWN_USERS]
    denied_by_reason: dict[str, str] = {}
    for u, d in zip(user_ids, decisions, strict=True):
        if not d.allowed:
            denied_by_reason.setdefault(d.reason_code, u)
    denied = list(denied_by_reason.values())[:SHOWN_USERS]
    console.print(Rule(f"rank offers in process at {DEMO_NOW.isoformat()}"))
    for user in allowed:
        console.print(_ranked_table(scorer.rank(user, "offer_ranking", k=TOP_K, now=DEMO_NOW)))
    for user in denied:
        ranked = scorer.rank(user, "offer_ranking", k=TOP_K, now=DEMO_NOW)
        console.print(
            f"{user}: [red]{ranked.decision.decision}[/red] {ranked.reason_code} {list(ranked.decision.legal_refs)}"
        )
    banned = scorer.rank(allowed[0], "targeted_advertising", now=DEMO_NOW)
    console.print(f"{allowed[0]} for targeted_advertising: [red]{banned.reason_code}[/red]")
    return denied[0] if denied else allowed[0]


def _ranked_table(ranked) -> Table:  # ranked: serving.scorer.RankResult
    cold = " (cold start)" if ranked.cold_start else ""
    table = key_table(
        "offer", "rank", "score", "why", title=f"{ranked.user_id}: {ranked.reason_code}{cold}"
    )
    for offer in ranked.offers:
        table.add_row(
            offer.offer_id, str(offer.rank), f"{offer.score:.3f}", "; ".join(offer.reasons)
        )
    return table


def _batch(console: Console, home: Path, data: Path):  # -> serving.batch.BatchReport
    """Every user, the same decision per user as in process, in parallel processes."""
    from serving.batch import score_batch

    batch = _step(
        console,
        "batch scoring",
        lambda: score_batch(
            home,
            data,
            home / "batch" / "top_offers.parquet",
            BATCH_K,
            now=DEMO_NOW,
            allow_past_now=True,
        ),
    )
    console.print(
        f"{batch.users:,} users at {batch.users_per_s:,.0f} users/s: allowed {batch.allowed:,} "
        f"(cold start {batch.cold_start:,}), denied {batch.denied_by_reason}"
    )
    return batch


def next_steps(home: Path, data: Path, user: str) -> str:
    """The exact commands to paste into a new shell after the demo (`offers` is in .venv/bin)."""
    now = DEMO_NOW.isoformat().replace("+00:00", "Z")
    return "\n".join(
        [
            "In a new shell, from this folder (the `offers` command lives in .venv/bin):",
            "  . .venv/bin/activate",
            f"  export OFFERS_HOME={home}",
            "  offers ui                       # MLflow UI on http://127.0.0.1:5000, Ctrl-C stops it",
            f"  offers policy explain --data {data} --user {user} --purpose offer_ranking --at {now}",
            "  offers audit tail -n 5",
            f"  OFFERS_API_TOKENS=secret offers serve --data {data} --allow-past-now --port 8000",
            "Notebooks: pip install jupyterlab, then `jupyter lab notebooks/` (same OFFERS_HOME).",
            "Without activating: .venv/bin/offers ... works the same.",
        ]
    )
