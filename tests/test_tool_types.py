"""The `browser` and `gui` types end to end, through a real server on the local and Docker
backends: Chromium driven by the browser tools against pages the test serves on the sandbox's
own loopback, the desktop's `computer` tool, the authenticated `/desktop` page and websocket
relay, and both SDKs' helpers. The tool groups' own details are in test_browser.py and
test_desktop.py."""

from __future__ import annotations

import base64
import struct
import textwrap
import time
from collections.abc import Iterator

import pytest
import requests
import websocket

from .conftest import TOKEN, Server, run_official, start_server, stop_server

PAGE = """<!doctype html><title>Start</title>
<h1 id=h>Not clicked</h1>
<button onclick="document.getElementById('h').textContent='Clicked'">Press me</button>
<form action=/done.html method=get><input name=q aria-label=Query><input type=submit></form>
<a href=/done.html>Done page</a>"""
DONE = "<!doctype html><title>Done</title><p>All done</p>"
PORT = 8765


@pytest.fixture(scope="module", params=["local", "docker"])
def tools_server(request, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    backend = request.param
    if backend == "docker":
        request.getfixturevalue("docker_client")  # fails with set-up instructions if absent
    srv = start_server(
        tmp_path_factory.mktemp(f"tools-{backend}"),
        f"--SandboxApp.backend={backend}",
        "--SandboxApp.sandbox_types=browser,gui",
        "--SandboxApp.pool_size=1",
        "--SandboxApp.call_timeout=30",
    )
    yield srv
    stop_server(srv)


def call(server: Server, sid: str, tool: str, **arguments) -> dict:
    return server.data("call_tool", identity=sid, tool_name=tool, arguments=arguments)


def text(result: dict) -> str:
    return "\n".join(c["text"] for c in result["content"] if c["type"] == "text")


def shell(server: Server, sid: str, command: str) -> str:
    return text(call(server, sid, "run_shell_command", command=command))


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def image(result: dict) -> bytes:
    (item,) = [c for c in result["content"] if c["type"] == "image"]
    return base64.b64decode(item["data"])


def serve_pages(server: Server, sid: str) -> str:
    """Write the test pages into the workspace and serve them on the sandbox's loopback."""
    requests.put(f"{server.url}/proxy/{sid}/workspace/file", params={"path": "site/index.html"},
                 data=PAGE, headers=server.headers, timeout=30).raise_for_status()  # fmt: skip
    requests.put(f"{server.url}/proxy/{sid}/workspace/file", params={"path": "site/done.html"},
                 data=DONE, headers=server.headers, timeout=30).raise_for_status()  # fmt: skip
    shell(server, sid, f"cd site && nohup python3 -m http.server {PORT} --bind 127.0.0.1 "
                       "> ../http.log 2>&1 &")  # fmt: skip
    deadline = time.monotonic() + 20
    url = f"http://127.0.0.1:{PORT}/"
    while "ok" not in shell(server, sid, f"python3 -c \"import urllib.request as u; "
                                         f"u.urlopen('{url}'); print('ok')\" 2>&1"):  # fmt: skip
        assert time.monotonic() < deadline, shell(server, sid, "cat http.log")
        time.sleep(0.2)
    return url


def ref_of(snapshot: str, needle: str) -> str:
    for line in snapshot.splitlines():
        if needle in line and "[ref=" in line:
            return line.split("[ref=")[1].split("]")[0]
    raise AssertionError(f"no ref for {needle!r} in:\n{snapshot}")


def test_browser_tools_through_the_server(tools_server: Server) -> None:
    server = tools_server
    sid = server.data("create_from_pool", sandbox_type="browser")
    try:
        groups = server.data("list_tools", identity=sid)
        assert set(groups) == {"generic", "browser"}
        navigate = groups["browser"]["browser_navigate"]["json_schema"]["function"]
        assert navigate["parameters"]["required"] == ["url"]

        url = serve_pages(server, sid)
        result = call(server, sid, "browser_navigate", url=url)
        assert not result["isError"], result
        snapshot = text(call(server, sid, "browser_snapshot"))
        assert "Not clicked" in snapshot

        call(server, sid, "browser_click", element="Press me button",
             ref=ref_of(snapshot, 'button "Press me"'))  # fmt: skip
        assert "Clicked" in text(call(server, sid, "browser_snapshot"))

        result = call(server, sid, "browser_type", element="Query", ref=ref_of(snapshot, "Query"),
                      text="hello", submit=True)  # fmt: skip
        assert not result["isError"], result
        call(server, sid, "browser_wait_for", text="All done")
        assert "All done" in text(call(server, sid, "browser_snapshot"))

        shot = call(server, sid, "browser_take_screenshot", raw=True)
        assert png_size(image(shot)) == (1024, 768)

        call(server, sid, "browser_tab_new", url=url)
        tabs = text(call(server, sid, "browser_tab_list"))
        assert tabs.count("127.0.0.1") == 2, tabs

        result = call(server, sid, "browser_pdf_save", filename="page.pdf")
        assert not result["isError"], result
        pdf = requests.get(f"{server.url}/proxy/{sid}/workspace/file",
                           params={"path": "page.pdf", "format": "bytes"},
                           headers=server.headers, timeout=30)  # fmt: skip
        assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")

        stale = call(server, sid, "browser_click", element="gone", ref="e999")
        assert stale["isError"] is True
        # The browser type is headless: no desktop behind /desktop.
        no_desktop = requests.get(f"{server.url}/desktop/{sid}/vnc/vnc_relay.html",
                                  params={"token": TOKEN}, timeout=30)  # fmt: skip
        assert no_desktop.status_code == 404 and "has no desktop" in no_desktop.text
    finally:
        server.data("release", identity=sid)


def test_gui_computer_tool_and_desktop_relay(tools_server: Server) -> None:
    server = tools_server
    sid = server.data("create_from_pool", sandbox_type="gui")
    try:
        assert "computer" in server.data("list_tools", identity=sid)
        before = image(call(server, sid, "computer", action="get_screenshot"))
        assert png_size(before) == (1280, 800)
        # A window appears where the screenshot was empty.
        shell(server, sid, "nohup xterm -geometry 40x10+0+0 -e sleep 600 >/dev/null 2>&1 &")
        deadline = time.monotonic() + 20
        while image(call(server, sid, "computer", action="get_screenshot")) == before:
            assert time.monotonic() < deadline, "the xterm never showed on the screenshot"
            time.sleep(0.3)
        call(server, sid, "computer", action="mouse_move", coordinate=[300, 200])
        position = text(call(server, sid, "computer", action="get_cursor_position"))
        assert "300" in position and "200" in position, position

        info = server.data("get_info", identity=sid)
        page = f"{server.url}/desktop/{sid}/vnc/vnc_relay.html"
        assert requests.get(page, timeout=30).status_code == 401
        assert requests.get(page, params={"password": "wrong"}, timeout=30).status_code == 401
        with_password = requests.get(page, params={"password": info["runtime_token"]}, timeout=30)
        assert with_password.status_code == 200 and "RFB" in with_password.text
        # The page's own scripts load with the cookie the first answer set.
        cookies = with_password.cookies
        script = requests.get(f"{server.url}/desktop/{sid}/vnc/core/rfb.js", cookies=cookies,
                              timeout=30)  # fmt: skip
        assert script.status_code == 200
        assert requests.get(page, params={"token": TOKEN}, timeout=30).status_code == 200
        # Only the noVNC files are reachable through /desktop.
        assert requests.get(f"{server.url}/desktop/{sid}/healthz", params={"token": TOKEN},
                            timeout=30).status_code == 404  # fmt: skip

        ws_url = server.url.replace("http", "ws", 1) + f"/desktop/{sid}"
        with pytest.raises(websocket.WebSocketBadStatusException) as refused:
            websocket.create_connection(ws_url, timeout=10)
        assert refused.value.status_code == 401
        ws = websocket.create_connection(f"{ws_url}?token={TOKEN}", timeout=10)
        try:
            opcode, data = ws.recv_data()
            assert opcode == websocket.ABNF.OPCODE_BINARY and data.startswith(b"RFB 003.")
        finally:
            ws.close()
        ws = websocket.create_connection(f"{ws_url}?password={info['runtime_token']}", timeout=10)
        ws.close()
    finally:
        server.data("release", identity=sid)


def test_network_off_blocks_the_internet_but_not_the_sandbox(tmp_path) -> None:
    server = start_server(
        tmp_path, "--SandboxApp.sandbox_types=browser", "--SandboxApp.pool_size=1",
        "--SandboxApp.network=False", "--SandboxApp.call_timeout=30",
    )  # fmt: skip
    try:
        sid = server.data("create_from_pool", sandbox_type="browser")
        outside = call(server, sid, "browser_navigate", url="http://example.com/")
        assert outside["isError"] is True and "net::ERR_" in text(outside), outside
        inside = call(server, sid, "browser_navigate", url=serve_pages(server, sid))
        assert not inside["isError"], inside
    finally:
        stop_server(server)


def test_official_sdk_browser_and_gui_helpers(tools_server: Server, agentscope_python: str) -> None:
    server = tools_server
    url = f"http://127.0.0.1:{PORT}/"
    script = textwrap.dedent(f"""
        import json, urllib.request
        from agentscope_runtime.sandbox import BrowserSandbox, GuiSandbox
        out = {{}}
        with BrowserSandbox(base_url={server.url!r}, bearer_token={TOKEN!r}) as sb:
            sb.run_shell_command(command="mkdir -p site && echo '<title>Hi</title><p>Hello' > site/index.html && cd site && (nohup python3 -m http.server {PORT} --bind 127.0.0.1 >/dev/null 2>&1 &) && sleep 1.5")
            out["navigate"] = sb.browser_navigate("{url}")
            out["snapshot"] = sb.browser_snapshot()
            out["tabs"] = sb.browser_tab_list()
        with GuiSandbox(base_url={server.url!r}, bearer_token={TOKEN!r}) as gui:
            shot = gui.computer_use("get_screenshot")
            out["shot_types"] = [c["type"] for c in shot["content"]]
            out["desktop_status"] = urllib.request.urlopen(gui.desktop_url).status
        print("RESULT=" + json.dumps(out))
    """)
    out = run_official(agentscope_python, script)
    assert out["navigate"]["isError"] is False, out
    assert "Hello" in out["snapshot"]["content"][0]["text"]
    assert "image" in out["shot_types"]
    assert out["desktop_status"] == 200


def test_our_sdk_browser_and_gui_helpers(tools_server: Server) -> None:
    from jupyter_sandbox import BrowserSandbox, GuiSandbox

    with BrowserSandbox(base_url=tools_server.url, bearer_token=TOKEN) as sb:
        url = serve_pages(tools_server, sb.sandbox_id)
        assert sb.browser_navigate(url)["isError"] is False
        assert "Press me" in sb.browser_snapshot()["content"][0]["text"]
    with GuiSandbox(base_url=tools_server.url, bearer_token=TOKEN) as gui:
        assert png_size(image(gui.computer_use("get_screenshot"))) == (1280, 800)
        assert requests.get(gui.desktop_url, timeout=30).status_code == 200
