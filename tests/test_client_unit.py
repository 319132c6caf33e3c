"""Unit tests of jupyter_sandbox.client against a small real HTTP server.

The server is a tornado app on 127.0.0.1 (random port, in a background thread) that
records every request and answers with canned AgentScope wire envelopes. The tests check
the exact routes, query parameters, headers and JSON/multipart bodies the client sends
(agentscope-wire.md §1.4 and §1.6), connection reuse, error mapping, and that our public
signatures match the official SDK's.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import socket
import subprocess
import sys
import textwrap
import threading
from dataclasses import dataclass, field
from typing import Any

import pytest
import tornado.httpserver
import tornado.httputil
import tornado.netutil
import tornado.web

from jupyter_sandbox.client import (
    AuthenticationError,
    BaseSandbox,
    BaseSandboxAsync,
    BrowserSandbox,
    BrowserSandboxAsync,
    FilesystemSandbox,
    FilesystemSandboxAsync,
    GuiSandbox,
    GuiSandboxAsync,
    NoSandboxAvailableError,
    Sandbox,
    SandboxAsync,
    SandboxConnectionError,
    SandboxError,
    SandboxNotFoundError,
    SandboxServerError,
    WorkspaceNotFoundError,
    WorkspacePermissionError,
)

TOKEN = "secret-token"
RUNTIME_TOKEN = "rt-0123456789abcdef"
TEXT = "héllo wörld\n"
BLOB = bytes(range(256)) * 64  # 16 KiB


# ============================================================================ the server


@dataclass
class Req:
    """One request as the server saw it."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: tornado.httputil.HTTPHeaders
    body: bytes
    client_port: int

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def route(self) -> str:
        return self.path.lstrip("/")

    def form(self) -> tuple[dict[str, list[bytes]], dict[str, list[Any]]]:
        args: dict[str, list[bytes]] = {}
        files: dict[str, list[Any]] = {}
        tornado.httputil.parse_body_arguments(
            self.headers["Content-Type"], self.body, args, files, self.headers
        )
        return args, files


@dataclass
class Answer:
    status: int = 200
    body: Any = None  # dict/list -> JSON, str/bytes -> raw
    content_type: str | None = None
    delay: float = 0.0


def _entry(path: str, size: int | None = None, kind: str = "file") -> dict:
    full = path if path.startswith("/") else f"/workspace/{path}"
    return {
        "path": full,
        "name": os.path.basename(full),
        "type": kind,
        "size": size,
        "mtime_ms": 1795663322321,
    }


@dataclass
class FakeServer:
    """Records requests and answers like a sandbox server with canned data."""

    requests: list[Req] = field(default_factory=list)
    overrides: dict[tuple[str, str], Answer] = field(default_factory=dict)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def reset(self) -> None:
        self.requests.clear()
        self.overrides.clear()

    def answer_with(self, method: str, route: str, answer: Answer) -> None:
        """Override the answer to ``method route`` (route without the leading slash)."""
        self.overrides[(method, route)] = answer

    def routes(self) -> list[str]:
        return [f"{r.method} {r.route}" for r in self.requests]

    # -------------------------------------------------------------- canned answers

    def answer(self, req: Req) -> Answer:
        override = self.overrides.get((req.method, req.route))
        if override is not None:
            return override
        if req.route.startswith("proxy/"):
            return self._workspace(req)
        name = req.route.removesuffix("_async")
        body = req.json if req.body else {}
        if name == "create_from_pool":
            return Answer(body={"data": "sb-async" if req.route.endswith("_async") else "sb-1"})
        if name == "release":
            return Answer(body={"data": True})
        if name == "check_health":
            return Answer(body={"data": True})
        if name == "get_info":
            ident = body.get("identity")
            return Answer(
                body={
                    "data": {
                        "container_name": ident,
                        "runtime_token": RUNTIME_TOKEN,
                        "url": "http://localhost:32999",
                        "version": "agentscope/runtime-sandbox-base:latest",
                        "state": "running",
                        "session_ctx_id": "ctx",
                    }
                }
            )
        if name == "list_tools":
            return Answer(body={"data": {"generic": {"run_shell_command": {"name": "x"}}}})
        if name == "call_tool":
            return Answer(
                body={
                    "data": {
                        "meta": None,
                        "content": [
                            {
                                "type": "text",
                                "text": json.dumps([body["tool_name"], body["arguments"]]),
                                "annotations": None,
                                "description": "stdout",
                            }
                        ],
                        "isError": False,
                    }
                }
            )
        if name == "add_mcp_servers":
            return Answer(body={"data": "OK"})
        return Answer(404, {"detail": "Not Found"})

    def _workspace(self, req: Req) -> Answer:
        _, _sid, rest = req.route.split("/", 2)
        path = (req.query.get("path") or [""])[0]
        key = (req.method, rest)
        if key == ("GET", "workspace/file"):
            if path == "missing.txt":
                return Answer(404, {"detail": "not found"})
            if req.query["format"] == ["text"]:
                return Answer(body=TEXT.encode(), content_type="text/plain; charset=utf-8")
            return Answer(body=BLOB, content_type="application/octet-stream")
        if key == ("PUT", "workspace/file"):
            return Answer(body=_entry(path, len(req.body)))
        if key == ("POST", "workspace/files:batch"):
            args, files = req.form()
            return Answer(
                body=[
                    _entry(p.decode(), len(f["body"]))
                    for p, f in zip(args["paths"], files["files"], strict=True)
                ]
            )
        if key == ("GET", "workspace/list"):
            return Answer(body=[_entry(f"{path}/a.txt", 5), _entry(f"{path}/d", None, "dir")])
        if key == ("GET", "workspace/exists"):
            return Answer(body={"exists": path == "yes.txt"})
        if key == ("DELETE", "workspace/entry"):
            return Answer(204)
        if key == ("POST", "workspace/move"):
            return Answer(body=_entry(req.json["destination"], 5))
        if key == ("POST", "workspace/mkdir"):
            return Answer(body={"created": req.json["path"] != "exists"})
        return Answer(404, {"detail": "not found"})

    # -------------------------------------------------------------------- running

    def start(self) -> None:
        started = threading.Event()
        server = self

        class Handler(tornado.web.RequestHandler):
            async def _any(self, *_args: Any) -> None:
                r = self.request
                req = Req(
                    method=r.method,
                    path=r.path,
                    query={k: [v.decode() for v in vs] for k, vs in r.query_arguments.items()},
                    headers=r.headers,
                    body=r.body,
                    client_port=r.connection.context.address[1],
                )
                server.requests.append(req)
                ans = server.answer(req)
                if ans.delay:
                    await asyncio.sleep(ans.delay)
                self.set_status(ans.status)
                body = ans.body
                if isinstance(body, (dict, list)):
                    self.set_header("Content-Type", ans.content_type or "application/json")
                    body = json.dumps(body)
                elif ans.content_type:
                    self.set_header("Content-Type", ans.content_type)
                if body is not None:
                    self.write(body)

            get = post = put = delete = patch = _any

        def run() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)

            async def setup() -> None:
                sockets = tornado.netutil.bind_sockets(0, "127.0.0.1")
                server.port = sockets[0].getsockname()[1]
                http = tornado.httpserver.HTTPServer(tornado.web.Application([(r".*", Handler)]))
                http.add_sockets(sockets)

            loop.run_until_complete(setup())
            self._loop = loop
            started.set()
            loop.run_forever()

        self._thread = threading.Thread(target=run, name="fake-sandbox-server", daemon=True)
        self._thread.start()
        assert started.wait(10), "fake server did not start"

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


@pytest.fixture(scope="module")
def _server():
    srv = FakeServer()
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def server(_server: FakeServer, monkeypatch: pytest.MonkeyPatch) -> FakeServer:
    for var in ("JUPYTER_SANDBOX_URL", "JUPYTER_SANDBOX_TOKEN", "RUNTIME_SANDBOX_TIMEOUT"):
        monkeypatch.delenv(var, raising=False)
    _server.reset()
    return _server


def _stdout_of(result: Any) -> Any:
    """Decode the echo the fake server puts in a call_tool result."""
    return json.loads(result["content"][0]["text"])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ==================================================================== settings / setup


def test_base_url_is_required(server: FakeServer) -> None:
    with pytest.raises(ValueError, match="JUPYTER_SANDBOX_URL"):
        BaseSandbox()
    with pytest.raises(ValueError, match="base_url"):
        BaseSandboxAsync()


def test_environment_defaults(server: FakeServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JUPYTER_SANDBOX_URL", server.url + "/")
    monkeypatch.setenv("JUPYTER_SANDBOX_TOKEN", "from-env")
    monkeypatch.setenv("RUNTIME_SANDBOX_TIMEOUT", "7")
    sb = BaseSandbox(sandbox_id="sb-env")
    assert sb.base_url == server.url
    assert sb.timeout == 7.0
    sb.run_shell_command("true")
    assert server.requests[-1].headers["Authorization"] == "Bearer from-env"
    # explicit arguments win over the environment
    sb2 = BaseSandbox(sandbox_id="sb-env", base_url=server.url, bearer_token=TOKEN)
    sb2.run_shell_command("true")
    assert server.requests[-1].headers["Authorization"] == f"Bearer {TOKEN}"


def test_no_token_no_authorization_header(server: FakeServer) -> None:
    BaseSandbox(sandbox_id="sb-x", base_url=server.url).get_info()
    assert "Authorization" not in server.requests[-1].headers


def test_bad_arguments(server: FakeServer, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="workspace_dir"):
        BaseSandbox(base_url=server.url, workspace_dir="/tmp")
    monkeypatch.setenv("RUNTIME_SANDBOX_TIMEOUT", "soon")
    with pytest.raises(ValueError, match="RUNTIME_SANDBOX_TIMEOUT"):
        BaseSandbox(base_url=server.url)


def test_not_started(server: FakeServer) -> None:
    sb = BaseSandbox(base_url=server.url)
    assert sb.sandbox_id is None
    with pytest.raises(SandboxError, match="not started"):
        sb.run_shell_command("true")
    with pytest.raises(SandboxError, match="not started"):
        sb.fs.exists("x")
    sb.close()  # nothing to release
    assert server.requests == []


# ========================================================================= sync API


def test_sync_lifecycle_exact_calls(server: FakeServer) -> None:
    cfg = {"mcpServers": {"time": {"command": "uvx", "args": ["mcp-server-time"]}}}
    with BaseSandbox(base_url=server.url, bearer_token=TOKEN) as sb:
        assert sb.sandbox_id == "sb-1"
        result = sb.run_shell_command("echo hi")
        tools = sb.list_tools()
        generic = sb.list_tools(tool_type="generic")
        info = sb.get_info()
        added = sb.add_mcp_servers(cfg, overwrite=True)
        raw = sb.call_tool("nope")

    assert server.routes() == [
        "POST create_from_pool",
        "POST call_tool",
        "POST list_tools",
        "POST list_tools",
        "POST get_info",
        "POST add_mcp_servers",
        "POST call_tool",
        "POST release",
    ]
    bodies = [r.json for r in server.requests]
    create = bodies[0]
    assert list(create) == ["sandbox_type", "meta"]
    assert create["sandbox_type"] == "base"
    assert list(create["meta"]) == ["session_ctx_id"]
    ctx = create["meta"]["session_ctx_id"]
    assert isinstance(ctx, str) and len(ctx) == 22 and ctx.isalnum()
    assert bodies[1:] == [
        {"identity": "sb-1", "tool_name": "run_shell_command", "arguments": {"command": "echo hi"}},
        {"identity": "sb-1", "tool_type": None},
        {"identity": "sb-1", "tool_type": "generic"},
        {"identity": "sb-1"},
        {"identity": "sb-1", "server_configs": cfg, "overwrite": True},
        {"identity": "sb-1", "tool_name": "nope", "arguments": {}},
        {"identity": "sb-1"},
    ]
    for r in server.requests:
        assert r.headers.get_list("Authorization") == [f"Bearer {TOKEN}"]
        assert r.headers["Content-Type"] == "application/json"

    # results are the envelope's data, unchanged
    assert result["isError"] is False and result["meta"] is None
    assert _stdout_of(result) == ["run_shell_command", {"command": "echo hi"}]
    assert tools == generic == {"generic": {"run_shell_command": {"name": "x"}}}
    assert info["runtime_token"] == RUNTIME_TOKEN and info["container_name"] == "sb-1"
    assert added == "OK"
    assert _stdout_of(raw) == ["nope", {}]


def test_session_ids_are_random(server: FakeServer) -> None:
    for _ in range(3):
        with BaseSandbox(base_url=server.url):
            pass
    ctxs = {r.json["meta"]["session_ctx_id"] for r in server.requests if "create" in r.route}
    assert len(ctxs) == 3


def test_one_session_reused_across_calls(server: FakeServer) -> None:
    with BaseSandbox(base_url=server.url, bearer_token=TOKEN) as sb:
        for _ in range(5):
            sb.run_ipython_cell("1+1")
        sb.fs.write("a.txt", "x")
        sb.fs.read("a.txt")
        sb.get_info()
    assert len(server.requests) == 10
    ports = {r.client_port for r in server.requests}
    assert len(ports) == 1, f"expected one keep-alive connection, saw client ports {ports}"


def test_explicit_start_close_and_existing_id(server: FakeServer) -> None:
    sb = BaseSandbox(base_url=server.url)
    assert sb.start() is sb
    assert sb.start() is sb  # already bound: no second create
    sb.close()
    sb.close()  # already released: no second release
    assert server.routes() == ["POST create_from_pool", "POST release"]

    server.reset()
    with BaseSandbox(sandbox_id="given", base_url=server.url) as sb2:
        sb2.run_ipython_cell("x = 1")
    # no create for a given id, but it is still released (as upstream)
    assert server.routes() == ["POST call_tool", "POST release"]
    assert server.requests[-1].json == {"identity": "given"}
    assert server.requests[0].json == {
        "identity": "given",
        "tool_name": "run_ipython_cell",
        "arguments": {"code": "x = 1"},
    }


def test_sandbox_type_sent_as_given(server: FakeServer) -> None:
    class FakeEnum:
        value = "my_custom"

    with Sandbox(base_url=server.url, sandbox_type="whatever_type"):
        pass
    with Sandbox(base_url=server.url, sandbox_type=FakeEnum()):
        pass
    with Sandbox(base_url=server.url):
        pass
    types = [r.json["sandbox_type"] for r in server.requests if r.route == "create_from_pool"]
    assert types == ["whatever_type", "my_custom", "base"]


@pytest.mark.parametrize(
    ("cls", "sandbox_type"),
    [
        (BaseSandbox, "base"),
        (FilesystemSandbox, "filesystem"),
        (BrowserSandbox, "browser"),
        (GuiSandbox, "gui"),
    ],
)
def test_typed_classes_create_their_type(server: FakeServer, cls: type, sandbox_type: str) -> None:
    with cls(base_url=server.url) as sb:
        assert sb.sandbox_type == sandbox_type
    assert server.requests[0].json["sandbox_type"] == sandbox_type


# (class, method, args, kwargs, tool name, tool arguments) — wire §2.2
HELPERS = [
    (BaseSandbox, "run_ipython_cell", ("1+1",), {}, "run_ipython_cell", {"code": "1+1"}),
    (BaseSandbox, "run_shell_command", ("ls",), {}, "run_shell_command", {"command": "ls"}),
    (FilesystemSandbox, "read_file", ("a",), {}, "read_file", {"path": "a"}),
    (
        FilesystemSandbox,
        "read_multiple_files",
        (["a", "b"],),
        {},
        "read_multiple_files",
        {"paths": ["a", "b"]},
    ),
    (FilesystemSandbox, "write_file", ("a", "c"), {}, "write_file", {"path": "a", "content": "c"}),
    (
        FilesystemSandbox,
        "edit_file",
        ("a", [{"oldText": "x", "newText": "y"}]),
        {},
        "edit_file",
        {"path": "a", "edits": [{"oldText": "x", "newText": "y"}], "dryRun": False},
    ),
    (FilesystemSandbox, "create_directory", ("d",), {}, "create_directory", {"path": "d"}),
    (FilesystemSandbox, "list_directory", ("d",), {}, "list_directory", {"path": "d"}),
    (FilesystemSandbox, "directory_tree", ("d",), {}, "directory_tree", {"path": "d"}),
    (
        FilesystemSandbox,
        "move_file",
        ("a", "b"),
        {},
        "move_file",
        {"source": "a", "destination": "b"},
    ),
    (
        FilesystemSandbox,
        "search_files",
        ("d", "*.py"),
        {},
        "search_files",
        {"path": "d", "pattern": "*.py", "excludePatterns": []},
    ),
    (FilesystemSandbox, "get_file_info", ("a",), {}, "get_file_info", {"path": "a"}),
    (FilesystemSandbox, "list_allowed_directories", (), {}, "list_allowed_directories", {}),
    (
        BrowserSandbox,
        "browser_navigate",
        ("http://x",),
        {},
        "browser_navigate",
        {"url": "http://x"},
    ),
    (BrowserSandbox, "browser_snapshot", (), {}, "browser_snapshot", {}),
    (BrowserSandbox, "browser_close", (), {}, "browser_close", {}),
    (
        BrowserSandbox,
        "browser_resize",
        (800, 600),
        {},
        "browser_resize",
        {"width": 800, "height": 600},
    ),
    (
        BrowserSandbox,
        "browser_handle_dialog",
        (True,),
        {},
        "browser_handle_dialog",
        {"accept": True, "promptText": ""},
    ),
    (
        BrowserSandbox,
        "browser_take_screenshot",
        (),
        {"raw": True},
        "browser_take_screenshot",
        {"raw": True, "filename": "", "element": "", "ref": ""},
    ),
    (
        BrowserSandbox,
        "browser_drag",
        ("a", "r1", "b", "r2"),
        {},
        "browser_drag",
        {"startElement": "a", "startRef": "r1", "endElement": "b", "endRef": "r2"},
    ),
    (
        BrowserSandbox,
        "browser_type",
        ("box", "r3", "hi"),
        {"submit": True},
        "browser_type",
        {"element": "box", "ref": "r3", "text": "hi", "submit": True, "slowly": False},
    ),
    (BrowserSandbox, "browser_tab_close", (), {}, "browser_tab_close", {"index": None}),
    (
        BrowserSandbox,
        "browser_wait_for",
        (),
        {"text": "done"},
        "browser_wait_for",
        {"time": None, "text": "done", "textGone": None},
    ),
    (GuiSandbox, "computer_use", ("get_screenshot",), {}, "computer", {"action": "get_screenshot"}),
    (
        GuiSandbox,
        "computer_use",
        ("left_click", [10, 20]),
        {},
        "computer",
        {"action": "left_click", "coordinate": [10, 20]},
    ),
    (
        GuiSandbox,
        "computer_use",
        ("type",),
        {"text": "hi"},
        "computer",
        {"action": "type", "text": "hi"},
    ),
]


@pytest.mark.parametrize(("cls", "method", "args", "kwargs", "tool", "arguments"), HELPERS)
def test_typed_helpers_sync(
    server: FakeServer,
    cls: type,
    method: str,
    args: tuple,
    kwargs: dict,
    tool: str,
    arguments: dict,
) -> None:
    sb = cls(sandbox_id="sb-h", base_url=server.url)
    result = getattr(sb, method)(*args, **kwargs)
    assert server.routes() == ["POST call_tool"]
    assert server.requests[0].json == {
        "identity": "sb-h",
        "tool_name": tool,
        "arguments": arguments,
    }
    assert _stdout_of(result) == [tool, arguments]


@pytest.mark.parametrize(("cls", "method", "args", "kwargs", "tool", "arguments"), HELPERS)
async def test_typed_helpers_async(
    server: FakeServer,
    cls: type,
    method: str,
    args: tuple,
    kwargs: dict,
    tool: str,
    arguments: dict,
) -> None:
    async_cls = {
        BaseSandbox: BaseSandboxAsync,
        FilesystemSandbox: FilesystemSandboxAsync,
        BrowserSandbox: BrowserSandboxAsync,
        GuiSandbox: GuiSandboxAsync,
    }[cls]
    sb = async_cls(sandbox_id="sb-h", base_url=server.url)
    func = getattr(sb, method)
    assert asyncio.iscoroutinefunction(func)
    result = await func(*args, **kwargs)
    await sb.close_async()
    assert server.routes() == ["POST call_tool_async", "POST release_async"]
    assert server.requests[0].json == {
        "identity": "sb-h",
        "tool_name": tool,
        "arguments": arguments,
    }
    assert _stdout_of(result) == [tool, arguments]


@pytest.mark.parametrize("cls", [GuiSandbox, BrowserSandbox, FilesystemSandbox])
def test_desktop_url(server: FakeServer, cls: type) -> None:
    base = server.url + "/prefix"
    server.answer_with("POST", "prefix/check_health", Answer(body={"data": True}))
    server.answer_with(
        "POST", "prefix/get_info", Answer(body={"data": {"runtime_token": RUNTIME_TOKEN}})
    )
    sb = cls(sandbox_id="sb-9", base_url=base + "/")
    assert sb.desktop_url == (f"{base}/desktop/sb-9/vnc/vnc_relay.html?password={RUNTIME_TOKEN}")
    assert server.routes() == ["POST prefix/check_health", "POST prefix/get_info"]
    assert [r.json for r in server.requests] == [{"identity": "sb-9"}] * 2

    server.reset()
    server.answer_with("POST", "check_health", Answer(body={"data": False}))
    with pytest.raises(SandboxError, match="not healthy"):
        _ = cls(sandbox_id="sb-9", base_url=server.url).desktop_url


# ============================================================================ sync fs


def test_fs_sync_requests(server: FakeServer, tmp_path: Any) -> None:
    local = tmp_path / "local.bin"
    local.write_bytes(b"L" * 3000)
    with BaseSandbox(base_url=server.url, bearer_token=TOKEN) as sb:
        server.reset()
        fs = sb.fs
        e1 = fs.write("d1/a.txt", TEXT)
        e2 = fs.write("b.bin", b"\x00\x01", content_type="image/png")
        e3 = fs.write("c.bin", io.BytesIO(b"stream-me"))
        e4 = fs.write("d.bin", bytearray(b"ba"))
        many = fs.write_many(
            [
                {"path": "m/one.txt", "data": "uno"},
                {"path": "m/two.bin", "data": b"\x02" * 10, "content_type": "image/gif"},
                {"path": "three.dat", "data": io.BytesIO(b"tres")},
            ]
        )
        text = fs.read("d1/a.txt")
        data = fs.read("b.bin", fmt="bytes")
        chunks = list(fs.read("b.bin", fmt="stream", chunk_size=4096))
        listing = fs.list("d1", depth=3)
        listing_default = fs.list("d1")
        assert fs.exists("yes.txt") is True
        assert fs.exists("no.txt") is False
        assert fs.remove("d1") is None
        moved = fs.move("b.bin", "sub/b2.bin")
        assert fs.mkdir("newdir") is True
        assert fs.mkdir("exists") is False
        e5 = fs.write_from_path("up/local.bin", str(local), content_type="application/x-test")

    reqs = server.requests
    prefix = "proxy/sb-1/workspace/"
    expected = [
        ("PUT", "file"),
        ("PUT", "file"),
        ("PUT", "file"),
        ("PUT", "file"),
        ("POST", "files:batch"),
        ("GET", "file"),
        ("GET", "file"),
        ("GET", "file"),
        ("GET", "list"),
        ("GET", "list"),
        ("GET", "exists"),
        ("GET", "exists"),
        ("DELETE", "entry"),
        ("POST", "move"),
        ("POST", "mkdir"),
        ("POST", "mkdir"),
        ("PUT", "file"),
    ]
    assert [(r.method, r.route) for r in reqs[:-1]] == [(m, prefix + p) for m, p in expected]
    assert reqs[-1].route == "release"
    for r in reqs:
        assert r.headers.get_list("Authorization") == [f"Bearer {TOKEN}"]

    # write: str as UTF-8 text/plain, bytes/file with content_type (default octet-stream)
    assert reqs[0].query == {"path": ["d1/a.txt"]}
    assert reqs[0].headers["Content-Type"] == "text/plain; charset=utf-8"
    assert reqs[0].body == TEXT.encode("utf-8")
    assert (reqs[1].headers["Content-Type"], reqs[1].body) == ("image/png", b"\x00\x01")
    assert (reqs[2].headers["Content-Type"], reqs[2].body) == (
        "application/octet-stream",
        b"stream-me",
    )
    assert reqs[3].body == b"ba"
    assert e1 == _entry("d1/a.txt", len(TEXT.encode()))
    assert (e2["size"], e3["size"], e4["size"]) == (2, 9, 2)

    # write_many: multipart, repeated `paths` fields and `files` parts named by basename
    batch = reqs[4]
    assert batch.headers["Content-Type"].startswith("multipart/form-data; boundary=")
    args, files = batch.form()
    assert args == {"paths": [b"m/one.txt", b"m/two.bin", b"three.dat"]}
    parts = files["files"]
    assert [p["filename"] for p in parts] == ["one.txt", "two.bin", "three.dat"]
    assert [p["body"] for p in parts] == [b"uno", b"\x02" * 10, b"tres"]
    assert [p["content_type"] for p in parts] == [
        "text/plain; charset=utf-8",
        "image/gif",
        "application/octet-stream",
    ]
    assert [e["path"] for e in many] == [
        "/workspace/m/one.txt",
        "/workspace/m/two.bin",
        "/workspace/three.dat",
    ]

    # read
    assert reqs[5].query == {"path": ["d1/a.txt"], "format": ["text"]}
    assert reqs[6].query == {"path": ["b.bin"], "format": ["bytes"]}
    assert reqs[7].query == {"path": ["b.bin"], "format": ["bytes"]}
    assert text == TEXT
    assert data == BLOB
    assert b"".join(chunks) == BLOB and all(len(c) <= 4096 for c in chunks)

    # list / exists / remove / move / mkdir / write_from_path
    assert reqs[8].query == {"path": ["d1"], "depth": ["3"]}
    assert reqs[9].query == {"path": ["d1"], "depth": ["1"]}
    assert [e["name"] for e in listing] == ["a.txt", "d"] and listing == listing_default
    assert reqs[10].query == {"path": ["yes.txt"]}
    assert reqs[12].query == {"path": ["d1"]}
    assert reqs[13].json == {"source": "b.bin", "destination": "sub/b2.bin"}
    assert reqs[13].headers["Content-Type"] == "application/json"
    assert moved["path"] == "/workspace/sub/b2.bin"
    assert reqs[14].json == {"path": "newdir"}
    assert reqs[16].query == {"path": ["up/local.bin"]}
    assert reqs[16].headers["Content-Type"] == "application/x-test"
    assert reqs[16].body == b"L" * 3000
    assert e5["size"] == 3000
    # all of it over one keep-alive connection
    assert len({r.client_port for r in reqs}) == 1


def test_fs_errors(server: FakeServer) -> None:
    sb = BaseSandbox(sandbox_id="sb-1", base_url=server.url)
    with pytest.raises(WorkspaceNotFoundError) as info:
        sb.fs.read("missing.txt")
    assert isinstance(info.value, FileNotFoundError)
    assert isinstance(info.value, SandboxNotFoundError)
    assert info.value.status == 404 and info.value.detail == "not found"

    server.answer_with(
        "GET",
        "proxy/sb-1/workspace/file",
        Answer(403, {"detail": "Permission error. Access restricted to /workspace directory."}),
    )
    with pytest.raises(WorkspacePermissionError, match="Access restricted") as perm:
        sb.fs.read("/etc/passwd")
    assert isinstance(perm.value, PermissionError) and perm.value.status == 403
    with pytest.raises(WorkspacePermissionError):
        sb.fs.read("/etc/passwd", fmt="stream")

    # the proxy's own "sandbox not found" is about the sandbox, not the file
    server.answer_with(
        "GET", "proxy/sb-1/workspace/exists", Answer(404, {"detail": "sandbox not found: sb-1"})
    )
    with pytest.raises(SandboxNotFoundError) as gone:
        sb.fs.exists("x")
    assert not isinstance(gone.value, WorkspaceNotFoundError)

    server.answer_with(
        "PUT",
        "proxy/sb-1/workspace/file",
        Answer(409, {"detail": "path exists and is a directory"}),
    )
    with pytest.raises(SandboxServerError, match="409.*path exists and is a directory"):
        sb.fs.write("d1", "x")

    with pytest.raises(ValueError, match="fmt"):
        sb.fs.read("a", fmt="json")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        sb.fs.write("a", 42)  # type: ignore[arg-type]


# ======================================================================= error mapping


def test_error_401_on_create(server: FakeServer) -> None:
    server.answer_with(
        "POST", "create_from_pool", Answer(401, {"detail": "Invalid authentication credentials"})
    )
    sb = BaseSandbox(base_url=server.url, bearer_token="wrong")
    with pytest.raises(AuthenticationError) as info:
        sb.__enter__()
    err = info.value
    assert err.status == 401
    assert err.detail == "Invalid authentication credentials"
    assert "Invalid authentication credentials" in str(err)
    assert sb.sandbox_id is None  # unlike upstream, the error text never becomes an id
    with pytest.raises(AuthenticationError), BaseSandbox(base_url=server.url):
        pass  # pragma: no cover


def test_error_no_sandbox_available(server: FakeServer) -> None:
    server.answer_with("POST", "create_from_pool", Answer(body={"data": None}))
    with (
        pytest.raises(NoSandboxAvailableError, match="max_sandboxes") as info,
        BaseSandbox(base_url=server.url),
    ):
        pass  # pragma: no cover
    assert isinstance(info.value, RuntimeError)  # what the official SDK raises
    assert "pool" in str(info.value)
    assert server.routes() == ["POST create_from_pool"]  # nothing to release


def test_error_500_detail(server: FakeServer) -> None:
    detail = "Error in call_tool: boom happened"
    server.answer_with("POST", "call_tool", Answer(500, {"detail": detail}))
    sb = BaseSandbox(sandbox_id="sb-1", base_url=server.url)
    with pytest.raises(SandboxServerError) as info:
        sb.run_shell_command("true")
    assert info.value.status == 500
    assert info.value.detail == detail
    assert "500" in str(info.value) and detail in str(info.value)

    server.answer_with("POST", "get_info", Answer(502, "<html>bad gateway</html>", "text/html"))
    with pytest.raises(SandboxServerError, match="502.*bad gateway"):
        sb.get_info()

    server.answer_with("POST", "list_tools", Answer(200, "not json", "text/plain"))
    with pytest.raises(SandboxServerError, match="not JSON"):
        sb.list_tools()
    server.answer_with("POST", "list_tools", Answer(200, {"result": 1}))
    with pytest.raises(SandboxServerError, match="'data'"):
        sb.list_tools()


def test_error_not_found(server: FakeServer) -> None:
    server.answer_with(
        "POST",
        "call_tool",
        Answer(500, {"detail": "Error in call_tool: No container found with id: nope."}),
    )
    sb = BaseSandbox(sandbox_id="nope", base_url=server.url)
    with pytest.raises(SandboxNotFoundError, match="No container found") as info:
        sb.run_shell_command("true")
    assert info.value.status == 500
    server.answer_with("POST", "get_info", Answer(404, {"detail": "sandbox 'nope' not found"}))
    with pytest.raises(SandboxNotFoundError):
        sb.get_info()


def test_error_403_on_rpc_is_authentication(server: FakeServer) -> None:
    server.answer_with("POST", "get_info", Answer(403, {"detail": "forbidden"}))
    with pytest.raises(AuthenticationError):
        BaseSandbox(sandbox_id="s", base_url=server.url).get_info()


def test_error_connection_refused(server: FakeServer) -> None:
    sb = BaseSandbox(base_url=f"http://127.0.0.1:{_free_port()}")
    with pytest.raises(SandboxConnectionError, match="cannot reach") as info:
        sb.start()
    assert info.value.status is None


def test_error_timeout(server: FakeServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNTIME_SANDBOX_TIMEOUT", "0.2")
    server.answer_with("POST", "call_tool", Answer(body={"data": 1}, delay=1.0))
    sb = BaseSandbox(sandbox_id="s", base_url=server.url)
    with pytest.raises(SandboxConnectionError, match="timed out after 0.2 s"):
        sb.run_shell_command("sleep 1")


def test_close_logs_and_swallows_errors(
    server: FakeServer, caplog: pytest.LogCaptureFixture
) -> None:
    server.answer_with("POST", "release", Answer(500, {"detail": "Error in release: kaput"}))
    caplog.set_level(logging.ERROR, logger="jupyter_sandbox.client")
    with BaseSandbox(base_url=server.url) as sb:
        sb.run_shell_command("true")
    assert "kaput" in caplog.text and "sb-1" in caplog.text
    # an exception inside the block propagates; release still happens
    server.reset()
    with pytest.raises(ZeroDivisionError), BaseSandbox(base_url=server.url):
        1 / 0  # noqa: B018
    assert server.routes() == ["POST create_from_pool", "POST release"]


# ========================================================================== async API


async def test_async_lifecycle_exact_calls(server: FakeServer) -> None:
    cfg = {"mcpServers": {}}
    async with BaseSandboxAsync(base_url=server.url, bearer_token=TOKEN) as sb:
        assert sb.sandbox_id == "sb-async"
        result = await sb.run_shell_command("echo hi")
        cell = await sb.run_ipython_cell("1+1")
        tools = await sb.list_tools_async(tool_type="generic")
        info = await sb.get_info_async()
        added = await sb.add_mcp_servers_async(cfg)
        raw = await sb.call_tool_async("x", {"a": 1})
        sync_info = sb.get_info()  # the blocking variant the official async class also has

    assert server.routes() == [
        "POST create_from_pool_async",
        "POST call_tool_async",
        "POST call_tool_async",
        "POST list_tools_async",
        "POST get_info_async",
        "POST add_mcp_servers_async",
        "POST call_tool_async",
        "POST get_info",
        "POST release_async",
    ]
    bodies = [r.json for r in server.requests]
    assert bodies[0]["sandbox_type"] == "base_async"
    assert len(bodies[0]["meta"]["session_ctx_id"]) == 22
    assert bodies[1:] == [
        {
            "identity": "sb-async",
            "tool_name": "run_shell_command",
            "arguments": {"command": "echo hi"},
        },
        {"identity": "sb-async", "tool_name": "run_ipython_cell", "arguments": {"code": "1+1"}},
        {"identity": "sb-async", "tool_type": "generic"},
        {"identity": "sb-async"},  # keyword body, not the upstream {"args": ...} bug
        {"identity": "sb-async", "server_configs": cfg, "overwrite": False},
        {"identity": "sb-async", "tool_name": "x", "arguments": {"a": 1}},
        {"identity": "sb-async"},
        {"identity": "sb-async"},
    ]
    for r in server.requests:
        assert r.headers.get_list("Authorization") == [f"Bearer {TOKEN}"]
    assert _stdout_of(result) == ["run_shell_command", {"command": "echo hi"}]
    assert _stdout_of(cell) == ["run_ipython_cell", {"code": "1+1"}]
    assert tools == {"generic": {"run_shell_command": {"name": "x"}}}
    assert info["runtime_token"] == RUNTIME_TOKEN == sync_info["runtime_token"]
    assert added == "OK"
    assert _stdout_of(raw) == ["x", {"a": 1}]
    # one httpx client, one keep-alive connection for the async calls
    async_ports = {r.client_port for r in server.requests if r.route.endswith("_async")}
    assert len(async_ports) == 1


async def test_async_start_close_and_types(server: FakeServer) -> None:
    sb = SandboxAsync(base_url=server.url)
    assert await sb.start_async() is sb
    await sb.close_async()
    await sb.close_async()
    assert server.routes() == ["POST create_from_pool_async", "POST release_async"]
    assert server.requests[0].json["sandbox_type"] == "base"  # SandboxAsync's default

    for cls, typ in [
        (FilesystemSandboxAsync, "filesystem_async"),
        (BrowserSandboxAsync, "browser_async"),
        (GuiSandboxAsync, "gui_async"),
    ]:
        server.reset()
        async with cls(base_url=server.url):
            pass
        assert server.requests[0].json["sandbox_type"] == typ


async def test_async_errors(server: FakeServer, caplog: pytest.LogCaptureFixture) -> None:
    server.answer_with(
        "POST", "create_from_pool_async", Answer(401, {"detail": "Authentication required"})
    )
    with pytest.raises(AuthenticationError, match="Authentication required"):
        async with BaseSandboxAsync(base_url=server.url):
            pass  # pragma: no cover

    server.answer_with("POST", "create_from_pool_async", Answer(body={"data": None}))
    with pytest.raises(NoSandboxAvailableError):
        async with BaseSandboxAsync(base_url=server.url):
            pass  # pragma: no cover

    detail = "Error in call_tool_async: Server error '500 Internal Server Error'"
    server.answer_with("POST", "call_tool_async", Answer(500, {"detail": detail}))
    server.answer_with("POST", "release_async", Answer(500, {"detail": "release broke"}))
    caplog.set_level(logging.ERROR, logger="jupyter_sandbox.client")
    sb = BaseSandboxAsync(sandbox_id="sb-e", base_url=server.url)
    with pytest.raises(SandboxServerError) as info:
        await sb.run_shell_command("x")
    assert info.value.status == 500 and info.value.detail == detail
    await sb.close_async()  # logged, not raised
    assert "release broke" in caplog.text

    with pytest.raises(WorkspaceNotFoundError):
        await sb.fs.read_async("missing.txt")
    with pytest.raises(WorkspaceNotFoundError):
        await sb.fs.read_async("missing.txt", fmt="stream")

    gone = BaseSandboxAsync(base_url=f"http://127.0.0.1:{_free_port()}")
    with pytest.raises(SandboxConnectionError):
        await gone.start_async()


async def test_async_timeout(server: FakeServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNTIME_SANDBOX_TIMEOUT", "0.2")
    server.answer_with("POST", "call_tool_async", Answer(body={"data": 1}, delay=1.0))
    sb = BaseSandboxAsync(sandbox_id="s", base_url=server.url)
    with pytest.raises(SandboxConnectionError, match="timed out"):
        await sb.run_shell_command("sleep 1")
    await sb.close_async()


async def test_async_desktop_url(server: FakeServer) -> None:
    sb = GuiSandboxAsync(sandbox_id="sb-g", base_url=server.url)
    url = await sb.get_desktop_url_async()
    assert url == f"{server.url}/desktop/sb-g/vnc/vnc_relay.html?password={RUNTIME_TOKEN}"
    assert server.routes() == ["POST check_health_async", "POST get_info_async"]
    server.reset()
    assert sb.desktop_url == url  # the sync property exists on the async class too
    assert server.routes() == ["POST check_health", "POST get_info"]
    await sb.close_async()


async def test_fs_async_requests(server: FakeServer, tmp_path: Any) -> None:
    local = tmp_path / "local.bin"
    local.write_bytes(b"Q" * 5000)
    async with BaseSandboxAsync(base_url=server.url, bearer_token=TOKEN) as sb:
        server.reset()
        fs = sb.fs
        e1 = await fs.write_async("a.txt", TEXT)
        e2 = await fs.write_async("b.bin", b"\x01\x02\x03", content_type="image/png")
        e3 = await fs.write_async("c.bin", io.BytesIO(b"streamed"))
        many = await fs.write_many_async(
            [
                {"path": "m/one.txt", "data": "uno"},
                {"path": "two.bin", "data": io.BytesIO(b"dos"), "content_type": "image/gif"},
            ]
        )
        text = await fs.read_async("a.txt")
        data = await fs.read_async("b.bin", fmt="bytes")
        stream = await fs.read_async("b.bin", fmt="stream")
        chunks = [c async for c in stream]
        listing = await fs.list_async("d", depth=2)
        yes = await fs.exists_async("yes.txt")
        no = await fs.exists_async("no.txt")
        removed = await fs.remove_async("d")
        moved = await fs.move_async("a.txt", "z.txt")
        created = await fs.mkdir_async("nd")
        e4 = await fs.write_from_path_async("up.bin", str(local))
        assert await fs.write_many_async([]) == []

    reqs = server.requests
    prefix = "proxy/sb-async/workspace/"
    assert [(r.method, r.route.removeprefix(prefix)) for r in reqs] == [
        ("PUT", "file"),
        ("PUT", "file"),
        ("PUT", "file"),
        ("POST", "files:batch"),
        ("GET", "file"),
        ("GET", "file"),
        ("GET", "file"),
        ("GET", "list"),
        ("GET", "exists"),
        ("GET", "exists"),
        ("DELETE", "entry"),
        ("POST", "move"),
        ("POST", "mkdir"),
        ("PUT", "file"),
        ("POST", "release_async"),
    ]
    for r in reqs:
        assert r.headers.get_list("Authorization") == [f"Bearer {TOKEN}"]
    assert reqs[0].headers["Content-Type"] == "text/plain; charset=utf-8"
    assert reqs[0].body == TEXT.encode()
    assert (reqs[1].headers["Content-Type"], reqs[1].body) == ("image/png", b"\x01\x02\x03")
    assert (reqs[2].headers["Content-Type"], reqs[2].body) == (
        "application/octet-stream",
        b"streamed",
    )
    assert (e1["size"], e2["size"], e3["size"]) == (len(TEXT.encode()), 3, 8)

    args, files = reqs[3].form()
    assert args == {"paths": [b"m/one.txt", b"two.bin"]}
    assert [(p["filename"], p["body"], p["content_type"]) for p in files["files"]] == [
        ("one.txt", b"uno", "text/plain; charset=utf-8"),
        ("two.bin", b"dos", "image/gif"),
    ]
    assert [e["size"] for e in many] == [3, 3]

    assert reqs[4].query == {"path": ["a.txt"], "format": ["text"]}
    assert reqs[5].query == reqs[6].query == {"path": ["b.bin"], "format": ["bytes"]}
    assert text == TEXT and data == BLOB and b"".join(chunks) == BLOB
    assert reqs[7].query == {"path": ["d"], "depth": ["2"]}
    assert [e["name"] for e in listing] == ["a.txt", "d"]
    assert (yes, no, removed, created) == (True, False, None, True)
    assert reqs[11].json == {"source": "a.txt", "destination": "z.txt"}
    assert moved["path"] == "/workspace/z.txt"
    assert reqs[12].json == {"path": "nd"}
    assert reqs[13].query == {"path": ["up.bin"]}
    assert reqs[13].headers["Content-Type"] == "application/octet-stream"
    assert reqs[13].body == b"Q" * 5000 and e4["size"] == 5000
    assert len({r.client_port for r in reqs}) == 1


# ========================================================= signatures vs the official SDK

_SIGNATURE_SCRIPT = textwrap.dedent(
    """
    import enum, inspect, json, sys

    def describe(classes):
        out = {}
        for name, cls in classes.items():
            members = {}
            for attr in dir(cls):
                if attr.startswith("_") and attr not in DUNDERS:
                    continue
                static = inspect.getattr_static(cls, attr)
                if isinstance(static, property):
                    members[attr] = {"kind": "property"}
                    continue
                func = getattr(cls, attr)
                if not callable(func) or isinstance(static, (staticmethod, classmethod)):
                    continue
                params = []
                for p in inspect.signature(func).parameters.values():
                    d = p.default
                    if d is inspect.Parameter.empty:
                        d = "<required>"
                    elif isinstance(d, enum.Enum):
                        d = repr(d.value)
                    else:
                        d = repr(d)
                    params.append([p.name, p.kind.name, d])
                kind = "async" if inspect.iscoroutinefunction(func) else "sync"
                members[attr] = {"kind": kind, "params": params}
            out[name] = members
        return out

    DUNDERS = {"__init__", "__enter__", "__exit__", "__aenter__", "__aexit__"}
    NAMES = [
        "BaseSandbox", "BaseSandboxAsync", "FilesystemSandbox", "FilesystemSandboxAsync",
        "BrowserSandbox", "BrowserSandboxAsync", "GuiSandbox", "GuiSandboxAsync",
    ]
    if sys.argv[1] == "official":
        import agentscope_runtime.sandbox as mod
        from agentscope_runtime.sandbox.box.components import SandboxFS, SandboxFSAsync
    else:
        import jupyter_sandbox.client as mod
        from jupyter_sandbox.client import SandboxFS, SandboxFSAsync
    classes = {n: getattr(mod, n) for n in NAMES}
    classes["SandboxFS"] = SandboxFS
    classes["SandboxFSAsync"] = SandboxFSAsync
    print("@@SIGNATURES@@" + json.dumps(describe(classes)))
    """
)


def _describe(python: str, which: str) -> dict:
    proc = subprocess.run(
        [python, "-c", _SIGNATURE_SCRIPT, which],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    assert proc.returncode == 0, f"{python} failed:\n{proc.stderr[-3000:]}"
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("@@SIGNATURES@@"))
    return json.loads(line.removeprefix("@@SIGNATURES@@"))


def test_signatures_match_official_sdk() -> None:
    official_python = os.environ.get("AGENTSCOPE_PYTHON") or "/tmp/peer/asr/bin/python"
    if not os.path.exists(official_python):
        pytest.skip(
            f"official agentscope-runtime SDK interpreter not found at {official_python!r} "
            "(set AGENTSCOPE_PYTHON to a python with agentscope-runtime installed)"
        )
    theirs = _describe(official_python, "official")
    ours = _describe(sys.executable, "ours")

    problems = []
    for cls, members in theirs.items():
        for name, spec in members.items():
            mine = ours[cls].get(name)
            if mine is None:
                problems.append(f"{cls}.{name}: missing")
            elif mine != spec:
                problems.append(f"{cls}.{name}: official {spec} != ours {mine}")
    assert not problems, "signature mismatches:\n" + "\n".join(problems)
    # sanity: the comparison really covered the API
    assert "call_tool_async" in theirs["BaseSandboxAsync"]
    assert "browser_wait_for" in theirs["BrowserSandbox"]
    assert "write_many" in theirs["SandboxFS"]
