"""Our own SDK against a real server: the README snippet, async, and clean exceptions."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from jupyter_sandbox import (
    AuthenticationError,
    BaseSandbox,
    BaseSandboxAsync,
    NoSandboxAvailableError,
    SandboxNotFoundError,
    WorkspacePermissionError,
)

from .conftest import Server, free_port, start_server, stop_server


def test_readme_snippet(server: Server) -> None:
    with BaseSandbox(base_url=server.url, bearer_token=server.token) as sb:
        assert sb.run_shell_command(command="echo hi")["content"][0]["text"] == "hi\n"
        version = sb.run_ipython_cell(code="import sys; sys.version")
        assert version["content"][0]["text"].startswith("Out[")
        sb.fs.write("notes/a.txt", "hello")
        assert sb.fs.read("notes/a.txt") == "hello"
        assert sb.get_info()["state"] == "running"
        sid = sb.sandbox_id
    assert server.data("get_info", identity=sid)["state"] == "released"


def test_async_sdk(server: Server) -> None:
    async def main() -> tuple:
        async with BaseSandboxAsync(base_url=server.url, bearer_token=server.token) as sb:
            shell = await sb.call_tool_async("run_shell_command", {"command": "echo a"})
            await sb.fs.write_async("x.txt", b"bytes")
            data = await sb.fs.read_async("x.txt", fmt="bytes")
            info = await sb.get_info_async()
            return shell, data, info

    shell, data, info = asyncio.run(main())
    assert shell["content"][0]["text"] == "a\n"
    assert data == b"bytes"
    assert info["state"] == "running"


def test_errors_are_exceptions(server: Server) -> None:
    with pytest.raises(AuthenticationError):
        with BaseSandbox(base_url=server.url, bearer_token="wrong"):
            pass
    ghost = BaseSandbox(
        sandbox_id="no-such-sandbox", base_url=server.url, bearer_token=server.token
    )
    with pytest.raises(SandboxNotFoundError):
        ghost.run_shell_command(command="true")
    with BaseSandbox(base_url=server.url, bearer_token=server.token) as sb:
        with pytest.raises(WorkspacePermissionError):
            sb.fs.read("../../etc/passwd")


def test_no_sandbox_available(tmp_path: Path) -> None:
    limited = start_server(tmp_path, "--SandboxApp.pool_size=0", "--SandboxApp.max_sandboxes=1")
    try:
        with BaseSandbox(base_url=limited.url, bearer_token=limited.token):
            with pytest.raises(NoSandboxAvailableError):
                with BaseSandbox(base_url=limited.url, bearer_token=limited.token):
                    pass
    finally:
        stop_server(limited)


def test_proxy_refuses_traversal_on_every_route(server: Server) -> None:
    sid = server.data("create_from_pool")
    base = f"{server.url}/proxy/{sid}/workspace"
    h = server.headers
    shell = {"identity": sid, "tool_name": "run_shell_command"}
    try:
        server.data("call_tool", **shell, arguments={"command": "ln -s /etc /workspace/etc-link"})
        for bad in (
            "../x",
            "/etc/passwd",
            "/workspace/../etc/passwd",
            "etc-link/passwd",
            "/workspace2/x",
        ):
            q = {"path": bad}
            assert requests.get(f"{base}/file", params=q, headers=h).status_code == 403, bad
            assert requests.put(f"{base}/file", params=q, data=b"x", headers=h).status_code == 403
            assert requests.get(f"{base}/list", params=q, headers=h).status_code == 403
            assert requests.get(f"{base}/exists", params=q, headers=h).status_code == 403
            assert requests.delete(f"{base}/entry", params=q, headers=h).status_code == 403
            assert requests.post(f"{base}/mkdir", json=q, headers=h).status_code == 403
            moved = requests.post(
                f"{base}/move", json={"source": "etc-link", "destination": bad}, headers=h
            )
            assert moved.status_code == 403, bad
            batch = requests.post(f"{base}/files:batch", files=[("files", ("f", b"x"))],
                                  data={"paths": bad}, headers=h)  # fmt: skip
            assert batch.status_code == 403, bad
        ls = server.data("call_tool", **shell, arguments={"command": "ls /etc/passwd /etc/x 2>&1"})
        assert "No such file" in ls["content"][0]["text"]  # nothing was written outside
    finally:
        server.data("release", identity=sid)


def test_official_sdk_inside_jupyter_server(agentscope_python: str, tmp_path: Path) -> None:
    """`jupyter server` with the extension: routes under {base_url}sandbox/, Jupyter token."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyter_server", f"--port={port}", "--allow-root",
         "--ServerApp.base_url=/hub/user/", "--IdentityProvider.token=jupyter-token",
         "--SandboxApp.pool_size=1", f"--LocalBackend.state_dir={tmp_path / 'state'}",
         f"--ServerApp.root_dir={tmp_path}"],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=(tmp_path / "log").open("wb"),
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/hub/user/sandbox"
    try:
        for _ in range(300):
            try:
                if requests.get(f"{url}/health", timeout=1).json()["pools"]["base"]["warm"]:
                    break
            except (requests.ConnectionError, ValueError, KeyError):
                pass
            assert proc.poll() is None, (tmp_path / "log").read_text()
            asyncio.run(asyncio.sleep(0.1))
        script = (
            "import json\n"
            "from agentscope_runtime.sandbox import BaseSandbox\n"
            f"with BaseSandbox(base_url={url!r}, bearer_token='jupyter-token') as sb:\n"
            "    out = sb.run_shell_command(command='echo via-jupyter')\n"
            "    sb.fs.write('a.txt', 'jt')\n"
            "    print(json.dumps([out['content'][0]['text'], sb.fs.read('a.txt')]))\n"
        )
        result = subprocess.run([agentscope_python, "-c", script], capture_output=True, text=True)
        assert json.loads(result.stdout.splitlines()[-1]) == ["via-jupyter\n", "jt"], result.stderr
    finally:
        proc.terminate()
        proc.wait(30)


def test_overview_lists_pools_and_handed_out_sandboxes(server: Server) -> None:
    """`GET /api/sandboxes` (the JupyterLab panel's view): pools with their use, sandboxes
    handed out (not the pooled ones), newest first; authenticated like every route."""
    assert requests.get(f"{server.url}/api/sandboxes", timeout=30).status_code == 401
    first = server.data("create_from_pool", sandbox_type="base", meta={"session_ctx_id": "ov"})
    second = server.data("create", sandbox_type="base")
    try:
        view = requests.get(f"{server.url}/api/sandboxes", headers=server.headers, timeout=30)
        view.raise_for_status()
        body = view.json()
        ids = [s["id"] for s in body["sandboxes"]]
        assert ids.index(second) < ids.index(first)  # newest first
        entry = next(s for s in body["sandboxes"] if s["id"] == first)
        assert entry["type"] == "base" and entry["state"] == "running"
        assert entry["session"] == "ov" and entry["desktop"] is False
        pool = body["pools"]["base"]
        assert pool["target"] == 2 and pool["in_use"] >= 2
    finally:
        server.data("release", identity=first)
        server.data("release", identity=second)
    after = requests.get(f"{server.url}/api/sandboxes", headers=server.headers, timeout=30).json()
    assert first not in [s["id"] for s in after["sandboxes"]]
