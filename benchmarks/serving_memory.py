"""Serving memory benchmark: RSS and PSS of `offers serve` per worker and in total, by users.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/serving_memory.py \
        [--users 10000,100000,1000000] [--requests 1000] [--baseline-max 100000]

Feature copies compared, each with 1 and 2 workers (`offers serve --workers W`):
- `memory`: the old way, every worker builds its own FeatureSource from the Parquet snapshot
  (OFFERS_FEATURE_COPY=memory; the baseline, up to --baseline-max users);
- `mapped`: the embedded default, one Arrow IPC copy memory-mapped by every worker;
- `redis`: `offers serve --online`, one user's rows per request from a local redis-server.
Memory is read from /proc/PID/smaps_rollup after warm-up requests (so the pages lookups touch
are in): RSS counts a shared page in every process that maps it, PSS divides it among them.
"Total" sums every process of the server (uvicorn's supervisor included with 2 workers). Then
p50/p99 of sequential HTTP requests (keep-alive, one user x the whole live catalogue), embedded
(mapped) vs Redis, at the largest user count measured with both.

The snapshot is synthetic, written directly with the published schema (8 merchants and 4 MCCs
per user, 5,000 merchants): running synth + features at 1M users would take hours here. The
users and consents tables hold the 2,000 users the requests ask for: the policy facts a worker
loads from them are the same in every mode and are not what this benchmark measures.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
_HERE = Path(__file__).resolve().parent  # benchmarks/features.py would shadow `features`
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from features import contract as c  # noqa: E402
from features import definitions as fd  # noqa: E402
from features.vector import UC_COLUMNS, UM_COLUMNS, USER_COLUMNS  # noqa: E402

CUTOFF = pd.Timestamp("2025-10-01", tz="UTC")
NOW = "2025-10-02T12:00:00Z"
N_MERCHANTS, PER_USER_MERCHANTS, PER_USER_MCCS = 5000, 8, 4
MCCS = [str(m) for m in (5411, 5812, 5541, 5942, 5311, 5732, 5651, 5999, 4121, 7832)]
POLICY_USERS = 2000
N_OFFERS = 100
TOKEN = "memory-bench-token"
BIN = Path(sys.executable).parent


# ---------------------------------------------------------------- a published snapshot


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


# ---------------------------------------------------------------- servers and memory


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(port: int, proc: subprocess.Popen, log: Path, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited:\n{log.read_text()[-3000:]}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"server not healthy:\n{log.read_text()[-3000:]}")


def _stop(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGTERM)  # the server and its workers (own session)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def smaps(pid: int) -> dict[str, int]:
    """Rss and Pss (kB) of one process from /proc/PID/smaps_rollup."""
    out = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("Rss", "Pss"):
            out[key] = int(rest.split()[0])
    return out


def tree_memory(pid: int) -> dict[str, float]:
    """MB: RSS and PSS of the workers (mean) and of every process of the server (total)."""
    import psutil

    root = psutil.Process(pid)
    procs = [root, *root.children(recursive=True)]
    mem = {p.pid: smaps(p.pid) for p in procs}
    workers = [p.pid for p in procs if "spawn_main" in " ".join(p.cmdline())] or [pid]
    mb = 1024.0
    return {
        "worker_rss": np.mean([mem[w]["Rss"] for w in workers]) / mb,
        "worker_pss": np.mean([mem[w]["Pss"] for w in workers]) / mb,
        "total_rss": sum(m["Rss"] for m in mem.values()) / mb,
        "total_pss": sum(m["Pss"] for m in mem.values()) / mb,
        "workers": len(workers),
    }


def _rank_body(user: str) -> bytes:
    return json.dumps({"user_id": user, "purpose": "offer_ranking", "now": NOW}).encode()


def _connect(port: int) -> http.client.HTTPConnection:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.connect()
    conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return conn


def requests(port: int, n: int, n_conns: int = 1, seed: int = 1) -> list[float]:
    """Sequential keep-alive requests for users with consents, round robin over `n_conns`
    connections (each may land on another worker); latencies in ms."""
    conns = [_connect(port) for _ in range(n_conns)]
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    users = np.random.default_rng(seed).integers(0, POLICY_USERS, n)
    out = []
    for i, u in enumerate(users):
        conn = conns[i % n_conns]
        t = time.perf_counter()
        conn.request("POST", "/v1/rank", body=_rank_body(f"u{u:07d}"), headers=headers)
        response = conn.getresponse()
        body = response.read()
        out.append((time.perf_counter() - t) * 1e3)
        if response.status != 200:
            raise RuntimeError(f"rank answered {response.status}: {body[:300]!r}")
    for conn in conns:
        conn.close()
    return out


def serve(home: Path, data: Path, mode: str, workers: int, redis_url: str, n_requests: int):
    """Start, warm up (and time) requests, read memory, stop: (memory, latencies)."""
    port = _free_port()
    env = {**os.environ, "OFFERS_HOME": str(home), "OFFERS_API_TOKENS": TOKEN,
           "OFFERS_FEATURE_COPY": "memory" if mode == "memory" else "mapped",
           "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}"}  # fmt: skip
    env.pop("OFFERS_ONLINE_STORE", None)
    online = ["--online", redis_url] if mode == "redis" else []
    command = [str(BIN / "offers"), "serve", "--data", str(data), "--port", str(port),
               "--workers", str(workers), "--allow-past-now", *online]  # fmt: skip
    log = home / f"serve-{mode}-{workers}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
    try:
        _wait(port, proc, log)
        time.sleep(2.0)  # every worker loaded
        latencies = requests(port, n_requests, n_conns=1 if workers == 1 else 8)
        return tree_memory(proc.pid), latencies
    finally:
        _stop(proc)


# ---------------------------------------------------------------- the run


def start_redis(folder: Path) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    args = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder),
            "--save", "", "--appendonly", "no"]  # fmt: skip
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, start_new_session=True)
    url = f"redis://127.0.0.1:{port}/0"
    import redis

    for _ in range(100):
        try:
            redis.Redis.from_url(url).ping()
            return proc, url
        except redis.ConnectionError:
            time.sleep(0.1)
    raise RuntimeError("redis-server did not start")


def prepare(work: Path, n_users: int, redis_url: str) -> tuple[Path, Path, dict]:
    """Snapshot, data, champion, and the snapshot published to Redis: (home, data, facts)."""
    import redis

    from features.online.publish import publish_online

    home, data = work / "home", work / "data"
    t = time.perf_counter()
    write_snapshot(home, n_users)
    write_data(data)
    facts = {"write_s": time.perf_counter() - t}
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}"}
    subprocess.run([sys.executable, "-c", REGISTER, str(home)], env=env, check=True,
                   capture_output=True, cwd=work)  # fmt: skip
    client = redis.Redis.from_url(redis_url)
    client.flushall()
    t = time.perf_counter()
    publish_online(redis_url, home, "offers")
    facts["publish_s"] = time.perf_counter() - t
    facts["redis_mb"] = client.info("memory")["used_memory"] / 2**20
    print(f"{n_users:,} users: written in {facts['write_s']:.0f} s, published to Redis in "
          f"{facts['publish_s']:.0f} s ({facts['redis_mb']:.0f} MB in Redis)", flush=True)  # fmt: skip
    return home, data, facts


def run_users(n_users: int, redis_url: str, args: argparse.Namespace) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="offers-memory-") as tmp:
        home, data, facts = prepare(Path(tmp), n_users, redis_url)
        modes = ["mapped", "redis"] + (["memory"] if n_users <= args.baseline_max else [])
        for mode in modes:
            for workers in (1, 2):
                n = args.requests if workers == 1 else 200
                mem, lat = serve(home, data, mode, workers, redis_url, n)
                row = {"users": n_users, "copy": mode, "workers": workers, **mem,
                       "p50": float(np.percentile(lat, 50)), "p99": float(np.percentile(lat, 99)),
                       "redis_mb": facts["redis_mb"]}  # fmt: skip
                print(json.dumps(row), flush=True)
                rows.append(row)
    return rows


def report(rows: list[dict]) -> None:
    print("\n| users | features | workers | RSS/worker MB | PSS/worker MB | total RSS MB "
          "| total PSS MB | p50 ms | p99 ms |")  # fmt: skip
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        p = f"{r['p50']:.2f} | {r['p99']:.2f}" if r["workers"] == 1 else "- | -"
        print(f"| {r['users']:,} | {r['copy']} | {r['workers']} | {r['worker_rss']:.0f} | "
              f"{r['worker_pss']:.0f} | {r['total_rss']:.0f} | {r['total_pss']:.0f} | {p} |")  # fmt: skip
    print("\n| users | features | total 2 workers / 1 worker (RSS) | (PSS) |")
    print("|---:|---|---:|---:|")
    by = {(r["users"], r["copy"], r["workers"]): r for r in rows}
    for (users, copy, workers), two in by.items():
        one = by.get((users, copy, 1))
        if workers == 2 and one:
            print(f"| {users:,} | {copy} | {two['total_rss'] / one['total_rss']:.2f} | "
                  f"{two['total_pss'] / one['total_pss']:.2f} |")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", default="10000,100000,1000000")
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--baseline-max", type=int, default=100000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="offers-redis-") as tmp:
        proc, url = start_redis(Path(tmp))
        try:
            rows = [r for n in args.users.split(",") for r in run_users(int(n), url, args)]
        finally:
            _stop(proc)
    report(rows)


if __name__ == "__main__":
    main()
