"""The official AgentScope SDK (PyPI, in its own venv), unchanged, against our server.

This is the conformance suite of wire §6 items 1–9 and 13, run with a bearer token set, on
both backends (every test runs once on `local` and once on `docker`).
Each scenario is a script run by the SDK's interpreter; it prints one JSON document of what
it observed, and the assertions live here.
"""

from __future__ import annotations

import textwrap

import pytest
import requests

from .conftest import Server, run_official, start_server, stop_server

PRELUDE = """
import asyncio, json, os, sys
from agentscope_runtime.sandbox import BaseSandbox, BaseSandboxAsync
URL, TOKEN = os.environ["SANDBOX_URL"], os.environ["SANDBOX_TOKEN"]
out = {}
"""


def run_sdk(python: str, server: Server, body: str, token: str | None = None) -> dict:
    script = PRELUDE + textwrap.dedent(body) + "\nprint('RESULT=' + json.dumps(out, default=str))\n"
    env = {"SANDBOX_URL": server.url, "SANDBOX_TOKEN": token or server.token}
    return run_official(python, script, env)


BACKENDS = ["local", "docker"]


@pytest.fixture(scope="module", params=BACKENDS)
def server(request: pytest.FixtureRequest) -> Server:
    return request.getfixturevalue(f"{request.param}_server")


def backend_args(request: pytest.FixtureRequest, backend: str) -> list[str]:
    if backend == "docker":
        request.getfixturevalue("docker_client")  # a clear failure if there is no engine
    return [f"--SandboxApp.backend={backend}"]


@pytest.fixture(scope="module")
def sync_run(agentscope_python: str, server: Server) -> dict:
    return run_sdk(
        agentscope_python,
        server,
        """
        with BaseSandbox(base_url=URL, bearer_token=TOKEN) as sb:
            sid = sb.sandbox_id
            out["id"] = sid
            out["tools"] = sb.list_tools()
            out["echo"] = sb.run_shell_command(command="echo hi")
            out["stderr"] = sb.run_shell_command(command="echo oops >&2; exit 3")
            out["pwd"] = sb.run_shell_command(command="pwd")
            sb.run_ipython_cell(code="x = 41")
            out["state"] = sb.run_ipython_cell(code="print(x + 1)")
            out["expr"] = sb.run_ipython_cell(code="x")
            out["zerodiv"] = sb.run_ipython_cell(code="1/0")
            out["call_ipython"] = sb.call_tool("run_ipython_cell", {"code": "print('via call_tool')"})
            out["nope"] = sb.call_tool("nope", {})
            out["info"] = sb.get_info()
            fs = sb.fs
            out["mkdir"] = fs.mkdir("d1")
            out["write"] = fs.write("d1/a.txt", "hello")
            out["write_bytes"] = fs.write("d1/b.bin", b"\\x00\\x01")
            import io
            out["write_stream"] = fs.write("d1/c.txt", io.BytesIO(b"streamed"))
            out["read"] = fs.read("d1/a.txt")
            out["read_bytes"] = list(fs.read("d1/b.bin", fmt="bytes"))
            out["read_stream"] = b"".join(fs.read("d1/c.txt", fmt="stream")).decode()
            out["exists"] = [fs.exists("d1/a.txt"), fs.exists("d1/zzz")]
            out["list"] = sorted(e["path"] for e in fs.list(".", depth=10))
            out["move"] = fs.move("d1/a.txt", "d2/a.txt")
            out["many"] = fs.write_many([{"path": "m/1.txt", "data": "one"}, {"path": "m/2.txt", "data": b"two"}])
            with open("/tmp/_local_upload.txt", "w") as f:
                f.write("from path")
            out["from_path"] = fs.write_from_path("up/x.txt", "/tmp/_local_upload.txt")
            out["read_moved"] = fs.read("d2/a.txt")
            fs.remove("d2")
            out["after_remove"] = fs.exists("d2/a.txt")
            out["shell_sees"] = sb.run_shell_command(command="cat m/1.txt up/x.txt")
        out["released_info"] = BaseSandbox(sandbox_id=sid, base_url=URL, bearer_token=TOKEN).get_info()
        """,
    )


def test_health(server: Server) -> None:
    response = requests.get(f"{server.url}/health", timeout=5)
    assert response.status_code == 200
    assert response.json()["status"] == "healthy"


def test_list_tools_generic_group(sync_run: dict) -> None:
    generic = sync_run["tools"]["generic"]
    assert set(generic) == {"run_ipython_cell", "run_shell_command"}
    fn = generic["run_shell_command"]["json_schema"]["function"]
    assert fn["parameters"] == {
        "type": "object",
        "properties": {"command": {"type": "string", "description": "Shell command to execute"}},
        "required": ["command"],
    }
    assert generic["run_ipython_cell"]["json_schema"]["function"]["parameters"]["required"] == [
        "code"
    ]


def test_shell_result_shape(sync_run: dict) -> None:
    echo = sync_run["echo"]
    assert echo["isError"] is False
    assert echo["content"][0] == {
        "type": "text",
        "text": "hi\n",
        "annotations": None,
        "description": "stdout",
    }
    assert echo["content"][-1]["description"] == "returncode"
    assert echo["content"][-1]["text"] == "0"
    err = sync_run["stderr"]
    assert err["isError"] is True
    assert [c["description"] for c in err["content"]] == ["stdout", "stderr", "returncode"]
    assert err["content"][1]["text"] == "oops\n" and err["content"][2]["text"] == "3"
    assert sync_run["pwd"]["content"][0]["text"] == "/workspace\n"


def test_ipython_state_and_traceback(sync_run: dict) -> None:
    assert sync_run["state"]["content"][0]["text"] == "42\n"
    assert sync_run["state"]["isError"] is False
    assert "Out[" in sync_run["expr"]["content"][0]["text"]
    assert "41" in sync_run["expr"]["content"][0]["text"]
    zerodiv = sync_run["zerodiv"]
    assert "ZeroDivisionError" in zerodiv["content"][0]["text"]
    assert zerodiv["content"][0]["description"] == "stdout"
    assert sync_run["call_ipython"]["content"][0]["text"] == "via call_tool\n"


def test_unknown_tool_is_error_dict(sync_run: dict) -> None:
    assert isinstance(sync_run["nope"], dict)
    assert sync_run["nope"]["isError"] is True
    assert "nope" in sync_run["nope"]["content"][0]["text"]


def test_get_info_fields(sync_run: dict) -> None:
    info = sync_run["info"]
    assert len(info["runtime_token"]) == 32
    assert info["url"]
    assert "runtime-sandbox-base" in info["version"]
    assert info["state"] == "running"
    assert info["session_ctx_id"] and info["container_name"] == sync_run["id"]
    assert info["sandbox_type"] == "base"


def test_fs_with_bearer_token(sync_run: dict) -> None:
    assert sync_run["mkdir"] is True
    assert sync_run["write"]["path"] == "/workspace/d1/a.txt"
    assert sync_run["write"]["size"] == 5 and sync_run["write"]["type"] == "file"
    assert sync_run["read"] == "hello"
    assert sync_run["read_bytes"] == [0, 1]
    assert sync_run["read_stream"] == "streamed"
    assert sync_run["exists"] == [True, False]
    assert "/workspace/d1/a.txt" in sync_run["list"] and "/workspace/d1" in sync_run["list"]
    assert sync_run["move"]["path"] == "/workspace/d2/a.txt"
    assert [e["path"] for e in sync_run["many"]] == ["/workspace/m/1.txt", "/workspace/m/2.txt"]
    assert sync_run["from_path"]["size"] == len("from path")
    assert sync_run["read_moved"] == "hello"
    assert sync_run["after_remove"] is False
    assert sync_run["shell_sees"]["content"][0]["text"] == "onefrom path"


def test_release_then_info_shows_released(sync_run: dict) -> None:
    assert sync_run["released_info"]["state"] == "released"


def test_async_sdk(agentscope_python: str, server: Server) -> None:
    out = run_sdk(
        agentscope_python,
        server,
        """
        async def main():
            async with BaseSandboxAsync(base_url=URL, bearer_token=TOKEN) as sb:
                out["tools"] = await sb.list_tools_async()
                out["shell"] = await sb.call_tool_async("run_shell_command", {"command": "echo async"})
                out["ipy"] = await sb.call_tool_async("run_ipython_cell", {"code": "print(6*7)"})
                out["info_async"] = await sb.get_info_async()
                out["fs_write"] = await sb.fs.write_async("a.txt", "async text")
                out["fs_read"] = await sb.fs.read_async("a.txt")
        asyncio.run(main())
        """,
    )
    assert "generic" in out["tools"]
    assert out["shell"]["content"][0]["text"] == "async\n"
    assert out["ipy"]["content"][0]["text"] == "42\n"
    # Upstream answers 500 here (the SDK sends {"args": id}); we accept the alias.
    assert isinstance(out["info_async"], dict) and out["info_async"]["state"] == "running"
    assert out["fs_read"] == "async text"


def test_wrong_token_gives_error_string(agentscope_python: str, server: Server) -> None:
    out = run_sdk(
        agentscope_python,
        server,
        """
        sb = BaseSandbox(sandbox_id="whatever", base_url=URL, bearer_token="wrong")
        out["tools"] = sb.list_tools()
        """,
        token="wrong",
    )
    assert isinstance(out["tools"], str) and out["tools"].startswith("Error: HTTP 401")


def test_unknown_type_is_rejected(server: Server) -> None:
    response = server.rpc("create_from_pool", sandbox_type="zzz", meta=None)
    assert response.status_code == 400
    assert "zzz" in response.json()["detail"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_max_sandboxes_makes_enter_raise(
    agentscope_python: str, tmp_path, request: pytest.FixtureRequest, backend: str
) -> None:
    limited = start_server(
        tmp_path,
        *backend_args(request, backend),
        "--SandboxApp.pool_size=1",
        "--SandboxApp.max_sandboxes=1",
    )
    try:
        out = run_sdk(
            agentscope_python,
            limited,
            """
            with BaseSandbox(base_url=URL, bearer_token=TOKEN) as first:
                out["first"] = first.run_shell_command(command="echo one")["content"][0]["text"]
                try:
                    with BaseSandbox(base_url=URL, bearer_token=TOKEN):
                        out["second"] = "entered"
                except RuntimeError as e:
                    out["second"] = "RuntimeError: " + str(e)[:40]
            """,
        )
    finally:
        stop_server(limited)
    assert out["first"] == "one\n"
    assert out["second"].startswith("RuntimeError: No sandbox available")
    assert "max_sandboxes" in limited.log_text()
