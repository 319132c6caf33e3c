"""The remaining RPCs and settings on real servers: stop/start, cleanup, check_health,
tool_type filtering, sessions, network off, read-only mounts, custom types, isolation=none."""

from __future__ import annotations

from pathlib import Path

from .conftest import Server, start_server, stop_server, wait_healthy


def shell(server: Server, sid: str, command: str) -> dict:
    return server.data(
        "call_tool", identity=sid, tool_name="run_shell_command", arguments={"command": command}
    )


def text(result: dict) -> str:
    return result["content"][0]["text"]


def test_stop_start_keeps_the_workspace(server: Server) -> None:
    sid = server.data("create_from_pool", meta={"session_ctx_id": "stopper"})
    try:
        shell(server, sid, "echo kept > kept.txt")
        assert server.data("stop", identity=sid) is True
        assert server.data("get_status", identity=sid) == "exited"
        stopped = shell(server, sid, "true")
        assert stopped["isError"] is True and "not running" in text(stopped)
        assert server.data("start", identity=sid) is True
        assert server.data("get_status", identity=sid) == "running"
        assert text(shell(server, sid, "cat kept.txt")) == "kept\n"
        assert server.data("check_health", identity=sid) is True
    finally:
        server.data("release", identity=sid)
    assert server.data("start", identity=sid) is False
    assert server.data("stop", identity="unknown") is False


def test_sessions_and_tool_filter(server: Server) -> None:
    a = server.data("create_from_pool", meta={"session_ctx_id": "team-1"})
    b = server.data("create", sandbox_type="base_async", meta={"session_ctx_id": "team-1"})
    try:
        assert sorted(server.data("get_session_mapping", session_ctx_id="team-1")) == sorted([a, b])
        assert "team-1" in server.data("list_session_keys")
        assert server.data("get_info", identity=b)["sandbox_type"] == "base"
        only = server.data("list_tools", identity=a, tool_type="generic")
        assert list(only) == ["generic"] and len(only["generic"]) == 2
        assert server.data("list_tools", identity=a, tool_type="browser") == {"browser": {}}
        # The bare session id works as an identity too (upstream's prefix fallback).
        bare = server.data("get_info", identity=a)["session_id"]
        assert server.data("get_info", identity=bare)["container_name"] == a
    finally:
        server.data("release", identity=a)
        server.data("release", identity=b)
    assert server.data("get_session_mapping", session_ctx_id="team-1") == []


def test_create_environment(server: Server) -> None:
    sid = server.data("create", environment={"GREETING": "hello"})
    try:
        assert text(shell(server, sid, "echo $GREETING")) == "hello\n"
    finally:
        server.data("release", identity=sid)
    bad = server.rpc("create", environment={"X": 1})
    assert bad.status_code == 400 and "strings" in bad.json()["detail"]


def test_cleanup_destroys_all_and_pools_refill(tmp_path: Path) -> None:
    srv = start_server(tmp_path, "--SandboxApp.pool_size=1")
    try:
        sid = srv.data("create_from_pool", meta={"session_ctx_id": "c"})
        assert srv.data("cleanup") is None
        assert srv.data("get_info", identity=sid)["state"] == "released"
        assert srv.data("list_session_keys") == []
        assert wait_healthy(srv)["pools"]["base"]["warm"] == 1
    finally:
        stop_server(srv)


def test_network_off_and_readonly_mounts(tmp_path: Path) -> None:
    shared = tmp_path / "shared-data"
    shared.mkdir()
    (shared / "data.csv").write_text("a,b\n")
    srv = start_server(
        tmp_path / "srv",
        "--SandboxApp.pool_size=1",
        "--SandboxApp.network=False",
        f"--SandboxApp.readonly_mounts={{'{shared}': '/data'}}",
    )
    try:
        sid = srv.data("create_from_pool")
        out = text(shell(srv, sid, "cat /proc/net/dev | cut -d: -f1 | tr -d ' ' | tail -n +3"))
        assert out.split() == ["lo"]
        assert text(shell(srv, sid, "cat /data/data.csv")) == "a,b\n"
        write = shell(srv, sid, "echo x > /data/new.csv")
        assert "Read-only file system" in str(write["content"])
        assert not (shared / "new.csv").exists()
    finally:
        stop_server(srv)


def test_custom_type_from_extension(tmp_path: Path) -> None:
    module = tmp_path / "my_types.py"
    module.write_text(
        "from jupyter_sandbox import register_sandbox_type\n"
        "register_sandbox_type('analytics', description='custom', environment={'KIND': 'analytics'})\n"
    )
    srv = start_server(
        tmp_path / "srv", f"--extension={module}", "--SandboxApp.sandbox_types=base,analytics"
    )
    try:
        health = wait_healthy(srv)
        assert set(health["pools"]) == {"base", "analytics"}
        sid = srv.data("create_from_pool", sandbox_type="analytics")
        info = srv.data("get_info", identity=sid)
        assert "runtime-sandbox-analytics" in info["version"]
        assert text(shell(srv, sid, "echo $KIND")) == "analytics\n"
    finally:
        stop_server(srv)


def test_isolation_none_is_a_warned_opt_in(tmp_path: Path) -> None:
    srv = start_server(tmp_path, "--LocalBackend.isolation=none", "--SandboxApp.pool_size=1")
    try:
        assert "NOT isolated" in srv.log_text()
        sid = srv.data("create_from_pool")
        assert text(shell(srv, sid, "echo plain")) == "plain\n"
        ipy = srv.data("call_tool", identity=sid, tool_name="run_ipython_cell",
                       arguments={"code": "print(1 + 1)"})  # fmt: skip
        assert text(ipy) == "2\n"
    finally:
        stop_server(srv)
