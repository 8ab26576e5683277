"""Load test: locust against `offers serve` on 127.0.0.1, headless and bounded in time.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/load.py [--work DIR] [--clients 16]
        [--seconds 30] [--workers 2] [--audit-sync interval]

Builds the serving benchmark's world (benchmarks/serving.py `prepare`; `--work DIR` keeps and
reuses it), starts `offers serve` on a free loopback port, and runs locust (benchmarks/
locustfile.py: 80% warm users with 100 candidates, 10% cold-start users, 10% a banned purpose,
every answer checked) with `--clients` concurrent users for `--seconds`, then stops both. Prints
a markdown table per request kind: requests, failures, requests/s, p50/p95/p99 (ms), and the
server's CPU per request. Exits 1 when any answer was wrong. Locust's client (gevent, Python)
runs on the same cores as the server: the numbers are those of a loaded host, not a ceiling.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]  # see serving.py
sys.path.insert(0, str(_HERE.parent))

HOST = "127.0.0.1"  # loopback only: this test never sends traffic elsewhere
KINDS = ("warm", "cold", "banned", "Aggregated")


def _bench_serving():
    """benchmarks/serving.py as a module (its name would shadow the `serving` package)."""
    spec = importlib.util.spec_from_file_location("bench_serving", _HERE / "serving.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while defining
    spec.loader.exec_module(module)
    return module


def write_plan(bench, home: Path, data: Path, path: Path) -> dict[str, int]:
    """The users and candidates the locust clients ask for, as JSON for the locustfile."""
    from serving.audit import SYNC_INTERVAL, AuditLog
    from serving.scorer import Scorer

    scorer = Scorer(home, data, audit=AuditLog(home / "audit", sync=SYNC_INTERVAL))
    warm, cold, live = bench.request_plan(scorer)
    if not warm or not cold:
        raise RuntimeError(
            f"the world needs warm and cold users: {len(warm)} warm, {len(cold)} cold"
        )
    plan = {
        "token": bench.TOKEN,
        "now": bench.CUTOFF.isoformat(),
        "warm": warm,
        "cold": cold,
        "candidates": [str(x) for x in scorer.state.offers.offer_id[live]],
    }
    path.write_text(json.dumps(plan), encoding="utf-8")
    return {"warm": len(warm), "cold": len(cold)}


def run_locust(port: int, plan: Path, clients: int, seconds: int, prefix: Path) -> None:
    """Locust, headless, for `seconds`; killed if it outlives them by a minute."""
    command = [
        str(Path(sys.executable).parent / "locust"), "-f", str(_HERE / "locustfile.py"),
        "--headless", "-u", str(clients), "-r", str(clients), "-t", f"{seconds}s",
        "--stop-timeout", "5", "--host", f"http://{HOST}:{port}", "--csv", str(prefix),
        "--only-summary", "--loglevel", "WARNING",
    ]  # fmt: skip
    env = {**os.environ, "OFFERS_LOAD_PLAN": str(plan)}
    subprocess.run(command, env=env, check=False, timeout=seconds + 60)


def read_stats(prefix: Path) -> dict[str, dict[str, str]]:
    with open(f"{prefix}_stats.csv", newline="", encoding="utf-8") as f:
        return {row["Name"]: row for row in csv.DictReader(f)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, default=None, help="keep the world here (reused)")
    parser.add_argument("--users", type=int, default=3000, help="synthetic users in the world")
    parser.add_argument("--clients", type=int, default=16, help="concurrent locust users")
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--audit-sync", default="interval", choices=("interval", "record"))
    args = parser.parse_args()

    bench = _bench_serving()
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-load-"))
    home, data = bench.prepare_or_reuse(work, args.users)
    counts = write_plan(bench, home, data, work / "load-plan.json")  # compiles the forest once
    port = bench._free_port()
    command = [str(bench.BIN / "offers"), "serve", "--data", str(data), "--host", HOST,
               "--port", str(port), "--workers", str(args.workers), "--allow-past-now"]  # fmt: skip
    env = {**os.environ, "OFFERS_HOME": str(home), "OFFERS_API_TOKENS": bench.TOKEN,
           "OFFERS_AUDIT_SYNC": args.audit_sync}  # fmt: skip
    load_start = os.getloadavg()[0]
    prefix = work / "locust"
    with bench.Server(command, env, port, "/readyz", work / "load-serve.log") as server:
        cpu, started = server.cpu_seconds(), time.monotonic()
        run_locust(port, work / "load-plan.json", args.clients, args.seconds, prefix)
        cpu, elapsed = server.cpu_seconds() - cpu, time.monotonic() - started
    stats = read_stats(prefix)
    total = stats["Aggregated"]
    n, failures = int(total["Request Count"]), int(total["Failure Count"])
    print(f"\nlocust: {args.clients} clients for {args.seconds} s against `offers serve "
          f"--workers {args.workers}` (audit fsync {args.audit_sync}), {counts['warm']} warm and "
          f"{counts['cold']} cold users; {os.cpu_count()} cores, load average at start "
          f"{load_start:.1f}, at end {os.getloadavg()[0]:.1f}\n")  # fmt: skip
    print("| requests | count | failures | req/s | p50 ms | p95 ms | p99 ms |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for kind in KINDS:
        if kind in stats:
            r = stats[kind]
            print(f"| {kind} | {int(r['Request Count']):,} | {int(r['Failure Count'])} | "
                  f"{float(r['Requests/s']):,.0f} | {r['50%']} | {r['95%']} | {r['99%']} |")  # fmt: skip
    if n:
        print(
            f"\nserver CPU per request: {cpu * 1e3 / n:.2f} ms ({n:,} requests in {elapsed:.0f} s)"
        )
    if failures or not n:
        print(f"FAIL: {failures} wrong answers of {n}")
        sys.exit(1)


if __name__ == "__main__":
    main()
