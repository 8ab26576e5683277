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
    from features.job import point_in_time
    from features.sources import open_sources

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
    """One GROUP BY user_id, merchant_id pass with sum and count, its result written to Parquet.

    The result is written (as the job writes its tables): `SELECT count(*)` over the group-by
    would let DuckDB drop the unused sum and count and measure a distinct count instead.
    """
    import duckdb

    con = duckdb.connect()
    path = data / "transactions.parquet"
    out = work / "floor.parquet"
    con.execute(
        f"COPY (SELECT user_id, merchant_id, sum(amount) AS spend, count(*) AS n "
        f"FROM read_parquet('{path}') GROUP BY user_id, merchant_id) TO '{out}' (FORMAT parquet)"
    )
    return {"rows": int(con.execute(f"SELECT count(*) FROM read_parquet('{out}')").fetchone()[0])}


def step_pandas(data: Path, work: Path) -> dict:
    """What a data scientist would write for the same five tables and exclusion counts: load,
    merge, mask, groupby. It knows the benchmark's simple consents (one per user, no expiry,
    revocation, objection or minor), so it needs none of the job's policy machinery."""
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
    df = txns.merge(active[["user_id", "usable_from"]], on="user_id", how="left")
    # exclusion counts, first failing rule wins
    rules = {
        "at_or_after_cutoff": df.ts >= cutoff,
        "no_active_offer_ranking_consent": df.usable_from.isna(),
        "before_consent_lookback": df.ts < df.usable_from,
        "older_than_365d_feature_window": df.ts < cutoff - pd.Timedelta(days=365),
        "sensitive_mcc": df.mcc.isin(sensitive),
    }
    left = pd.Series(True, index=df.index)
    exclusions = {}
    for rule, mask in rules.items():
        exclusions[rule] = int((left & mask).sum())
        left &= ~mask
    df = df[left].copy()
    df["age"] = (cutoff - df.ts).dt.total_seconds() / 86_400
    df["buy"] = df.amount > 0
    for d in (30, 90, 365):
        df[f"n_{d}d"] = df.buy & (df.age < d)
        df[f"spend_{d}d"] = df.amount.where(df.age < d, 0.0)
    df["decayed_spend"] = df.amount * np.exp(-np.log(2) * df.age / 30)
    df["base"] = df.amount.where((df.age >= 30) & (df.age < 90), 0.0)
    df["days_since_last"] = df.age.where(df.buy)
    sums = [f"n_{d}d" for d in (30, 90, 365)] + [f"spend_{d}d" for d in (30, 90, 365)]
    aggs = {c: "sum" for c in [*sums, "decayed_spend", "base"]}
    aggs["days_since_last"] = "min"
    user_spend = None
    tables = {}
    for key, prefix in (("merchant_id", "um_"), ("mcc", "uc_")):
        g = df.groupby(["user_id", key]).agg(aggs)
        for c in ("spend_30d", "spend_90d", "spend_365d", "decayed_spend", "base"):
            g[c] = g[c].clip(lower=0)
        g["trend"] = np.log((g.spend_30d + 1) / (g.base / 2 + 1))
        if user_spend is None:
            user_spend = g.groupby(level=0).spend_365d.sum()
        total = g.index.get_level_values(0).map(user_spend).to_numpy()
        g["share_365d"] = np.where(total > 0, g.spend_365d / np.where(total > 0, total, 1), 0.0)
        tables[key] = g.drop(columns="base").add_prefix(prefix)
    um = tables["merchant_id"]
    p = um.um_spend_365d / um.index.get_level_values(0).map(user_spend).to_numpy()
    plogp = (p * np.log(p)).where(um.um_spend_365d > 0, 0.0)
    user = pd.DataFrame(
        {
            "u_active_days_365d": df.ts.dt.floor("D").groupby(df.user_id).nunique(),
            "u_spend_365d": user_spend,
            "u_n_txn_365d": um.groupby(level=0).um_n_365d.sum(),
            "u_n_merchants_365d": (um.um_n_365d > 0).groupby(level=0).sum(),
            "u_entropy_365d": -plogp.groupby(level=0).sum(),
        }
    )
    recent = df[df.buy & (df.age < 90)]
    n_allowed = active.user_id.nunique()
    m_pop = recent.groupby("merchant_id").user_id.nunique() / n_allowed
    c_pop = recent.groupby("mcc").user_id.nunique() / n_allowed
    um.to_parquet(work / "pandas_um.parquet")
    tables["mcc"].to_parquet(work / "pandas_uc.parquet")
    user.to_parquet(work / "pandas_user.parquet")
    m_pop.rename("m_pop_90d").to_frame().to_parquet(work / "pandas_merchant_pop.parquet")
    c_pop.rename("c_pop_90d").to_frame().to_parquet(work / "pandas_mcc_pop.parquet")
    (work / "pandas_exclusions.json").write_text(json.dumps(exclusions))
    return {"rows": len(um), "users": len(user), "uc": len(tables["mcc"])}


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

    import features.backend

    features.backend.connect().disconnect()  # imports Ibis's DuckDB backend

    started = time.perf_counter()
    result = STEPS[name](data, work)
    result["seconds"] = time.perf_counter() - started
    result["peak_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(json.dumps(result))


def agree(work: Path) -> float:
    """Largest relative difference between pandas and the snapshot over every value the two
    compute (five tables); raises if their rows or exclusion counts differ."""
    from features.snapshot import load_snapshot

    tables, manifest = load_snapshot(work / "features")
    theirs_excl = json.loads((work / "pandas_exclusions.json").read_text())
    ours_excl = {k: v for k, v in manifest["exclusions_by_rule"].items() if v or k in theirs_excl}
    if ours_excl != theirs_excl:
        raise AssertionError(f"exclusion counts differ: ours {ours_excl}, pandas {theirs_excl}")
    worst = 0.0
    pairs = [
        (tables.user_merchant, "pandas_um", ["user_id", "merchant_id"]),
        (tables.user_mcc, "pandas_uc", ["user_id", "mcc"]),
        (tables.user, "pandas_user", ["user_id"]),
        (tables.merchant_pop, "pandas_merchant_pop", ["merchant_id"]),
        (tables.mcc_pop, "pandas_mcc_pop", ["mcc"]),
    ]
    for ours, name, keys in pairs:
        theirs = pd.read_parquet(work / f"{name}.parquet")
        theirs.index = theirs.index.set_names(keys)
        ours = ours.set_index(keys)[list(theirs.columns)]
        joined = ours.merge(
            theirs, how="outer", left_index=True, right_index=True, suffixes=("_ours", "_pandas")
        )
        if len(joined) != len(ours) or len(joined) != len(theirs):
            raise AssertionError(
                f"{name}: row sets differ: ours {len(ours)}, pandas {len(theirs)}, "
                f"union {len(joined)}"
            )
        for col in theirs.columns:
            a = joined[f"{col}_ours"].astype(float).fillna(-1.0)
            b = joined[f"{col}_pandas"].astype(float).fillna(-1.0)
            worst = max(worst, float(((a - b).abs() / b.abs().clip(lower=1)).max()))
    return worst


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
                    "<!-- pandas and the snapshot: same rows and exclusion counts; largest "
                    f"relative difference over every feature value: {agree(work):.2e} -->"
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
