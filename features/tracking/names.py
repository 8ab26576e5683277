"""Names the registry and runs share: the model, its aliases, the experiment, tags and artifacts.

Plain constants (no MLflow import): callers may import them without loading MLflow.
"""

from __future__ import annotations

MODEL_NAME = "offer-ranker"
CHAMPION = "champion"
CHALLENGER = "challenger"
EXPERIMENT = "offer-ranking"
MODEL_ARTIFACT = "model"  # name of the logged model inside a run
FEATURE_COLUMNS_ARTIFACT = "feature_columns.json"

# Tags on model versions (and runs) that serving and the promotion gate read.
TAG_POLICY_VERSION = "policy_version"
TAG_SNAPSHOT_ID = "feature_snapshot_id"
TAG_GIT_SHA = "git_sha"
TAG_PROMOTION = "promotion_decision"
TAG_PROMOTION_DETAIL = "promotion_detail"
TAG_ONLINE_EXPERIMENT = "offers.online_experiment"  # runs of `offers experiment report`
META_FEATURE_COLUMNS = "feature_columns"  # key in the logged model's metadata

# Registry hygiene: who started a run (a RUNNING run whose process is gone was killed), and
# which alias a version ever held (one that never held any was orphaned by a killed train).
TAG_PID = "offers.pid"
TAG_HOST = "offers.host"
TAG_PROC_START = "offers.proc_start"  # /proc start time: a reused pid is not the same process
TAG_HELD_ALIAS = "offers.held_alias"
