"""The analyst's home in a real browser: `offers ui` on a trained home, loaded in headless
Chromium (the Debian package). The MLflow UI is a React app, so the page is read after its
scripts ran (`--dump-dom` after a virtual-time budget), not from the HTML the server sends.
"""

from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from servers import free_port, running

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        CHROMIUM is None,
        reason="chromium is not installed: apt-get install -y chromium (.ci/run installs it)",
    ),
]
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1000",
)
BUDGETS_MS = (15_000, 40_000)  # a loaded machine gets a second, longer look
BASELINE_METRICS = ("popularity", "random", "affinity", "logistic", "oracle")


def _chromium(url: str, profile: Path, budget_ms: int, *mode: str) -> str:
    done = subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", f"--virtual-time-budget={budget_ms}"]
        + [*mode, url],
        capture_output=True,
        text=True,
        timeout=180,
        check=True,
    )
    return done.stdout


def _visible_text(dom: str) -> str:
    text = re.sub(r"<script.*?</script>|<style.*?</style>", " ", dom, flags=re.S)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", text)))


def _page(url: str, profile: Path, needles: list[str]) -> str:
    """The rendered page's text, read again with a longer budget while a needle is missing."""
    text = ""
    for budget in BUDGETS_MS:
        text = _visible_text(_chromium(url, profile, budget, "--dump-dom"))
        if all(n in text for n in needles):
            break
    return text


def test_runs_page_renders_the_experiment_runs_and_metrics(
    analyst_home: Path, tmp_path: Path
) -> None:
    from features import tracking

    client = tracking.client(analyst_home)
    experiment = client.get_experiment_by_name(tracking.EXPERIMENT)
    runs = client.search_runs([experiment.experiment_id])
    names = [r.info.run_name for r in runs]
    assert len(names) == 2
    port = free_port()
    offers = str(Path(sys.executable).parent / "offers")
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["OFFERS_HOME"] = str(analyst_home)
    base = f"http://127.0.0.1:{port}/#/experiments/{experiment.experiment_id}"
    metrics = ["test_ndcg_at_10", *[f"{b}_test_ndcg_at_10" for b in BASELINE_METRICS]]
    profile = tmp_path / "chromium-profile"
    with running(
        [offers, "ui", "--port", str(port)],
        env,
        f"http://127.0.0.1:{port}/health",
        tmp_path / "ui.log",
    ):
        runs_page = _page(f"{base}/runs", profile, [tracking.EXPERIMENT, *names])
        _chromium(f"{base}/runs", profile, BUDGETS_MS[0], f"--screenshot={tmp_path / 'runs.png'}")
        run_page = _page(f"{base}/runs/{runs[0].info.run_id}", profile, metrics)
    assert tracking.EXPERIMENT in runs_page and "Training runs" in runs_page
    assert all(name in runs_page for name in names), runs_page[:2000]
    assert all(m in run_page for m in metrics), run_page[:2000]
    assert (tmp_path / "runs.png").stat().st_size > 20_000  # a rendered page, not a blank one
