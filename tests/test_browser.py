"""The `browser` tool group directly (no server): upstream's tool names and arguments, element
refs from snapshots, screenshots and PDFs kept inside the workspace, dialogs, tabs, and a
browser that leaves no process behind. Pages are served on 127.0.0.1 by the test itself."""

from __future__ import annotations

import asyncio
import base64
import functools
import http.server
import os
import re
import signal
import socket
import struct
import threading
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest

from jupyter_sandbox.box.browser import TOOLS, BrowserTools, chromium_path

pytestmark = pytest.mark.skipif(
    not os.path.exists("/usr/bin/chromium") and chromium_path() is None,
    reason="needs a system Chromium (/usr/bin/chromium; CI installs the `chromium` package)",
)

UPSTREAM_NAMES = {
    "browser_close", "browser_resize", "browser_console_messages", "browser_handle_dialog",
    "browser_file_upload", "browser_install", "browser_press_key", "browser_navigate",
    "browser_navigate_back", "browser_navigate_forward", "browser_network_requests",
    "browser_pdf_save", "browser_take_screenshot", "browser_snapshot", "browser_click",
    "browser_drag", "browser_hover", "browser_type", "browser_select_option", "browser_tab_list",
    "browser_tab_new", "browser_tab_select", "browser_tab_close",
    "browser_generate_playwright_test", "browser_wait_for",
}  # fmt: skip

PAGES = {
    "index.html": """<!doctype html><html><head><title>Home</title></head><body>
<h1>Welcome</h1>
<a href="page2.html">Second page</a> <a href="page2.html" target="_blank">Popup</a>
<button onclick="document.getElementById('out').textContent = 'Changed by click'">Change</button>
<button onclick="alert('Hi there')">Alert</button>
<button onclick="document.getElementById('out').textContent = confirm('Sure?') ? 'confirmed' : 'cancelled'">Confirm</button>
<button onclick="setTimeout(() => { document.getElementById('late').textContent = 'Arrived late' }, 300)">Later</button>
<p id="out">Original text</p><p id="late"></p>
<script>console.log('hello from page'); console.error('something failed')</script>
</body></html>""",
    "page2.html": "<!doctype html><html><head><title>Second</title></head><body><h1>Page two</h1></body></html>",
    "form.html": """<!doctype html><html><head><title>Form</title></head><body>
<form action="result.html" method="get">
  <label for="name">Your name</label><input id="name" name="name" type="text">
  <button type="submit">Send</button>
</form>
<label for="color">Color</label>
<select id="color" onchange="document.getElementById('chosen').textContent = 'Chosen: ' + this.value">
  <option value="red">Red</option><option value="green">Green</option><option value="blue">Blue</option>
</select>
<p id="chosen">Chosen: none</p>
<label for="upload">Attachment</label>
<input id="upload" type="file" onchange="document.getElementById('file').textContent = 'Picked ' + this.files[0].name">
<p id="file">Picked nothing</p>
</body></html>""",
    "result.html": """<!doctype html><html><head><title>Result</title></head><body><p id="r"></p>
<script>document.getElementById('r').textContent = 'Hello ' + new URLSearchParams(location.search).get('name')</script>
</body></html>""",
}


# -- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    # One loop for the module: the shared browser's Playwright connection lives on it.
    loop = asyncio.new_event_loop()

    def on_error(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        # Playwright's own note of the driver killed on purpose below, unread by design.
        if "Connection closed while reading from the driver" not in str(context.get("exception")):
            loop.default_exception_handler(context)

    loop.set_exception_handler(on_error)
    yield loop
    loop.close()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The test pages, served on 127.0.0.1."""
    root = tmp_path_factory.mktemp("site")
    for name, html in PAGES.items():
        (root / name).write_text(html)

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("workspace")


@pytest.fixture(scope="module")
def browser(loop: asyncio.AbstractEventLoop, workspace: Path) -> Iterator[BrowserTools]:
    tools = BrowserTools(str(workspace))
    loop.run_until_complete(tools.start())
    yield tools
    loop.run_until_complete(tools.close())


@pytest.fixture
def call(loop: asyncio.AbstractEventLoop, browser: BrowserTools):
    """`call(tool, **arguments)` on the shared browser; the CallToolResult dict."""

    def call(tool: str, /, **arguments: Any) -> dict:
        result = loop.run_until_complete(browser.call(tool, arguments))
        assert result is not None and set(result) == {"meta", "content", "isError"}
        return result

    return call


def text(result: dict) -> str:
    return "\n".join(item["text"] for item in result["content"] if item["type"] == "text")


def ok(result: dict) -> str:
    assert not result["isError"], text(result)
    return text(result)


def ref(snapshot: str, role: str, name: str) -> str:
    """The ref of the element `role "name"` in a snapshot text."""
    match = re.search(rf'- {role} "{re.escape(name)}"[^\n]*?\[ref=(\w+)\]', snapshot)
    assert match, f'no {role} "{name}" in:\n{snapshot}'
    return match.group(1)


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def screenshot(call, **arguments: Any) -> bytes:
    result = call("browser_take_screenshot", raw=True, **arguments)
    ok(result)
    (image,) = [c for c in result["content"] if c["type"] == "image"]
    assert image["mimeType"] == "image/png"
    return base64.b64decode(image["data"])


def children(pid: int) -> set[int]:
    """All live descendants of `pid`."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {p for p, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def gone(pids: set[int], timeout: float = 10) -> bool:
    """Whether all of `pids` exit within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while alive(pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not alive(pids)


def alive(pids: set[int]) -> set[int]:
    live = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            live.add(pid)
    return live


# -- catalogue -------------------------------------------------------------------------------


def test_catalogue_and_schemas(tmp_path: Path) -> None:
    group = BrowserTools(str(tmp_path)).list_group()
    assert set(group) == UPSTREAM_NAMES == set(TOOLS)
    for name, entry in group.items():
        function = entry["json_schema"]["function"]
        assert entry["name"] == function["name"] == name and function["description"]
        params = function["parameters"]
        assert params["type"] == "object" and set(params["required"]) <= set(params["properties"])
        for prop in params["properties"].values():
            assert prop["type"] in {"string", "number", "boolean", "array"} and prop["description"]
            if prop["type"] == "array":
                assert prop["items"] == {"type": "string"}
    params = {n: group[n]["json_schema"]["function"]["parameters"] for n in group}
    assert params["browser_click"]["required"] == ["element", "ref"]
    assert params["browser_drag"]["required"] == [
        "startElement",
        "startRef",
        "endElement",
        "endRef",
    ]
    assert params["browser_type"]["required"] == ["element", "ref", "text"]
    assert set(params["browser_type"]["properties"]) == {
        "element",
        "ref",
        "text",
        "submit",
        "slowly",
    }
    assert set(params["browser_take_screenshot"]["properties"]) == {
        "raw",
        "filename",
        "element",
        "ref",
    }
    assert params["browser_take_screenshot"]["required"] == []
    assert set(params["browser_wait_for"]["properties"]) == {"time", "text", "textGone"}
    assert params["browser_handle_dialog"]["required"] == ["accept"]
    assert params["browser_tab_select"]["properties"]["index"]["type"] == "number"


def test_unknown_tool_and_bad_arguments(call) -> None:
    assert run(BrowserTools("/tmp").call("nope", {})) is None
    result = call("browser_navigate")
    assert result["isError"] and "missing required argument 'url'" in text(result)
    result = call("browser_click", element="x", ref=3)
    assert result["isError"] and "'ref' must be a string" in text(result)


# -- pages and refs --------------------------------------------------------------------------


def test_navigate_and_snapshot_have_refs(call, site: str) -> None:
    out = ok(call("browser_navigate", url=f"{site}/index.html"))
    assert "- Ran Playwright code:" in out and f'page.goto("{site}/index.html")' in out
    assert f"- Page URL: {site}/index.html" in out and "- Page Title: Home" in out
    assert "- Page Snapshot\n```yaml\n" in out and out.endswith("\n```")
    assert re.search(r'- heading "Welcome" \[level=1\] \[ref=e\d+\]', out)
    snap = ok(call("browser_snapshot"))
    assert snap.startswith("- Ran Playwright code:") and "- Page Title: Home" in snap
    assert ref(snap, "button", "Change") == ref(out, "button", "Change")


def test_click_changes_the_page(call, site: str) -> None:
    snap = ok(call("browser_navigate", url=f"{site}/index.html"))
    assert "Original text" in snap
    out = ok(call("browser_click", element="Change button", ref=ref(snap, "button", "Change")))
    assert 'get_by_role("button", name="Change").click()' in out
    assert "Changed by click" in out and "Original text" not in out


def test_link_click_and_history(call, site: str) -> None:
    snap = ok(call("browser_navigate", url=f"{site}/index.html"))
    out = ok(call("browser_click", element="link", ref=ref(snap, "link", "Second page")))
    assert f"- Page URL: {site}/page2.html" in out and "Page two" in out
    assert "- Page Title: Home" in ok(call("browser_navigate_back"))
    assert "- Page Title: Second" in ok(call("browser_navigate_forward"))


def test_stale_or_bad_ref_fails_fast(call, site: str) -> None:
    ok(call("browser_navigate", url=f"{site}/index.html"))
    started = time.monotonic()
    for bad in ("e999", "nonsense", ""):
        result = call("browser_click", element="nothing", ref=bad)
        assert result["isError"]
        assert f"Ref {bad} not found in the current page snapshot" in text(result)
    assert time.monotonic() - started < 3


def test_type_and_submit(call, site: str) -> None:
    snap = ok(call("browser_navigate", url=f"{site}/form.html"))
    box = ref(snap, "textbox", "Your name")
    out = ok(call("browser_type", element="name box", ref=box, text="Ada", submit=True))
    assert f"- Page URL: {site}/result.html?name=Ada" in out and "Hello Ada" in out
    snap = ok(call("browser_navigate", url=f"{site}/form.html"))
    box = ref(snap, "textbox", "Your name")
    out = ok(call("browser_type", element="name box", ref=box, text="Bob", slowly=True))
    assert "press_sequentially" in out and "result.html" not in out
    out = ok(call("browser_press_key", key="Enter"))
    assert "Hello Bob" in out


def test_select_option(call, site: str) -> None:
    snap = ok(call("browser_navigate", url=f"{site}/form.html"))
    out = ok(call("browser_select_option", element="color", ref=ref(snap, "combobox", "Color"),
                  values=["green"]))  # fmt: skip
    assert "Chosen: green" in out and 'option "Green" [selected]' in out
    # As upstream: a value may also name an option by its label.
    out = ok(call("browser_select_option", element="color", ref=ref(out, "combobox", "Color"),
                  values=["Blue"]))  # fmt: skip
    assert "Chosen: blue" in out


def test_hover_and_drag(call, site: str) -> None:
    snap = ok(call("browser_navigate", url=f"{site}/index.html"))
    out = ok(call("browser_hover", element="Change button", ref=ref(snap, "button", "Change")))
    assert ".hover()" in out
    out = ok(call("browser_drag", startElement="heading", startRef=ref(snap, "heading", "Welcome"),
                  endElement="button", endRef=ref(snap, "button", "Later")))  # fmt: skip
    assert ".drag_to(page." in out


# -- screenshots and files -------------------------------------------------------------------


def test_screenshots(call, site: str, workspace: Path) -> None:
    ok(call("browser_navigate", url=f"{site}/index.html"))
    assert png_size(screenshot(call)) == (1024, 768)
    # What the SDK's helper sends for "not given": empty strings.
    result = call("browser_take_screenshot", raw=False, filename="", element="", ref="")
    image, note = result["content"]
    assert not result["isError"] and image["type"] == "image" and note["type"] == "text"
    assert image["mimeType"] == "image/jpeg" and base64.b64decode(image["data"])[:2] == b"\xff\xd8"
    assert "- Page Title: Home" in note["text"]
    saved = screenshot(call, filename="shots/home.png")
    assert (workspace / "shots" / "home.png").read_bytes() == saved
    snap = ok(call("browser_snapshot"))
    element = screenshot(call, element="Change button", ref=ref(snap, "button", "Change"))
    width, height = png_size(element)
    assert width < 200 and height < 100
    result = call("browser_take_screenshot", ref=ref(snap, "button", "Change"))
    assert result["isError"] and "Both element and ref" in text(result)


def test_resize_changes_screenshot_size(call, site: str) -> None:
    ok(call("browser_navigate", url=f"{site}/index.html"))
    out = ok(call("browser_resize", width=640, height=480))
    assert "set_viewport_size" in out
    assert png_size(screenshot(call)) == (640, 480)
    ok(call("browser_resize", width=1024, height=768))
    assert png_size(screenshot(call)) == (1024, 768)
    assert call("browser_resize", width=0, height=10)["isError"]


def test_pdf_save(call, site: str, workspace: Path) -> None:
    ok(call("browser_navigate", url=f"{site}/index.html"))
    out = ok(call("browser_pdf_save", filename="docs/home.pdf"))
    path = workspace / "docs" / "home.pdf"
    assert str(path) in out and path.read_bytes().startswith(b"%PDF")
    before = set(workspace.glob("page-*.pdf"))
    out = ok(call("browser_pdf_save", filename=""))
    (made,) = set(workspace.glob("page-*.pdf")) - before
    assert re.fullmatch(r"page-\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d-\d{3}Z\.pdf", made.name)
    assert str(made) in out and made.read_bytes().startswith(b"%PDF")


def test_files_stay_in_the_workspace(call, site: str, workspace: Path) -> None:
    ok(call("browser_navigate", url=f"{site}/index.html"))
    outside = workspace.parent / "escaped.png"
    for name in ("../escaped.png", str(outside), "shots/../../escaped.png", "/tmp/escaped.pdf"):
        tool = "browser_pdf_save" if name.endswith(".pdf") else "browser_take_screenshot"
        result = call(tool, filename=name)
        assert result["isError"] and "outside the workspace" in text(result), name
    assert not outside.exists() and not Path("/tmp/escaped.pdf").exists()
    (workspace / "link").symlink_to(workspace.parent)
    result = call("browser_take_screenshot", filename="link/escaped.png")
    assert result["isError"] and not outside.exists()


def test_file_upload(call, site: str, workspace: Path) -> None:
    (workspace / "upload.txt").write_text("data")
    snap = ok(call("browser_navigate", url=f"{site}/form.html"))
    result = call("browser_file_upload", paths=["upload.txt"])
    assert result["isError"] and "only be used when there is related modal state" in text(result)
    out = ok(call("browser_click", element="file input", ref=ref(snap, "button", "Attachment")))
    assert '- [File chooser]: can be handled by the "browser_file_upload" tool' in out
    result = call("browser_file_upload", paths=["../outside.txt"])
    assert result["isError"] and "outside the workspace" in text(result)
    out = ok(call("browser_file_upload", paths=["upload.txt"]))
    assert "Picked upload.txt" in out


# -- tabs, dialogs, logs, waits --------------------------------------------------------------


def test_tabs(call, site: str) -> None:
    ok(call("browser_navigate", url=f"{site}/index.html"))
    assert (
        ok(call("browser_tab_list")) == f"### Open tabs\n- 1: (current) [Home] ({site}/index.html)"
    )
    out = ok(call("browser_tab_new", url=f"{site}/page2.html"))
    assert f"- 2: (current) [Second] ({site}/page2.html)" in out and "### Current tab" in out
    assert "- Page Title: Second" in out
    out = ok(call("browser_tab_select", index=1))
    assert "- 1: (current) [Home]" in out and "- Page Title: Home" in out
    assert call("browser_tab_select", index=3)["isError"]
    assert call("browser_tab_select", index=0)["isError"]
    out = ok(call("browser_tab_close", index=2))
    assert "### Open tabs" not in out and "- Page Title: Home" in out
    assert ok(call("browser_tab_list")).count("\n- ") == 1
    ok(call("browser_tab_new"))
    out = ok(call("browser_tab_list"))
    assert "- 2: (current) [] (about:blank)" in out
    ok(call("browser_tab_close", index=None))  # current
    # A page's popup is a tab too; the current tab stays.
    snap = ok(call("browser_snapshot"))
    out = ok(call("browser_click", element="popup link", ref=ref(snap, "link", "Popup")))
    assert "- 2: [" in out and "- Page Title: Home" in out
    deadline = time.monotonic() + 5
    while f"- 2: [Second] ({site}/page2.html)" not in ok(call("browser_tab_list")):
        assert time.monotonic() < deadline, "the popup did not load"
        time.sleep(0.1)
    ok(call("browser_tab_close", index=2))
    assert (
        ok(call("browser_tab_list")) == f"### Open tabs\n- 1: (current) [Home] ({site}/index.html)"
    )


def test_dialogs(call, site: str) -> None:
    snap = ok(call("browser_navigate", url=f"{site}/index.html"))
    result = call("browser_handle_dialog", accept=True)
    assert result["isError"] and "There is no modal state present" in text(result)
    out = ok(call("browser_click", element="Alert button", ref=ref(snap, "button", "Alert")))
    assert (
        '- ["alert" dialog with message "Hi there"]: can be handled by the "browser_handle_dialog" tool'
        in out
    )
    result = call("browser_snapshot")
    assert result["isError"] and 'Tool "browser_snapshot" does not handle the modal state' in text(
        result
    )
    out = ok(call("browser_handle_dialog", accept=True, promptText=""))
    assert "- Page Title: Home" in out and "Modal state" not in out

    out = ok(call("browser_click", element="Confirm button", ref=ref(snap, "button", "Confirm")))
    assert '"confirm" dialog with message "Sure?"' in out
    assert "cancelled" in ok(call("browser_handle_dialog", accept=False))
    ok(call("browser_click", element="Confirm button", ref=ref(snap, "button", "Confirm")))
    assert "confirmed" in ok(call("browser_handle_dialog", accept=True))


def test_console_and_network(call, site: str) -> None:
    ok(call("browser_navigate", url=f"{site}/index.html"))
    result = call("browser_console_messages")
    log, _ = result["content"]
    assert log["text"] == "[LOG] hello from page\n[ERROR] something failed"
    requests = ok(call("browser_network_requests"))
    assert f"[GET] {site}/index.html => [200] OK" in requests


def test_wait_for(call, site: str) -> None:
    snap = ok(call("browser_navigate", url=f"{site}/index.html"))
    ok(call("browser_click", element="Later", ref=ref(snap, "button", "Later")))
    out = ok(call("browser_wait_for", text="Arrived late", textGone=None, time=None))
    assert "Arrived late" in out and 'get_by_text("Arrived late")' in out
    ok(call("browser_wait_for", textGone="Nothing like this"))
    started = time.monotonic()
    ok(call("browser_wait_for", time=0.3))
    assert time.monotonic() - started >= 0.3
    result = call("browser_wait_for", time=None, text=None, textGone=None)
    assert result["isError"] and "Either time, text or textGone must be provided" in text(result)


def test_navigation_failure_is_an_error(call, site: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nobody listens once closed
    result = call("browser_navigate", url=f"http://127.0.0.1:{port}/")
    assert result["isError"] and "net::ERR_CONNECTION_REFUSED" in text(result)
    result = call("browser_navigate", url="not a url")
    assert result["isError"] and text(result).startswith("Error: ")
    # Chromium commits its error page after the failure: the next navigation must not trip on it.
    for _ in range(3):
        assert call("browser_navigate", url=f"http://127.0.0.1:{port}/")["isError"]
        assert "- Page Title: Second" in ok(call("browser_navigate", url=f"{site}/page2.html"))


def test_close_then_next_call_relaunches(call, site: str, browser: BrowserTools) -> None:
    ok(call("browser_navigate", url=f"{site}/index.html"))
    pids = children(os.getpid())
    out = ok(call("browser_close"))
    assert "Browser closed" in out
    out = ok(call("browser_snapshot"))  # a fresh browser on a blank page
    assert "- Page URL: about:blank" in out
    ok(call("browser_navigate", url=f"{site}/page2.html"))
    old_chromium = pids - children(os.getpid())
    assert old_chromium and gone(old_chromium)  # the driver stayed, the old browser went


def test_dead_browser_or_driver_is_replaced(call, site: str) -> None:
    def child(parent: int, prefix: str) -> int:
        """The one live child of `parent` whose command starts with `prefix`."""
        (pid,) = [
            p
            for p in alive(children(parent))
            if Path(f"/proc/{p}/comm").read_text().startswith(prefix)
            and int(Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[1]) == parent
        ]
        return pid

    ok(call("browser_navigate", url=f"{site}/index.html"))
    driver = child(os.getpid(), "node")
    os.kill(child(driver, "chromium"), signal.SIGKILL)  # the browser process
    assert "- Page Title: Second" in ok(call("browser_navigate", url=f"{site}/page2.html"))
    os.kill(driver, signal.SIGKILL)  # the Playwright driver: no event tells of its death
    assert "- Page Title: Home" in ok(call("browser_navigate", url=f"{site}/index.html"))
    assert child(os.getpid(), "node") != driver


def test_install_and_generate_test(call) -> None:
    assert "system Chromium" in ok(call("browser_install"))
    out = ok(call("browser_generate_playwright_test", name="Login", description="Logs in",
                  steps=["Open the page", "Click login"]))  # fmt: skip
    assert "Test name: Login" in out and "- 1. Open the page\n- 2. Click login" in out


# -- lifecycle of a browser of its own -------------------------------------------------------


def run(coroutine: Coroutine[Any, Any, Any]) -> Any:
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coroutine)
    finally:
        loop.close()


def test_calls_wait_for_start_and_close_leaves_nothing(tmp_path: Path, site: str) -> None:
    before = children(os.getpid())

    async def scenario() -> tuple[dict, set[int], set[str], dict]:
        tools = BrowserTools(str(tmp_path))
        starting = asyncio.ensure_future(tools.start())  # as the box starts it: in the background
        await asyncio.sleep(0)
        result = await tools.call("browser_navigate", {"url": f"{site}/page2.html"})
        await starting
        ours = children(os.getpid()) - before
        names = {Path(f"/proc/{p}/comm").read_text().strip() for p in alive(ours)}
        await tools.close()
        return result, ours, names, await tools.call("browser_snapshot", {})

    result, ours, names, after = run(scenario())
    assert "- Page Title: Second" in ok(result)
    assert any(n.startswith("node") for n in names), names
    assert any(n.startswith("chrom") for n in names), names
    assert after["isError"] and "closed" in text(after)
    assert gone(ours), [Path(f"/proc/{p}/cmdline").read_bytes()[:80] for p in alive(ours)]


def test_missing_chromium_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHROMIUM_PATH", str(tmp_path / "no-such-chromium"))
    tools = BrowserTools(str(tmp_path))

    async def scenario() -> tuple[str, dict]:
        try:
            await tools.start()
        except Exception as e:
            started = str(e)
        else:
            started = ""
        result = await tools.call("browser_navigate", {"url": "about:blank"})
        await tools.close()
        return started, result

    started, result = run(scenario())
    assert "No Chromium found" in started and "CHROMIUM_PATH" in started
    assert result["isError"] and "No Chromium found" in text(result)
