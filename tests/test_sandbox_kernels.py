"""Sandbox kernels end to end: "Python 3 (sandbox: base)" started through jupyter_client.

A real server (local backend), the kernelspecs installed by the CLI into a temporary Jupyter
data dir, and kernels started with ``KernelManager(kernel_name="sandbox-base")`` exactly as a
Jupyter server would: the proxy claims a sandbox, relays over the server's websocket to the
box's kernel, interrupts, restarts (in a fresh sandbox) and releases on shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import tornado.websocket
from jupyter_client import KernelManager
from jupyter_client.kernelspec import KernelSpecManager
from tornado.httpclient import HTTPClientError, HTTPRequest

from jupyter_sandbox.box.kernel_channels import decode_frame, encode_frame
from jupyter_sandbox.kernels import BUILTIN_TYPES, kernel_spec

from .conftest import ROOT, Server, free_port, start_server, stop_server

TIMEOUT = 60


@pytest.fixture(scope="module")
def kserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("kernels-server"), "--SandboxApp.pool_size=1")
    yield srv
    stop_server(srv)


@pytest.fixture(scope="module")
def jupyter_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The kernelspecs, installed by the CLI under a temporary prefix."""
    prefix = tmp_path_factory.mktemp("prefix")
    subprocess.run(
        [sys.executable, "-m", "jupyter_sandbox.kernels", "install", "--prefix", str(prefix)],
        check=True, capture_output=True,
    )  # fmt: skip
    subprocess.run(
        [sys.executable, "-m", "jupyter_sandbox.kernels", "install", "--prefix", str(prefix),
         "--types", "my-custom"],
        check=True, capture_output=True,
    )  # fmt: skip
    return prefix / "share" / "jupyter"


@pytest.fixture(scope="module")
def kernel_env(kserver: Server, jupyter_data: Path) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("JUPYTER_PATH", str(jupyter_data))
        mp.setenv("JUPYTER_RUNTIME_DIR", str(jupyter_data.parent / "runtime"))
        mp.setenv("JUPYTER_SANDBOX_URL", kserver.url)
        mp.setenv("JUPYTER_SANDBOX_TOKEN", kserver.token)
        yield


@contextlib.contextmanager
def sandbox_kernel(kernel_name: str = "sandbox-base") -> Iterator[tuple[KernelManager, Any]]:
    km = KernelManager(kernel_name=kernel_name)
    km.start_kernel()
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=TIMEOUT)
        yield km, kc
    finally:
        kc.stop_channels()
        if km.has_kernel:
            km.shutdown_kernel()


@pytest.fixture(scope="module")
def kernel(kernel_env: None) -> Iterator[tuple[KernelManager, Any]]:
    with sandbox_kernel() as (km, kc):
        yield km, kc


def run(kc: Any, code: str, timeout: float = TIMEOUT) -> tuple[dict, str, list[dict]]:
    """(execute_reply content, stdout+result text, every iopub message) of one cell."""
    messages: list[dict] = []
    reply = kc.execute_interactive(code, timeout=timeout, output_hook=messages.append)
    text = ""
    for msg in messages:
        if msg["msg_type"] == "stream":
            text += msg["content"]["text"]
        elif msg["msg_type"] == "execute_result":
            text += msg["content"]["data"]["text/plain"] + "\n"
    return reply["content"], text, messages


def sandbox_of(kc: Any) -> str:
    msg_id = kc.kernel_info()
    reply = kc.get_shell_msg(timeout=TIMEOUT)
    # `wait_for_ready` may have sent several kernel_info requests: skip their late replies.
    while reply["parent_header"]["msg_id"] != msg_id:
        reply = kc.get_shell_msg(timeout=TIMEOUT)
    info = reply["content"]["jupyter_sandbox"]
    assert info["sandbox_type"] == "base"
    return info["sandbox_id"]


def listed(server: Server) -> list[str]:
    response = requests.get(f"{server.url}/api/sandboxes", headers=server.headers, timeout=10)
    assert response.status_code == 200, response.text
    return [s["id"] for s in response.json()["sandboxes"]]


def wait_released(server: Server, sandbox_id: str) -> None:
    deadline = time.monotonic() + 20
    while sandbox_id in listed(server):
        assert time.monotonic() < deadline, f"{sandbox_id} was not released"
        time.sleep(0.1)
    response = server.rpc("get_info", identity=sandbox_id)
    assert response.status_code == 404 or response.json()["data"]["state"] == "released"


# -- kernelspecs -----------------------------------------------------------------------------


def test_kernelspecs_installed(kernel_env: None) -> None:
    specs = KernelSpecManager().get_all_specs()
    for sandbox_type in (*BUILTIN_TYPES, "my-custom"):
        spec = specs[f"sandbox-{sandbox_type}"]["spec"]
        assert spec["display_name"] == f"Python 3 (sandbox: {sandbox_type})"
        assert spec["language"] == "python"
        assert spec["interrupt_mode"] == "signal"
        assert spec["metadata"] == {"debugger": False}
        assert spec["argv"][0] == sys.executable
        assert spec["argv"][1:] == [
            "-m", "jupyter_sandbox.kernels", "-f", "{connection_file}", "--type", sandbox_type,
        ]  # fmt: skip


def test_shipped_kernelspecs_are_current() -> None:
    """share/jupyter/kernels (the wheel's shared data) matches what `install` writes."""
    for sandbox_type in BUILTIN_TYPES:
        path = ROOT / "share" / "jupyter" / "kernels" / f"sandbox-{sandbox_type}"
        assert json.loads((path / "kernel.json").read_text()) == kernel_spec(sandbox_type)
        assert (path / "logo-64x64.png").exists()


def test_frames_round_trip() -> None:
    msg = {
        "header": {"msg_id": "1", "msg_type": "comm_msg", "date": "2024-01-01T00:00:00Z"},
        "parent_header": {},
        "metadata": {},
        "content": {"data": {}},
        "buffers": [b"\x00\x01", memoryview(b"xyz")],
    }
    frame = encode_frame(msg, "shell")
    assert isinstance(frame, bytes)
    back = decode_frame(frame)
    assert back["channel"] == "shell" and back["buffers"] == [b"\x00\x01", b"xyz"]
    assert back["header"] == msg["header"]
    text = encode_frame({**msg, "buffers": []}, "iopub")
    assert isinstance(text, str) and decode_frame(text)["channel"] == "iopub"
    for bad in (b"\x00", b"\x00\x00\x00\x05abc", "[]", "{}"):
        with pytest.raises(ValueError):
            decode_frame(bad)


# -- one kernel, several cells ---------------------------------------------------------------


def test_runs_in_the_sandbox(kserver: Server, kernel: tuple[KernelManager, Any]) -> None:
    _, kc = kernel
    secret = kserver.cwd / f"secret-{uuid.uuid4().hex}.txt"
    secret.write_text("host secret")
    content, text, _ = run(
        kc,
        f"import os\nprint(os.getcwd())\nprint(os.path.exists({str(secret)!r}))\n"
        f"print(os.path.exists({str(ROOT / 'pyproject.toml')!r}))",
    )
    assert content["status"] == "ok", content
    assert text.split() == ["/workspace", "False", "False"]
    assert sandbox_of(kc) in listed(kserver)


def test_state_persists_and_agents_share_the_kernel(
    kserver: Server, kernel: tuple[KernelManager, Any]
) -> None:
    _, kc = kernel
    assert run(kc, "shared = 6 * 7")[0]["status"] == "ok"
    content, text, _ = run(kc, "shared + 1")
    assert content["status"] == "ok" and text.strip() == "43"
    sandbox_id = sandbox_of(kc)
    # An agent's run_ipython_cell on that sandbox runs in the very same kernel.
    result = kserver.data(
        "call_tool", identity=sandbox_id, tool_name="run_ipython_cell",
        arguments={"code": "print(shared); from_agent = 'hello'"},
    )  # fmt: skip
    assert result["content"][0]["text"].strip() == "42", result
    assert run(kc, "print(from_agent)")[1].strip() == "hello"


def test_interrupt(kernel: tuple[KernelManager, Any]) -> None:
    km, kc = kernel
    assert run(kc, "before_interrupt = 1")[0]["status"] == "ok"
    timer = threading.Timer(1.0, km.interrupt_kernel)
    timer.start()
    started = time.monotonic()
    content, _, _ = run(kc, "import time\ntime.sleep(60)", timeout=40)
    elapsed = time.monotonic() - started
    timer.join()
    assert content["status"] == "error" and content["ename"] == "KeyboardInterrupt", content
    assert elapsed < 15
    # The kernel lives on, state and all.
    assert run(kc, "print(before_interrupt)")[1].strip() == "1"


def test_stdin(kernel: tuple[KernelManager, Any]) -> None:
    _, kc = kernel
    reply = kc.execute_interactive(
        "answer = input('name? ')", timeout=TIMEOUT, allow_stdin=True,
        stdin_hook=lambda msg: kc.input("sandbox"),
    )  # fmt: skip
    assert reply["content"]["status"] == "ok"
    assert run(kc, "print(answer)")[1].strip() == "sandbox"


def test_binary_buffers(kernel: tuple[KernelManager, Any]) -> None:
    """Messages with buffers (widgets) cross the relays as binary frames."""
    _, kc = kernel
    content, _, messages = run(
        kc,
        "from ipykernel.comm import Comm\n"
        "c = Comm(target_name='jupyter_sandbox_test', data={'x': 1}, buffers=[b'\\x00\\xffbin'])",
    )
    assert content["status"] == "ok", content
    opens = [m for m in messages if m["msg_type"] == "comm_open"]
    assert opens and [bytes(b) for b in opens[0]["buffers"]] == [b"\x00\xffbin"]


# -- lifecycle -------------------------------------------------------------------------------


def test_restart_gives_a_fresh_sandbox_and_shutdown_releases(
    kserver: Server, kernel_env: None
) -> None:
    with sandbox_kernel() as (km, kc):
        first = sandbox_of(kc)
        assert run(kc, "lost = True")[0]["status"] == "ok"
        km.restart_kernel()
        kc.wait_for_ready(timeout=TIMEOUT)
        second = sandbox_of(kc)
        assert second != first
        wait_released(kserver, first)
        content, text, _ = run(kc, "print('lost' in dir())\nimport os; print(os.getcwd())")
        assert content["status"] == "ok" and text.split() == ["False", "/workspace"]
        assert second in listed(kserver)
        km.shutdown_kernel()
        assert not km.is_alive()
    wait_released(kserver, second)


def test_kernel_crash_in_the_box_restarts_it(kernel_env: None) -> None:
    """A kernel that dies inside the sandbox is restarted there (as for agents); the notebook
    is told `restarting` and goes on in the same sandbox."""
    with sandbox_kernel() as (_, kc):
        sandbox_id = sandbox_of(kc)
        kc.execute("import os; os._exit(1)")
        deadline = time.monotonic() + TIMEOUT
        states: list[str] = []
        # The bridge says `restarting`, then `idle` once the box's new kernel is connected.
        while "restarting" not in states or states[-1] != "idle":
            assert time.monotonic() < deadline, states
            msg = kc.get_iopub_msg(timeout=TIMEOUT)
            if msg["msg_type"] == "status":
                states.append(msg["content"]["execution_state"])
        content, text, _ = run(kc, "print(1 + 1)")
        assert content["status"] == "ok" and text.strip() == "2"
        assert sandbox_of(kc) == sandbox_id


def test_parent_death_releases_the_sandbox(kserver: Server, kernel_env: None) -> None:
    """A Jupyter server that dies without shutting its kernels down still frees them."""
    script = (
        "import os\n"
        "from jupyter_client import KernelManager\n"
        "km = KernelManager(kernel_name='sandbox-base')\n"
        "km.start_kernel()\n"
        "kc = km.client(); kc.start_channels(); kc.wait_for_ready(timeout=60)\n"
        "kc.kernel_info()\n"
        "print(kc.get_shell_msg(timeout=60)['content']['jupyter_sandbox']['sandbox_id'])\n"
        "os._exit(0)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    sandbox_id = proc.stdout.strip()
    assert sandbox_id
    wait_released(kserver, sandbox_id)


def test_open_kernel_keeps_its_sandbox_leased(tmp_path: Path, jupyter_data: Path) -> None:
    """An idle notebook's sandbox is not culled while its kernel is connected."""
    srv = start_server(
        tmp_path / "server", "--SandboxApp.pool_size=1", "--SandboxApp.heartbeat_timeout=2"
    )
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("JUPYTER_PATH", str(jupyter_data))
            mp.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
            mp.setenv("JUPYTER_SANDBOX_URL", srv.url)
            mp.setenv("JUPYTER_SANDBOX_TOKEN", srv.token)
            with sandbox_kernel() as (_, kc):
                assert run(kc, "kept = 'yes'")[0]["status"] == "ok"
                sandbox_id = sandbox_of(kc)
                time.sleep(5)  # more than twice the heartbeat timeout, without a call
                assert srv.data("get_info", identity=sandbox_id)["state"] == "running"
                assert run(kc, "print(kept)")[1].strip() == "yes"
    finally:
        stop_server(srv)


def test_no_server_gives_an_error_kernel(kernel_env: None, monkeypatch) -> None:
    monkeypatch.setenv("JUPYTER_SANDBOX_URL", f"http://127.0.0.1:{free_port()}")
    with sandbox_kernel() as (km, kc):
        content, _, messages = run(kc, "1 + 1")
        assert content["status"] == "error" and content["ename"] == "SandboxUnavailable"
        assert "Could not get a 'base' sandbox" in content["evalue"]
        assert any(m["msg_type"] == "error" for m in messages)
        km.shutdown_kernel()
        assert not km.is_alive()


# -- the server's websocket ------------------------------------------------------------------


def test_kernel_socket_auth(kserver: Server) -> None:
    sandbox_id = kserver.data("create_from_pool", sandbox_type="base", meta=None)
    url = f"ws://{kserver.url.removeprefix('http://')}/kernels/{sandbox_id}/channels"

    async def status(request: Any) -> int:
        try:
            ws = await tornado.websocket.websocket_connect(request)
        except HTTPClientError as e:
            return e.code
        ws.close()
        return 101

    async def check() -> None:
        assert await status(url) == 401
        assert await status(f"{url}?token=wrong") == 401
        assert await status(HTTPRequest(url, headers={"Authorization": "Bearer x"})) == 401
        # The sandbox's own token (the desktop's password) is not accepted here.
        info = kserver.data("get_info", identity=sandbox_id)
        assert await status(f"{url}?password={info['runtime_token']}") == 401
        assert await status(f"{url}?token={kserver.token}") == 101
        assert await status(HTTPRequest(url, headers=kserver.headers)) == 101
        # The token is what no web page can send: with it, any origin may connect.
        cross_site = {**kserver.headers, "Origin": "http://elsewhere.example"}
        assert await status(HTTPRequest(url, headers=cross_site)) == 101
        missing = url.replace(sandbox_id, "no-such-sandbox")
        assert await status(HTTPRequest(missing, headers=kserver.headers)) == 404

    try:
        asyncio.run(check())
    finally:
        kserver.data("release", identity=sandbox_id)


def test_kernel_socket_speaks_the_jupyter_protocol(kserver: Server) -> None:
    """A bare websocket client (as jupyter_server's own frontends would) can run code."""
    sandbox_id = kserver.data("create_from_pool", sandbox_type="base", meta=None)
    url = f"ws://{kserver.url.removeprefix('http://')}/kernels/{sandbox_id}/channels"

    async def check() -> None:
        ws = await tornado.websocket.websocket_connect(HTTPRequest(url, headers=kserver.headers))
        msg_id = uuid.uuid4().hex
        header = {"msg_id": msg_id, "msg_type": "execute_request", "session": "s",
                  "username": "u", "date": "2024-01-01T00:00:00Z", "version": "5.3"}  # fmt: skip
        content = {"code": "print(6 * 7)", "silent": False, "store_history": True,
                   "user_expressions": {}, "allow_stdin": False}  # fmt: skip
        ws.write_message(json.dumps({"header": header, "parent_header": {}, "metadata": {},
                                     "content": content, "channel": "shell"}))  # fmt: skip
        seen = {"stream": "", "reply": None}
        while seen["reply"] is None or not seen["stream"]:
            frame = await asyncio.wait_for(ws.read_message(), TIMEOUT)
            assert frame is not None
            msg = json.loads(frame)
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            if msg["channel"] == "iopub" and msg["msg_type"] == "stream":
                seen["stream"] += msg["content"]["text"]
            if msg["channel"] == "shell" and msg["msg_type"] == "execute_reply":
                seen["reply"] = msg["content"]["status"]
        assert seen == {"stream": "42\n", "reply": "ok"}
        ws.close()

    try:
        asyncio.run(check())
    finally:
        kserver.data("release", identity=sandbox_id)
