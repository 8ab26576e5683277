"""Serving memory benchmark: RSS and PSS of `offers serve` per worker and in total, by users.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/serving_memory.py \
        [--users 10000,100000,1000000] [--requests 1000] [--baseline-max 100000]
    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/serving_memory.py --latency 100000

Feature copies compared, each with 1 and 2 workers (`offers serve --workers W`):
- `memory`: the old way, every worker builds its own FeatureSource from the Parquet snapshot
  (OFFERS_FEATURE_COPY=memory; the baseline, up to --baseline-max users);
- `mapped`: the embedded default, one Arrow IPC copy memory-mapped by every worker;
- `redis`: `offers serve --online`, one user's rows per request from a local redis-server.
Servers fsync the audit log at most once a second (the same in every mode; per-record fsyncs
would make the latencies the disk's). Memory is read from /proc/PID/smaps_rollup after warm-up requests (so the pages lookups touch
are in): RSS counts a shared page in every process that maps it, PSS divides it among them.
"Total" sums every process of the server (with 2 workers, the supervisor that loaded the app
and forked them: serving/prefork.py). Then
p50/p99 of sequential HTTP requests (keep-alive, one user x the whole live catalogue) per
1-worker run; with --latency, an embedded (mapped) and a Redis-backed server up together and
one request to each in turn, so the machine's noise falls on both alike.

The snapshot is synthetic, written directly with the published schema (8 merchants and 4 MCCs
per user, 5,000 merchants): running synth + features at 1M users would take hours here. The
users and consents tables hold the 2,000 users the requests ask for: the policy facts a worker
loads from them are the same in every mode and are not what this benchmark measures.
"""

from __future__ import annotations

import argparse
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

sys.path.append(str(_HERE))  # after the project: `features` stays the package
from serving_memory_world import (  # noqa: E402
    NOW,
    POLICY_USERS,
    REGISTER,
    write_data,
    write_snapshot,
)

TOKEN = "memory-bench-token"
BIN = Path(sys.executable).parent


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
    # --workers 2: the children forked from the supervisor run its command line
    workers = [p.pid for p in root.children() if p.cmdline() == root.cmdline()] or [pid]
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


def _one(conn: http.client.HTTPConnection, user: str) -> float:
    """One rank request on a kept-alive connection: its latency in ms (200 or an error)."""
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    t = time.perf_counter()
    conn.request("POST", "/v1/rank", body=_rank_body(user), headers=headers)
    response = conn.getresponse()
    body = response.read()
    elapsed = (time.perf_counter() - t) * 1e3
    if response.status != 200:
        raise RuntimeError(f"rank answered {response.status}: {body[:300]!r}")
    return elapsed


def _users(n: int, seed: int) -> list[str]:
    return [f"u{u:07d}" for u in np.random.default_rng(seed).integers(0, POLICY_USERS, n)]


def requests(port: int, n: int, n_conns: int = 1, seed: int = 1) -> list[float]:
    """Sequential requests for users with consents, round robin over `n_conns` kept-alive
    connections (each may land on another worker); latencies in ms."""
    conns = [_connect(port) for _ in range(n_conns)]
    out = [_one(conns[i % n_conns], user) for i, user in enumerate(_users(n, seed))]
    for conn in conns:
        conn.close()
    return out


def start_server(home: Path, data: Path, mode: str, workers: int, redis_url: str):
    """`offers serve` in its own session, healthy and loaded: (process, port)."""
    port = _free_port()
    env = {**os.environ, "OFFERS_HOME": str(home), "OFFERS_API_TOKENS": TOKEN,
           "OFFERS_FEATURE_COPY": "memory" if mode == "memory" else "mapped",
           "OFFERS_COMPILED": "auto",  # wait for the compiled forest: every row serves with it
           "OFFERS_AUDIT_SYNC": "interval",  # fsync <= 1/s: the disk's noise is not the subject
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
    except BaseException:
        _stop(proc)
        raise
    time.sleep(2.0)  # every worker loaded
    return proc, port


def serve(home: Path, data: Path, mode: str, workers: int, redis_url: str, n_requests: int):
    """Start, warm up (and time) requests, read memory, stop: (memory, latencies)."""
    proc, port = start_server(home, data, mode, workers, redis_url)
    try:
        latencies = requests(port, n_requests, n_conns=1 if workers == 1 else 8)
        return tree_memory(proc.pid), latencies
    finally:
        _stop(proc)


def interleaved(home: Path, data: Path, redis_url: str, n: int) -> dict[str, list[float]]:
    """Embedded (mapped) and Redis-backed servers up together, one request to each in turn:
    the machine's noise falls on both alike."""
    procs, ports = [], {}
    try:
        for mode in ("mapped", "redis"):
            proc, ports[mode] = start_server(home, data, mode, 1, redis_url)
            procs.append(proc)
        conns = {mode: _connect(port) for mode, port in ports.items()}
        out: dict[str, list[float]] = {mode: [] for mode in ports}
        for user in _users(n, seed=7):
            for mode, conn in conns.items():
                out[mode].append(_one(conn, user))
        return out
    finally:
        for proc in procs:
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
    parser.add_argument("--latency", type=int, default=0, metavar="USERS",
                        help="only: embedded vs Redis p50/p99, interleaved, at USERS users")  # fmt: skip
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="offers-redis-") as tmp:
        proc, url = start_redis(Path(tmp))
        try:
            if args.latency:
                latency_report(args.latency, url, args.requests)
                return
            rows = [r for n in args.users.split(",") for r in run_users(int(n), url, args)]
        finally:
            _stop(proc)
    report(rows)


def in_process(home: Path, data: Path, redis_url: str, n: int) -> dict[str, list[float]]:
    """`Scorer.rank` in this process, embedded (mapped) and Redis-backed in turn: no HTTP."""
    import pandas as pd

    from serving.audit import AuditLog
    from serving.scorer import Scorer

    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{home / 'mlflow.db'}"
    now = pd.Timestamp(NOW).to_pydatetime()
    scorers = {
        f"in-process {mode}": Scorer(
            home,
            data,
            audit=AuditLog(home / f"audit-{mode}", sync="interval"),
            allow_past_now=True,
            online=online,
        )  # fmt: skip
        for mode, online in (("mapped", None), ("redis", redis_url))
    }
    out: dict[str, list[float]] = {name: [] for name in scorers}
    for user in _users(n, seed=11):
        for name, scorer in scorers.items():
            t = time.perf_counter()
            scorer.rank(user, "offer_ranking", now=now)
            out[name].append((time.perf_counter() - t) * 1e3)
    return out


def latency_report(n_users: int, redis_url: str, n_requests: int) -> None:
    with tempfile.TemporaryDirectory(prefix="offers-latency-") as tmp:
        home, data, _ = prepare(Path(tmp), n_users, redis_url)
        got = interleaved(home, data, redis_url, n_requests)
        got |= in_process(home, data, redis_url, n_requests)
    p = {m: (np.percentile(v, 50), np.percentile(v, 99)) for m, v in got.items()}
    print(f"\n{n_requests} interleaved requests per path, {n_users:,} users, 1 worker each")
    print("| features | p50 ms | p99 ms |\n|---|---:|---:|")
    for mode, (p50, p99) in p.items():
        print(f"| {mode} | {p50:.2f} | {p99:.2f} |")
    print(f"Redis - embedded: p50 {p['redis'][0] - p['mapped'][0]:+.2f} ms, "
          f"p99 {p['redis'][1] - p['mapped'][1]:+.2f} ms (goal: p99 within 2 ms)")  # fmt: skip


if __name__ == "__main__":
    main()
