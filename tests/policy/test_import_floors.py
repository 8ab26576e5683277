"""The floors of DESIGN.md, checked on the source: each package imports only those below it."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
PROJECT = {"policy", "features", "training", "serving", "offers"}

# package -> project packages it must never import
FORBIDDEN = {
    "policy": PROJECT - {"policy"},
    "features": {"training", "serving", "offers"},
    "training": {"serving", "offers"},
    "serving": {"training", "offers"},
}
# Pure functions and data: no file, process or network access from policy.
IO_MODULES = {
    "os", "io", "pathlib", "shutil", "socket", "subprocess", "tempfile", "sqlite3", "urllib",
    "http", "requests", "httpx", "glob", "pickle", "logging",
}  # fmt: skip


def _imports(path: Path) -> list[tuple[int, str]]:
    """Top-level names of every absolute import, wherever it sits (functions included)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module.split(".")[0]))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "__import__"
        ):
            found.append((node.lineno, "__import__"))
    return found


def _sources(package: str) -> list[Path]:
    return sorted((REPO_ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_floors_hold(package: str) -> None:
    if not (REPO_ROOT / package).is_dir():
        pytest.skip(f"{package}/ does not exist yet")
    bad = [
        f"{path.relative_to(REPO_ROOT)}:{line} imports {name}"
        for path in _sources(package)
        for line, name in _imports(path)
        if name in FORBIDDEN[package] or name == "__import__"
    ]
    assert not bad, "\n".join(bad)


def test_policy_has_sources() -> None:
    names = {p.name for p in _sources("policy")}
    assert {"purposes.py", "mcc.py", "consent.py", "decision.py", "version.py"} <= names


def test_policy_imports_only_the_standard_library_and_no_io() -> None:
    bad = []
    for path in _sources("policy"):
        for line, name in _imports(path):
            if name == "policy" or name == "__future__":
                continue
            if name not in sys.stdlib_module_names or name in IO_MODULES:
                bad.append(f"{path.relative_to(REPO_ROOT)}:{line} imports {name}")
        tree = ast.parse(path.read_text(encoding="utf-8"))
        bad += [
            f"{path.relative_to(REPO_ROOT)}:{n.lineno} calls {n.func.id}()"
            for n in ast.walk(tree)
            if isinstance(n, ast.Call)
            and isinstance(n.func, ast.Name)
            and n.func.id in {"open", "print", "input", "exec", "eval"}
        ]
    assert not bad, "\n".join(bad)


def test_the_checker_sees_a_violation(tmp_path: Path) -> None:
    src = tmp_path / "x.py"
    src.write_text(
        "import os.path\nfrom features.contract import USER_ID\n"
        "def f():\n    from serving import app\n    from . import sibling\n"
    )
    assert [n for _, n in _imports(src)] == ["os", "features", "serving"]


def test_only_the_tracking_package_talks_to_mlflow() -> None:
    """One place knows MLflow's API; everything else asks features.tracking."""
    tracking = REPO_ROOT / "features" / "tracking"
    bad = [
        f"{path.relative_to(REPO_ROOT)}:{line} imports mlflow"
        for package in sorted(PROJECT)
        for path in _sources(package)
        if tracking not in path.parents
        for line, name in _imports(path)
        if name == "mlflow"
    ]
    assert not bad, "\n".join(bad)
    assert any(name == "mlflow" for p in _sources("features/tracking") for _, name in _imports(p))
