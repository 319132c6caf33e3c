"""The `jupyter sandbox-server` process: configuration, refusals, shutdown and crash recovery."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import Server, start_server, stop_server, wait_healthy

# v1 (these machines: one hierarchy per controller) or v2 (one unified hierarchy).
CGROUP_ROOT = next(
    (
        p
        for p in (
            Path("/sys/fs/cgroup/memory/jupyter-sandbox"),
            Path("/sys/fs/cgroup/jupyter-sandbox"),
        )
        if p.exists()
    ),
    Path("/sys/fs/cgroup/memory/jupyter-sandbox"),
)


def run_cli(
    *args: str, cwd: Path | None = None, timeout: float = 60
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "jupyter_sandbox", *args],
        capture_output=True, text=True, timeout=timeout, cwd=cwd,
    )  # fmt: skip


def alive(pids: list[int]) -> list[str]:
    """Processes among `pids` that still exist (zombies awaiting their reaper do not count)."""
    out = []
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        if "State:\tZ" not in status:
            out.append(status.splitlines()[0] + f" pid {pid}")
    return out


def kill_all(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):  # gone with its parent already
            os.kill(pid, signal.SIGKILL)


def wait_for(condition, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def sandbox_pids(name: str) -> list[int]:
    procs = CGROUP_ROOT / name / "cgroup.procs"
    return [int(p) for p in procs.read_text().split()] if procs.exists() else []


def test_help_all_documents_every_trait() -> None:
    out = run_cli("--help-all").stdout
    for trait in (
        "workers", "bearer_token", "sandbox_types", "pool_size", "auto_cleanup",
        "container_prefix", "backend", "mount_dir", "readonly_mounts", "port_range",
        "heartbeat_timeout", "max_sandboxes", "call_timeout", "network", "memory_limit",
        "cpu_limit", "pids_limit", "extensions", "env_file", "image_registry",
        "image_namespace", "image_tag",
    ):  # fmt: skip
        assert f"--SandboxApp.{trait}" in out, trait
    assert "--LocalBackend.isolation" in out
    assert "--DockerBackend.access" in out
    assert "Default: 1\n" in out  # traitlets shows each default under its help


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--ip=0.0.0.0"], "refusing to listen on '0.0.0.0' without a token"),
        (["--ip=*"], "without a token"),
        (["--LocalBackend.bwrap_path=/nonexistent/bwrap"], "apt-get install bubblewrap"),
        (["--SandboxApp.workers=2"], "Redis"),
        (
            ["--SandboxApp.backend=k8s", "--KubernetesBackend.kubeconfig=/nonexistent/kubeconfig"],
            "cannot load /nonexistent/kubeconfig",
        ),
        (
            ["--SandboxApp.backend=docker", "--DockerBackend.docker_host=unix:///nonexistent.sock"],
            "no Docker engine answers at unix:///nonexistent.sock",
        ),
        (["--SandboxApp.sandbox_types=base,nope"], "unknown type(s) nope"),
        (["--SandboxApp.port_range=9-3"], "need 0 < first < last <= 65536"),
    ],
)
def test_refuses_to_start_with_a_reason(tmp_path: Path, args: list[str], message: str) -> None:
    result = run_cli("--port=0", *args, cwd=tmp_path)
    assert result.returncode != 0
    assert message in result.stdout + result.stderr


def test_env_file_sets_traits(tmp_path: Path) -> None:
    env = tmp_path / "custom.env"
    env.write_text(
        "# a seed .env\n"
        "DEFAULT_SANDBOX_TYPE=base,filesystem\n"
        "POOL_SIZE=1\n"
        "CONTAINER_PREFIX_KEY='envprefix-'\n"
        "BEARER_TOKEN=from-env-file\n"
        "REDIS_ENABLED=False\n"
        "HEARTBEAT_LOCK_TTL=120\n"
        "RUNTIME_SANDBOX_IMAGE_NAMESPACE=myns\n"
        "RUNTIME_SANDBOX_IMAGE_TAG=v2\n"
    )
    server = start_server(tmp_path, f"--config={env}", token=None)
    try:
        health = wait_healthy(server)
        assert set(health["pools"]) == {"base", "filesystem"}
        server.token = "from-env-file"
        sid = server.data("create_from_pool", sandbox_type="filesystem")
        assert sid.startswith("envprefix-")
        # The image-name settings reach the records (and the Docker backend's images).
        assert server.data("get_info", identity=sid)["version"] == (
            "myns/runtime-sandbox-filesystem:v2"
        )
        assert "HEARTBEAT_LOCK_TTL is understood but not supported yet" in server.log_text()
    finally:
        stop_server(server)


@pytest.mark.parametrize(
    ("line", "message"),
    [("POOL_SIZE=lots", "bad value for POOL_SIZE"), ("NOT_A_SETTING=1", "unknown variable")],
)
def test_env_file_errors_are_clear(tmp_path: Path, line: str, message: str) -> None:
    env = tmp_path / "bad.env"
    env.write_text(f"POOL_SIZE=1\n{line}\n")
    result = run_cli(f"--config={env}", "--port=0", cwd=tmp_path)
    assert result.returncode != 0
    assert f"{env}:2" in result.stdout + result.stderr
    assert message in result.stdout + result.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_shutdown_destroys_every_sandbox(tmp_path: Path, sig: int) -> None:
    server = start_server(tmp_path, "--SandboxApp.pool_size=2")
    claimed = server.data("create_from_pool", meta={"session_ctx_id": "s"})
    wait_healthy(server)
    names = [p.name for p in (tmp_path / "state").iterdir()]
    assert claimed in names and len(names) == 3
    pids = [pid for name in names for pid in sandbox_pids(name)]
    assert pids
    assert stop_server(server, sig) == 0
    assert list((tmp_path / "state").iterdir()) == []
    assert alive(pids) == []
    assert not any((CGROUP_ROOT / name).exists() for name in names)


def test_kill_9_leaves_nothing_after_next_start(tmp_path: Path) -> None:
    server = start_server(tmp_path, "--SandboxApp.pool_size=2")
    names = [p.name for p in (tmp_path / "state").iterdir()]
    pids = [pid for name in names for pid in sandbox_pids(name)]
    assert len(names) == 2 and pids
    server.proc.kill()
    server.proc.wait()
    # --die-with-parent takes the jails down with their server at once...
    deadline = time.monotonic() + 10
    while alive(pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert alive(pids) == []
    # ...and the next server reaps what is left on disk: state dirs and cgroups.
    successor = start_server(tmp_path, "--SandboxApp.pool_size=0")
    try:
        assert "reaped 2 sandbox(es)" in successor.log_text()
        assert not any((tmp_path / "state" / name).exists() for name in names)
        assert not any((CGROUP_ROOT / name).exists() for name in names)
    finally:
        stop_server(successor)


def test_dead_sandbox_gets_a_clear_error_and_pool_skips_dead(tmp_path: Path) -> None:
    server = start_server(tmp_path, "--SandboxApp.pool_size=1")
    try:
        sid = server.data("create_from_pool", meta={"session_ctx_id": "d"})
        kill_all(sandbox_pids(sid))
        wait_for(lambda: server.data("get_status", identity=sid) == "exited")
        result = server.data("call_tool", identity=sid, tool_name="run_shell_command",
                             arguments={"command": "true"})  # fmt: skip
        assert result["isError"] is True
        assert "is not running" in result["content"][0]["text"]
        # A pooled sandbox that died while waiting is discarded, never handed out.
        wait_healthy(server)
        pooled = [p.name for p in (tmp_path / "state").iterdir() if p.name != sid]
        kill_all(sandbox_pids(pooled[0]))
        wait_for(lambda: not alive(sandbox_pids(pooled[0])))
        time.sleep(0.5)  # the server notices a dead child when it reaps it
        fresh = server.data("create_from_pool", meta={"session_ctx_id": "e"})
        assert fresh != pooled[0]
        out = server.data("call_tool", identity=fresh, tool_name="run_shell_command",
                          arguments={"command": "echo ok"})  # fmt: skip
        assert out["content"][0]["text"] == "ok\n"
        assert server.data("release", identity=sid) is True
    finally:
        stop_server(server)


def test_rpc_bodies_are_validated(server: Server) -> None:
    import requests

    def post(route: str, body: bytes) -> requests.Response:
        return requests.post(f"{server.url}/{route}", data=body, headers=server.headers)

    assert post("get_info", b"{not json").status_code == 400
    assert post("get_info", b"[1, 2]").status_code == 400
    assert post("get_info", b"{}").status_code == 400  # identity missing
    bad_key = post("release", json.dumps({"identity": "x", "bogus": 1}).encode())
    assert bad_key.status_code == 400 and "bogus" in bad_key.json()["detail"]
    assert post("release", json.dumps({"identity": "unknown"}).encode()).json() == {"data": True}
    assert post("get_status", json.dumps({"identity": "unknown"}).encode()).json() == {"data": None}
    unknown = post("call_tool", json.dumps({"identity": "nope", "tool_name": "x"}).encode())
    assert unknown.status_code == 404
    # null values are tolerated; `args` is an alias of the first parameter.
    assert post("list_session_keys", b"null").status_code == 200
    assert post("get_session_mapping_async", json.dumps({"args": ["zzz"]}).encode()).json() == {
        "data": []
    }
    health = post("health", b"{}")
    assert health.status_code == 405


def test_open_server_resists_browsers(tmp_path: Path) -> None:
    """Without a token: no DNS rebinding (Host check) and no cross-site simple POSTs."""
    import requests

    srv = start_server(tmp_path, "--SandboxApp.pool_size=0", token=None)
    try:
        url = f"{srv.url}/list_session_keys"
        assert requests.post(url, json={}).json() == {"data": []}
        simple = requests.post(url, data="{}", headers={"Content-Type": "text/plain"})
        assert simple.status_code == 415
        rebound = requests.post(url, json={}, headers={"Host": "attacker.example:80"})
        assert rebound.status_code == 403
    finally:
        stop_server(srv)


def test_bad_meta_and_environment_leak_nothing(server: Server) -> None:
    before = wait_healthy(server)["pools"]["base"]["warm"]
    for body in ({"meta": "x"}, {"meta": {"session_ctx_id": [1]}}):
        response = server.rpc("create_from_pool", **body)
        assert response.status_code == 400, response.text
    for env in ({"A=B": "x"}, {"A": "x\u0000y"}, {"A": 1}):
        assert server.rpc("create", environment=env).status_code == 400
    assert wait_healthy(server)["pools"]["base"]["warm"] == before
    assert "" not in server.data("list_session_keys")


def test_flags_win_over_the_env_file(tmp_path: Path) -> None:
    env = tmp_path / "seed.env"
    env.write_text("POOL_SIZE=3\nDEFAULT_SANDBOX_TYPE=base\n")
    srv = start_server(tmp_path, f"--config={env}", "--SandboxApp.pool_size=0")
    try:
        assert wait_healthy(srv)["pools"]["base"]["target"] == 0
    finally:
        stop_server(srv)


def test_kill_9_while_sandboxes_start_leaves_no_process(tmp_path: Path) -> None:
    server = start_server(tmp_path, "--SandboxApp.pool_size=4", wait=False)
    deadline = time.monotonic() + 30
    while not list((tmp_path / "state").glob("*/owner.json")):
        assert time.monotonic() < deadline and server.proc.poll() is None, server.log_text()
        time.sleep(0.01)
    server.proc.kill()  # mid-warm-up: some jails exist, others are being made
    server.proc.wait()

    def jail_processes() -> list[str]:
        out = []
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
                status = (cmdline.parent / "status").read_text()
            except OSError:
                continue
            if str(tmp_path) in text and "State:\tZ" not in status:
                out.append(text[:120])
        return out

    wait_for(lambda: not jail_processes())
