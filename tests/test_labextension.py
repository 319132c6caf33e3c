"""The JupyterLab panel, end to end: a real `jupyter lab` (the sandbox server extension enabled
by its installed config), real Chromium driven by Playwright, and the prebuilt labextension
that `pip install -e .` put in the environment.

Screenshots go to tests/artifacts/ (gitignored): panel.png, panel-error.png, panel-released.png.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from .conftest import Server, free_port, stop_server

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
TOKEN = "lab-test-token-0123456789"
BASE_URL = "/jl/"  # a non-root base_url: the panel must build its URLs from the page settings
LAB_TIMEOUT = 180  # JupyterLab's first load is slow on a 2-core machine
ACTION_TIMEOUT = 60_000  # ms, for a sandbox create / command / release seen in the page


# pytest-jupyter's autouse fixtures, made no-ops here: these tests run no in-process server,
# and the originals would pick up (and close) the loop that Playwright's sync API keeps running.
@pytest.fixture(autouse=True)
def jp_asyncio_loop():
    yield None


@pytest.fixture(autouse=True)
def jp_server_cleanup():
    yield


def jupyter_command() -> str:
    return str(Path(sys.executable).with_name("jupyter"))


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`jupyter lab` on a free port, with a pool of one base sandbox, stopped like conftest's
    servers (SIGTERM, then SIGKILL after 30 s)."""
    if importlib.util.find_spec("jupyterlab") is None:
        pytest.fail("jupyterlab is not installed (pip install -e '.[test]')", pytrace=False)
    tmp = tmp_path_factory.mktemp("lab")
    port = free_port()
    cmd = [
        sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={TOKEN}", f"--ServerApp.base_url={BASE_URL}",
        f"--ServerApp.root_dir={tmp}",
        "--SandboxApp.pool_size=1", "--SandboxApp.call_timeout=30",
        f"--SandboxApp.mount_dir={tmp / 'mounts'}",
        f"--LocalBackend.state_dir={tmp / 'state'}",
        "--LabApp.expose_app_in_browser=True",  # the notebook test runs cells by command
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER_SANDBOX", "PYTEST"))}
    env.update(
        JUPYTER_RUNTIME_DIR=str(tmp / "runtime"),
        JUPYTER_CONFIG_DIR=str(tmp / "config"),  # no user config; the sys-prefix one enables us
        JUPYTERLAB_SETTINGS_DIR=str(tmp / "settings"),
        JUPYTERLAB_WORKSPACES_DIR=str(tmp / "workspaces"),
    )
    log = tmp / "lab.log"
    proc = subprocess.Popen(cmd, cwd=tmp, stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env)
    server = Server(f"http://127.0.0.1:{port}{BASE_URL.rstrip('/')}", TOKEN, proc, tmp, log)
    try:
        wait_ready(server)
        yield server
    finally:
        stop_server(server)  # never leave a half-started server (and its jails) behind


def wait_ready(server: Server, timeout: float = LAB_TIMEOUT) -> None:
    """Until the sandbox pool is warm and JupyterLab serves its page."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise AssertionError(
                f"jupyter lab exited {server.proc.returncode}:\n{server.log_text()}"
            )
        try:
            health = requests.get(f"{server.url}/sandbox/health", timeout=2).json()
            page = requests.get(f"{server.url}/lab", params={"token": TOKEN}, timeout=5)
            if page.status_code == 200 and all(
                p["warm"] >= p["target"] for p in health["pools"].values()
            ):
                return
        except (requests.ConnectionError, requests.Timeout, ValueError, KeyError):
            pass
        time.sleep(0.2)
    raise AssertionError(f"jupyter lab not ready in {timeout} s:\n{server.log_text()}")


def overview(server: Server) -> dict:
    response = requests.get(
        f"{server.url}/sandbox/api/sandboxes",
        headers={"Authorization": f"token {server.token}"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture(scope="module")
def page(lab: Server):
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium", pytrace=False)
    ARTIFACTS.mkdir(exist_ok=True)
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
            ],
        )  # fmt: skip
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            page = context.new_page()
            page.set_default_timeout(ACTION_TIMEOUT)
            page.goto(f"{lab.url}/lab?token={TOKEN}", timeout=LAB_TIMEOUT * 1000)
            # Our sidebar tab exists once the plugins are activated; the splash screen goes
            # once the layout is restored (a click before that could be undone by it).
            tab = page.locator('.jp-SideBar [data-id="jupyter-sandbox-panel"]')
            tab.wait_for(state="visible", timeout=LAB_TIMEOUT * 1000)
            page.locator("#jupyterlab-splash").wait_for(
                state="detached", timeout=LAB_TIMEOUT * 1000
            )
            if not page.get_by_test_id("sandbox-panel").is_visible():
                tab.click()
            yield page
        finally:
            browser.close()


def test_labextension_listed_as_enabled() -> None:
    proc = subprocess.run(
        [jupyter_command(), "labextension", "list"], capture_output=True, text=True, timeout=120
    )
    output = re.sub(r"\x1b\[[0-9;]*m", "", proc.stdout + proc.stderr)
    assert re.search(r"jupyter-sandbox v\S+ enabled\s+OK", output), (
        "the panel is not installed: `pip install -e .` builds it with Node.js (jlpm); "
        f"without Node.js the editable install skips it.\n{output}"
    )


def test_panel_lists_pools(page) -> None:
    panel = page.get_by_test_id("sandbox-panel")
    expect(panel).to_be_visible()
    base = panel.locator('[data-testid="sandbox-pool"][data-pool-type="base"]')
    expect(base).to_be_visible()
    expect(base).to_contain_text("base")
    expect(base).to_contain_text("1 / 1")
    expect(panel.get_by_test_id("sandbox-type-select")).to_have_value("base")
    expect(panel.get_by_test_id("sandbox-error")).to_be_hidden()


def test_panel_shows_server_errors(page) -> None:
    """A failing refresh shows the server's detail in the panel, and the next good one clears it."""
    panel = page.get_by_test_id("sandbox-panel")
    error = panel.get_by_test_id("sandbox-error")
    pattern = re.compile(r"/sandbox/api/sandboxes(\?[^/]*)?$")
    page.route(
        pattern,
        lambda route: route.fulfill(
            status=503, content_type="application/json", body='{"detail": "state store down"}'
        ),
    )
    try:
        expect(error).to_be_visible(timeout=20_000)
        expect(error).to_contain_text("503: state store down")
        page.screenshot(path=str(ARTIFACTS / "panel-error.png"))
    finally:
        page.unroute(pattern)
    expect(error).to_be_hidden(timeout=20_000)


def test_create_run_release(page, lab: Server) -> None:
    panel = page.get_by_test_id("sandbox-panel")
    rows = panel.get_by_test_id("sandbox-row")
    before = {s["id"] for s in overview(lab)["sandboxes"]}
    expect(rows).to_have_count(len(before))

    # New sandbox: a row appears, and the server lists it as handed out.
    panel.get_by_test_id("sandbox-type-select").select_option("base")
    panel.get_by_test_id("sandbox-new-button").click()
    expect(rows).to_have_count(len(before) + 1)
    created = [s for s in overview(lab)["sandboxes"] if s["id"] not in before]
    assert len(created) == 1, created
    identity = created[0]["id"]
    assert created[0]["type"] == "base" and created[0]["state"] in ("warm", "running"), created
    row = panel.locator(f'[data-testid="sandbox-row"][data-sandbox-id="{identity}"]')
    expect(row).to_be_visible()
    expect(row.get_by_test_id("sandbox-type")).to_have_text("base")
    expect(row.get_by_test_id("sandbox-state")).to_have_text(re.compile(r"^(warm|running)$"))

    # Run: stdout and the exit status show in the panel's output area.
    row.get_by_test_id("sandbox-run-button").click()
    run = panel.get_by_test_id("sandbox-run")
    expect(run).to_be_visible()
    expect(run.get_by_test_id("sandbox-run-target")).to_have_attribute("title", identity)
    run.get_by_test_id("sandbox-run-input").fill("echo hi")
    run.get_by_test_id("sandbox-run-submit").click()
    output = run.get_by_test_id("sandbox-run-output")
    expect(output).not_to_have_attribute("data-status", "running")
    expect(output.locator('[data-stream="stdout"]')).to_have_text(re.compile(r"^hi\s*$"))
    expect(output.locator('[data-stream="returncode"]')).to_contain_text("0")
    page.screenshot(path=str(ARTIFACTS / "panel.png"))

    # A failing command: stderr and its exit code are shown, not swallowed.
    run.get_by_test_id("sandbox-run-input").fill("echo oops >&2; exit 3")
    run.get_by_test_id("sandbox-run-submit").click()
    expect(output.locator('[data-stream="stderr"]')).to_contain_text("oops")
    expect(output.locator('[data-stream="returncode"]')).to_contain_text("3")

    # Release (confirmed in a dialog): the row disappears, the server forgets it.
    row.get_by_test_id("sandbox-release-button").click()
    page.locator(".jp-Dialog .jp-Dialog-button.jp-mod-warn").click()
    expect(row).to_have_count(0)
    expect(run).to_be_hidden()
    assert identity not in {s["id"] for s in overview(lab)["sandboxes"]}
    page.screenshot(path=str(ARTIFACTS / "panel-released.png"))


def test_browser_and_desktop_views(page, lab: Server) -> None:
    """A browser sandbox's view shows live screenshots and navigates; a gui sandbox's view
    embeds its noVNC desktop, which connects through Jupyter's cookie auth."""
    headers = {"Authorization": f"token {lab.token}"}
    made = []
    try:
        for sandbox_type in ("browser", "gui"):
            response = requests.post(
                f"{lab.url}/sandbox/create", json={"sandbox_type": sandbox_type},
                headers=headers, timeout=120,
            )  # fmt: skip
            assert response.status_code == 200, response.text
            made.append(response.json()["data"])
        browser_id, gui_id = made
        panel = page.get_by_test_id("sandbox-panel")

        # Browser: a screenshot appears, and one of the page it was sent to replaces it.
        browser_row = panel.locator(f'[data-testid="sandbox-row"][data-sandbox-id="{browser_id}"]')
        expect(browser_row.get_by_test_id("sandbox-desktop-button")).to_have_count(0)
        browser_row.get_by_test_id("sandbox-browser-button").click()
        view = page.locator(f"#jupyter-sandbox-browser-{browser_id}")
        shot = view.get_by_test_id("sandbox-browser-screenshot")
        expect(shot).to_have_attribute("src", re.compile(r"^data:image/png;base64,"))
        blank = shot.get_attribute("src")
        view.get_by_test_id("sandbox-browser-address").fill(
            "data:text/html,<h1 style='font-size:80px'>Hello from the sandbox</h1>"
        )
        view.get_by_test_id("sandbox-browser-go").click()
        expect(shot).not_to_have_attribute("src", blank or "")
        expect(view.get_by_test_id("sandbox-browser-error")).to_be_hidden()
        page.screenshot(path=str(ARTIFACTS / "browser.png"))

        # Desktop: the iframe loads noVNC, which draws the remote screen on a canvas.
        gui_row = panel.locator(f'[data-testid="sandbox-row"][data-sandbox-id="{gui_id}"]')
        expect(gui_row.get_by_test_id("sandbox-browser-button")).to_have_count(0)
        gui_row.get_by_test_id("sandbox-desktop-button").click()
        desktop = page.locator(f"#jupyter-sandbox-desktop-{gui_id}")
        iframe = desktop.locator("iframe")
        expect(iframe).to_have_attribute("src", re.compile(rf"/jl/sandbox/desktop/{gui_id}/vnc/"))
        expect(iframe).to_have_attribute("sandbox", re.compile("allow-scripts"))
        screen = desktop.frame_locator("iframe")
        expect(screen.locator("#status")).to_have_text("Connected")
        expect(screen.locator("canvas")).to_be_visible()
        page.screenshot(path=str(ARTIFACTS / "desktop.png"))
    finally:
        for identity in made:
            requests.post(
                f"{lab.url}/sandbox/release", json={"identity": identity}, headers=headers,
                timeout=60,
            )  # fmt: skip


def test_magics_and_widgets_in_a_lab_notebook(page, lab: Server) -> None:
    """A notebook kernel started by this JupyterLab finds the server by itself (its runtime
    file and token), `%sandbox open` makes a sandbox, and its card renders as live ipywidgets
    in the page. Screenshot: widgets.png."""
    import nbformat

    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {
        "name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"
    }  # fmt: skip
    notebook.cells = [
        nbformat.v4.new_code_cell("%load_ext jupyter_sandbox"),
        nbformat.v4.new_code_cell("%sandbox open base --name demo"),
        nbformat.v4.new_code_cell("%sandbox run demo -- echo from-the-sandbox"),
    ]
    nbformat.write(notebook, lab.cwd / "widgets.ipynb")
    before = {s["id"] for s in overview(lab)["sandboxes"]}
    page.goto(f"{lab.url}/lab/tree/widgets.ipynb?token={TOKEN}", timeout=LAB_TIMEOUT * 1000)
    page.locator(".jp-Notebook").wait_for(state="visible", timeout=LAB_TIMEOUT * 1000)
    deadline = time.monotonic() + LAB_TIMEOUT
    while not any(  # the notebook's kernel is up
        s["kernel"]["execution_state"] == "idle"
        for s in requests.get(f"{lab.url}/api/sessions", params={"token": TOKEN}, timeout=10).json()
    ):
        assert time.monotonic() < deadline, "the notebook's kernel did not start"
        time.sleep(0.5)
    page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
    outputs = page.locator(".jp-OutputArea-output")
    expect(outputs.filter(has_text="from-the-sandbox")).to_have_count(1, timeout=ACTION_TIMEOUT)
    created = [s for s in overview(lab)["sandboxes"] if s["id"] not in before]
    assert len(created) == 1, created
    card = page.locator(".jp-OutputArea-output .jupyter-widgets")
    expect(card.filter(has_text=created[0]["id"]).first).to_be_visible()
    expect(page.locator(".jp-OutputArea-output .jupyter-widgets button",
                        has_text="Release").first).to_be_visible()  # fmt: skip
    page.screenshot(path=str(ARTIFACTS / "widgets.png"))
    page.evaluate("window.jupyterapp.commands.execute('kernelmenu:shutdown')")
