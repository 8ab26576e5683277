"""Fixtures of the spark suite: one SparkSession and one world for the whole session."""

from __future__ import annotations

import os
import shutil

import pytest
from spark_world import TEST_CONF, SparkWorld, build_world


@pytest.fixture(scope="session")
def spark():
    """The suite's only session: local[2], UTC, 4 shuffle partitions."""
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        pytest.fail("the spark suite needs Java 17 (java on PATH or JAVA_HOME)")
    from features.spark import spark_session, stop_session

    session = spark_session("local[2]", conf=TEST_CONF)
    yield session
    stop_session()


@pytest.fixture(scope="session")
def spark_world(tmp_path_factory, spark) -> SparkWorld:
    return build_world(tmp_path_factory.mktemp("spark-world"))


@pytest.fixture
def registry(spark_world: SparkWorld, monkeypatch: pytest.MonkeyPatch) -> SparkWorld:
    """The world, with MLflow pointed at its registry explicitly.

    mlflow.set_tracking_uri() also sets MLFLOW_TRACKING_URI in os.environ, so within one test
    process the first OFFERS_HOME that touched MLflow would otherwise win for later ones.
    """
    monkeypatch.setenv("MLFLOW_TRACKING_URI", spark_world.tracking_uri)
    monkeypatch.setenv("OFFERS_HOME", str(spark_world.home))
    return spark_world
