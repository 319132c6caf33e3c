"""The `browser` type's tools: a headless Chromium driven by Playwright, served by the box itself.

Names, arguments and result texts follow `@playwright/mcp` 0.0.25 in its default (snapshot)
mode, the MCP server the seed runs for this type, but without its Node package or browser
download: Playwright for Python drives the system Chromium (`$CHROMIUM_PATH`, else `chromium`
on PATH). The group owns one browser with one context (1024x768) and its tabs; `start()`
launches it so a pooled sandbox is warm, and a call finding it dead or closed
(`browser_close`) launches a fresh one. Action tools answer with the Python code they ran,
the page's URL and title, and a new accessibility snapshot whose `[ref=eN]` marks are what
later tools take as `ref`. Tab indices are 1-based, as upstream lists them. Files
(screenshots, PDFs, uploads) stay inside the workspace. Results are MCP `CallToolResult`
dicts, failures `isError`; no exception escapes `call`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import shutil
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from playwright.async_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Dialog,
    FileChooser,
    Locator,
    Page,
    Playwright,
    Request,
    Response,
    async_playwright,
)
from playwright.async_api import Error as PlaywrightError

from .toolgroups import function_schema

GROUP = "browser"

VIEWPORT = {"width": 1024, "height": 768}
LAUNCH_ARGS = [
    "--no-sandbox",  # the sandbox is the container/jail; Chromium's own needs user namespaces
    "--disable-dev-shm-usage",  # /dev/shm is tiny in containers
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-quic",
]
ACTION_TIMEOUT_MS = 5_000  # upstream's default: a missing element fails fast
NAVIGATION_TIMEOUT_MS = 30_000
LOAD_CAP_MS = 5_000  # after DOMContentLoaded, wait this long at most for `load`
WAIT_TIMEOUT_MS = 10_000  # browser_wait_for's text waits
MAX_WAIT_S = 10.0  # browser_wait_for's `time` cap, and the cap on waiting for an action's network
MAX_LOG = 1000  # console messages / requests kept per tab
CLOSE_TIMEOUT_S = 10.0

NO_PAGES = 'No open pages available. Use the "browser_navigate" tool to navigate to a page first.'


class ToolError(Exception):
    """A failure reported to the caller as `Error: <message>`."""


def chromium_path() -> str | None:
    """The Chromium to launch: `$CHROMIUM_PATH`, else the first Chromium/Chrome on PATH."""
    explicit = os.environ.get("CHROMIUM_PATH")
    if explicit:
        return explicit
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


@dataclass(frozen=True)
class Tool:
    description: str
    properties: dict[str, Any]
    required: tuple[str, ...]
    run: Callable[[BrowserTools, dict[str, Any]], Awaitable[list[dict[str, Any]]]]
    clears: str | None = None  # the modal state ("dialog", "fileChooser") this tool handles
    uses_page: bool = True  # False: works (and is allowed) whatever state the page is in

    def schema(self, name: str) -> dict[str, Any]:
        return function_schema(name, self.description, self.properties, self.required)


@dataclass(eq=False)
class _Tab:
    page: Page
    console: list[ConsoleMessage] = field(default_factory=list)
    requests: dict[Request, Response | None] = field(default_factory=dict)

    def clear_logs(self) -> None:
        self.console.clear()
        self.requests.clear()


@dataclass(eq=False)
class _Modal:
    kind: str  # "dialog" or "fileChooser", as upstream names them
    description: str
    tab: _Tab
    handle: Dialog | FileChooser


def _text(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


def _result(content: list[dict[str, Any]], error: bool = False) -> dict[str, Any]:
    return {"meta": None, "content": content, "isError": error}


def _py(value: Any) -> str:
    """A value as a Python literal in the code shown to the caller."""
    return json.dumps(value, ensure_ascii=False)


def _error_text(error: BaseException) -> str:
    message = error.message if isinstance(error, PlaywrightError) else str(error)
    message = (message or type(error).__name__).rstrip()
    return message if len(message) <= 4000 else message[:4000] + "\n..."


def _consume(task: asyncio.Future[Any]) -> None:
    # An action left running behind a dialog ends after it is handled; nobody awaits it.
    if not task.cancelled():
        task.exception()


class BrowserTools:
    """The browser tool group of one box; tools run one at a time."""

    name = GROUP
    settle = 0.5  # seconds an action's page gets to react after its requests finished

    def __init__(self, workspace: str):
        self.root = os.path.realpath(workspace)
        self._playwright: Playwright | None = None
        self._browser: Browser | None = None
        self._context: BrowserContext | None = None
        self._tabs: list[_Tab] = []
        self._current: _Tab | None = None
        self._modals: list[_Modal] = []
        self._dialog_shown = asyncio.Event()
        self._launching: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._closed = False

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Launch the browser (so the first tool call finds it warm)."""
        if not self._alive():
            await self._launch_shared()

    async def close(self) -> None:
        """Close the browser and stop the Playwright driver."""
        self._closed = True
        if self._launching is not None and not self._launching.done():
            self._launching.cancel()
            with contextlib.suppress(BaseException):
                await self._launching
        await self._close_browser()
        await self._stop_driver()

    def _alive(self) -> bool:
        return (
            self._browser is not None and self._context is not None and self._browser.is_connected()
        )

    async def _responds(self) -> bool:
        """Whether the driver and browser answer (one cheap round trip)."""
        assert self._context is not None
        try:
            await asyncio.wait_for(self._context.cookies(), CLOSE_TIMEOUT_S)
            return True
        except (PlaywrightError, asyncio.TimeoutError):
            return False

    async def _launch_shared(self) -> None:
        # start() in the background and the first calls share one launch.
        if self._launching is None or self._launching.done():
            self._launching = asyncio.get_running_loop().create_task(self._launch())
        await asyncio.shield(self._launching)

    async def _launch(self) -> None:
        if self._closed:
            raise ToolError("the browser tools are closed")
        await self._close_browser()  # what is left of a dead or closed browser
        executable = chromium_path()
        if not executable or not os.path.exists(executable):
            raise ToolError(
                "No Chromium found: install the `chromium` package or set CHROMIUM_PATH "
                f"(looked for {executable or 'chromium, chromium-browser, google-chrome on PATH'})"
            )
        try:
            browser = await self._launch_browser(executable)
        except Exception:
            # The driver may have died with the old browser: one more try on a fresh one.
            await self._stop_driver()
            browser = await self._launch_browser(executable)
        try:
            context = await browser.new_context(viewport=VIEWPORT)
            context.set_default_timeout(ACTION_TIMEOUT_MS)
            context.set_default_navigation_timeout(NAVIGATION_TIMEOUT_MS)
            context.on("page", self._on_page)
            browser.on("disconnected", lambda _: self._forget_browser(browser))
            self._browser, self._context = browser, context
            await context.new_page()
        except BaseException:
            self._forget_browser(browser)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(browser.close(), CLOSE_TIMEOUT_S)
            raise

    async def _launch_browser(self, executable: str) -> Browser:
        if self._playwright is None:
            self._playwright = await async_playwright().start()
        try:
            return await self._playwright.chromium.launch(
                executable_path=executable, headless=True, args=LAUNCH_ARGS
            )
        except PlaywrightError as e:
            raise RuntimeError(f"Chromium ({executable}) did not start: {_error_text(e)}") from e

    def _forget_browser(self, browser: Browser | None = None) -> None:
        if browser is not None and browser is not self._browser:
            return
        self._browser = self._context = self._current = None
        self._tabs.clear()
        self._modals.clear()

    async def _close_browser(self) -> None:
        browser = self._browser
        self._forget_browser()
        if browser is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(browser.close(), CLOSE_TIMEOUT_S)

    async def _stop_driver(self) -> None:
        playwright, self._playwright = self._playwright, None
        if playwright is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(playwright.stop(), CLOSE_TIMEOUT_S)

    # -- tabs and page events ----------------------------------------------------------------

    def _on_page(self, page: Page) -> None:
        tab = _Tab(page)
        self._tabs.append(tab)
        if self._current is None:
            self._current = tab

        def on_console(message: ConsoleMessage) -> None:
            tab.console.append(message)
            del tab.console[:-MAX_LOG]

        def on_request(request: Request) -> None:
            tab.requests[request] = None
            while len(tab.requests) > MAX_LOG:
                del tab.requests[next(iter(tab.requests))]

        def on_response(response: Response) -> None:
            if response.request in tab.requests:
                tab.requests[response.request] = response

        def on_dialog(dialog: Dialog) -> None:
            description = f'"{dialog.type}" dialog with message "{dialog.message}"'
            self._modals.append(_Modal("dialog", description, tab, dialog))
            self._dialog_shown.set()

        def on_file_chooser(chooser: FileChooser) -> None:
            self._modals.append(_Modal("fileChooser", "File chooser", tab, chooser))

        def on_crash(_: Page) -> None:
            # A crashed page answers nothing more; drop it so the next call uses a live one.
            self._forget_tab(tab)
            asyncio.get_running_loop().create_task(page.close()).add_done_callback(_consume)

        page.on("console", on_console)
        page.on("request", on_request)
        page.on("response", on_response)
        page.on("dialog", on_dialog)  # a listener keeps dialogs open until handled
        page.on("filechooser", on_file_chooser)  # and intercepts file choosers
        page.on("crash", on_crash)
        page.on("close", lambda _: self._forget_tab(tab))

    def _forget_tab(self, tab: _Tab) -> None:
        self._modals = [m for m in self._modals if m.tab is not tab]
        if tab not in self._tabs:
            return
        index = self._tabs.index(tab)
        self._tabs.remove(tab)
        tab.clear_logs()
        if self._current is tab:
            self._current = self._tabs[min(index, len(self._tabs) - 1)] if self._tabs else None

    def _tab_of(self, page: Page) -> _Tab:
        for tab in self._tabs:
            if tab.page is page:
                return tab
        self._on_page(page)  # the context's `page` event normally came first
        return self._tabs[-1]

    async def _ensure(self) -> _Tab:
        """The current tab, launching a browser or opening a page when there is none."""
        if self._closed:
            raise ToolError("the browser tools are closed")
        if self._alive() and not await self._responds():
            # The browser died and its event is yet to come, or the driver died (no event
            # says so): start over; a launch on a dead driver starts a fresh driver.
            await self._close_browser()
        if not self._alive():
            await self._launch_shared()
        assert self._context is not None
        if not self._tabs:
            self._current = self._tab_of(await self._context.new_page())
        if self._current is None:
            self._current = self._tabs[0]
        return self._current

    async def _new_tab(self) -> _Tab:
        await self._ensure()
        assert self._context is not None
        self._current = self._tab_of(await self._context.new_page())
        return self._current

    async def _tabs_markdown(self) -> str:
        if not self._tabs:
            return "### No tabs open"
        lines = ["### Open tabs"]
        for i, tab in enumerate(self._tabs, 1):
            current = " (current)" if tab is self._current else ""
            lines.append(f"- {i}:{current} [{await _title(tab.page)}] ({tab.page.url})")
        return "\n".join(lines)

    def _tab_at(self, index: Any) -> _Tab:
        if isinstance(index, float) and index.is_integer():
            index = int(index)
        if not isinstance(index, int) or not 1 <= index <= len(self._tabs):
            raise ToolError(
                f"Tab {index} not found: tab indices run from 1 to {len(self._tabs)} "
                "(see browser_tab_list)"
            )
        return self._tabs[index - 1]

    # -- modal states ------------------------------------------------------------------------

    def _modals_markdown(self) -> list[str]:
        lines = ["### Modal state"]
        if not self._modals:
            lines.append("- There is no modal state present")
        for modal in self._modals:
            tool = "browser_handle_dialog" if modal.kind == "dialog" else "browser_file_upload"
            lines.append(f'- [{modal.description}]: can be handled by the "{tool}" tool')
        return lines

    def _modal(self, kind: str) -> _Modal | None:
        return next((m for m in self._modals if m.kind == kind), None)

    # -- acting on the page ------------------------------------------------------------------

    async def _ref(self, tab: _Tab, ref: str) -> tuple[Locator, str]:
        """The element a snapshot ref names, and Python code locating it (for the report)."""
        locator = tab.page.get_by_ref(ref)
        if not re.fullmatch(r"(f\d+)?e\d+", ref) or await locator.count() == 0:
            raise ToolError(
                f"Ref {ref} not found in the current page snapshot. "
                "Try capturing a new snapshot (browser_snapshot)."
            )
        try:
            code = str(await asyncio.wait_for(locator.normalize(), 2))
        except Exception:
            code = f"get_by_ref({_py(ref)})"
        return locator, code

    async def _act(
        self, tab: _Tab, action: Callable[[], Awaitable[Any]], wait_network: bool = True
    ) -> None:
        """Run an action, return early if it opened a dialog (it blocks until that is
        handled), then let the requests it started finish, as upstream's waitForCompletion."""
        page = tab.page
        pending: set[Request] = set()
        navigated = False

        def on_request(request: Request) -> None:
            pending.add(request)

        def on_done(request: Request) -> None:
            pending.discard(request)

        def on_navigated(frame: Any) -> None:
            nonlocal navigated
            navigated = navigated or frame == page.main_frame

        listeners = {
            "request": on_request,
            "requestfinished": on_done,
            "requestfailed": on_done,
            "framenavigated": on_navigated,
        }
        if wait_network:
            for event, listener in listeners.items():
                page.on(event, listener)
        self._dialog_shown.clear()
        task = asyncio.ensure_future(action())
        shown = asyncio.ensure_future(self._dialog_shown.wait())
        try:
            await asyncio.wait({task, shown}, return_when=asyncio.FIRST_COMPLETED)
            if not task.done():
                task.add_done_callback(_consume)
                return
            task.result()
            if not wait_network:
                return
            loop = asyncio.get_running_loop()
            deadline = loop.time() + MAX_WAIT_S
            while pending and not navigated and not self._modals and loop.time() < deadline:
                await asyncio.sleep(0.05)
            if navigated and not self._modals:
                timeout = max(deadline - loop.time(), 0.1) * 1000
                with contextlib.suppress(PlaywrightError):
                    await page.wait_for_load_state("load", timeout=timeout)
            if not self._modals and not page.is_closed():
                await asyncio.sleep(self.settle)
        finally:
            shown.cancel()
            if not task.done() and not self._modals:
                task.cancel()  # we were cancelled (call timeout): do not leave it running
            if wait_network:
                for event, listener in listeners.items():
                    page.remove_listener(event, listener)

    async def _navigate(self, tab: _Tab, url: str) -> None:
        tab.clear_logs()

        async def go() -> None:
            try:
                await tab.page.goto(url, wait_until="domcontentloaded")
            except PlaywrightError as e:
                # A failed navigation commits Chromium's error page after goto gave up; a
                # goto racing that commit is "interrupted" by it: let it land, then go again.
                if 'another navigation to "chrome-error://' not in e.message:
                    if "net::ERR_" in e.message:
                        with contextlib.suppress(PlaywrightError):
                            await tab.page.wait_for_load_state("load", timeout=2_000)
                    raise
                with contextlib.suppress(PlaywrightError):
                    await tab.page.wait_for_load_state("load", timeout=2_000)
                await tab.page.goto(url, wait_until="domcontentloaded")
            # The page works by now; a slow image should not hold the answer up.
            with contextlib.suppress(PlaywrightError):
                await tab.page.wait_for_load_state("load", timeout=LOAD_CAP_MS)

        await self._act(tab, go, wait_network=False)

    async def _snapshot(self, page: Page) -> str:
        try:
            yaml = await page.aria_snapshot(mode="ai")
        except PlaywrightError:
            await asyncio.sleep(0.2)  # e.g. the page navigated while being read: once more
            yaml = await page.aria_snapshot(mode="ai")
        return f"- Page Snapshot\n```yaml\n{yaml.strip()}\n```"

    async def _report(
        self,
        code: list[str],
        snapshot: bool = True,
        before: list[dict[str, Any]] | None = None,
    ) -> list[dict[str, Any]]:
        """The answer to a tool that ran `code`: page URL and title, and the snapshot."""
        content = list(before or [])
        if self._current is None:
            return [*content, _text(NO_PAGES)]
        tab = self._current
        lines = ["- Ran Playwright code:\n```python\n" + "\n".join(code) + "\n```\n"]
        if self._modals:
            # Script is blocked behind a dialog: the page cannot be read until it is handled.
            return [*content, _text("\n".join([*lines, *self._modals_markdown()]))]
        if len(self._tabs) > 1:
            lines += [await self._tabs_markdown(), "", "### Current tab"]
        lines += [f"- Page URL: {tab.page.url}", f"- Page Title: {await _title(tab.page)}"]
        if snapshot:
            lines.append(await self._snapshot(tab.page))
        return [*content, _text("\n".join(lines))]

    # -- files -------------------------------------------------------------------------------

    def _inside(self, path: str) -> bool:
        return path == self.root or path.startswith(self.root + os.sep)

    def _output(self, name: str) -> str:
        """Where to write `name` (relative to the workspace); never outside it."""
        absolute = os.path.normpath(os.path.join(self.root, os.path.expanduser(name)))
        real = os.path.realpath(absolute)
        if not self._inside(real) or real == self.root:
            raise ToolError(
                f"Access denied - {name!r} is outside the workspace {self.root}; "
                "use a file name or a path inside it"
            )
        os.makedirs(os.path.dirname(real), exist_ok=True)
        return real

    def _input(self, name: str) -> str:
        absolute = os.path.normpath(os.path.join(self.root, os.path.expanduser(name)))
        real = os.path.realpath(absolute)
        if not self._inside(real):
            raise ToolError(f"Access denied - {name!r} is outside the workspace {self.root}")
        if not os.path.isfile(real):
            raise ToolError(f"ENOENT: no such file, {absolute}")
        return real

    # -- tools -------------------------------------------------------------------------------

    async def navigate(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        tab = await self._ensure()
        await self._navigate(tab, args["url"])
        return await self._report(
            [f"# Navigate to {args['url']}", f"await page.goto({_py(args['url'])})"]
        )

    async def navigate_back(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        tab = await self._ensure()
        await self._act(tab, tab.page.go_back, wait_network=False)
        return await self._report(["# Navigate back", "await page.go_back()"])

    async def navigate_forward(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        tab = await self._ensure()
        await self._act(tab, tab.page.go_forward, wait_network=False)
        return await self._report(["# Navigate forward", "await page.go_forward()"])

    async def snapshot(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        await self._ensure()
        return await self._report(["# <internal code to capture accessibility snapshot>"])

    async def click(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        tab = await self._ensure()
        locator, where = await self._ref(tab, args["ref"])
        await self._act(tab, locator.click)
        return await self._report([f"# Click {args['element']}", f"await page.{where}.click()"])

    async def hover(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        tab = await self._ensure()
        locator, where = await self._ref(tab, args["ref"])
        await self._act(tab, locator.hover)
        return await self._report(
            [f"# Hover over {args['element']}", f"await page.{where}.hover()"]
        )

    async def drag(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        tab = await self._ensure()
        start, start_code = await self._ref(tab, args["startRef"])
        end, end_code = await self._ref(tab, args["endRef"])
        await self._act(tab, lambda: start.drag_to(end))
        return await self._report([
            f"# Drag {args['startElement']} to {args['endElement']}",
            f"await page.{start_code}.drag_to(page.{end_code})",
        ])  # fmt: skip

    async def type_text(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        tab = await self._ensure()
        locator, where = await self._ref(tab, args["ref"])
        text, element = args["text"], args["element"]
        if args.get("slowly"):
            code = [f'# Press "{text}" sequentially into "{element}"',
                    f"await page.{where}.press_sequentially({_py(text)})"]  # fmt: skip
        else:
            code = [f'# Fill "{text}" into "{element}"', f"await page.{where}.fill({_py(text)})"]
        if args.get("submit"):
            code += ["# Submit text", f'await page.{where}.press("Enter")']

        async def steps() -> None:
            if args.get("slowly"):
                await locator.press_sequentially(text)
            else:
                await locator.fill(text)
            if args.get("submit"):
                await locator.press("Enter")

        await self._act(tab, steps)
        return await self._report(code)

    async def select_option(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        tab = await self._ensure()
        locator, where = await self._ref(tab, args["ref"])
        values = args["values"]
        await self._act(tab, lambda: locator.select_option(values))
        return await self._report([
            f"# Select options [{', '.join(values)}] in {args['element']}",
            f"await page.{where}.select_option({_py(values)})",
        ])  # fmt: skip

    async def press_key(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        tab = await self._ensure()
        key = args["key"]
        await self._act(tab, lambda: tab.page.keyboard.press(key))
        return await self._report([f"# Press {key}", f"await page.keyboard.press({_py(key)})"])

    async def take_screenshot(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        tab = await self._ensure()
        if bool(args.get("element")) != bool(args.get("ref")):
            raise ToolError("Both element and ref must be provided or neither.")
        kind = "png" if args.get("raw") else "jpeg"
        path = self._output(args["filename"]) if args.get("filename") else None
        options: dict[str, Any] = {"type": kind, "scale": "css"}
        if kind == "jpeg":
            options["quality"] = 50
        shown = ", ".join(f"{k}={_py(v)}" for k, v in options.items())
        target, where = (tab.page, "page")
        if args.get("ref"):
            target, code = await self._ref(tab, args["ref"])
            where = f"page.{code}"
        subject = args.get("element") or "viewport"
        code = [f"# Screenshot {subject}" + (f" and save it as {path}" if path else "")]
        code.append(f"await {where}.screenshot({shown}" + (f", path={_py(path)})" if path else ")"))
        data = await target.screenshot(**options)
        if path:
            with open(path, "wb") as f:
                f.write(data)
        image = {
            "type": "image",
            "data": base64.b64encode(data).decode("ascii"),
            "mimeType": f"image/{kind}",
        }
        return await self._report(code, before=[image])

    async def pdf_save(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        tab = await self._ensure()
        name = args.get("filename") or _default_name("pdf")
        path = self._output(name)
        data = await tab.page.pdf()
        with open(path, "wb") as f:
            f.write(data)
        return await self._report(
            [f"# Save page as {path}", f"await page.pdf(path={_py(path)})"], snapshot=False
        )

    async def tab_list(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        await self._ensure()
        return [_text(await self._tabs_markdown())]

    async def tab_new(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        tab = await self._new_tab()
        if args.get("url"):
            await self._navigate(tab, args["url"])
        return await self._report(["# <internal code to open a new tab>"])

    async def tab_select(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        await self._ensure()
        tab = self._tab_at(args["index"])
        self._current = tab
        await tab.page.bring_to_front()
        return await self._report([f"# <internal code to select tab {args['index']}>"])

    async def tab_close(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        await self._ensure()
        index = args.get("index")
        tab = self._current if index is None else self._tab_at(index)
        if tab is not None:
            await tab.page.close()
            self._forget_tab(tab)
        return await self._report([f"# <internal code to close tab {index or 'current'}>"])

    async def wait_for(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        seconds, text, gone = args.get("time"), args.get("text"), args.get("textGone")
        if not (seconds or text or gone):
            raise ToolError("Either time, text or textGone must be provided")
        tab = await self._ensure()
        code: list[str] = []
        if seconds:
            code.append(f"await asyncio.sleep({seconds})")
            await asyncio.sleep(min(MAX_WAIT_S, max(float(seconds), 0.0)))
        if gone:
            code.append(f'await page.get_by_text({_py(gone)}).first.wait_for(state="hidden")')
            await tab.page.get_by_text(gone).first.wait_for(state="hidden", timeout=WAIT_TIMEOUT_MS)
        if text:
            code.append(f'await page.get_by_text({_py(text)}).first.wait_for(state="visible")')
            await tab.page.get_by_text(text).first.wait_for(
                state="visible", timeout=WAIT_TIMEOUT_MS
            )
        return await self._report(code)

    async def resize(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        tab = await self._ensure()
        width, height = args["width"], args["height"]
        if width != int(width) or height != int(height) or width < 1 or height < 1:
            raise ToolError("width and height must be positive whole numbers of pixels")
        size = {"width": int(width), "height": int(height)}
        await self._act(tab, lambda: tab.page.set_viewport_size(size))
        return await self._report([
            f"# Resize browser window to {size['width']}x{size['height']}",
            f"await page.set_viewport_size({size!r})",
        ])  # fmt: skip

    async def handle_dialog(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        modal = self._modal("dialog")
        if modal is None or not isinstance(modal.handle, Dialog):
            raise ToolError("No dialog visible")
        dialog = modal.handle
        try:
            if args["accept"]:
                await dialog.accept(args.get("promptText"))
            else:
                await dialog.dismiss()
        finally:
            self._modals = [m for m in self._modals if m is not modal]
        return await self._report([f'# <internal code to handle "{dialog.type}" dialog>'])

    async def file_upload(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        modal = self._modal("fileChooser")
        if modal is None or not isinstance(modal.handle, FileChooser):
            raise ToolError("No file chooser visible")
        chooser = modal.handle
        paths = [self._input(p) for p in args["paths"]]

        async def choose() -> None:
            await chooser.set_files(paths)
            self._modals = [m for m in self._modals if m is not modal]

        await self._act(modal.tab, choose)
        return await self._report([f"# <internal code to choose files {', '.join(paths)}>"])

    async def console_messages(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        tab = await self._ensure()
        log = "\n".join(f"[{m.type.upper()}] {m.text}" for m in tab.console)
        return await self._report(
            ["# <internal code to get console messages>"], snapshot=False, before=[_text(log)]
        )

    async def network_requests(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        tab = await self._ensure()
        lines = []
        for request, response in tab.requests.items():
            line = f"[{request.method.upper()}] {request.url}"
            if response is not None:
                line += f" => [{response.status}] {response.status_text}"
            lines.append(line)
        return await self._report(
            ["# <internal code to list network requests>"],
            snapshot=False,
            before=[_text("\n".join(lines))],
        )

    async def close_browser(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        was_open = self._browser is not None
        await self._close_browser()
        state = "Browser closed" if was_open else "No browser was open"
        return [
            _text(
                "- Ran Playwright code:\n```python\nawait page.close()\n```\n\n"
                f"- {state}; the next browser tool call starts a fresh one."
            )
        ]

    async def install(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        executable = chromium_path()
        if not executable or not os.path.exists(executable):
            raise ToolError(
                "No Chromium found and none can be installed here: install the `chromium` "
                "package in the sandbox image or set CHROMIUM_PATH"
            )
        return [
            _text(
                f"No installation needed: this sandbox drives the system Chromium ({executable})."
            )
        ]

    async def generate_playwright_test(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        lines = [
            "## Instructions",
            "- You are a playwright test generator.",
            "- You are given a scenario and you need to generate a playwright test for it.",
            "- DO NOT generate test code based on the scenario alone. DO run steps one by one "
            "using the tools provided instead.",
            "- Only after all steps are completed, emit a Playwright TypeScript test that uses "
            "@playwright/test based on message history",
            "- Save generated test file in the tests directory",
            f"Test name: {args['name']}",
            f"Description: {args['description']}",
            "Steps:",
            *(f"- {i}. {step}" for i, step in enumerate(args["steps"], 1)),
        ]
        return [_text("\n".join(lines))]

    # -- dispatch ----------------------------------------------------------------------------

    def list_group(self) -> dict[str, Any]:
        return {name: {"name": name, "json_schema": t.schema(name)} for name, t in TOOLS.items()}

    async def call(self, name: str, arguments: dict[str, Any]) -> dict[str, Any] | None:
        """The tool's CallToolResult, or None when there is no such tool."""
        tool = TOOLS.get(name)
        if tool is None:
            return None
        try:
            args = _check_arguments(tool, arguments)
            async with self._lock:
                refusal = self._refusal(name, tool)
                if refusal:
                    return _result([_text(refusal)], error=True)
                return _result(await tool.run(self, args))
        except ToolError as e:
            return _result([_text(f"Error: {e}")], error=True)
        except (PlaywrightError, OSError, RuntimeError, ValueError, TypeError) as e:
            return _result([_text(f"Error: {_error_text(e)}")], error=True)
        except Exception as e:  # a tool failing must not take the box's request down
            return _result([_text(f"Error: {type(e).__name__}: {_error_text(e)}")], error=True)

    def _refusal(self, name: str, tool: Tool) -> str | None:
        """Why `tool` cannot run in the current modal state (upstream's rule), if it cannot."""
        if not tool.uses_page:
            return None
        kinds = {m.kind for m in self._modals}
        if tool.clears and tool.clears not in kinds:
            return "\n".join([
                f'The tool "{name}" can only be used when there is related modal state present.',
                *self._modals_markdown(),
            ])  # fmt: skip
        if not tool.clears and kinds:
            return "\n".join(
                [f'Tool "{name}" does not handle the modal state.', *self._modals_markdown()]
            )
        return None


async def _title(page: Page) -> str:
    try:
        return await page.title()
    except PlaywrightError:  # navigating: no document to ask right now
        return ""


def _default_name(extension: str) -> str:
    """`page-<ISO timestamp>.<ext>` with `:` and `.` made `-`, as upstream names files."""
    now = time.time()
    stamp = time.strftime("%Y-%m-%dT%H-%M-%S", time.gmtime(now)) + f"-{int(now % 1 * 1000):03d}Z"
    return f"page-{stamp}.{extension}"


_JSON_TYPES: dict[str, Callable[[Any], bool]] = {
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "array": lambda v: isinstance(v, list),
}


def _check_arguments(tool: Tool, arguments: Any) -> dict[str, Any]:
    """The arguments the schema knows, checked; an optional one sent as null or "" is absent
    (the SDKs' helpers send those for "not given")."""
    if arguments is None:
        arguments = {}
    if not isinstance(arguments, dict):
        raise ToolError("arguments must be an object")
    args: dict[str, Any] = {}
    for key, spec in tool.properties.items():
        value = arguments.get(key)
        if value is None or (value == "" and key not in tool.required):
            if key in tool.required:
                raise ToolError(f"missing required argument {key!r}")
            continue
        kind = spec["type"]
        ok = _JSON_TYPES[kind](value)
        if ok and kind == "array":
            ok = all(_JSON_TYPES[spec["items"]["type"]](item) for item in value)
        if not ok:
            item = f" of {spec['items']['type']}s" if kind == "array" else ""
            raise ToolError(f"argument {key!r} must be a {kind}{item}, got {_py(value)}")
        args[key] = value
    return args


def _p(description: str, kind: str = "string", **extra: Any) -> dict[str, Any]:
    return {"type": kind, "description": description, **extra}


_ELEMENT = _p(
    "Human-readable element description used to obtain permission to interact with the element"
)
_REF = _p("Exact target element reference from the page snapshot")
_TARGET = {"element": _ELEMENT, "ref": _REF}

TOOLS: dict[str, Tool] = {
    "browser_close": Tool("Close the page", {}, (), BrowserTools.close_browser, uses_page=False),
    "browser_resize": Tool(
        "Resize the browser window",
        {
            "width": _p("Width of the browser window", "number"),
            "height": _p("Height of the browser window", "number"),
        },
        ("width", "height"),
        BrowserTools.resize,
    ),
    "browser_console_messages": Tool(
        "Returns all console messages", {}, (), BrowserTools.console_messages
    ),
    "browser_handle_dialog": Tool(
        "Handle a dialog",
        {
            "accept": _p("Whether to accept the dialog.", "boolean"),
            "promptText": _p("The text of the prompt in case of a prompt dialog."),
        },
        ("accept",),
        BrowserTools.handle_dialog,
        clears="dialog",
    ),
    "browser_file_upload": Tool(
        "Upload one or multiple files",
        {
            "paths": _p(
                "The paths to the files to upload (absolute, or relative to the workspace; "
                "inside the workspace). Can be a single file or multiple files.",
                "array",
                items={"type": "string"},
            ),
        },
        ("paths",),
        BrowserTools.file_upload,
        clears="fileChooser",
    ),
    "browser_install": Tool(
        "Install the browser specified in the config. Call this if you get an error about the "
        "browser not being installed.",
        {},
        (),
        BrowserTools.install,
        uses_page=False,
    ),
    "browser_press_key": Tool(
        "Press a key on the keyboard",
        {
            "key": _p(
                "Name of the key to press or a character to generate, such as `ArrowLeft` or `a`"
            )
        },
        ("key",),
        BrowserTools.press_key,
    ),
    "browser_navigate": Tool(
        "Navigate to a URL",
        {"url": _p("The URL to navigate to")},
        ("url",),
        BrowserTools.navigate,
    ),
    "browser_navigate_back": Tool(
        "Go back to the previous page", {}, (), BrowserTools.navigate_back
    ),
    "browser_navigate_forward": Tool(
        "Go forward to the next page", {}, (), BrowserTools.navigate_forward
    ),
    "browser_network_requests": Tool(
        "Returns all network requests since loading the page",
        {},
        (),
        BrowserTools.network_requests,
    ),
    "browser_pdf_save": Tool(
        "Save page as PDF (in the workspace)",
        {
            "filename": _p(
                "File name to save the pdf to, relative to the workspace. Defaults to "
                "`page-{timestamp}.pdf` if not specified."
            )
        },
        (),
        BrowserTools.pdf_save,
    ),
    "browser_take_screenshot": Tool(
        "Take a screenshot of the current page. You can't perform actions based on the "
        "screenshot, use browser_snapshot for actions.",
        {
            "raw": _p(
                "Whether to return without compression (in PNG format). Default is false, "
                "which returns a JPEG image.",
                "boolean",
            ),
            "filename": _p(
                "File name to also save the screenshot to, relative to the workspace. Not "
                "saved if not specified."
            ),
            "element": _p(
                "Human-readable element description used to obtain permission to screenshot "
                "the element. If not provided, the screenshot will be taken of viewport. If "
                "element is provided, ref must be provided too."
            ),
            "ref": _p(
                "Exact target element reference from the page snapshot. If not provided, the "
                "screenshot will be taken of viewport. If ref is provided, element must be "
                "provided too."
            ),
        },
        (),
        BrowserTools.take_screenshot,
    ),
    "browser_snapshot": Tool(
        "Capture accessibility snapshot of the current page, this is better than screenshot",
        {},
        (),
        BrowserTools.snapshot,
    ),
    "browser_click": Tool(
        "Perform click on a web page", _TARGET, ("element", "ref"), BrowserTools.click
    ),
    "browser_drag": Tool(
        "Perform drag and drop between two elements",
        {
            "startElement": _p(
                "Human-readable source element description used to obtain the permission to "
                "interact with the element"
            ),
            "startRef": _p("Exact source element reference from the page snapshot"),
            "endElement": _p(
                "Human-readable target element description used to obtain the permission to "
                "interact with the element"
            ),
            "endRef": _p("Exact target element reference from the page snapshot"),
        },
        ("startElement", "startRef", "endElement", "endRef"),
        BrowserTools.drag,
    ),
    "browser_hover": Tool(
        "Hover over element on page", _TARGET, ("element", "ref"), BrowserTools.hover
    ),
    "browser_type": Tool(
        "Type text into editable element",
        {
            **_TARGET,
            "text": _p("Text to type into the element"),
            "submit": _p("Whether to submit entered text (press Enter after)", "boolean"),
            "slowly": _p(
                "Whether to type one character at a time. Useful for triggering key handlers "
                "in the page. By default entire text is filled in at once.",
                "boolean",
            ),
        },
        ("element", "ref", "text"),
        BrowserTools.type_text,
    ),
    "browser_select_option": Tool(
        "Select an option in a dropdown",
        {
            **_TARGET,
            "values": _p(
                "Array of values to select in the dropdown. This can be a single value or "
                "multiple values.",
                "array",
                items={"type": "string"},
            ),
        },
        ("element", "ref", "values"),
        BrowserTools.select_option,
    ),
    "browser_tab_list": Tool("List browser tabs", {}, (), BrowserTools.tab_list),
    "browser_tab_new": Tool(
        "Open a new tab",
        {
            "url": _p(
                "The URL to navigate to in the new tab. If not provided, the new tab will be blank."
            )
        },
        (),
        BrowserTools.tab_new,
    ),
    "browser_tab_select": Tool(
        "Select a tab by index",
        {
            "index": _p(
                "The index of the tab to select, 1-based as browser_tab_list shows it", "number"
            )
        },
        ("index",),
        BrowserTools.tab_select,
    ),
    "browser_tab_close": Tool(
        "Close a tab",
        {
            "index": _p(
                "The index of the tab to close, 1-based as browser_tab_list shows it. Closes "
                "current tab if not provided.",
                "number",
            )
        },
        (),
        BrowserTools.tab_close,
    ),
    "browser_generate_playwright_test": Tool(
        "Generate a Playwright test for given scenario",
        {
            "name": _p("The name of the test"),
            "description": _p("The description of the test"),
            "steps": _p("The steps of the test", "array", items={"type": "string"}),
        },
        ("name", "description", "steps"),
        BrowserTools.generate_playwright_test,
        uses_page=False,
    ),
    "browser_wait_for": Tool(
        "Wait for text to appear or disappear or a specified time to pass",
        {
            "time": _p("The time to wait in seconds (at most 10)", "number"),
            "text": _p("The text to wait for"),
            "textGone": _p("The text to wait for to disappear"),
        },
        (),
        BrowserTools.wait_for,
    ),
}
