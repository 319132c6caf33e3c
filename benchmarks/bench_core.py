"""Core latency and memory benchmark; prints one JSON document.

    .venv/bin/python benchmarks/bench_core.py [--n 200] [--backends local,docker] [--peer]

For each backend (`local`, `docker`, `docker_paused`: docker with pool containers paused
until claimed, and `kubernetes`: pods on the cluster of $KUBECONFIG), measures through the
official AgentScope SDK and through ours, against a real `jupyter sandbox-server` with a pool
of 2: `with BaseSandbox()` + first `run_shell_command("true")` on a warm pool,
`run_shell_command("true")`, `run_ipython_cell("1+1")`; then cold create to ready (pool 0),
the idle memory of a base sandbox (RSS and PSS of its box and kernel) and the rate at which an
empty pool of 6 fills. Ratios of each backend over `local` come from the same run. With
`--peer`, the official AgentScope server (../shared/peer, its containers replaced by plain
processes) is measured too.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from tests.conftest import start_server, stop_server, wait_healthy  # noqa: E402

CLIENT = r"""
import json, os, sys, time
kind, url, token, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
if kind == "official":
    from agentscope_runtime.sandbox import BaseSandbox
else:
    from jupyter_sandbox import BaseSandbox

def timed(fn, count, pause=0.0):
    out = []
    for _ in range(count):
        t = time.perf_counter(); fn(); out.append((time.perf_counter() - t) * 1000)
        time.sleep(pause)
    return out

pause = float(os.environ.get("REFILL_PAUSE", "1.0"))  # lets the pool refill between claims
total, without_ctor = [], []
for _ in range(max(10, n // 10)):
    t0 = time.perf_counter()
    sb = BaseSandbox(base_url=url, bearer_token=token)  # the SDK's own set-up, no HTTP
    t1 = time.perf_counter()
    with sb:
        sb.run_shell_command(command="true")
    t2 = time.perf_counter()
    total.append((t2 - t0) * 1000)
    without_ctor.append((t2 - t1) * 1000)
    time.sleep(pause)
result = {"enter_first_call": total, "enter_first_call_without_constructor": without_ctor}
with BaseSandbox(base_url=url, bearer_token=token) as sb:
    sb.run_ipython_cell(code="1+1"); sb.run_shell_command(command="true")
    result["run_shell_command"] = timed(lambda: sb.run_shell_command(command="true"), n)
    result["run_ipython_cell"] = timed(lambda: sb.run_ipython_cell(code="1+1"), n)
print(json.dumps(result))
"""


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": round(statistics.median(ordered), 2),
        "p95_ms": round(ordered[int(0.95 * (len(ordered) - 1))], 2),
        "n": len(ordered),
    }


def run_client(python: str, kind: str, url: str, token: str, n: int) -> dict:
    out = subprocess.run(
        [python, "-c", CLIENT, kind, url, token, str(n)],
        capture_output=True, text=True, check=True, timeout=1800,
    )  # fmt: skip
    return {k: summary(v) for k, v in json.loads(out.stdout.splitlines()[-1]).items()}


KUBECONFIG = os.environ.get("KUBECONFIG") or "/tmp/ci-k8s/run/admin.kubeconfig"
BACKEND_ARGS = {
    "local": [],
    "docker": ["--SandboxApp.backend=docker"],
    "docker_paused": ["--SandboxApp.backend=docker", "--DockerBackend.pause_pool=True"],
    # Pods on the cluster of $KUBECONFIG (default: ../shared/k8s/k8s-up.sh's), reached at
    # their pod IP, images from the node's Docker engine.
    "kubernetes": [
        "--SandboxApp.backend=kubernetes",
        f"--KubernetesBackend.kubeconfig={KUBECONFIG}",
        "--KubernetesBackend.namespace="
        + os.environ.get("JUPYTER_SANDBOX_TEST_NAMESPACE", "jupyter-sandbox-test"),
        "--KubernetesBackend.image_pull_policy="
        + os.environ.get("JUPYTER_SANDBOX_TEST_PULL_POLICY", "Never"),
    ],
}


def cold_create(tmp: Path, n: int, backend_args: list[str]) -> dict:
    server = start_server(tmp / "cold", *backend_args, "--SandboxApp.pool_size=0")
    try:
        samples = []
        for _ in range(n):
            t = time.perf_counter()
            sid = server.data("create", sandbox_type="base")
            samples.append((time.perf_counter() - t) * 1000)
            server.data("release", identity=sid)
        return summary(samples)
    finally:
        stop_server(server)


def refill_rate(tmp: Path, backend_args: list[str], size: int = 6) -> dict:
    """Sandboxes per second while a pool of `size` fills from empty (the server's
    refill_concurrency bounds how many start at once)."""
    server = start_server(tmp / "refill", *backend_args, f"--SandboxApp.pool_size={size}",
                          wait=False)  # fmt: skip
    try:
        wait_healthy(server, pools=False, timeout=120)
        t = time.perf_counter()
        wait_healthy(server, timeout=600)
        elapsed = time.perf_counter() - t
        return {"pool_size": size, "seconds": round(elapsed, 2),
                "sandboxes_per_s": round(size / elapsed, 2)}  # fmt: skip
    finally:
        stop_server(server)


def sandbox_processes(backend: str, sid: str, container_id: str) -> list[int]:
    if backend == "local":
        procs = Path("/sys/fs/cgroup/memory/jupyter-sandbox") / sid / "cgroup.procs"
    elif backend == "kubernetes":  # dockershim names the box container k8s_box_<pod>_...
        docker_id = subprocess.run(
            ["docker", "ps", "-q", "--no-trunc", "--filter", f"name=^k8s_box_{container_id}_"],
            capture_output=True, text=True, check=True,
        ).stdout.split()[0]  # fmt: skip
        (procs,) = Path("/sys/fs/cgroup/memory/kubepods").glob(f"**/{docker_id}/cgroup.procs")
    else:  # Docker's cgroupfs driver
        procs = Path("/sys/fs/cgroup/memory/docker") / container_id / "cgroup.procs"
    return [int(p) for p in procs.read_text().split()]


def idle_memory(tmp: Path, backend: str, backend_args: list[str]) -> dict:
    server = start_server(tmp / "rss", *backend_args, "--SandboxApp.pool_size=1")
    try:
        sid = server.data("create_from_pool", sandbox_type="base")
        server.data(
            "call_tool", identity=sid, tool_name="run_ipython_cell", arguments={"code": "1"}
        )
        time.sleep(1)
        container_id = server.data("get_info", identity=sid)["container_id"]
        rss, pss = {}, {}
        for pid in sandbox_processes(backend, sid, container_id):
            rollup = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
            name = f"{Path(f'/proc/{pid}/comm').read_text().strip()}[{pid}]"
            field = {line.split(":")[0]: int(line.split()[1]) for line in rollup[1:]}
            rss[name], pss[name] = round(field["Rss"] / 1024, 1), round(field["Pss"] / 1024, 1)
        # bwrap's two small processes and Docker's init are the jail, not the payload.
        payload = [k for k in rss if not k.startswith(("bwrap", "docker-init", "pause"))]
        return {
            "box_plus_kernel_rss_mb": round(sum(rss[k] for k in payload), 1),
            "box_plus_kernel_pss_mb": round(sum(pss[k] for k in payload), 1),
            "all_processes_rss_mb": rss,
            "all_processes_pss_mb": pss,
        }
    finally:
        stop_server(server)


def claim_only(server, n: int) -> dict:
    """Server-side time of `create_from_pool` alone (what the box backend adds to a claim)."""
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        sid = server.data("create_from_pool", sandbox_type="base")
        samples.append((time.perf_counter() - t) * 1000)
        server.data("release", identity=sid)
        time.sleep(1.0)  # the pool refills
    return summary(samples)


def measure_backend(tmp: Path, backend: str, official: str, n: int) -> dict:
    backend_args = BACKEND_ARGS[backend]
    result: dict = {}
    server = start_server(tmp / "warm", *backend_args, "--SandboxApp.pool_size=2")
    try:
        result["via_official_sdk"] = run_client(official, "official", server.url, server.token, n)
        result["via_our_sdk"] = run_client(sys.executable, "ours", server.url, server.token, n)
        result["create_from_pool_only"] = claim_only(server, max(10, n // 10))
    finally:
        stop_server(server)
    if backend != "docker_paused":  # the same containers as `docker`, only parked differently
        result["cold_create_to_ready"] = cold_create(tmp, 20, backend_args)
        result["idle_base_sandbox"] = idle_memory(tmp, backend, backend_args)
        result["pool_refill"] = refill_rate(tmp, backend_args)
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--peer", action="store_true", help="also measure the official server")
    parser.add_argument(
        "--backends", default="local,docker,docker_paused", help="comma-separated, from "
        + ", ".join(BACKEND_ARGS)
    )
    args = parser.parse_args()
    official = os.environ.get("AGENTSCOPE_PYTHON") or str(
        Path.home() / ".cache/jupyter-sandbox/agentscope-sdk/bin/python"
    )
    tmp = Path(tempfile.mkdtemp(prefix="bench-"))
    report: dict = {"machine": {"cpus": os.cpu_count()}}
    for backend in args.backends.split(","):
        report[backend] = measure_backend(tmp / backend, backend, official, args.n)
    if "local" in report:
        local = report["local"]["via_official_sdk"]
        report["ratio_over_local_p50"] = {
            backend: {k: round(r["via_official_sdk"][k]["p50_ms"] / local[k]["p50_ms"], 3)
                      for k in local}
            for backend, r in report.items() if backend in BACKEND_ARGS and backend != "local"
        }  # fmt: skip
    if args.peer:
        peer_dir = HERE.parent.parent / "shared" / "peer"
        subprocess.run(["bash", str(peer_dir / "setup.sh")], check=True, capture_output=True)
        started = subprocess.run(
            ["bash", str(peer_dir / "run-server.sh"), "8100", "2"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        pid = int(started.stdout.split()[-1])
        try:
            for _ in range(600):
                try:
                    if requests.get("http://127.0.0.1:8100/health", timeout=1).ok:
                        break
                except requests.ConnectionError:
                    time.sleep(0.1)
            time.sleep(3)  # its pool fills from a 1 s watcher
            env_python = "/tmp/peer/asr/bin/python"
            peer = run_client(env_python, "official", "http://127.0.0.1:8100", "tok", args.n)
            report["peer_via_official_sdk"] = peer
            ours = report[args.backends.split(",")[0]]["via_official_sdk"]
            report["ratio_ours_over_peer_p50"] = {
                k: round(ours[k]["p50_ms"] / peer[k]["p50_ms"], 3) for k in peer
            }
        finally:
            os.kill(pid, 15)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
