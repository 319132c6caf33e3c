"""MCP servers added at run time (`add_mcp_servers`): a real stdio server and a real
streamable-HTTP server (both FastMCP from the `mcp` package) started inside the sandbox, listed
as their own groups, called by name, replaced with `overwrite`, and failures named."""

from __future__ import annotations

import textwrap
import time

import pytest

from .conftest import TOKEN, Server, run_official, start_server, stop_server

SERVER_SCRIPT = textwrap.dedent('''
    import sys
    from mcp.server.fastmcp import FastMCP

    label = sys.argv[1]
    server = FastMCP(label, host="127.0.0.1", port=int(sys.argv[3]) if len(sys.argv) > 3 else 8000)

    @server.tool()
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    @server.tool()
    def whoami() -> str:
        """Which server answers."""
        return label

    server.run(transport=sys.argv[2])
''')


@pytest.fixture(scope="module")
def mcp_server(tmp_path_factory: pytest.TempPathFactory) -> Server:
    srv = start_server(tmp_path_factory.mktemp("mcp"), "--SandboxApp.pool_size=1")
    yield srv
    stop_server(srv)


def call(server: Server, sid: str, tool: str, **arguments) -> dict:
    return server.data("call_tool", identity=sid, tool_name=tool, arguments=arguments)


def shell(server: Server, sid: str, command: str) -> str:
    return call(server, sid, "run_shell_command", command=command)["content"][0]["text"]


def prepare(server: Server, sid: str) -> None:
    server.data("call_tool", identity=sid, tool_name="run_shell_command",
                arguments={"command": f"cat > srv.py <<'EOF'\n{SERVER_SCRIPT}\nEOF"})  # fmt: skip


def test_stdio_server_groups_calls_and_overwrite(mcp_server: Server) -> None:
    sid = mcp_server.data("create_from_pool", sandbox_type="base")
    try:
        prepare(mcp_server, sid)
        added = mcp_server.data(
            "add_mcp_servers",
            identity=sid,
            server_configs={"mcpServers": {
                "calc": {"command": "python3", "args": ["srv.py", "calc", "stdio"]}}},
        )  # fmt: skip
        assert added == "OK"
        tools = mcp_server.data("list_tools", identity=sid)
        assert set(tools) == {"generic", "calc"}  # one group per server
        schema = tools["calc"]["add"]["json_schema"]["function"]
        assert schema["parameters"]["required"] == ["a", "b"]
        result = call(mcp_server, sid, "add", a=2, b=40)
        assert result["isError"] is False and result["content"][0]["text"] == "42"
        # An existing name is kept unless overwrite; overwrite replaces the server.
        again = {"mcpServers": {"calc": {"command": "python3",
                                         "args": ["srv.py", "calc-2", "stdio"]}}}  # fmt: skip
        mcp_server.data("add_mcp_servers", identity=sid, server_configs=again)
        assert call(mcp_server, sid, "whoami")["content"][0]["text"] == "calc"
        mcp_server.data("add_mcp_servers", identity=sid, server_configs=again, overwrite=True)
        assert call(mcp_server, sid, "whoami")["content"][0]["text"] == "calc-2"
        # Generic tools come first, whatever the servers offer.
        assert call(mcp_server, sid, "run_shell_command", command="echo hi")["content"][0][
            "text"
        ] == "hi\n"
        unknown = call(mcp_server, sid, "nope")
        assert unknown["isError"] and "not found" in unknown["content"][0]["text"]
    finally:
        mcp_server.data("release", identity=sid)


def test_streamable_http_server(mcp_server: Server) -> None:
    sid = mcp_server.data("create_from_pool", sandbox_type="base")
    try:
        prepare(mcp_server, sid)
        shell(mcp_server, sid, "nohup python3 srv.py web streamable-http 8765 > web.log 2>&1 &")
        deadline = time.monotonic() + 30
        while "Uvicorn running" not in shell(mcp_server, sid, "cat web.log"):
            assert time.monotonic() < deadline, shell(mcp_server, sid, "cat web.log")
            time.sleep(0.2)
        added = mcp_server.data(
            "add_mcp_servers",
            identity=sid,
            server_configs={"mcpServers": {"web": {
                "type": "streamable_http", "url": "http://127.0.0.1:8765/mcp"}}},
        )  # fmt: skip
        assert added == "OK"
        assert call(mcp_server, sid, "whoami")["content"][0]["text"] == "web"
    finally:
        mcp_server.data("release", identity=sid)


def test_a_server_that_fails_to_start_is_named(mcp_server: Server) -> None:
    sid = mcp_server.data("create_from_pool", sandbox_type="base")
    try:
        result = mcp_server.data(
            "add_mcp_servers",
            identity=sid,
            server_configs={"mcpServers": {"broken": {"command": "/no/such/program"}}},
        )
        assert result["isError"] is True
        text = result["content"][0]["text"]
        assert "Failed to initialize server" in text and "broken" in text
        empty = mcp_server.data("add_mcp_servers", identity=sid, server_configs={})
        assert empty["isError"] and "server_configs is required" in empty["content"][0]["text"]
        assert set(mcp_server.data("list_tools", identity=sid)) == {"generic"}
    finally:
        mcp_server.data("release", identity=sid)


def test_official_sdk_add_mcp_servers(mcp_server: Server, agentscope_python: str) -> None:
    script = textwrap.dedent(f"""
        import json
        from agentscope_runtime.sandbox import BaseSandbox
        with BaseSandbox(base_url={mcp_server.url!r}, bearer_token={TOKEN!r}) as sb:
            sb.run_shell_command(command={"cat > srv.py <<'EOF'" + chr(10) + SERVER_SCRIPT + chr(10) + "EOF"!r})
            added = sb.add_mcp_servers(server_configs={{"mcpServers": {{
                "calc": {{"command": "python3", "args": ["srv.py", "calc", "stdio"]}}}}}})
            out = {{"added": added, "tools": sb.list_tools(), "sum": sb.call_tool("add", {{"a": 1, "b": 2}})}}
        print("RESULT=" + json.dumps(out))
    """)
    out = run_official(agentscope_python, script)
    assert out["added"] == "OK"
    assert "calc" in out["tools"] and "add" in out["tools"]["calc"]
    assert out["sum"]["content"][0]["text"] == "3"


def test_a_type_can_declare_mcp_servers(tmp_path) -> None:
    """A custom type's registration names an MCP server: every box of the type starts it while
    it warms, so the pool hands out sandboxes whose catalogue already has its tools."""
    ext = tmp_path / "calc_type.py"
    ext.write_text(textwrap.dedent(f"""
        from jupyter_sandbox import register_sandbox_type
        register_sandbox_type(
            "calc",
            mcp_servers={{"mcpServers": {{"calc": {{
                "command": "python3", "args": ["-c", {SERVER_SCRIPT!r}, "calc", "stdio"]}}}}}},
        )
        register_sandbox_type(
            "broken_calc", mcp_servers={{"mcpServers": {{"calc": {{"command": "/no/such"}}}}}}
        )
    """))
    server = start_server(
        tmp_path / "srv", f"--extension={ext}", "--SandboxApp.sandbox_types=calc",
        "--SandboxApp.pool_size=1",
    )  # fmt: skip
    try:
        sid = server.data("create_from_pool", sandbox_type="calc")
        assert set(server.data("list_tools", identity=sid)) == {"generic", "calc"}
        assert call(server, sid, "add", a=20, b=22)["content"][0]["text"] == "42"
        server.data("release", identity=sid)
        # A cold sandbox is handed out once its box answers; a type's server that cannot start
        # is named by the first call that needs it, and the generic tools keep working.
        sid = server.data("create", sandbox_type="broken_calc")
        text = server.rpc("call_tool", identity=sid, tool_name="add", arguments={}).text
        assert "Failed to initialize server" in text and "calc" in text, text
        assert set(server.data("list_tools", identity=sid)) == {"generic"}
        assert shell(server, sid, "echo ok") == "ok\n"
    finally:
        stop_server(server)
