"""Experiment commands: create, stop and list definitions (admin token), report, simulate."""

from __future__ import annotations

import hmac
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Column, Table

from offers.cli.common import UserError, console, parse_instant
from offers.settings import load_settings

ADMIN_HELP = "The admin token (the server's OFFERS_ADMIN_TOKEN): changes need it."
ADMIN_ENV = "OFFERS_ADMIN_TOKEN"


def _check_admin(token: str) -> None:
    """Definitions change only with the admin token, as on the HTTP admin endpoint."""
    expected = os.environ.get(ADMIN_ENV, "")
    if not expected:
        raise UserError(f"set {ADMIN_ENV} (the admin token): experiments change only with it")
    if not hmac.compare_digest(token.encode(), expected.encode()):
        raise UserError("--admin-token does not match the admin token: nothing was changed")


def create(
    name: Annotated[str, typer.Argument(help="Experiment name: a-z, 0-9, '_', '-'.")],
    start: Annotated[str, typer.Option("--start", help="Start instant (ISO 8601, naive = UTC).")],
    end: Annotated[str, typer.Option("--end", help="End instant (exclusive).")],
    admin_token: Annotated[str, typer.Option("--admin-token", help=ADMIN_HELP)],
    champion: Annotated[float, typer.Option(help="Share of users on the champion.")] = 0.0,
    challenger: Annotated[float, typer.Option(help="Share on the challenger alias.")] = 0.0,
    holdout: Annotated[float, typer.Option(help="Share on popularity (the holdout).")] = 0.0,
    exploration: Annotated[
        float, typer.Option(help="Share of random slates (propensities).")
    ] = 0.1,
    salt: Annotated[str | None, typer.Option(help="Assignment salt (default: random).")] = None,
) -> None:
    """Create (or, before its start, replace) an experiment; running servers reload it."""
    from serving.experiments import ExperimentError, parse_experiment, save_experiment
    from serving.state import mark_reload

    _check_admin(admin_token)
    shares = {a: s for a, s in (("champion", champion), ("challenger", challenger),
                                ("holdout", holdout)) if s}  # fmt: skip
    raw = {"name": name, "shares": shares, "start": parse_instant(start, "--start"),
           "end": parse_instant(end, "--end"), "exploration": exploration}  # fmt: skip
    if salt:
        raw["salt"] = salt
    home = load_settings().home
    try:
        experiment = parse_experiment(raw)
        path = save_experiment(home, experiment)
    except ExperimentError as exc:
        raise UserError(str(exc)) from exc
    mark_reload(home)
    console.print(f"experiment {name} saved to {path}: {experiment.to_dict()['shares']}, "
                  f"{experiment.start.isoformat()} .. {experiment.end.isoformat()}")  # fmt: skip


def stop(
    name: Annotated[str, typer.Argument(help="Experiment name.")],
    admin_token: Annotated[str, typer.Option("--admin-token", help=ADMIN_HELP)],
) -> None:
    """End an experiment now; running servers stop assigning within OFFERS_RELOAD_WATCH_S."""
    from serving.experiments import ExperimentError, stop_experiment
    from serving.state import mark_reload

    _check_admin(admin_token)
    home = load_settings().home
    try:
        stopped = stop_experiment(home, name)
    except ExperimentError as exc:
        raise UserError(str(exc)) from exc
    mark_reload(home)
    console.print(f"experiment {name} ends at {stopped.end.isoformat()}")


def list_cmd() -> None:
    """The stored experiments (no token needed to read)."""
    from serving.experiments import load_experiments

    table = Table("name", "shares", "start", "end", "exploration")
    for e in load_experiments(load_settings().home):
        shares = ", ".join(f"{a} {s:g}" for a, s in e.shares.items())
        table.add_row(e.name, shares, e.start.isoformat(), e.end.isoformat(), f"{e.exploration:g}")
    console.print(table)


def report(
    name: Annotated[str, typer.Argument(help="Experiment name.")],
    data: Annotated[Path, typer.Option("--data", help="Folder with the contract tables.")],
    candidate: Annotated[
        str | None, typer.Option(help="A registry alias to estimate off-policy (IPS, SNIPS).")
    ] = None,
    on_arms: Annotated[
        str | None, typer.Option(help="Comma-separated arms whose traffic IPS uses (default all).")
    ] = None,
    resamples: Annotated[int, typer.Option(help="Bootstrap resamples (over users).")] = 2000,
    mlflow: Annotated[bool, typer.Option(help="Log the numbers to MLflow.")] = True,
) -> None:
    """Per arm exposures and redemptions, lifts with 95% intervals, SRM, off-policy values."""
    from offers.experiments.analysis import ReportError
    from offers.experiments.report import experiment_report, log_report
    from serving.experiments import ExperimentError

    home = load_settings().home
    arms = [a.strip() for a in on_arms.split(",")] if on_arms else None
    try:
        result = experiment_report(home, data, name, candidate, arms, resamples)
    except (ReportError, ExperimentError) as exc:
        raise UserError(str(exc)) from exc
    _print_report(result)
    if mlflow:
        console.print(f"MLflow run {log_report(home, result)}")


def _print_report(result) -> None:
    arms = Table(*map(str, result.arms.columns))
    arms.columns.insert(0, Column("arm", no_wrap=True))
    for arm, row in result.arms.iterrows():
        arms.add_row(str(arm), *(f"{v:.4g}" for v in row))
    console.print(arms)
    lifts = Table("lift per user [95% CI]", "incremental redemptions [95% CI]")
    lifts.columns.insert(0, Column("comparison", no_wrap=True))
    for key, (per, inc) in result.lifts.items():
        lifts.add_row(key, f"{per.value:+.4f} [{per.low:+.4f}, {per.high:+.4f}]",
                      f"{inc.value:+.1f} [{inc.low:+.1f}, {inc.high:+.1f}]")  # fmt: skip
    console.print(lifts)
    srm = result.srm
    flag = "  SAMPLE RATIO MISMATCH" if srm["p_value"] < 0.001 else ""
    console.print(
        f"sample ratio: chi2 {srm['chi2']:.3f}, df {srm['df']}, p {srm['p_value']:.4f}{flag}"
    )
    for key, e in result.off_policy.items():
        console.print(f"{key} of {result.candidate}: {e.value:.4f} redemptions per slate "
                      f"[{e.low:.4f}, {e.high:.4f}]")  # fmt: skip
    if result.left_out_users:
        console.print(f"{result.left_out_users} users left out (erased or withdrawn)")
    console.print(f"per-user table: {result.users_file}")


def simulate(
    out: Annotated[Path, typer.Option("--out", help="A new folder for the simulated world.")],
    users: Annotated[int, typer.Option(help="Synthetic users.")] = 400,
    seeds: Annotated[int, typer.Option(help="Simulated experiments (seeds 0..N-1).")] = 20,
    weeks: Annotated[int, typer.Option(help="Weeks each experiment runs.")] = 4,
) -> None:
    """Closed-loop study: how often the report's 95% intervals cover the simulated truth.

    Leaves OUT/data (the contract tables, the last seed's experiment appended to exposures)
    and OUT/home (snapshot, both models registered, the experiment `sim`): point OFFERS_HOME
    at OUT/home and `offers experiment report sim --data OUT/data` analyses that log."""
    from offers.experiments.simulate import append_logged, coverage_study
    from offers.experiments.simworld import SimConfig, build_sim_world, register_models

    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out} is not empty: give a new folder")
    if seeds < 1:
        raise UserError("--seeds must be at least 1")
    world = build_sim_world(out, SimConfig(n_users=users, weeks=weeks))
    register_models(world)
    study = coverage_study(world, range(seeds), keep_last=True)
    append_logged(world, study.attrs["logged"])
    summary = study.groupby("quantity", sort=False).agg(
        covered=("covered", "mean"), truth=("truth", "mean"), estimate=("value", "mean"),
        low=("low", "mean"), high=("high", "mean"))  # fmt: skip
    table = Table("coverage", "mean truth", "mean estimate", "mean 95% CI")
    table.columns.insert(0, Column("quantity", no_wrap=True))
    for q, r in summary.iterrows():
        table.add_row(str(q), f"{r.covered:.0%}", f"{r.truth:.4f}", f"{r.estimate:.4f}",
                      f"[{r.low:.4f}, {r.high:.4f}]")  # fmt: skip
    console.print(table)
    study.to_csv(out / "coverage.csv", index=False)
    console.print(f"per seed: {out / 'coverage.csv'}")
