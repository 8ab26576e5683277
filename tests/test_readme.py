"""The README's tours, pasted into a fresh bash as a new user would: each block must work.

The blocks of the section "The tours as commands" run in order, in a new bash each (only
/usr/bin:/bin on PATH, so `offers` is found only through the activate line), from a folder
that has the project's .venv, on 300 synthetic users instead of 10,000 and on a free port
instead of 8000: curl talks to a real `offers serve`.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
from pathlib import Path

import pytest
from servers import free_port

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## The tours as commands"
SNAPSHOT_ID = re.compile(r"\b\d{8}T\d{6}Z-[0-9a-f]{10}\b")
BLOCK_TIMEOUT_S = 240


def tour_blocks(readme: str) -> list[str]:
    """The ```bash blocks of the tours section, in order."""
    section = readme.split(SECTION, 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.*?)```", section, flags=re.S)


def _small(block: str, port: int) -> str:
    """The same commands on a small world and a free port."""
    return (
        block.replace("--users 10000", "--users 300")
        .replace("--port 8000", f"--port {port}")
        .replace("127.0.0.1:8000", f"127.0.0.1:{port}")
    )


def _run(script: str, cwd: Path) -> str:
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(cwd),
        "OMP_WAIT_POLICY": "PASSIVE",
        "COLUMNS": "80",
        "LANG": "C.UTF-8",
    }
    proc = subprocess.Popen(
        ["bash", "-e", "-o", "pipefail", "-c", script],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # the server it starts dies with the group, whatever happens
    )
    try:
        out, _ = proc.communicate(timeout=BLOCK_TIMEOUT_S)
    finally:
        # ProcessLookupError: the group is gone, every process of it ended by itself
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == 0, f"README block failed (exit {proc.returncode}):\n{script}\n{out}"
    return out


def test_the_tours_section_has_the_four_blocks() -> None:
    blocks = tour_blocks((ROOT / "README.md").read_text())
    assert len(blocks) == 4
    assert all(b.startswith(". .venv/bin/activate") for b in blocks)  # a new shell finds offers


@pytest.mark.slow
def test_readme_tours_run_in_a_fresh_shell(tmp_path: Path) -> None:
    (tmp_path / ".venv").symlink_to(ROOT / ".venv")
    port = free_port()
    build, service, privacy, experiment = (
        _small(b, port) for b in tour_blocks((ROOT / "README.md").read_text())
    )

    out = _run(build, tmp_path)
    assert "0 violations" in out or "OK" in out, out
    (snapshot,) = set(SNAPSHOT_ID.findall(out))  # whole at 80 columns: build and list agree
    assert out.count(snapshot) >= 2
    for name in ("ndcg_at_10", "recall_at_10", "popularity", "logistic", "oracle"):
        assert name in out  # the metrics table keeps its names whole at 80 columns
    assert "PROMOTED" in out
    assert "ndcg@" not in out and "'OK'" not in out  # MLflow's names; kept rows are no exclusion
    assert re.search(
        r"\d+\.\d s  selecting settings on time-ordered folds", out
    )  # progress, one line per step

    out = _run(service, tmp_path)
    assert '"policy_version"' in out and '"decision"' in out, out  # curl got a JSON decision
    assert "users/s" in out and "denied" in out

    out = _run(privacy, tmp_path)
    assert "BANNED_PURPOSE" in out and "denied (exit code 1)" in out, out
    assert "erased u000001" in out

    out = _run(experiment, tmp_path)
    assert "experiment spring saved" in out and out.count("spring") >= 2, out
    for text in ("champion_vs_holdout", "challenger_vs_champion", "sample ratio: chi2",
                 "ips of challenger", "MLflow run"):  # fmt: skip
        assert text in out, out
