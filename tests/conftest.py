"""Shared fixtures: a real `jupyter sandbox-server` process, and the official SDK's interpreter."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "test-token-0123456789"
AGENTSCOPE_VERSION = "1.1.6.post2"
DEFAULT_SDK_VENV = Path.home() / ".cache" / "jupyter-sandbox" / "agentscope-sdk"

pytest_plugins = ["pytest_jupyter.jupyter_server"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    url: str
    token: str
    proc: subprocess.Popen
    cwd: Path
    log: Path

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def rpc(self, route: str, **body) -> requests.Response:
        return requests.post(f"{self.url}/{route}", json=body, headers=self.headers, timeout=120)

    def data(self, route: str, **body):
        response = self.rpc(route, **body)
        assert response.status_code == 200, response.text
        return response.json()["data"]

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def start_server(tmp: Path, *args: str, token: str | None = TOKEN, wait: bool = True) -> Server:
    """Start `jupyter sandbox-server` on a free port in `tmp` (its cwd and state)."""
    tmp.mkdir(parents=True, exist_ok=True)
    port = free_port()
    cmd = [
        sys.executable, "-m", "jupyter_sandbox", f"--port={port}",
        f"--LocalBackend.state_dir={tmp / 'state'}",
        *args,
    ]  # fmt: skip
    if token is not None:
        cmd.append(f"--SandboxApp.bearer_token={token}")
    log = tmp / "server.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER_SANDBOX", "PYTEST"))}
    env["JUPYTER_RUNTIME_DIR"] = str(tmp / "runtime")
    proc = subprocess.Popen(cmd, cwd=tmp, stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env)
    server = Server(f"http://127.0.0.1:{port}", token or "", proc, tmp, log)
    if wait:
        try:
            wait_healthy(server)
        except BaseException:
            stop_server(server)  # never leave a half-started server (and its jails) behind
            raise
    return server


def wait_healthy(server: Server, pools: bool = True, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise AssertionError(f"server exited {server.proc.returncode}:\n{server.log_text()}")
        try:
            response = requests.get(f"{server.url}/health", timeout=2)
            health = response.json()
            if response.status_code == 200 and (
                not pools or all(p["warm"] >= p["target"] for p in health["pools"].values())
            ):
                return health
        except requests.ConnectionError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"server not ready in {timeout} s:\n{server.log_text()}")


def stop_server(server: Server, sig: int = signal.SIGTERM) -> int:
    if server.proc.poll() is None:
        server.proc.send_signal(sig)
        try:
            server.proc.wait(30)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait()
    return server.proc.returncode


@pytest.fixture(scope="session")
def server(local_server: Server) -> Server:
    """The shared server on the default (local) backend."""
    return local_server


# The shared servers: token set, pool of 2 base sandboxes, short call timeout, small limits.
SHARED_SERVER_ARGS = (
    "--SandboxApp.pool_size=2",
    "--SandboxApp.call_timeout=8",
    "--SandboxApp.memory_limit=512m",
    "--SandboxApp.pids_limit=128",
)


@pytest.fixture(scope="session")
def local_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("server"), *SHARED_SERVER_ARGS)
    yield srv
    stop_server(srv)


DOCKER_IMAGE = "agentscope/runtime-sandbox-base:latest"
DOCKER_SETUP_HINT = (
    "the Docker tests need a running engine with the sandbox images; `bash .ci/run` sets "
    "both up (dockerd, a local Debian base, `jupyter sandbox-builder all --base-image ...`)"
)


@pytest.fixture(scope="session")
def docker_client():
    """A docker-py client for a live engine that has the base sandbox image."""
    import docker

    try:
        client = docker.from_env(timeout=120)
        client.ping()
        client.images.get(DOCKER_IMAGE)
    except Exception as e:
        pytest.fail(f"{DOCKER_SETUP_HINT}: {e}", pytrace=False)
    yield client
    client.close()


@pytest.fixture(scope="session")
def docker_server(tmp_path_factory: pytest.TempPathFactory, docker_client) -> Iterator[Server]:
    """The `server` fixture's twin on the docker backend."""
    srv = start_server(
        tmp_path_factory.mktemp("docker-server"), "--SandboxApp.backend=docker", *SHARED_SERVER_ARGS
    )
    yield srv
    stop_server(srv)


def run_official(python: str, script: str, env: dict[str, str] | None = None) -> dict:
    """Run a script with the official SDK's interpreter; it prints `RESULT=<json>` last."""
    proc = subprocess.run(
        [python, "-c", script], capture_output=True, text=True, timeout=300,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
    )  # fmt: skip
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT=")]
    assert proc.returncode == 0 and lines, f"SDK script failed:\n{proc.stdout}\n{proc.stderr}"
    return json.loads(lines[-1][len("RESULT=") :])


@pytest.fixture(scope="session")
def agentscope_python() -> str:
    """The interpreter of a venv holding the official SDK (created on first use)."""
    python = os.environ.get("AGENTSCOPE_PYTHON") or str(DEFAULT_SDK_VENV / "bin" / "python")
    probe = [python, "-c", "import agentscope_runtime.sandbox"]
    if not os.path.exists(python) or subprocess.run(probe, capture_output=True).returncode:
        subprocess.run([sys.executable, "-m", "venv", str(DEFAULT_SDK_VENV)], check=True)
        python = str(DEFAULT_SDK_VENV / "bin" / "python")
        subprocess.run(
            [python, "-m", "pip", "install", "-q", f"agentscope-runtime=={AGENTSCOPE_VERSION}"],
            check=True,
        )
    return python
