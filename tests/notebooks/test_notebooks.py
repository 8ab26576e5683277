"""The analyst notebooks run top to bottom against runs made here; a cell error fails."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"


def _run(name: str, home: Path, monkeypatch: pytest.MonkeyPatch) -> nbformat.NotebookNode:
    monkeypatch.setenv("OFFERS_HOME", str(home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    book = nbformat.read(NOTEBOOKS / name, as_version=4)
    NotebookClient(
        book, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(home)}}
    ).execute()
    return book


def _text(book: nbformat.NotebookNode) -> str:
    return json.dumps([cell.get("outputs", []) for cell in book.cells])


def _images(book: nbformat.NotebookNode) -> int:
    """PNG outputs: what an analyst sees as charts (none under the Agg backend)."""
    return sum(
        "image/png" in output.get("data", {})
        for cell in book.cells
        for output in cell.get("outputs", [])
    )


@pytest.mark.parametrize("name", ["compare_runs.ipynb", "explore_features.ipynb"])
def test_notebooks_are_stored_without_outputs(name: str) -> None:
    book = nbformat.read(NOTEBOOKS / name, as_version=4)
    code = [c for c in book.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)


def test_compare_runs_executes(analyst_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from features import tracking

    book = _run("compare_runs.ipynb", analyst_home, monkeypatch)
    text = _text(book)
    assert "2 runs" in text
    assert "popularity" in text and "oracle" in text  # baselines beside the model
    # metrics across runs, importances side by side
    assert _images(book) == 2
    champion = tracking.alias_version(analyst_home, tracking.CHAMPION)
    assert champion is not None and f"champion: [{champion}]" in text


def test_explore_features_executes(analyst_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    book = _run("explore_features.ipynb", analyst_home, monkeypatch)
    text = _text(book)
    assert "sensitive_mcc" in text and "um_decayed_spend" in text
    assert _images(book) == 2  # exclusions by rule, user x merchant histograms
