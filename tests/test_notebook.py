"""The notebook layer: `%sandbox` magics in real kernels (nbclient), the quickstart notebook,
release on kernel shutdown, discovery of a real `jupyter server`, and the widgets driven
without a frontend, all against real servers on the local backend."""

from __future__ import annotations

import base64
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
import requests
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from jupyter_sandbox.client import BaseSandbox, BrowserSandbox, GuiSandbox

from .conftest import ROOT, Server, free_port, start_server, stop_server

PNG = b"\x89PNG\r\n\x1a\n"
ID = re.compile(r"runtime-sandbox-container-\w+")


@pytest.fixture(scope="module")
def nb_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(
        tmp_path_factory.mktemp("nb-server"),
        "--SandboxApp.sandbox_types=base,browser",
        "--SandboxApp.pool_size=1",
    )
    yield srv
    stop_server(srv)


# ------------------------------------------------------------------------- helpers


def kernel_env(server: Server | None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER_SANDBOX", "PYTEST"))}
    if server is not None:
        env["JUPYTER_SANDBOX_URL"] = server.url
        env["JUPYTER_SANDBOX_TOKEN"] = server.token
    env.update(extra)
    return env


def notebook(*sources: str | tuple[str, bool]) -> nbformat.NotebookNode:
    """Code cells; `(source, True)` is a cell allowed to fail (tag `raises-exception`)."""
    nb = nbformat.v4.new_notebook()
    for source in sources:
        text, may_fail = source if isinstance(source, tuple) else (source, False)
        cell = nbformat.v4.new_code_cell(text)
        if may_fail:
            cell.metadata["tags"] = ["raises-exception"]
        nb.cells.append(cell)
    return nb


def client_for(nb: nbformat.NotebookNode, tmp: Path) -> NotebookClient:
    return NotebookClient(
        nb, kernel_name="python3", timeout=180, resources={"metadata": {"path": str(tmp)}}
    )


def stream(cell, name: str = "stdout") -> str:
    return "".join(o.get("text", "") for o in cell.outputs if o.get("name") == name)


def plain(cell) -> str:
    return "".join(o.get("data", {}).get("text/plain", "") for o in cell.outputs)


def listed(server: Server) -> list[str]:
    response = requests.get(f"{server.url}/api/sandboxes", headers=server.headers, timeout=30)
    response.raise_for_status()
    return [s["id"] for s in response.json()["sandboxes"]]


def wait_for(predicate, timeout: float = 20, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


# ------------------------------------------------------------------------- notebooks


def test_magics_in_a_kernel_and_release_on_shutdown(nb_server: Server, tmp_path: Path) -> None:
    """Each magic in a real kernel, checked cell by cell against the server; the kernel's
    sandboxes are released when it shuts down."""
    nb = notebook(
        "%load_ext jupyter_sandbox",
        "%sandbox open",  # 1
        "%sandbox run sb1 -- echo hi",  # 2
        "%sandbox run sb1 -- echo out; echo oops >&2; exit 3",  # 3
        "%%sandbox\nprint(6*7)",  # 4
        "%%sandbox sb1\nx = 1\n1/0",  # 5: traceback on stderr, the cell passes
        ("%%sandbox sb1 --raise\ndef f(:\n  pass", True),  # 6: the cell fails
        "%%sandbox\n"  # 7: an image the remote cell displays
        "import base64\nfrom IPython.display import Image, display\n"
        f"display(Image(base64.b64decode({base64.b64encode(_tiny_png()).decode()!r})))",
        "%sandbox list",  # 8
        "%sandbox tools sb1",  # 9
        ("%sandbox bogus", True),  # 10
        ("%sandbox run nosuch -- true", True),  # 11
        "import jupyter_sandbox.notebook.magics as m\nm.PROGRESS_AFTER = 0.0",  # 12
        "%sandbox open browser --name web",  # 13: through the progress bar
        "%sandbox close sb1",  # 14
        "from jupyter_sandbox.notebook import get_sandbox\n"  # 15
        "print(get_sandbox('web').sandbox_id)",
    )
    client = client_for(nb, tmp_path)
    cells = nb.cells
    sb1 = web = ""
    with client.setup_kernel(env=kernel_env(nb_server)):
        for index, cell in enumerate(cells):
            if index == 14:  # before closing sb1: both are listed, marked as ours
                ids = listed(nb_server)
                assert sb1 in ids and web in ids
            client.execute_cell(cell, index)
            if index == 1:
                (sb1,) = ID.findall(plain(cell))
                assert plain(cell).startswith("SandboxPanel(sb1, base, ")
                assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {})
                           for o in cell.outputs)  # fmt: skip
            if index == 13:
                (web,) = ID.findall(plain(cell))
        still_listed = listed(nb_server)
    after = listed(nb_server)

    assert stream(cells[2]) == "hi\n"
    assert stream(cells[3]) == "out\n" and "oops" in stream(cells[3], "stderr")
    assert "[exit code 3]" in stream(cells[3], "stderr")
    assert stream(cells[4]) == "42\n"
    assert "ZeroDivisionError" in stream(cells[5], "stderr") and stream(cells[5]) == ""
    assert not [o for o in cells[5].outputs if o["output_type"] == "error"]
    (error,) = [o for o in cells[6].outputs if o["output_type"] == "error"]
    assert error["ename"] == "RemoteCellError" and "SyntaxError" in error["evalue"]
    assert "SyntaxError" in "\n".join(error["traceback"])
    assert "SyntaxError" not in stream(cells[6], "stderr")  # shown once, as the error
    (image,) = [o for o in cells[7].outputs if "image/png" in o.get("data", {})]
    assert base64.b64decode(image["data"]["image/png"]) == _tiny_png()
    table = plain(cells[8])
    assert re.search(rf"^sb1\s+{sb1}\s+base\s+running", table, re.MULTILINE), table
    assert "<td><b>sb1</b></td>" in cells[8].outputs[0]["data"]["text/html"]
    assert "generic (2): run_ipython_cell, run_shell_command" in stream(cells[9])
    usage = stream(cells[10], "stderr")
    assert "UsageError" in usage and "invalid choice: 'bogus'" in usage and "usage:" in usage
    assert "Traceback" not in usage
    assert "No sandbox named 'nosuch'" in stream(cells[11], "stderr")
    assert len(cells[13].outputs) == 1  # the progress bar was replaced by the sandbox
    assert plain(cells[13]).startswith("SandboxPanel(web, browser, ")
    assert f"Released sb1 ({sb1})." in stream(cells[14])
    assert stream(cells[15]).strip() == web

    assert sb1 not in still_listed and web in still_listed  # close sb1; web still open
    assert web not in after  # released when the kernel shut down


def _tiny_png() -> bytes:
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", 2, 2, 8, 2, 0, 0, 0)
    rows = b"\x00\xff\x00\x00\x00\xff\x00" * 2
    return PNG + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def test_usage_errors_fail_the_cell(nb_server: Server, tmp_path: Path) -> None:
    """A bad `%sandbox` line is a UsageError: one message, and "Run all" stops there."""
    nb = notebook("%load_ext jupyter_sandbox", "%sandbox close")
    with pytest.raises(CellExecutionError, match="usage: %sandbox close NAME"):
        client_for(nb, tmp_path).execute(env=kernel_env(nb_server))


def test_quickstart_notebook_runs(nb_server: Server, tmp_path: Path) -> None:
    """examples/quickstart.ipynb runs top to bottom; nothing it opened stays open."""
    nb = nbformat.read(ROOT / "examples" / "quickstart.ipynb", as_version=4)
    before = set(listed(nb_server))
    client_for(nb, tmp_path).execute(env=kernel_env(nb_server))
    code = [c for c in nb.cells if c.cell_type == "code"]
    by_source = {c.source.splitlines()[0]: c for c in code}
    assert "Using the sandbox server at " + nb_server.url in stream(by_source["%sandbox connect"])
    assert "hello from" in stream(
        by_source['%sandbox run sb1 -- echo "hello from $(hostname)" && python3 --version && pwd']
    )
    images = [o for c in code for o in c.outputs if "image/png" in o.get("data", {})]
    assert len(images) == 2  # the gradient from %%sandbox, the browser screenshot
    assert all(base64.b64decode(o["data"]["image/png"]).startswith(PNG) for o in images)
    assert "Hello from a sandboxed Chromium" in "".join(stream(c) for c in code)
    assert "KeyError" in "".join(stream(c, "stderr") for c in code)
    assert "Released sb1, web." in stream(code[-1])
    assert set(listed(nb_server)) <= before


def test_no_server_says_how_to_connect(tmp_path: Path) -> None:
    """No JUPYTER_SANDBOX_URL and no running Jupyter server: the discovery message, not a
    traceback."""
    runtime = tmp_path / "runtime"
    runtime.mkdir()
    nb = notebook("%load_ext jupyter_sandbox", ("%sandbox open", True))
    client_for(nb, tmp_path).execute(env=kernel_env(None, JUPYTER_RUNTIME_DIR=str(runtime)))
    message = stream(nb.cells[1], "stderr")
    assert "UsageError: No jupyter-sandbox server found" in message
    assert "%sandbox connect URL --token TOKEN" in message and "Traceback" not in message


def test_process_exit_and_unload_release(nb_server: Server, tmp_path: Path) -> None:
    """Outside a kernel too: `%unload_ext` releases, and so does the process's exit (atexit)."""
    script = (
        "from IPython.core.interactiveshell import InteractiveShell\n"
        "from jupyter_sandbox.notebook import get_sandbox\n"
        "ip = InteractiveShell.instance()\n"
        "ip.run_line_magic('load_ext', 'jupyter_sandbox')\n"
        "ip.run_line_magic('sandbox', 'open --name a')\n"
        "a = get_sandbox('a').sandbox_id\n"
        "ip.run_line_magic('unload_ext', 'jupyter_sandbox')\n"
        "import requests, os\n"
        "url = os.environ['JUPYTER_SANDBOX_URL'] + '/api/sandboxes'\n"
        "h = {'Authorization': 'Bearer ' + os.environ['JUPYTER_SANDBOX_TOKEN']}\n"
        "ids = [s['id'] for s in requests.get(url, headers=h).json()['sandboxes']]\n"
        "print('UNLOADED', a, a in ids)\n"
        "ip.run_line_magic('load_ext', 'jupyter_sandbox')\n"
        "ip.run_line_magic('sandbox', 'open --name b')\n"
        "print('OPEN', get_sandbox('b').sandbox_id, flush=True)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], env=kernel_env(nb_server), cwd=tmp_path,
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    _, a, a_listed = (
        re.search(r"^UNLOADED (\S+) (\w+)$", proc.stdout, re.MULTILINE).group(0).split()
    )
    assert a_listed == "False"
    b = re.search(r"^OPEN (\S+)$", proc.stdout, re.MULTILINE).group(1)
    assert b not in listed(nb_server)  # released at exit


def test_discovery_finds_a_running_jupyter_server(tmp_path: Path) -> None:
    """A real `jupyter server` (the extension is enabled by the package's config): with no
    JUPYTER_SANDBOX_URL, find_server() and the magics use it, with its token."""
    port = free_port()
    runtime = tmp_path / "runtime"
    env = kernel_env(None, JUPYTER_RUNTIME_DIR=str(runtime))
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyter_server", "--ip=127.0.0.1", f"--port={port}", "--no-browser", "--allow-root",
         "--ServerApp.token=disco-token", "--SandboxApp.pool_size=1",
         f"--LocalBackend.state_dir={tmp_path / 'state'}", f"--ServerApp.root_dir={tmp_path}"],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=(tmp_path / "log").open("wb"),
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}/sandbox"
    try:

        def ready() -> bool:
            assert proc.poll() is None, (tmp_path / "log").read_text()
            try:
                return requests.get(f"{base}/health", timeout=1).json()["pools"]["base"]["warm"] > 0
            except (requests.RequestException, ValueError, KeyError):
                return False

        wait_for(ready, timeout=120, what="jupyter server")
        found = subprocess.run(
            [sys.executable, "-c", "from jupyter_sandbox.discovery import find_server\n"
             "i = find_server(); print(i.base_url, i.token)"],
            env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert found.stdout.split() == [base, "disco-token"], found.stderr

        nb = notebook(
            "%load_ext jupyter_sandbox",
            "%sandbox connect",
            (f"%sandbox connect {base} --token wrong", True),
            f"%sandbox connect http://127.0.0.1:{port}/lab?token=disco-token",
            "%%sandbox\nprint('via-discovery')",  # opens sb1 by itself
            "%sandbox run -- echo from-shell",
        )
        client_for(nb, tmp_path).execute(env=env)
        assert f"Using the sandbox server at {base} " in stream(nb.cells[1])
        assert "refused the token" in stream(nb.cells[2], "stderr")
        assert f"Using the sandbox server at {base} " in stream(nb.cells[3])
        opened, printed = stream(nb.cells[4]).splitlines()
        assert opened.startswith("(opened sb1: base sandbox ") and printed == "via-discovery"
        assert stream(nb.cells[5]) == "from-shell\n"
        (sid,) = ID.findall(opened)
        headers = {"Authorization": "Bearer disco-token"}
        overview = requests.get(f"{base}/api/sandboxes", headers=headers, timeout=30).json()
        assert sid not in [s["id"] for s in overview["sandboxes"]]
    finally:
        proc.terminate()
        proc.wait(60)


# --------------------------------------------------------------------------- widgets


def test_card_shows_the_sandbox_and_releases_it(nb_server: Server) -> None:
    from jupyter_sandbox.notebook.widgets import SandboxCard

    sb = BaseSandbox(base_url=nb_server.url, bearer_token=nb_server.token).start()
    try:
        card = SandboxCard(sb, name="card")
        assert sb.sandbox_id in card.title.value and "card" in card.title.value
        assert card.state == "running" and "running" in card.state_label.value
        assert card.age_label.value.startswith("age ")
        assert card.tools.selected_index is None  # collapsed
        assert "run_shell_command" in card.tools_html.value
        assert card.refresh() == "running"
        released = []
        card.on_release(lambda: released.append(True))
        card.release_button.click()
        assert card.release_button.disabled and card.state == "released" and released == [True]
        assert "released" in card.state_label.value
        assert sb.sandbox_id not in listed(nb_server)
    finally:
        sb.close()


def test_shell_widget_runs_commands(nb_server: Server) -> None:
    from jupyter_sandbox.notebook.widgets import ShellWidget

    with BaseSandbox(base_url=nb_server.url, bearer_token=nb_server.token) as sb:
        shell = ShellWidget(sb)
        shell.run("echo hi")
        assert "$ echo hi\nhi\n" in shell.output.value
        shell.command.value = "echo there; exit 4"
        shell.run_button.click()
        assert "there\n[exit code 4]" in shell.output.value and shell.command.value == ""


def test_browser_view_and_panel(nb_server: Server) -> None:
    """Screenshots as PNG bytes, sent only when they change; the address bar navigates;
    the live poller follows the page and stops when the sandbox is released."""
    from jupyter_sandbox.notebook.widgets import BrowserView, SandboxPanel, ShellWidget

    sb = BrowserSandbox(base_url=nb_server.url, bearer_token=nb_server.token).start()
    try:
        view = BrowserView(sb, interval=0.2, live=False)
        sb.browser_navigate("data:text/html,<h1>One</h1>")
        png = view.refresh()
        assert png.startswith(PNG) and view.image.value == png and view.updates == 1
        assert view.refresh() == png and view.updates == 1  # unchanged: nothing sent
        assert not view.live

        view.address.value = "data:text/html,<h1>Two</h1>"
        view.go_button.click()
        assert view.updates == 2 and view.image.value != png
        assert view.address.value == "data:text/html,<h1>Two</h1>"
        assert view.live and view.live_toggle.value  # Go resumes live updates

        sb.browser_navigate("data:text/html,<h1>Three</h1>")  # changed behind its back
        wait_for(lambda: view.updates == 3, what="the live view to follow the page")

        panel = SandboxPanel(sb, name="web", live=True)
        kinds = [type(v) for v in panel.views]
        assert BrowserView in kinds and ShellWidget in kinds
        live = panel.views[0]
        wait_for(lambda: live.live, what="the panel's live view")
        panel.card.release_button.click()
        assert not live.live and live.status.value == "released"
        wait_for(lambda: not view.live, what="the other view to notice the release")
        assert view.status.value == "the sandbox is gone"
    finally:
        sb.close()


def test_desktop_view_embeds_the_desktop(nb_server: Server) -> None:
    from jupyter_sandbox.notebook.widgets import DesktopView, SandboxPanel

    with GuiSandbox(base_url=nb_server.url, bearer_token=nb_server.token) as sb:
        view = DesktopView(sb)
        assert view.url == sb.desktop_url and f'src="{view.url}"' in view.frame.value
        page = requests.get(view.url, timeout=30)  # the iframe's page, by its own password
        assert page.status_code == 200 and "<!DOCTYPE html>" in page.text
        panel = SandboxPanel(sb, live=False)
        assert any(isinstance(v, DesktopView) for v in panel.views)


def test_opening_progress_shows_the_pool(nb_server: Server) -> None:
    from jupyter_sandbox.notebook.widgets import OpeningProgress

    progress = OpeningProgress("browser")
    health = requests.get(f"{nb_server.url}/health", timeout=30).json()
    progress.update(health, 1.25)
    pool = health["pools"]["browser"]
    assert progress.bar.max == pool["target"] and progress.bar.value == pool["warm"]
    assert "1.2 s" in progress.label.value and "browser" in progress.label.value
