"""The experiment notebook runs top to bottom on a simulated experiment; stored without outputs."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

BOOK = Path(__file__).resolve().parents[2] / "notebooks" / "experiment_report.ipynb"


def test_the_notebook_is_stored_without_outputs() -> None:
    book = nbformat.read(BOOK, as_version=4)
    code = [c for c in book.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)


@pytest.mark.slow
def test_the_notebook_executes(simulated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OFFERS_DATA_DIR", str(simulated / "data"))
    monkeypatch.setenv("OFFERS_EXPERIMENT_NAME", "sim")
    book = nbformat.read(BOOK, as_version=4)
    NotebookClient(book, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(simulated)}}).execute()  # fmt: skip
    text = json.dumps([cell.get("outputs", []) for cell in book.cells])
    for expected in ("champion_vs_holdout", "challenger_vs_champion", "sample ratio: chi2",
                     "ips of challenger", "users left out (erased or withdrawn)"):  # fmt: skip
        assert expected in text
    images = sum("image/png" in o.get("data", {}) for c in book.cells for o in c.get("outputs", []))
    assert images == 1
