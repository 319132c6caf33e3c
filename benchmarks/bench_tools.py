"""Per-type benchmark: claim + first tool call from a warm pool, and idle memory per sandbox.

    .venv/bin/python benchmarks/bench_tools.py [--n 30] [--backends local,docker]

For each backend, one `jupyter sandbox-server` keeps a pool of 1 for `base`, `filesystem`,
`browser` and `gui`. For each type: `create_from_pool` + its first tool call (base
`run_shell_command("true")`, the baseline; filesystem `list_directory`; browser
`browser_navigate` to a page on the sandbox's own loopback; gui `computer get_screenshot`),
p50/p95, with ratios over base from the same run; then the steady per-call time of the same
tool, and the idle PSS of a warm sandbox of the type (every process in it, jail excluded).

The browser's page is an HTML file that the box's generic tool serves on 127.0.0.1 inside the
sandbox: `python3 -m http.server` is started before the clock starts, since a fresh sandbox has
no page to load, and no outside page is reachable from every machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import requests

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from benchmarks.bench_core import sandbox_processes, summary  # noqa: E402
from tests.conftest import start_server, stop_server  # noqa: E402

TYPES = ("base", "filesystem", "browser", "gui")
PORT = 8765
PAGE_SETUP = (
    "mkdir -p /tmp/site && echo '<title>Bench</title><p>Hello</p>' > /tmp/site/index.html && "
    f"(cd /tmp/site && nohup python3 -m http.server {PORT} --bind 127.0.0.1 >/dev/null 2>&1 & "
    "echo $! > /tmp/site/pid)"
    f" && for i in $(seq 50); do python3 -c \"import urllib.request as u; "
    f"u.urlopen('http://127.0.0.1:{PORT}/')\" 2>/dev/null && break; sleep 0.1; done"
)
FIRST_CALL = {
    "base": ("run_shell_command", {"command": "true"}),
    "filesystem": ("list_directory", {"path": "/workspace"}),
    "browser": ("browser_navigate", {"url": f"http://127.0.0.1:{PORT}/"}),
    "gui": ("computer", {"action": "get_screenshot"}),
}


def wait_warm(server, sandbox_type: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pools = requests.get(f"{server.url}/health", timeout=10).json()["pools"]
        pool = pools[sandbox_type]
        if pool["warm"] >= pool["target"]:
            return
        time.sleep(0.1)
    raise RuntimeError(f"the {sandbox_type} pool did not refill in {timeout} s")


def call(server, sid: str, tool: str, arguments: dict) -> dict:
    result = server.data("call_tool", identity=sid, tool_name=tool, arguments=arguments)
    if not isinstance(result, dict) or result.get("isError"):
        raise RuntimeError(f"{tool} failed: {result}")
    return result


def claim_and_first_call(server, sandbox_type: str, n: int) -> dict:
    tool, arguments = FIRST_CALL[sandbox_type]
    samples = []
    for _ in range(n):
        wait_warm(server, sandbox_type)
        t = time.perf_counter()
        sid = server.data("create_from_pool", sandbox_type=sandbox_type)
        if sandbox_type == "browser":
            # The page server is set-up, not part of the claim: pause the clock for it.
            paused = time.perf_counter()
            call(server, sid, "run_shell_command", {"command": PAGE_SETUP})
            t += time.perf_counter() - paused
        call(server, sid, tool, arguments)
        samples.append((time.perf_counter() - t) * 1000)
        server.data("release", identity=sid)
    return summary(samples)


def per_call_and_memory(server, backend: str, sandbox_type: str, n: int) -> dict:
    tool, arguments = FIRST_CALL[sandbox_type]
    wait_warm(server, sandbox_type)
    sid = server.data("create_from_pool", sandbox_type=sandbox_type)
    try:
        if sandbox_type == "browser":
            call(server, sid, "run_shell_command", {"command": PAGE_SETUP})
        samples = []
        for _ in range(n):
            t = time.perf_counter()
            call(server, sid, tool, arguments)
            samples.append((time.perf_counter() - t) * 1000)
        if sandbox_type == "browser":
            call(server, sid, "run_shell_command", {"command": "kill $(cat /tmp/site/pid)"})
        time.sleep(2)
        container_id = server.data("get_info", identity=sid)["container_id"]
        pss = {}
        for pid in sandbox_processes(backend, sid, container_id):
            rollup = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
            name = f"{Path(f'/proc/{pid}/comm').read_text().strip()}[{pid}]"
            fields = {line.split(":")[0]: int(line.split()[1]) for line in rollup[1:]}
            pss[name] = round(fields["Pss"] / 1024, 1)
        payload = [k for k in pss if not k.startswith(("bwrap", "docker-init"))]
        return {
            "per_call_ms": summary(samples),
            "idle_pss_mb": round(sum(pss[k] for k in payload), 1),
            "processes": len(payload),
        }
    finally:
        server.data("release", identity=sid)


def measure_backend(tmp: Path, backend: str, n: int) -> dict:
    server = start_server(
        tmp / backend,
        f"--SandboxApp.backend={backend}",
        f"--SandboxApp.sandbox_types={','.join(TYPES)}",
        "--SandboxApp.pool_size=1",
        "--SandboxApp.call_timeout=60",
    )
    try:
        result: dict = {}
        for sandbox_type in TYPES:
            result[sandbox_type] = {
                "claim_first_call_ms": claim_and_first_call(server, sandbox_type, n),
                **per_call_and_memory(server, backend, sandbox_type, n),
            }
        base = result["base"]["claim_first_call_ms"]["p50_ms"]
        for sandbox_type in TYPES:
            p50 = result[sandbox_type]["claim_first_call_ms"]["p50_ms"]
            result[sandbox_type]["claim_first_call_ratio_over_base"] = round(p50 / base, 2)
        return result
    finally:
        stop_server(server)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=30, help="claims per type")
    parser.add_argument("--backends", default="local,docker")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-tools-") as tmp:
        report = {
            backend: measure_backend(Path(tmp), backend, args.n)
            for backend in args.backends.split(",")
        }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
