"""The synthetic world of benchmarks/serving_memory.py: a published snapshot of N users written
directly with the snapshot schema, the contract tables the requests need, a champion model.

Why directly: synth + features at 1M users would take hours on this machine; the memory
benchmark needs the snapshot's shape and size, not realistic behaviour.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd

from features import contract as c
from features import definitions as fd
from features.vector import UC_COLUMNS, UM_COLUMNS, USER_COLUMNS

CUTOFF = pd.Timestamp("2025-10-01", tz="UTC")
NOW = "2025-10-02T12:00:00Z"
N_MERCHANTS, PER_USER_MERCHANTS, PER_USER_MCCS = 5000, 8, 4
MCCS = [str(m) for m in (5411, 5812, 5541, 5942, 5311, 5732, 5651, 5999, 4121, 7832)]
POLICY_USERS = 2000
N_OFFERS = 100


def _user_block(users: np.ndarray, per_user: int, items: list[str], columns, rng) -> pd.DataFrame:
    n = len(users) * per_user
    base = rng.integers(0, len(items), len(users))
    codes = (base[:, None] + np.arange(per_user) * 7) % len(items)  # distinct per user
    frame = pd.DataFrame({c.USER_ID: np.repeat(users, per_user), fd.CUTOFF: CUTOFF})
    frame["item"] = np.asarray(items, dtype=object)[codes.ravel()]
    for col in columns:
        frame[col] = rng.gamma(2.0, 10.0, n)
    frame.loc[rng.random(n) < 0.1, columns[-4]] = np.nan  # some days_since_last unknown
    return frame


def write_snapshot(home: Path, n_users: int, seed: int = 0) -> str:
    """A synthetic snapshot with the published schema, made CURRENT; its id."""
    rng = np.random.default_rng(seed)
    users = np.array([f"u{i:07d}" for i in range(n_users)], dtype=object)
    merchants = [f"m{j:05d}" for j in range(N_MERCHANTS)]
    tables = {
        "user_merchant": _user_block(users, PER_USER_MERCHANTS, merchants, UM_COLUMNS, rng)
        .rename(columns={"item": c.MERCHANT_ID}),
        "user_mcc": _user_block(users, PER_USER_MCCS, MCCS, UC_COLUMNS, rng)
        .rename(columns={"item": c.MCC}),
        "user": _user_block(users, 1, ["-"], USER_COLUMNS, rng).drop(columns="item"),
        "merchant_pop": pd.DataFrame({fd.AS_OF: CUTOFF, c.MERCHANT_ID: merchants,
                                      fd.MERCHANT_POPULARITY: rng.random(N_MERCHANTS)}),
        "mcc_pop": pd.DataFrame({fd.AS_OF: CUTOFF, c.MCC: MCCS,
                                 fd.MCC_POPULARITY: rng.random(len(MCCS))}),
    }  # fmt: skip
    digest = hashlib.sha256(f"{n_users}-{seed}".encode()).hexdigest()
    snapshot_id = f"{CUTOFF:%Y%m%dT%H%M%SZ}-{digest[:10]}"
    folder = home / "features" / snapshot_id
    folder.mkdir(parents=True)
    for name, frame in tables.items():
        frame.to_parquet(folder / f"{name}.parquet", index=False)
    (folder / "manifest.json").write_text(json.dumps(_manifest(snapshot_id, digest, tables)))
    (home / "features" / "CURRENT").write_text(snapshot_id + "\n")
    return snapshot_id


def _manifest(snapshot_id: str, digest: str, tables: dict[str, pd.DataFrame]) -> dict:
    from policy import policy_version

    return {"snapshot_id": snapshot_id, "cutoff": CUTOFF.isoformat(),
            "built_at": CUTOFF.isoformat(), "policy_version": policy_version(),
            fd.HALF_LIFE_PARAM: fd.DEFAULT_HALF_LIFE_DAYS, "source_digests": {},
            "content_hash": digest, "row_counts": {k: len(v) for k, v in tables.items()},
            "feature_set": "synthetic benchmark snapshot"}  # fmt: skip


def write_data(data: Path) -> None:
    """users, consents (the requested users) and offers (live at NOW) as contract tables."""
    data.mkdir(parents=True)
    ids = [f"u{i:07d}" for i in range(POLICY_USERS)]
    pd.DataFrame({c.USER_ID: ids, c.BIRTH_DATE: pd.Series([dt.date(1980, 1, 1)] * len(ids)),
                  c.MARKETING_OBJECTION_AT: pd.Series(pd.NaT, index=range(len(ids)),
                                                      dtype="datetime64[us, UTC]")}
                 ).to_parquet(data / f"{c.USERS}.parquet", index=False)  # fmt: skip
    granted = pd.Series(pd.Timestamp("2025-06-01", tz="UTC"), index=range(len(ids)))
    none = pd.Series(pd.NaT, index=range(len(ids)), dtype="datetime64[us, UTC]")
    pd.DataFrame({c.CONSENT_ID: [f"c{i}" for i in range(len(ids))], c.USER_ID: ids,
                  c.PURPOSES: [["offer_ranking"]] * len(ids),
                  c.GRANTED_AT: granted.astype("datetime64[us, UTC]"), c.EXPIRES_AT: none,
                  c.REVOKED_AT: none, c.LOOKBACK_DAYS: 365}
                 ).to_parquet(data / f"{c.CONSENTS}.parquet", index=False)  # fmt: skip
    starts = pd.Series(pd.Timestamp("2025-09-01", tz="UTC"), index=range(N_OFFERS))
    pd.DataFrame({c.OFFER_ID: [f"o{i:03d}" for i in range(N_OFFERS)],
                  c.MERCHANT_ID: [f"m{i * 37 % N_MERCHANTS:05d}" for i in range(N_OFFERS)],
                  c.MCC: [MCCS[i % len(MCCS)] for i in range(N_OFFERS)],
                  c.TITLE: "benchmark offer", c.STARTS_AT: starts.astype("datetime64[us, UTC]"),
                  c.ENDS_AT: (starts + pd.Timedelta(days=90)).astype("datetime64[us, UTC]"),
                  c.REWARD: 5.0}).to_parquet(data / f"{c.OFFERS}.parquet", index=False)  # fmt: skip


REGISTER = """
import sys
import lightgbm as lgb
import numpy as np
import pandas as pd
from features import tracking
from features.vector import CATEGORICAL_COLUMNS, FEATURE_COLUMNS
from policy import policy_version

home = sys.argv[1]
rng = np.random.default_rng(0)
X = rng.gamma(2.0, 10.0, (5000, len(FEATURE_COLUMNS)))
X[:, FEATURE_COLUMNS.index("o_mcc")] = rng.choice([5411, 5812, 5541, 5942], 5000)
y = X[:, 0] + rng.normal(0, 5, 5000)
params = {"objective": "regression", "num_leaves": 63, "verbose": -1, "num_threads": 1}
data = lgb.Dataset(X, y, feature_name=list(FEATURE_COLUMNS),
                   categorical_feature=list(CATEGORICAL_COLUMNS))
booster = lgb.train(params, data, num_boost_round=300)
example = pd.DataFrame([[0.0] * len(FEATURE_COLUMNS)], columns=list(FEATURE_COLUMNS))
with tracking.start_run(home, run_name="memory-benchmark") as run:
    uri = run.log_ranker(booster, FEATURE_COLUMNS, example)
    tags = {tracking.TAG_POLICY_VERSION: policy_version()}
    tracking.register_version(home, uri, run.run_id, tags, alias=tracking.CHAMPION)
"""
