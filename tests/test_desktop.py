"""Tests of the box's desktop group (jupyter_sandbox.box.desktop), with real X processes.

One Desktop (Xvfb, openbox, x11vnc) is shared by the module; it is driven directly through
its `computer` tool and over HTTP through its routes, served by a small tornado app on a free
loopback port. Test windows are xmessage and xterm, chosen because their effects can be
checked without looking at pixels only: a button's exit status, a line read by a shell.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import os
import re
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import tornado.httpclient
import tornado.httpserver
import tornado.web
import tornado.websocket

from jupyter_sandbox.box.desktop import Desktop, DesktopError

pytestmark = pytest.mark.skipif(
    shutil.which("Xvfb") is None,
    reason="Xvfb is not installed (apt-get install xvfb openbox x11vnc xdotool x11-utils novnc)",
)

TOKEN = "desktop-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
NAMES = ("Xvfb", "openbox", "x11vnc")


def pid_gone(pid: int) -> bool:
    return not Path(f"/proc/{pid}").exists()


def listeners(port: int) -> list[str]:
    """Local addresses (hex, as in /proc/net/tcp*) listening on `port`."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                local, _, state = line.split()[1:4]
                address, hex_port = local.split(":")
                if state == "0A" and int(hex_port, 16) == port:
                    found.append(address)
    return found


def connections_to(port: int) -> int:
    """Established TCP connections whose remote end is 127.0.0.1:`port`."""
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        remote, state = line.split()[2:4]
        if state == "01" and remote == f"0100007F:{port:04X}":
            count += 1
    return count


def our_children() -> dict[int, str]:
    """This process's child processes: pid -> command name."""
    pids: set[int] = set()
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        with contextlib.suppress(OSError):
            pids.update(int(p) for p in (task / "children").read_text().split())
    names = {}
    for pid in pids:
        with contextlib.suppress(OSError):
            names[pid] = Path(f"/proc/{pid}/comm").read_text().strip()
    return names


@pytest.fixture(scope="module")
def desktop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Desktop]:
    workspace = tmp_path_factory.mktemp("desktop-ws")
    saved = os.environ.get("DISPLAY")
    d = Desktop(str(workspace))
    # The desktop outlives each test's event loop; start and stop it on a loop of its own.
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(d.start())
        pids = [p.popen.pid for p in d._procs]
        yield d
    finally:
        loop.run_until_complete(d.close())
        loop.close()
    assert all(pid_gone(pid) for pid in pids)
    assert os.environ.get("DISPLAY") == saved
    # openbox's log and the like stay out of the workspace.
    assert list(workspace.iterdir()) == []


async def computer(d: Desktop, action: str, **args) -> dict:
    result = await d.call("computer", {"action": action, **args})
    assert result is not None
    return result


def text_of(result: dict) -> str:
    return "\n".join(i["text"] for i in result["content"] if i["type"] == "text")


async def ok(d: Desktop, action: str, **args) -> str:
    result = await computer(d, action, **args)
    assert result["isError"] is False, result
    return text_of(result)


async def screenshot(d: Desktop):
    from PIL import Image

    result = await computer(d, "get_screenshot")
    assert result["isError"] is False
    assert json.loads(result["content"][0]["text"]) == {
        "display_width_px": 1280,
        "display_height_px": 800,
    }
    image = result["content"][1]
    assert image["type"] == "image" and image["mimeType"] == "image/png"
    png = base64.b64decode(image["data"])
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    picture = Image.open(io.BytesIO(png))
    assert picture.size == (1280, 800)
    return picture.convert("RGB")


def differs(before, after, box: tuple[int, int, int, int]) -> bool:
    from PIL import ImageChops

    return ImageChops.difference(before.crop(box), after.crop(box)).getbbox() is not None


def x(*argv: str) -> str:
    """Run an X client on the desktop (DISPLAY is in the environment)."""
    return subprocess.run(argv, capture_output=True, text=True, check=True, timeout=15).stdout


def window_named(title: str) -> str:
    return x("xdotool", "search", "--sync", "--onlyvisible", "--name", title).split()[0]


def window_geometry(window: str) -> tuple[int, int, int, int]:
    """Left, top, width, height on the screen (xdotool's position is off by the frame)."""
    info = x("xwininfo", "-id", window)
    fields = ("Absolute upper-left X", "Absolute upper-left Y", "Width", "Height")
    values = dict(re.findall(r"^\s*([A-Za-z -]+):\s+(-?\d+)$", info, re.MULTILINE))
    left, top, width, height = (int(values[f]) for f in fields)
    return left, top, width, height


async def wait_exit(proc: subprocess.Popen, timeout: float = 10) -> int:
    deadline = time.monotonic() + timeout
    while proc.poll() is None:
        assert time.monotonic() < deadline, f"{proc.args[0]} did not exit"
        await asyncio.sleep(0.05)
    return proc.returncode


# -- the group -------------------------------------------------------------------------------


def test_start_exports_display_and_vnc_on_loopback_only(desktop: Desktop):
    assert desktop.name == "computer"
    assert re.fullmatch(r":\d+", desktop.display or "")
    assert os.environ["DISPLAY"] == desktop.display
    assert [p.name for p in desktop._procs] == list(NAMES)
    assert all(p.popen.poll() is None for p in desktop._procs)
    # Each in its own process group, so close() can take down what it started too.
    assert all(os.getpgid(p.popen.pid) == p.popen.pid for p in desktop._procs)
    assert desktop.vnc_port is not None
    assert listeners(desktop.vnc_port) == ["0100007F"]  # 127.0.0.1 and nothing else
    assert "1280x800" in x("xdpyinfo")


def test_list_group_schema(desktop: Desktop):
    group = desktop.list_group()
    assert list(group) == ["computer"]
    function = group["computer"]["json_schema"]["function"]
    assert function["name"] == "computer"
    params = function["parameters"]
    assert params["required"] == ["action"]
    assert params["properties"]["action"]["enum"] == [
        "key", "type", "mouse_move", "left_click", "left_click_drag", "right_click",
        "middle_click", "double_click", "get_screenshot", "get_cursor_position",
    ]  # fmt: skip
    assert params["properties"]["coordinate"] == {
        **params["properties"]["coordinate"],
        "type": "array",
        "items": {"type": "integer"},
        "minItems": 2,
        "maxItems": 2,
    }
    assert params["properties"]["text"]["type"] == "string"


async def test_click_a_button_changes_the_screen(desktop: Desktop):
    title = f"button-{uuid.uuid4().hex[:8]}"
    proc = subprocess.Popen(
        ["xmessage", "-title", title, "-geometry", "+300+200", "-buttons", "okay:7", "hello"]
    )
    try:
        window = window_named(title)
        # The button is the lowest of the window's widgets (the message is above it).
        tree = x("xwininfo", "-tree", "-id", window)
        widgets = [
            tuple(map(int, m.groups()))
            for m in re.finditer(r"(\d+)x(\d+)[+-]-?\d+[+-]-?\d+\s+\+(-?\d+)\+(-?\d+)", tree)
        ]
        w, h, left, top = max(widgets, key=lambda g: g[3])
        region = (left, top, left + w, top + h)
        before = await screenshot(desktop)
        assert await ok(desktop, "left_click", coordinate=[left + w // 2, top + h // 2]) == (
            "Left clicked"
        )
        assert await wait_exit(proc) == 7  # the button's exit status: the click hit it
        after = await screenshot(desktop)
        assert differs(before, after, region)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


async def test_type_and_key_into_a_terminal(desktop: Desktop, tmp_path: Path):
    title = f"term-{uuid.uuid4().hex[:8]}"
    out = tmp_path / "line.txt"
    proc = subprocess.Popen(
        ["xterm", "-title", title, "-geometry", "60x4+40+500",
         "-e", "sh", "-c", f'read line && printf %s "$line" > {out}'],
    )  # fmt: skip
    try:
        left, top, width, height = window_geometry(window_named(title))
        region = (left, top, left + width, top + height)
        # Focus it the way a user would.
        await ok(desktop, "left_click", coordinate=[left + width // 2, top + height // 2])
        before = await screenshot(desktop)
        typed = "Hello, World! 1+1=2 ~/$x"
        assert await ok(desktop, "type", text=typed) == f"Typed text: {typed}"
        # The terminal echoes what was typed.
        deadline = time.monotonic() + 5
        while not differs(before, after := await screenshot(desktop), region):
            assert time.monotonic() < deadline, "the typed text never showed"
            await asyncio.sleep(0.1)
        assert await ok(desktop, "key", text="Return") == "Pressed key: Return"
        assert await wait_exit(proc) == 0
        assert out.read_text() == typed
        assert after.size == (1280, 800)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


async def test_key_names_as_upstream_spells_them(desktop: Desktop):
    # Upstream reads key names case-insensitively: `enter` is Return.
    title = f"keys-{uuid.uuid4().hex[:8]}"
    proc = subprocess.Popen(
        ["xmessage", "-title", title, "-geometry", "+600+100", "-buttons", "yes:3",
         "-default", "yes", "press enter"]
    )  # fmt: skip
    try:
        window = window_named(title)
        x("xdotool", "windowactivate", "--sync", window)
        assert await ok(desktop, "key", text="enter") == "Pressed key: enter"
        assert await wait_exit(proc) == 3
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


async def test_mouse_actions_and_cursor_position(desktop: Desktop):
    assert await ok(desktop, "mouse_move", coordinate=[123, 456]) == "Moved cursor to: (123, 456)"
    assert json.loads(await ok(desktop, "get_cursor_position")) == {"x": 123, "y": 456}
    assert await ok(desktop, "left_click_drag", coordinate=[300, 400]) == "Dragged to: (300, 400)"
    assert json.loads(await ok(desktop, "get_cursor_position")) == {"x": 300, "y": 400}
    # Clicks move first when given a coordinate; a fractional pixel is rounded.
    assert await ok(desktop, "double_click", coordinate=[10.4, 20]) == "Double clicked"
    assert json.loads(await ok(desktop, "get_cursor_position")) == {"x": 10, "y": 20}
    assert await ok(desktop, "middle_click") == "Middle clicked"
    await ok(desktop, "key", text="Escape")  # openbox's window list, opened by the middle click
    # A right click on the bare desktop opens openbox's menu there.
    before = await screenshot(desktop)
    assert await ok(desktop, "right_click", coordinate=[1000, 600]) == "Right clicked"
    deadline = time.monotonic() + 5
    while not differs(before, await screenshot(desktop), (1000, 600, 1100, 700)):
        assert time.monotonic() < deadline, "the root menu never showed"
        await asyncio.sleep(0.1)
    await ok(desktop, "key", text="esc")
    assert await ok(desktop, "left_click") == "Left clicked"


async def test_screenshot_without_pillow(desktop: Desktop, monkeypatch: pytest.MonkeyPatch):
    # A box whose Python has no Pillow (with XCB) takes screenshots with ImageMagick.
    monkeypatch.setattr(desktop, "_use_pillow", False)
    with_imagemagick = await screenshot(desktop)
    monkeypatch.setattr(desktop, "_use_pillow", True)
    with_pillow = await screenshot(desktop)
    assert not differs(with_imagemagick, with_pillow, (0, 0, 1280, 800))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"action": "mouse_move"}, "Coordinate required for mouse_move"),
        ({"action": "left_click_drag"}, "Coordinate required for left_click_drag"),
        ({"action": "left_click", "coordinate": [1280, 10]}, "outside display bounds of 1280x800"),
        ({"action": "mouse_move", "coordinate": [5, -1]}, "outside display bounds of 1280x800"),
        ({"action": "mouse_move", "coordinate": [5]}, "coordinate must be an array of two"),
        ({"action": "mouse_move", "coordinate": ["1", "2"]}, "coordinate must be an array"),
        ({"action": "mouse_move", "coordinate": [True, 2]}, "coordinate must be an array"),
        ({"action": "mouse_move", "coordinate": "10,20"}, "coordinate must be an array"),
        ({"action": "key"}, "Text required for key"),
        ({"action": "key", "text": ""}, "Text required for key"),
        ({"action": "type"}, "Text required for type"),
        ({"action": "type", "text": 5}, "text must be a string"),
        ({"action": "key", "text": "ctrl+NoSuchKey"}, "Invalid key: NoSuchKey"),
        ({"action": "scroll"}, "Unknown action: 'scroll'"),
        ({}, "Unknown action: None"),
    ],
)
async def test_bad_arguments(desktop: Desktop, args: dict, message: str):
    result = await desktop.call("computer", args)
    assert result is not None and result["isError"] is True
    assert result["content"][0]["text"].startswith("Error: ")
    assert message in result["content"][0]["text"]


async def test_other_tool_names_are_not_ours(desktop: Desktop):
    assert await desktop.call("run_shell_command", {"command": "true"}) is None


# -- HTTP ------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def serve(d: Desktop) -> AsyncIterator[str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    sock.setblocking(False)
    server = tornado.httpserver.HTTPServer(tornado.web.Application(d.routes(TOKEN)))
    server.add_sockets([sock])
    try:
        yield f"127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.stop()
        await server.close_all_connections()


async def fetch(url: str, **kw) -> tornado.httpclient.HTTPResponse:
    client = tornado.httpclient.AsyncHTTPClient()
    return await client.fetch(url, raise_error=False, **kw)


async def raw_get(host: str, path: str) -> bytes:
    """A GET sent verbatim, so that no client tidies `..` away before the server sees it."""
    address, port = host.split(":")
    reader, writer = await asyncio.open_connection(address, int(port))
    writer.write(
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {TOKEN}\r\n"
        "Connection: close\r\n\r\n".encode()
    )
    response = await reader.read()
    writer.close()
    return response


async def test_vnc_files_need_the_token(desktop: Desktop):
    async with serve(desktop) as host:
        page = await fetch(f"http://{host}/vnc/vnc_relay.html", headers=AUTH)
        assert page.code == 200
        assert page.headers["Content-Type"].startswith("text/html")
        body = page.body.decode()
        assert 'import RFB from "./core/rfb.js"' in body
        assert "scaleViewport = true" in body

        rfb = await fetch(f"http://{host}/vnc/core/rfb.js", headers=AUTH)
        assert rfb.code == 200
        # Browsers run an ES module only when it is served as JavaScript.
        assert "javascript" in rfb.headers["Content-Type"]
        assert b"export default class RFB" in rfb.body
        assert (await fetch(f"http://{host}/vnc/core/websock.js", headers=AUTH)).code == 200

        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
            for path in ("vnc_relay.html", "core/rfb.js"):
                denied = await fetch(f"http://{host}/vnc/{path}", headers=headers)
                assert denied.code == 403, (headers, path)
                assert b"RFB" not in denied.body
        # The token is taken from the header only, never from the query.
        assert (await fetch(f"http://{host}/vnc/vnc_relay.html?token={TOKEN}")).code == 403

        assert (await fetch(f"http://{host}/vnc/no-such-file.js", headers=AUTH)).code == 404
        for path in ("/vnc/../../etc/passwd", "/vnc/%2e%2e/%2e%2e/etc/passwd",
                     "/vnc/..%2f..%2f..%2fetc%2fpasswd", "/vnc//etc/passwd"):  # fmt: skip
            response = await raw_get(host, path)
            status = int(response.split(b" ", 2)[1])
            assert status in (403, 404), (path, response[:200])
            assert b"root:" not in response


async def test_websockify_bridges_to_vnc(desktop: Desktop):
    assert desktop.vnc_port is not None
    async with serve(desktop) as host:
        url = f"ws://{host}/websockify"
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            with pytest.raises(tornado.httpclient.HTTPClientError) as refused:
                await tornado.websocket.websocket_connect(
                    tornado.httpclient.HTTPRequest(url, headers=headers)
                )
            assert refused.value.code == 403
        with pytest.raises(tornado.httpclient.HTTPClientError):
            await tornado.websocket.websocket_connect(f"{url}?token={TOKEN}")

        def request() -> tornado.httpclient.HTTPRequest:
            return tornado.httpclient.HTTPRequest(url, headers=dict(AUTH))

        ws = await tornado.websocket.websocket_connect(request(), subprotocols=["binary"])
        assert ws.selected_subprotocol == "binary"
        received = b""

        async def need(n: int) -> bytes:
            nonlocal received
            while len(received) < n:
                message = await asyncio.wait_for(ws.read_message(), 10)
                assert isinstance(message, bytes), message  # binary frames, never text
                received += message
            chunk, received = received[:n], received[n:]
            return chunk

        # The RFB handshake through the bridge, up to the server's framebuffer size.
        assert re.fullmatch(rb"RFB 003\.00\d\n", await need(12))
        await ws.write_message(b"RFB 003.008\n", binary=True)
        count = (await need(1))[0]
        assert 1 in await need(count)  # security type None (-nopw)
        await ws.write_message(b"\x01", binary=True)
        assert await need(4) == b"\x00\x00\x00\x00"  # security result: OK
        await ws.write_message(b"\x01", binary=True)  # ClientInit, shared
        assert await need(4) == (1280).to_bytes(2, "big") + (800).to_bytes(2, "big")
        assert connections_to(desktop.vnc_port) >= 1

        # The browser leaving closes the VNC connection.
        ws.close()
        deadline = time.monotonic() + 5
        while connections_to(desktop.vnc_port):
            assert time.monotonic() < deadline, "the bridge kept its VNC connection"
            await asyncio.sleep(0.05)

        # VNC hanging up closes the websocket: x11vnc drops a client with a bad version.
        ws = await tornado.websocket.websocket_connect(request())
        assert ws.selected_subprotocol is None
        assert isinstance(await asyncio.wait_for(ws.read_message(), 10), bytes)
        await ws.write_message(b"not a VNC client\n", binary=True)
        while (message := await asyncio.wait_for(ws.read_message(), 10)) is not None:
            assert isinstance(message, bytes)

        # Text frames are refused.
        ws = await tornado.websocket.websocket_connect(request())
        await asyncio.wait_for(ws.read_message(), 10)
        await ws.write_message("RFB 003.008\n")
        while await asyncio.wait_for(ws.read_message(), 10) is not None:
            pass
        assert ws.close_code == 1003


# -- lifecycle -------------------------------------------------------------------------------


async def test_second_desktop_gets_its_own_display_and_close_leaves_nothing(
    desktop: Desktop, tmp_path: Path
):
    other = Desktop(str(tmp_path))
    await other.start()
    try:
        assert other.display != desktop.display
        assert other.vnc_port != desktop.vnc_port
        assert os.environ["DISPLAY"] == other.display
        pids = {p.name: p.popen.pid for p in other._procs}
        assert sorted(pids) == sorted(NAMES)
        # Something started on that display (as a user would) goes down with it.
        term = subprocess.Popen(["xmessage", "-display", other.display or "", "bye"])
        await ok(other, "get_cursor_position")
    finally:
        await other.close()
    assert all(pid_gone(pid) for pid in pids.values()), pids
    assert os.environ["DISPLAY"] == desktop.display  # the previous value, restored
    assert await wait_exit(term) != 0  # its X server went away
    result = await other.call("computer", {"action": "get_cursor_position"})
    assert result is not None and result["isError"] is True
    await other.close()  # idempotent
    assert list(tmp_path.iterdir()) == []


async def test_start_failure_names_the_program_and_cleans_up(
    desktop: Desktop, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for program in ("Xvfb", "openbox", "xdotool", "xprop"):
        path = shutil.which(program)
        assert path is not None
        (bin_dir / program).symlink_to(path)
    (bin_dir / "x11vnc").write_text("#!/bin/sh\necho 'x11vnc: no way today' >&2\nexit 3\n")
    (bin_dir / "x11vnc").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    before = set(our_children())
    broken = Desktop(str(tmp_path))
    with pytest.raises(DesktopError) as failed:
        await broken.start()
    message = str(failed.value)
    assert "x11vnc" in message and "status 3" in message and "no way today" in message
    assert broken._procs == []
    left = {pid: name for pid, name in our_children().items() if pid not in before}
    assert not [name for name in left.values() if name in NAMES], left
    assert os.environ["DISPLAY"] == desktop.display
    result = await broken.call("computer", {"action": "get_screenshot"})
    assert result is not None and result["isError"] is True
    assert "x11vnc" in result["content"][0]["text"]


async def test_missing_program_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(DesktopError, match="needs Xvfb, which is not installed"):
        await Desktop(str(tmp_path)).start()
