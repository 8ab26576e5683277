"""Feature-job benchmark: the snapshot job (a) vs a plain pandas groupby and a DuckDB floor.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/features.py --sizes 1e6 1e7 5e7

Every measurement runs in a fresh subprocess so its peak RSS is its own. Data is generated
here (vectorised, in row groups) because the synthetic generator models redemption and
consent detail that a throughput benchmark does not need. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

CUTOFF = datetime(2025, 1, 1, tzinfo=UTC)
TXNS_PER_USER = 100  # 10M transactions = 100k users, as in `offers synth --users 100000`
N_MERCHANTS = 5000
ROW_GROUP = 2_000_000
SPAN_DAYS = 730
ORDINARY_MCCS = ["5411", "5812", "5814", "5541", "5311", "5651", "5732", "4121", "7832", "5942"]
SENSITIVE_MCCS = ["5912", "7995", "9222", "8661", "5921"]
PAIRS_FOR_B = 200_000


# ---------------------------------------------------------------- data


def generate(out: Path, n_txns: int, seed: int = 0) -> None:
    """Contract tables with n_txns transactions, written in row groups to bound memory."""
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    n_users = max(n_txns // TXNS_PER_USER, 10)
    user_ids = np.array([f"u{i:07d}" for i in range(n_users)], dtype=object)
    merchant_mcc = np.where(
        rng.random(N_MERCHANTS) < 0.04,
        rng.choice(SENSITIVE_MCCS, N_MERCHANTS),
        rng.choice(ORDINARY_MCCS, N_MERCHANTS),
    )
    merchant_p = 1.0 / np.arange(1, N_MERCHANTS + 1) ** 1.1
    merchant_p /= merchant_p.sum()
    start = pd.Timestamp(CUTOFF) - pd.Timedelta(days=SPAN_DAYS - 30)
    schema = pa.schema(
        [
            ("txn_id", pa.string()),
            ("user_id", pa.string()),
            ("ts", pa.timestamp("us", tz="UTC")),
            ("amount", pa.float64()),
            ("merchant_id", pa.string()),
            ("mcc", pa.string()),
        ]
    )
    with pq.ParquetWriter(out / "transactions.parquet", schema) as writer:
        for lo in range(0, n_txns, ROW_GROUP):
            n = min(ROW_GROUP, n_txns - lo)
            users = rng.integers(0, n_users, n)
            merchants = rng.choice(N_MERCHANTS, n, p=merchant_p)
            offset_us = rng.integers(0, SPAN_DAYS * 86_400 * 10**6, n)
            amount = np.round(rng.lognormal(3.0, 0.8, n), 2)
            amount[rng.random(n) < 0.02] *= -1
            table = pa.table(
                {
                    "txn_id": pa.array([f"t{i:09d}" for i in range(lo, lo + n)]),
                    "user_id": pa.array(user_ids[users]),
                    "ts": pa.array(start.value // 1000 + offset_us, pa.timestamp("us", tz="UTC")),
                    "amount": amount,
                    "merchant_id": pa.array(np.char.add("m", merchants.astype(str)).astype(object)),
                    "mcc": pa.array(merchant_mcc[merchants].astype(object)),
                },
                schema=schema,
            )
            writer.write_table(table)
    consenting = rng.random(n_users) < 0.85
    granted = pd.Timestamp(CUTOFF) - pd.to_timedelta(rng.integers(1, 300, n_users), unit="D")
    pd.DataFrame(
        {
            "user_id": user_ids,
            "birth_date": [pd.Timestamp("1980-01-01").date()] * n_users,
            "marketing_objection_at": pd.Series([pd.NaT] * n_users, dtype="datetime64[us, UTC]"),
        }
    ).to_parquet(out / "users.parquet", index=False)
    pd.DataFrame(
        {
            "consent_id": [f"c{i}" for i in range(int(consenting.sum()))],
            "user_id": user_ids[consenting],
            "purposes": [["offer_ranking"]] * int(consenting.sum()),
            "granted_at": granted[consenting].astype("datetime64[us, UTC]"),
            "expires_at": pd.Series([pd.NaT] * int(consenting.sum()), dtype="datetime64[us, UTC]"),
            "revoked_at": pd.Series([pd.NaT] * int(consenting.sum()), dtype="datetime64[us, UTC]"),
            "lookback_days": np.full(int(consenting.sum()), 365),
        }
    ).to_parquet(out / "consents.parquet", index=False)


# ---------------------------------------------------------------- measured steps


def step_snapshot(data: Path, work: Path) -> dict:
    from features.job import build_snapshot

    manifest = build_snapshot(data, work / "features", as_of=CUTOFF)
    return {"rows": manifest["row_counts"]["user_merchant"]}


def step_point_in_time(data: Path, work: Path) -> dict:
    from features.job import open_sources, point_in_time

    rng = np.random.default_rng(1)
    users = pd.read_parquet(data / "consents.parquet", columns=["user_id"]).user_id.to_numpy()
    pairs = pd.DataFrame(
        {
            "user_id": rng.choice(users, PAIRS_FOR_B),
            "cutoff": pd.Timestamp(CUTOFF)
            - pd.to_timedelta(rng.integers(0, 180 * 86_400, PAIRS_FOR_B), unit="s"),
        }
    )
    tables = point_in_time(open_sources(data, run_time=CUTOFF), pairs)
    return {"rows": len(tables.user_merchant)}


def step_floor(data: Path, work: Path) -> dict:
    import duckdb

    con = duckdb.connect()
    path = data / "transactions.parquet"
    n = con.execute(
        f"SELECT count(*) FROM (SELECT user_id, merchant_id, sum(amount), count(*) "
        f"FROM read_parquet('{path}') GROUP BY user_id, merchant_id)"
    ).fetchone()[0]
    return {"rows": int(n)}


def step_pandas(data: Path, work: Path) -> dict:
    """What a data scientist would write: load, merge, filter, groupby."""
    from policy import SENSITIVE_MCCS as sensitive

    cutoff = pd.Timestamp(CUTOFF)
    txns = pd.read_parquet(data / "transactions.parquet")
    consents = pd.read_parquet(data / "consents.parquet")
    consents["usable_from"] = consents.granted_at - pd.to_timedelta(
        consents.lookback_days, unit="D"
    )
    active = consents[
        (consents.granted_at <= cutoff)
        & (cutoff < consents.granted_at + pd.Timedelta(days=365))
        & consents.revoked_at.isna()
    ]
    df = txns.merge(active[["user_id", "usable_from"]], on="user_id")
    df = df[
        (df.ts < cutoff)
        & (df.ts >= df.usable_from)
        & (df.ts >= cutoff - pd.Timedelta(days=365))
        & ~df.mcc.isin(sensitive)
    ].copy()
    df["age"] = (cutoff - df.ts).dt.total_seconds() / 86_400
    df["buy"] = df.amount > 0
    for d in (30, 90, 365):
        df[f"n_{d}d"] = df.buy & (df.age < d)
        df[f"spend_{d}d"] = df.amount.where(df.age < d, 0.0)
    df["decayed"] = df.amount * np.exp(-np.log(2) * df.age / 30)
    df["base"] = df.amount.where((df.age >= 30) & (df.age < 90), 0.0)
    df["buy_age"] = df.age.where(df.buy)
    df["day"] = df.ts.dt.date
    aggs = {
        c: "sum"
        for c in [
            "n_30d",
            "n_90d",
            "n_365d",
            "spend_30d",
            "spend_90d",
            "spend_365d",
            "decayed",
            "base",
        ]
    }
    aggs["buy_age"] = "min"
    um = df.groupby(["user_id", "merchant_id"]).agg(aggs)
    uc = df.groupby(["user_id", "mcc"]).agg(aggs)
    for frame in (um, uc):
        for c in ("spend_30d", "spend_90d", "spend_365d", "decayed", "base"):
            frame[c] = frame[c].clip(lower=0)
        frame["trend"] = np.log((frame.spend_30d + 1) / (frame.base / 2 + 1))
    total = um.groupby(level=0).spend_365d.sum()
    um["share"] = (um.spend_365d / um.index.get_level_values(0).map(total)).fillna(0)
    user = df.groupby("user_id").agg(active_days=("day", "nunique"))
    um.to_parquet(work / "pandas_um.parquet")
    return {"rows": len(um), "users": len(user), "uc": len(uc)}


STEPS = {
    "snapshot (a)": step_snapshot,
    "pandas groupby": step_pandas,
    "duckdb GROUP BY floor": step_floor,
    "point in time (b), 200k pairs": step_point_in_time,
}


def run_step(name: str, data: Path, work: Path) -> dict:
    """One step in a fresh interpreter: wall time and its own peak RSS."""
    cmd = [sys.executable, __file__, "--run-step", name, "--data", str(data), "--work", str(work)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ))
    if out.returncode != 0:
        raise RuntimeError(f"step {name!r} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _child(name: str, data: Path, work: Path) -> None:
    import duckdb  # noqa: F401  (imports are paid once per process, not per job)

    import features.job  # noqa: F401

    started = time.perf_counter()
    result = STEPS[name](data, work)
    result["seconds"] = time.perf_counter() - started
    result["peak_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(json.dumps(result))


def agree(work: Path) -> float:
    """Largest relative difference in 365-day spend between pandas and the snapshot."""
    from features.job import load_snapshot

    tables, _ = load_snapshot(work / "features")
    ours = tables.user_merchant.set_index(["user_id", "merchant_id"]).um_spend_365d
    theirs = pd.read_parquet(work / "pandas_um.parquet").spend_365d
    theirs.index = theirs.index.set_names(["user_id", "merchant_id"])
    joined = pd.concat([ours, theirs], axis=1, join="outer").fillna(-1)
    if len(joined) != len(ours) or len(joined) != len(theirs):
        raise AssertionError(
            f"row sets differ: ours {len(ours)}, pandas {len(theirs)}, union {len(joined)}"
        )
    diff = (joined.iloc[:, 0] - joined.iloc[:, 1]).abs() / joined.iloc[:, 1].abs().clip(lower=1)
    return float(diff.max())


def _unshadow_package() -> None:
    """This file is named like the `features` package; drop its folder from the import path."""
    here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != here]


def main() -> None:
    _unshadow_package()
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", nargs="+", type=float, default=[1e6, 1e7])
    parser.add_argument(
        "--repeats", type=int, default=1, help="runs per step; the median is reported"
    )
    parser.add_argument("--skip-pandas-above", type=float, default=6e7)
    parser.add_argument("--run-step")
    parser.add_argument("--data", type=Path)
    parser.add_argument("--work", type=Path)
    args = parser.parse_args()
    if args.run_step:
        _child(args.run_step, args.data, args.work)
        return

    print("| transactions | step | median s | peak GiB | transactions/s | vs pandas | vs floor |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for size in args.sizes:
        n = int(size)
        with tempfile.TemporaryDirectory(prefix="offers-bench-") as tmp:
            data, work = Path(tmp) / "data", Path(tmp) / "work"
            work.mkdir()
            t0 = time.perf_counter()
            generate(data, n)
            print(
                f"<!-- generated {n:,} transactions in {time.perf_counter() - t0:.1f} s -->",
                flush=True,
            )
            results = {}
            for name in STEPS:
                if name.startswith("pandas") and n > args.skip_pandas_above:
                    continue
                if name.startswith("point") and n != 10_000_000:
                    continue
                runs = [run_step(name, data, work) for _ in range(args.repeats)]
                results[name] = {
                    "seconds": statistics.median(r["seconds"] for r in runs),
                    "peak_gib": max(r["peak_gib"] for r in runs),
                }
            if "pandas groupby" in results:
                print(
                    f"<!-- max relative 365-d spend difference pandas vs snapshot: {agree(work):.2e} -->"
                )
            pandas_s = results.get("pandas groupby", {}).get("seconds")
            floor_s = results["duckdb GROUP BY floor"]["seconds"]
            for name, r in results.items():
                vs_pandas = f"{pandas_s / r['seconds']:.1f}x faster" if pandas_s else "n/a"
                print(
                    f"| {n:,} | {name} | {r['seconds']:.1f} | {r['peak_gib']:.2f} | "
                    f"{n / r['seconds']:,.0f} | {vs_pandas} | {r['seconds'] / floor_s:.2f}x floor |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
