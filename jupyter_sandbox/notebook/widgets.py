"""ipywidgets (8) views of sandboxes: a card, a browser's live view, a desktop, a shell.

Every widget works without a frontend: it can be built and its callbacks called from plain
Python (``card.release_button.click()``, ``view.refresh()``, ``shell.run("ls")``), which is
how the tests drive them. Each takes an SDK sandbox object (``jupyter_sandbox.BaseSandbox``
and friends) that is already started.

- :class:`SandboxCard`: id, type, state, age, tools (collapsed), Refresh and Release.
- :class:`BrowserView`: screenshots of a browser sandbox's page, refreshed about every
  1.5 s while the page changes (only changed images are sent), paused after a minute
  without change (so an idle view does not keep the sandbox's lease alive), and an address
  bar that calls ``browser_navigate``.
- :class:`DesktopView`: the noVNC desktop of a ``gui`` sandbox in an iframe
  (``desktop_url``, authenticated by the sandbox's own token).
- :class:`ShellWidget`: a command line and its output.
- :class:`OpeningProgress`: shown by ``%sandbox open`` while a sandbox starts.
- :class:`SandboxPanel`: what ``%sandbox open`` displays: the card, the views the sandbox
  supports, and a shell.
"""

from __future__ import annotations

import base64
import contextlib
import html
import re
import threading
import time
import warnings
import weakref
from collections.abc import Callable
from typing import Any

import ipywidgets as w

from ..client import Sandbox, SandboxError, SandboxNotFoundError
from ..discovery import ServerInfo
from .magics import age, get_json, pools_text, server_of

__all__ = [
    "BrowserView",
    "DesktopView",
    "OpeningProgress",
    "SandboxCard",
    "SandboxPanel",
    "ShellWidget",
]

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _on_submit(text: w.Text, callback: Callable[[Any], None]) -> None:
    # Enter in a Text: ipywidgets 8 still sends "submit" but warns that on_submit is
    # deprecated; its replacement (observe value with continuous_update=False) also fires
    # on blur, which must not run a shell command.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        text.on_submit(callback)


def _texts(result: Any, kind: str | None = None) -> str:
    items = result.get("content") or [] if isinstance(result, dict) else []
    return "".join(
        c.get("text") or ""
        for c in items
        if c.get("type") == "text" and (kind is None or c.get("description") == kind)
    )


class _Ticker:
    """One daemon thread that ticks every live card's age label."""

    interval = 5.0

    def __init__(self) -> None:
        self.cards: weakref.WeakSet[SandboxCard] = weakref.WeakSet()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def add(self, card: SandboxCard) -> None:
        with self._lock:
            self.cards.add(card)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="sandbox-ages", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            time.sleep(self.interval)
            with self._lock:
                cards = list(self.cards)
                if not cards:
                    self._thread = None
                    return
            for card in cards:
                with contextlib.suppress(Exception):
                    card.tick()


_TICKER = _Ticker()


# ------------------------------------------------------------------------------ card


class SandboxCard(w.VBox):
    """A sandbox's id, type, state and age, its tools, and a Release button."""

    def __init__(
        self,
        sandbox: Sandbox,
        name: str | None = None,
        server: ServerInfo | None = None,
        tick: bool = True,
    ) -> None:
        self.sandbox = sandbox
        self.name = name
        self.server = server or server_of(sandbox)
        self.released = False
        self.state = "running"
        self.created: float | None = None
        self.last_active: float | None = None
        self.entry: dict | None = None  # the sandbox's row in GET /api/sandboxes
        self._callbacks: list[Callable[[], None]] = []

        title = f"<b>{html.escape(name)}</b> · " if name else ""
        self.title = w.HTML(
            f"{title}{html.escape(sandbox.sandbox_type)} sandbox "
            f"<code>{html.escape(sandbox.sandbox_id or '?')}</code>"
        )
        self.state_label = w.HTML()
        self.age_label = w.Label()
        self.refresh_button = w.Button(
            description="Refresh", icon="refresh", layout=w.Layout(width="auto")
        )
        self.release_button = w.Button(
            description="Release",
            icon="trash",
            button_style="danger",
            layout=w.Layout(width="auto"),
            tooltip="Release (destroy) this sandbox",
        )
        self.refresh_button.on_click(lambda _: self.refresh())
        self.release_button.on_click(lambda _: self.release())
        self.tools_html = w.HTML()
        self.tools = w.Accordion(children=[self.tools_html], selected_index=None)
        self.tools.set_title(0, "Tools")
        self.message = w.HTML()
        self.tool_catalogue: dict = {}
        super().__init__(
            children=[
                w.HBox([self.title]),
                w.HBox(
                    [self.state_label, self.age_label, self.refresh_button, self.release_button],
                    layout=w.Layout(align_items="center", grid_gap="12px"),
                ),
                self.tools,
                self.message,
            ],
            layout=w.Layout(border="1px solid #ccc", padding="6px"),
        )
        self.load_tools()
        self.refresh()
        if tick:
            _TICKER.add(self)

    def __repr__(self) -> str:
        label = f"{self.name}, " if self.name else ""
        sandbox = self.sandbox
        return f"SandboxCard({label}{sandbox.sandbox_type}, {sandbox.sandbox_id}, {self.state})"

    # -- state
    def on_release(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` once the sandbox is released (by the button or otherwise)."""
        self._callbacks.append(callback)

    def _show_state(self) -> None:
        colour = {"running": "green", "released": "grey", "recycled": "orange"}.get(
            self.state, "crimson"
        )
        self.state_label.value = f'<span style="color:{colour}">● {html.escape(self.state)}</span>'

    def tick(self) -> None:
        """Update the age label (no request)."""
        if self.created is None:
            self.age_label.value = ""
            return
        text = f"age {age(time.time() - self.created)}"
        if self.last_active:
            text += f", active {age(time.time() - self.last_active)} ago"
        self.age_label.value = text

    def refresh(self) -> str:
        """Fetch the sandbox's entry from ``GET /api/sandboxes``; returns its state."""
        if not self.released:
            try:
                overview = get_json(self.server, "/api/sandboxes")
            except Exception as e:  # shown, not raised: this runs from a button
                self.message.value = f'<span style="color:crimson">{html.escape(str(e))}</span>'
                return self.state
            entry = next(
                (
                    s
                    for s in overview.get("sandboxes", [])
                    if s.get("id") == self.sandbox.sandbox_id
                ),
                None,
            )
            if entry is None:
                self.state = "gone"
            else:
                self.entry = entry
                self.state = entry.get("state") or "?"
                self.created = entry.get("created")
                self.last_active = entry.get("last_active")
            self.message.value = ""
        self._show_state()
        self.tick()
        return self.state

    def load_tools(self) -> dict:
        """Fill the (collapsed) tools list from ``list_tools``."""
        try:
            tools = self.sandbox.list_tools() or {}
        except SandboxError as e:
            self.tools_html.value = f"<i>{html.escape(str(e))}</i>"
            return {}
        self.tool_catalogue = tools
        parts, count = [], 0
        for group, entries in tools.items():
            count += len(entries)
            items = "".join(
                f"<li><code>{html.escape(tool)}</code>"
                + (f" — {html.escape(desc)}" if (desc := _description(spec)) else "")
                + "</li>"
                for tool, spec in entries.items()
            )
            parts.append(f"<b>{html.escape(group)}</b><ul>{items}</ul>")
        self.tools_html.value = "".join(parts)
        self.tools.set_title(0, f"Tools ({count})")
        return tools

    def release(self) -> None:
        """Release the sandbox (``close()``), then show it released."""
        if self.released:
            return
        self.release_button.disabled = True
        self.release_button.description = "Releasing…"
        try:
            self.sandbox.close()
        finally:
            self.mark_released()

    def mark_released(self) -> None:
        """Show the sandbox as released (it was released elsewhere) and stop the views."""
        if self.released:
            return
        self.released = True
        self.state = "released"
        self.release_button.disabled = True
        self.release_button.description = "Released"
        self.refresh_button.disabled = True
        self._show_state()
        with contextlib.suppress(KeyError):
            _TICKER.cards.discard(self)
        for callback in self._callbacks:
            with contextlib.suppress(Exception):
                callback()


def _description(spec: Any) -> str:
    try:
        text = spec["json_schema"]["function"]["description"] or ""
    except (KeyError, TypeError):
        return ""
    return text.strip().splitlines()[0] if text.strip() else ""


# ---------------------------------------------------------------------- browser view


def _twin(sandbox: Sandbox) -> Sandbox:
    """A second SDK object on the same sandbox, for a background thread's own connection.

    Never ``close()`` it: that would release the sandbox. :func:`_drop_twin` closes only
    its connection.
    """
    server = server_of(sandbox)
    return type(sandbox)(
        sandbox_id=sandbox.sandbox_id,
        base_url=server.base_url,
        bearer_token=server.token or None,
        sandbox_type=sandbox.sandbox_type,
    )


def _drop_twin(twin: Sandbox) -> None:
    twin._released = True  # so close() only closes the HTTP session
    twin.close()


class BrowserView(w.VBox):
    """A browser sandbox's page: a live screenshot and an address bar.

    Args:
        sandbox: a started sandbox with the ``browser`` tools.
        interval: seconds between screenshots while live.
        idle_after: stop polling after this many seconds without a change (the Live toggle,
            Go and Refresh resume). Polling renews the sandbox's lease, so an idle view
            must not poll forever.
        live: start polling at once.
    """

    def __init__(
        self,
        sandbox: Sandbox,
        interval: float = 1.5,
        idle_after: float = 60.0,
        live: bool = True,
    ) -> None:
        self.sandbox = sandbox
        self.interval = interval
        self.idle_after = idle_after
        self.png: bytes | None = None
        self.updates = 0  # images sent to the frontend
        self._client = _twin(sandbox)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._changed_at = time.monotonic()
        self.closed = False

        self.address = w.Text(placeholder="https://… (Enter or Go)", layout=w.Layout(flex="1"))
        self.go_button = w.Button(description="Go", layout=w.Layout(width="auto"))
        self.refresh_button = w.Button(
            icon="refresh", tooltip="Take a screenshot now", layout=w.Layout(width="auto")
        )
        self.live_toggle = w.ToggleButton(
            value=False,
            description="Live",
            icon="eye",
            tooltip="Refresh while the page changes",
            layout=w.Layout(width="auto"),
        )
        self.image = w.Image(
            format="png", layout=w.Layout(max_width="100%", border="1px solid #ddd")
        )
        self.status = w.Label()
        self.go_button.on_click(lambda _: self.navigate(self.address.value))
        _on_submit(self.address, lambda _: self.navigate(self.address.value))
        self.refresh_button.on_click(lambda _: self._refresh_and_resume())
        self.live_toggle.observe(self._toggled, names="value")
        super().__init__(
            children=[
                w.HBox([self.address, self.go_button, self.refresh_button, self.live_toggle]),
                self.image,
                self.status,
            ]
        )
        if live:
            self.live_toggle.value = True  # starts the poller

    def __repr__(self) -> str:
        return f"BrowserView({self.sandbox.sandbox_id}, {'live' if self.live else 'paused'})"

    @property
    def live(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- actions
    def refresh(self) -> bytes | None:
        """Take a screenshot (``browser_take_screenshot {"raw": true}``); update the image
        only when the PNG changed. Returns the PNG bytes (None if the page gave none)."""
        with self._lock:
            result = self._client.call_tool("browser_take_screenshot", {"raw": True})
        image = (
            next((c for c in result.get("content") or [] if c.get("type") == "image"), None)
            if isinstance(result, dict)
            else None
        )
        if image is None:
            self.status.value = _texts(result).strip()[:300] or "no screenshot"
            return None
        png = base64.b64decode(image.get("data") or "")
        if png != self.png:
            self.png = png
            self.image.value = png
            self.updates += 1
            self._changed_at = time.monotonic()
        return png

    def navigate(self, url: str) -> Any:
        """``browser_navigate`` to ``url``, then show the page (and resume live updates)."""
        url = (url or "").strip()
        if not url:
            return None
        if "://" not in url and not re.match(r"(data|about|file|blob|javascript):", url, re.I):
            url = "https://" + url  # "example.com", "localhost:8000/x"
        self.status.value = f"loading {url} …"
        try:
            with self._lock:
                result = self._client.call_tool("browser_navigate", {"url": url})
        except SandboxError as e:  # shown, not raised: this runs from the Go button too
            self.status.value = str(e)[:300]
            return None
        text = _texts(result)
        if isinstance(result, dict) and result.get("isError"):
            self.status.value = text.strip().splitlines()[0][:300] if text.strip() else "failed"
        else:
            page = re.search(r"^- Page URL: (.*)$", text, re.MULTILINE)
            title = re.search(r"^- Page Title: (.*)$", text, re.MULTILINE)
            if page:
                self.address.value = page.group(1).strip()
            self.status.value = (title.group(1).strip() if title else "") or self.address.value
        self._refresh_and_resume()
        return result

    def _refresh_and_resume(self) -> None:
        try:
            self.refresh()
        except SandboxError as e:
            self.status.value = str(e)
            return
        self._changed_at = time.monotonic()
        if not self.closed:
            self.live_toggle.value = True

    # -- polling
    def _toggled(self, change: dict) -> None:
        if change["new"]:
            self.start()
        else:
            self.stop()

    def start(self) -> None:
        """Poll every ``interval`` s while the page changes."""
        if self.closed or self.live:
            return
        self._stop.clear()
        self._changed_at = time.monotonic()
        self._thread = threading.Thread(target=self._poll, name="sandbox-browser-view", daemon=True)
        self._thread.start()
        if not self.live_toggle.value:
            self.live_toggle.value = True

    def stop(self) -> None:
        """Stop polling (the image stays)."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=10)
        self._thread = None
        if self.live_toggle.value:
            self.live_toggle.value = False

    def _poll(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.refresh()
            except SandboxNotFoundError:
                self.status.value = "the sandbox is gone"
                break
            except SandboxError as e:
                self.status.value = str(e)[:300]
            if time.monotonic() - self._changed_at > self.idle_after:
                self.status.value = "paused: no change for a while (Live or ⟳ resumes)"
                break
        self._thread = None
        with contextlib.suppress(Exception):
            self.live_toggle.value = False

    def mark_released(self) -> None:
        """The sandbox was released: stop for good."""
        self.closed = True
        self.stop()
        self.go_button.disabled = self.refresh_button.disabled = True
        self.live_toggle.disabled = self.address.disabled = True
        self.status.value = "released"
        _drop_twin(self._client)

    def close(self) -> None:
        self.closed = True
        self.stop()
        _drop_twin(self._client)
        super().close()


# ---------------------------------------------------------------------- desktop view


def desktop_url(sandbox: Sandbox) -> str:
    """The sandbox's noVNC page, ``{base_url}/desktop/{id}/vnc/vnc_relay.html?password=…``."""
    url = getattr(type(sandbox), "desktop_url", None)
    if url is not None:
        return sandbox.desktop_url  # type: ignore[attr-defined]
    from urllib.parse import quote, urlencode

    token = sandbox.get_info().get("runtime_token", "")
    return (
        f"{sandbox.base_url}/desktop/{quote(sandbox.sandbox_id or '', safe='')}"
        f"/vnc/vnc_relay.html?{urlencode({'password': token})}"
    )


class DesktopView(w.VBox):
    """A desktop sandbox's screen (noVNC) in an iframe, with a link to open it in a tab.

    The browser showing the notebook must reach the sandbox server at the URL the kernel
    uses (``JUPYTER_SANDBOX_URL`` or the discovered Jupyter server).
    """

    def __init__(self, sandbox: Sandbox, height: int = 600) -> None:
        self.sandbox = sandbox
        self.url = desktop_url(sandbox)
        src = html.escape(self.url, quote=True)
        self.frame = w.HTML(
            f'<iframe src="{src}" style="width:100%;height:{int(height)}px;border:1px solid #ccc" '
            'allow="clipboard-read; clipboard-write"></iframe>'
        )
        self.link = w.HTML(
            f'<a href="{src}" target="_blank" rel="noopener">Open the desktop in a new tab</a>'
        )
        super().__init__(children=[self.frame, self.link])

    def __repr__(self) -> str:
        return f"DesktopView({self.sandbox.sandbox_id})"

    def mark_released(self) -> None:
        self.frame.value = "<i>released</i>"
        self.link.value = ""


# ---------------------------------------------------------------------------- shell


class ShellWidget(w.VBox):
    """A shell command line (Enter or Run) and its output, in a sandbox's ``/workspace``."""

    MAX_OUTPUT = 100_000

    def __init__(self, sandbox: Sandbox, rows: int = 10) -> None:
        self.sandbox = sandbox
        self.command = w.Text(placeholder="shell command (Enter or Run)", layout=w.Layout(flex="1"))
        self.run_button = w.Button(description="Run", icon="play", layout=w.Layout(width="auto"))
        self.clear_button = w.Button(description="Clear", layout=w.Layout(width="auto"))
        self.output = w.Textarea(disabled=True, rows=rows, layout=w.Layout(width="100%"))
        self.run_button.on_click(lambda _: self.run())
        self.clear_button.on_click(lambda _: setattr(self.output, "value", ""))
        _on_submit(self.command, lambda _: self.run())
        super().__init__(
            children=[w.HBox([self.command, self.run_button, self.clear_button]), self.output]
        )

    def __repr__(self) -> str:
        return f"ShellWidget({self.sandbox.sandbox_id})"

    def run(self, command: str | None = None) -> Any:
        """Run ``command`` (default: the text box's) and append its output; returns the
        CallToolResult (None when there was nothing to run or the call failed)."""
        command = (command if command is not None else self.command.value).strip()
        if not command:
            return None
        self.command.value = ""
        self.run_button.disabled = True
        try:
            result = self.sandbox.call_tool("run_shell_command", {"command": command})
        except SandboxError as e:
            self._append(f"$ {command}\n[error] {e}\n")
            return None
        finally:
            self.run_button.disabled = False
        text = f"$ {command}\n{_texts(result, 'stdout')}{_texts(result, 'stderr')}"
        code = _texts(result, "returncode").strip()
        if code and code != "0":
            text += f"[exit code {code}]\n"
        self._append(text)
        return result

    def _append(self, text: str) -> None:
        if not text.endswith("\n"):
            text += "\n"
        value = self.output.value + text
        self.output.value = value[-self.MAX_OUTPUT :]

    def mark_released(self) -> None:
        self.command.disabled = self.run_button.disabled = True


# ------------------------------------------------------------------------- progress


class OpeningProgress(w.HBox):
    """Shown while a sandbox starts: elapsed time and the type's pool (warm/target)."""

    def __init__(self, sandbox_type: str) -> None:
        self.sandbox_type = sandbox_type
        self.bar = w.IntProgress(
            value=0, min=0, max=1, description=f"{sandbox_type} pool", bar_style="info"
        )
        self.label = w.Label(f"starting a {sandbox_type} sandbox …")
        super().__init__(children=[self.bar, self.label])

    def __repr__(self) -> str:
        return f"OpeningProgress({self.sandbox_type}: {self.label.value})"

    def update(self, health: dict | None, elapsed: float) -> None:
        pool = ((health or {}).get("pools") or {}).get(self.sandbox_type)
        if pool:
            self.bar.max = max(int(pool.get("target") or 0), 1)
            self.bar.value = min(int(pool.get("warm") or 0), self.bar.max)
        self.label.value = (
            f"starting a {self.sandbox_type} sandbox … {elapsed:.1f} s "
            f"(pools: {pools_text(health)})"
        )


# ---------------------------------------------------------------------------- panel


class SandboxPanel(w.VBox):
    """``%sandbox open``'s display: the card, the views the sandbox supports, a shell."""

    def __init__(
        self,
        sandbox: Sandbox,
        name: str | None = None,
        server: ServerInfo | None = None,
        on_release: Callable[[], None] | None = None,
        live: bool = True,
    ) -> None:
        self.sandbox = sandbox
        self.name = name
        self.card = SandboxCard(sandbox, name=name, server=server)
        self.views: list[Any] = []
        names = {tool for entries in self.card.tool_catalogue.values() for tool in entries}
        if "browser_take_screenshot" in names:
            self.views.append(BrowserView(sandbox, live=live))
        entry = self.card.entry
        if entry.get("desktop") if entry else sandbox.sandbox_type == "gui":
            try:
                self.views.append(DesktopView(sandbox))
            except SandboxError as e:
                self.card.message.value = f"<i>no desktop: {html.escape(str(e))}</i>"
        self.shell = ShellWidget(sandbox, rows=6)
        self.views.append(self.shell)
        for view in self.views:
            self.card.on_release(view.mark_released)
        if on_release is not None:
            self.card.on_release(on_release)
        super().__init__(children=[self.card, *self.views])

    def __repr__(self) -> str:
        label = f"{self.name}, " if self.name else ""
        return (
            f"SandboxPanel({label}{self.sandbox.sandbox_type}, {self.sandbox.sandbox_id}, "
            f"{self.card.state})"
        )

    def mark_released(self) -> None:
        self.card.mark_released()
