"""Claim latency with shared state: in-process vs Redis, 1 and 4 workers, 20 concurrent clients.

    .venv/bin/python benchmarks/bench_fleet.py [--clients 20] [--claims 3]

For each configuration a real `jupyter sandbox-server` (local backend) warms a pool big enough
for every claim of the run, then `--clients` threads (one keep-alive connection each) each make
`--claims` `create_from_pool` calls at once; the figure is the HTTP round trip of a claim.
Prints one JSON document with p50/p95 per configuration and the ratios over the in-process one.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from benchmarks.bench_core import summary  # noqa: E402
from tests.conftest import free_port, start_server, stop_server, wait_healthy  # noqa: E402


def claims(url: str, token: str, clients: int, per_client: int) -> tuple[list[float], list[str]]:
    samples: list[float] = []
    made: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(clients)

    def client() -> None:
        with requests.Session() as http:
            http.headers["Authorization"] = f"Bearer {token}"
            http.post(f"{url}/list_session_keys", json={}).raise_for_status()  # connect first
            start.wait()
            for _ in range(per_client):
                t = time.perf_counter()
                response = http.post(f"{url}/create_from_pool", json={"sandbox_type": "base"})
                elapsed = (time.perf_counter() - t) * 1000
                response.raise_for_status()
                with lock:
                    samples.append(elapsed)
                    made.append(response.json()["data"])

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return samples, made


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--claims", type=int, default=3)
    args = parser.parse_args()
    total = args.clients * args.claims
    tmp = Path(tempfile.mkdtemp(prefix="bench-fleet-"))
    port = free_port()
    redis = subprocess.Popen(
        ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    redis_url = f"redis://127.0.0.1:{port}/0"
    configs = {
        "memory_1_worker": [],
        "redis_1_worker": [f"--SandboxApp.redis_url={redis_url}"],
        "redis_4_workers": [f"--SandboxApp.redis_url={redis_url}", "--SandboxApp.workers=4"],
    }
    report: dict = {"clients": args.clients, "claims_per_client": args.claims}
    try:
        for name, extra in configs.items():
            subprocess.run(["redis-cli", "-p", str(port), "flushall"], capture_output=True)
            server = start_server(
                tmp / name, *extra, f"--SandboxApp.pool_size={total}", wait=False
            )
            try:
                wait_healthy(server, timeout=600)
                samples, made = claims(server.url, server.token, args.clients, args.claims)
                report[name] = summary(samples)
                for sid in made:
                    server.data("release", identity=sid)
            finally:
                stop_server(server)
    finally:
        redis.terminate()
    base = report["memory_1_worker"]["p50_ms"]
    report["ratio_over_memory_p50"] = {
        name: round(report[name]["p50_ms"] / base, 2) for name in configs if name in report
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
