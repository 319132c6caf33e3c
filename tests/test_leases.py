"""Leases (wire §4.7): idle sessions are culled, their next use restores them transparently
with their files, old ids keep working, and old records are forgotten after `released_ttl`.
Run on both backends."""

from __future__ import annotations

import concurrent.futures
import time
from pathlib import Path

import pytest
import requests

from jupyter_sandbox import envfile

from .conftest import Server, start_server, stop_server

BACKENDS = ["local", "docker"]


def shell(server: Server, sid: str, command: str) -> str:
    result = server.data(
        "call_tool", identity=sid, tool_name="run_shell_command", arguments={"command": command}
    )
    return result["content"][0]["text"]


def wait_for_state(server: Server, sid: str, state: str, timeout: float = 15) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        info = server.data("get_info", identity=sid)
        if info["state"] == state:
            return info
        assert time.monotonic() < deadline, info
        time.sleep(0.1)


@pytest.fixture(params=BACKENDS)
def culling_server(request: pytest.FixtureRequest, tmp_path: Path):
    if request.param == "docker":
        request.getfixturevalue("docker_client")
    srv = start_server(
        tmp_path,
        f"--SandboxApp.backend={request.param}",
        "--SandboxApp.pool_size=1",
        "--SandboxApp.heartbeat_timeout=1.5",
        "--SandboxApp.watcher_interval=0.2",
        "--SandboxApp.released_ttl=4",
    )
    srv.backend = request.param  # type: ignore[attr-defined]
    yield srv
    stop_server(srv)


def test_idle_session_is_culled_then_restored_with_its_files(culling_server: Server) -> None:
    srv = culling_server
    old = srv.data("create_from_pool", sandbox_type="base", meta={"session_ctx_id": "s-1"})
    shell(srv, old, "mkdir -p d && echo kept > d/f.txt")
    before = srv.data("get_info", identity=old)

    culled = wait_for_state(srv, old, "recycled")
    assert culled["recycle_reason"] == "heartbeat_timeout" and culled["recycled_at"]
    assert srv.data("get_status", identity=old) == "exited"  # its sandbox is gone

    # The next use of the old id restores the session: same files, new sandbox.
    assert shell(srv, old, "cat d/f.txt") == "kept\n"
    info = srv.data("get_info", identity=old)  # follows the redirect
    assert info["state"] == "running" and info["container_name"] != before["container_name"]
    assert info["session_ctx_id"] == "s-1"
    assert srv.data("get_session_mapping", session_ctx_id="s-1") == [info["container_name"]]
    assert not Path(before["mount_dir"]).exists()  # the files moved, nothing left behind
    if srv.backend == "docker":  # type: ignore[attr-defined]
        import docker

        client = docker.from_env()
        deadline = time.monotonic() + 15  # the cull removes it behind the state change
        while client.api.containers(all=True, filters={"id": before["container_id"]}):
            assert time.monotonic() < deadline, "the culled container was not removed"
            time.sleep(0.1)
    srv.data("release", identity=old)
    assert srv.data("get_info", identity=info["container_name"])["state"] == "released"


def test_calls_and_file_operations_renew_the_lease(culling_server: Server) -> None:
    srv = culling_server
    sid = srv.data("create_from_pool", sandbox_type="base", meta={"session_ctx_id": "s-2"})
    base = f"{srv.url}/proxy/{sid}/workspace"
    deadline = time.monotonic() + 4  # well past heartbeat_timeout
    while time.monotonic() < deadline:
        # Only /proxy file operations here: upstream forgets to count those.
        response = requests.put(
            f"{base}/file", params={"path": "a.txt"}, data=b"x", headers=srv.headers
        )
        assert response.status_code in (200, 201, 204), response.text
        time.sleep(0.4)
    assert srv.data("get_info", identity=sid)["state"] == "running"
    srv.data("release", identity=sid)


def test_concurrent_calls_restore_once(culling_server: Server) -> None:
    srv = culling_server
    old = srv.data("create_from_pool", sandbox_type="base", meta={"session_ctx_id": "s-3"})
    wait_for_state(srv, old, "recycled")
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        outputs = list(pool.map(lambda _: shell(srv, old, "echo back"), range(6)))
    assert outputs == ["back\n"] * 6
    assert len(srv.data("get_session_mapping", session_ctx_id="s-3")) == 1
    srv.data("release", identity=old)


def test_old_records_are_forgotten_after_released_ttl(culling_server: Server) -> None:
    srv = culling_server
    released = srv.data("create_from_pool", sandbox_type="base")
    srv.data("release", identity=released)
    abandoned = srv.data("create_from_pool", sandbox_type="base", meta={"session_ctx_id": "s-4"})
    wait_for_state(srv, abandoned, "recycled")  # and its session never comes back
    deadline = time.monotonic() + 15
    while any(srv.rpc("get_info", identity=s).status_code != 404 for s in (released, abandoned)):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert "s-4" not in srv.data("list_session_keys")


def test_heartbeat_timeout_zero_never_culls(tmp_path: Path) -> None:
    srv = start_server(
        tmp_path,
        "--SandboxApp.heartbeat_timeout=0",
        "--SandboxApp.watcher_interval=0.1",
    )
    try:
        sid = srv.data("create_from_pool", sandbox_type="base", meta={"session_ctx_id": "s-5"})
        time.sleep(1.5)
        assert srv.data("get_info", identity=sid)["state"] == "running"
    finally:
        stop_server(srv)


@pytest.mark.parametrize("name", ["RELEASED_KEY_TTL", "RELEASE_KET_TTL"])
def test_env_file_maps_the_seeds_ttl_names(tmp_path: Path, name: str) -> None:
    env = tmp_path / "seed.env"
    env.write_text(f"{name}=42\nWATCHER_SCAN_INTERVAL=3\nHEARTBEAT_TIMEOUT=9\n")
    config, _, _ = envfile.load(str(env))
    assert config["SandboxApp"] == {
        "released_ttl": 42.0,
        "watcher_interval": 3.0,
        "heartbeat_timeout": 9.0,
    }
