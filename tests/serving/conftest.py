"""Fixtures for serving tests; the world itself is built in tests/support/serving_world.py."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from serving_world import World, build_world


@pytest.fixture(scope="session")
def _world_template(tmp_path_factory) -> World:
    return build_world(tmp_path_factory.mktemp("serving-world"))


@pytest.fixture
def world(_world_template: World, tmp_path: Path) -> World:
    """A private copy per test (erasure and audit tests write to it)."""
    shutil.copytree(_world_template.home, tmp_path / "home")
    shutil.copytree(_world_template.data, tmp_path / "data")
    return World(
        tmp_path / "home", tmp_path / "data", _world_template.booster, _world_template.offers
    )
