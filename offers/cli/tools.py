"""Tools: the MLflow UI on the stores under OFFERS_HOME, and the end-to-end demo."""

from __future__ import annotations

from pathlib import Path

import typer

from offers.cli.common import (
    console,
)
from offers.settings import load_settings


def mlflow_ui_command(home: Path, host: str, port: int) -> tuple[list[str], dict[str, str]]:
    """The `mlflow server` command line and environment for the stores under OFFERS_HOME."""
    import os
    import shutil
    import sys

    from features import tracking

    executable = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or "mlflow"
    command = [
        executable,
        "server",
        "--backend-store-uri",
        tracking.tracking_uri(home),
        "--artifacts-destination",
        str(tracking.artifact_root(home)),
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    # With job execution on, the server forks 7 extra workers and takes about 2 GB.
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    return command, env


def ui(
    host: str = typer.Option("127.0.0.1", help="Interface to bind; keep it local."),
    port: int = typer.Option(5000, help="Port for the MLflow UI."),
) -> None:
    """Start the MLflow UI on the tracking store under OFFERS_HOME; Ctrl-C stops it."""
    import signal
    import subprocess

    home = load_settings().home
    home.mkdir(parents=True, exist_ok=True)
    command, env = mlflow_ui_command(home, host, port)
    console.print(
        f"MLflow UI on [bold]http://{host}:{port}[/bold] (store {command[3]}); Ctrl-C stops it"
    )
    process = subprocess.Popen(command, env=env)
    # Ctrl-C reaches the whole process group; a plain SIGTERM to this process would orphan it.
    signal.signal(signal.SIGTERM, lambda *_: process.terminate())
    try:
        raise typer.Exit(process.wait())
    except KeyboardInterrupt:
        process.terminate()
        process.wait(timeout=30)


def demo(
    users: int = typer.Option(10_000, help="Synthetic customers."),
    seed: int = typer.Option(7, help="Seed for data and models."),
) -> dict:
    """The whole system end to end on synthetic data under OFFERS_HOME."""
    from offers.demo import run_demo

    return run_demo(load_settings().home, users=users, seed=seed)
