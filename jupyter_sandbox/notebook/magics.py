"""``%sandbox`` / ``%%sandbox``: open, use and release sandboxes from a notebook.

``%load_ext jupyter_sandbox`` registers them. Subcommands::

    %sandbox open [TYPE] [--name NAME]    open a sandbox (default type base, name sb1, sb2, ...)
    %sandbox list                         the server's sandboxes; NAME marks this kernel's
    %sandbox tools [NAME]                 its tools, by group
    %sandbox run [NAME] -- COMMAND        a shell command in it
    %sandbox close NAME | --all           release one, or every sandbox this kernel opened
    %sandbox connect [URL] [--token T]    use this server from now on (no URL: discover)
    %%sandbox [NAME] [--raise]            run the cell's Python in the sandbox's kernel

Decisions worth knowing:

- The server is found on first use with :func:`~jupyter_sandbox.discovery.find_server`.
  Problems (no server, a refused token, an unknown name, bad arguments) are reported as
  IPython ``UsageError``: one line, no traceback, and the cell counts as failed.
- ``%%sandbox`` shows the remote outputs as a remote cell would: stdout as stdout, stderr as
  stderr, images as images. A remote exception is *not* raised locally by default: its
  traceback is printed on stderr (colours kept) and "Run all" goes on, as with ``%%bash``.
  With ``--raise`` the cell fails with the remote traceback as its error output
  (:class:`RemoteCellError`). The wire format carries only text and images, so rich
  ``display()`` data other than images arrives as its ``text/plain`` form. Tracebacks arrive
  inside stdout; they are recognised by IPython's traceback headers.
- ``%sandbox run`` prints stdout, stderr on stderr, and ``[exit code N]`` on stderr for a
  non-zero status; like ``!cmd`` it does not raise. ``{expr}`` and ``$name`` in the line are
  expanded by IPython, as for every line magic.
- Sandboxes opened here are released when the kernel shuts down: on IPython's ``exit_now``
  (set by a shutdown or restart request), with ``atexit`` as the fallback, and on
  ``%unload_ext``. ``close --all`` releases only this kernel's sandboxes.
"""

from __future__ import annotations

import argparse
import atexit
import base64
import contextlib
import re
import shlex
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from typing import Any

import requests
from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class
from IPython.display import Image, display

from ..client import (
    BaseSandbox,
    BrowserSandbox,
    FilesystemSandbox,
    GuiSandbox,
    Sandbox,
    SandboxError,
)
from ..discovery import ServerInfo, ServerNotFound, find_server

__all__ = [
    "NotebookSandboxes",
    "RemoteCellError",
    "SandboxMagics",
    "get_sandbox",
    "load_ipython_extension",
    "render_cell_result",
    "render_shell_result",
    "sandbox_class",
    "split_traceback",
    "unload_ipython_extension",
]

HTTP_TIMEOUT = 10.0
#: How long ``open`` waits before showing a progress bar (a warm pool answers in ms).
PROGRESS_AFTER = 0.5

_CLASSES: dict[str, type[Sandbox]] = {
    "base": BaseSandbox,
    "filesystem": FilesystemSandbox,
    "browser": BrowserSandbox,
    "gui": GuiSandbox,
}


def sandbox_class(sandbox_type: str) -> type[Sandbox]:
    """The SDK class for a type; custom types get :class:`BaseSandbox` (generic tools)."""
    return _CLASSES.get(sandbox_type, BaseSandbox)


def server_of(sandbox: Sandbox) -> ServerInfo:
    """The server a sandbox object talks to (URL and token)."""
    return ServerInfo(sandbox.base_url, sandbox._endpoint.bearer_token or "")


def get_json(server: ServerInfo, path: str, *, auth: bool = True) -> dict:
    """``GET {base_url}{path}`` as JSON; HTTP failures raise ``requests`` errors."""
    headers = server.headers if auth else {}
    response = requests.get(f"{server.base_url}{path}", headers=headers, timeout=HTTP_TIMEOUT)
    response.raise_for_status()
    return response.json()


def age(seconds: float | None) -> str:
    """``42s``, ``3m 05s``, ``2h 10m``: a compact duration."""
    if seconds is None:
        return "—"
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"


def pools_text(health: dict | None) -> str:
    """``base 1/1 warm, browser 0/1 warm (1 starting)`` from ``/health``'s pools."""
    pools = (health or {}).get("pools") or {}
    parts = []
    for name, pool in sorted(pools.items()):
        part = f"{name} {pool.get('warm', 0)}/{pool.get('target', 0)} warm"
        if pool.get("starting"):
            part += f" ({pool['starting']} starting)"
        parts.append(part)
    return ", ".join(parts) or "no pools"


# ----------------------------------------------------------------------- the registry


class NotebookSandboxes:
    """The sandboxes one kernel opened, by name, and the server it talks to."""

    def __init__(self, server: ServerInfo | None = None) -> None:
        self._server = server
        self.opened: dict[str, Sandbox] = {}
        self.types: dict[str, str] = {}
        self.released: set[str] = set()
        self.views: dict[str, Any] = {}
        self._lock = threading.Lock()

    # -- server
    @property
    def server(self) -> ServerInfo:
        """The server in use: the one set by ``connect``, else found by discovery."""
        if self._server is None:
            self._server = find_server()
        return self._server

    def connect(self, url: str | None, token: str | None = None) -> ServerInfo:
        """Use ``url`` (or discovery when None) from now on; checks it answers."""
        if not url:
            self._server = None
            return self.server
        url, query_token = _split_token(url)
        token = token if token is not None else query_token
        candidates = [url.rstrip("/")]
        if not candidates[0].endswith("/sandbox"):
            candidates.append(candidates[0] + "/sandbox")  # a Jupyter server's own URL
        for base in candidates:
            info = ServerInfo(base, token or "")
            try:
                health = get_json(info, "/health", auth=False)
            except (requests.RequestException, ValueError):
                continue
            if isinstance(health, dict) and "pools" in health:
                break
        else:
            raise UsageError(f"No sandbox server answers at {url} (tried GET /health).")
        try:
            get_json(info, "/api/sandboxes")
        except requests.HTTPError as e:
            if e.response is not None and e.response.status_code in (401, 403):
                raise UsageError(
                    f"The server at {info.base_url} refused the token"
                    + (" (none given; pass --token)." if not token else ".")
                ) from None
            raise
        self._server = info
        return info

    # -- names
    def live(self) -> list[str]:
        """Names of the sandboxes still open, oldest first."""
        return [name for name in self.opened if name not in self.released]

    def new_name(self) -> str:
        """``sb1``, ``sb2``, ...: never a name this kernel used before."""
        n = 1
        while f"sb{n}" in self.opened:
            n += 1
        return f"sb{n}"

    def get(self, name: str | None = None) -> tuple[str, Sandbox]:
        """A sandbox by name (default: the last one opened that is still open)."""
        if name is None:
            live = self.live()
            if not live:
                raise UsageError("No sandbox is open here; use `%sandbox open` first.")
            name = live[-1]
        if name not in self.opened:
            known = ", ".join(self.live()) or "none"
            raise UsageError(
                f"No sandbox named {name!r} in this kernel (open: {known}). "
                f"Open one with `%sandbox open --name {name}`."
            )
        if name in self.released:
            raise UsageError(f"Sandbox {name!r} was released; open a new one.")
        return name, self.opened[name]

    # -- lifecycle
    def make(self, sandbox_type: str) -> Sandbox:
        """An unstarted SDK object of the right class for the current server."""
        server = self.server
        cls = sandbox_class(sandbox_type)
        return cls(
            base_url=server.base_url,
            bearer_token=server.token or None,
            sandbox_type=sandbox_type,
        )

    def add(self, name: str, sandbox: Sandbox, sandbox_type: str) -> None:
        with self._lock:
            self.opened.pop(name, None)  # re-insert: the newest is last
            self.opened[name] = sandbox
            self.types[name] = sandbox_type
            self.released.discard(name)

    def mark_released(self, name: str) -> None:
        self.released.add(name)

    def release(self, name: str) -> bool:
        """Release one sandbox; False when it was released already."""
        with self._lock:
            if name in self.released or name not in self.opened:
                return False
            self.released.add(name)
            sandbox = self.opened[name]
        sandbox.close()
        view = self.views.get(name)
        if view is not None:
            view.mark_released()
        return True

    def release_all(self) -> list[str]:
        """Release every sandbox this kernel opened; the names released."""
        return [name for name in list(self.opened) if self.release(name)]

    def release_all_quietly(self) -> None:
        """For ``atexit`` and kernel shutdown: never raises, prints nothing."""
        for name in list(self.opened):
            with contextlib.suppress(Exception):  # best effort at exit
                self.release(name)

    # -- server views
    def overview(self) -> dict:
        return get_json(self.server, "/api/sandboxes")

    def health(self) -> dict | None:
        try:
            return get_json(self.server, "/health", auth=False)
        except (requests.RequestException, ValueError):
            return None


def _split_token(url: str) -> tuple[str, str | None]:
    """``http://h:8888/lab?token=abc`` -> (``http://h:8888``, ``abc``): a pasted Jupyter URL."""
    from urllib.parse import parse_qs, urlsplit, urlunsplit

    parts = urlsplit(url)
    token = (parse_qs(parts.query).get("token") or [None])[0]
    path = re.sub(r"/(lab|tree|notebooks)(/.*)?$", "", parts.path)
    return urlunsplit((parts.scheme, parts.netloc, path, "", "")), token


# ------------------------------------------------------------------ result rendering

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_DASHES = re.compile(r"-{20,}")
_EXC_LINE = re.compile(r"([A-Za-z_][\w.]*)(?::\s?(.*))?")
_SYNTAX = ("SyntaxError", "IndentationError", "TabError")


def _plain(line: str) -> str:
    return _ANSI.sub("", line).rstrip("\r\n")


def split_traceback(text: str) -> tuple[str, str, str | None]:
    """Split a remote cell's stdout into (output, traceback, ``"Name: message"``).

    IPython's tracebacks (verbose/context: a line of dashes then ``... Traceback (most
    recent call last)``; plain: ``Traceback (most recent call last):``; syntax errors:
    ``Cell In[n], line m`` ... ``SyntaxError: ...``; ``SystemExit``: ``An exception has
    occurred``) end a cell's output. No traceback: ``(text, "", None)``.
    """
    lines = text.splitlines(keepends=True)
    plain = [_plain(line) for line in lines]
    start = None
    for i, line in enumerate(plain):
        stripped = line.strip()
        if (
            _DASHES.fullmatch(stripped)
            and i + 1 < len(plain)
            and "Traceback (most recent call last)" in plain[i + 1]
        ):
            start = i
            break
        if stripped.startswith("Traceback (most recent call last):") or stripped.startswith(
            "An exception has occurred, use %tb to see the full traceback."
        ):
            start = i
            break
    nonempty = [i for i, line in enumerate(plain) if line.strip()]
    if start is None and nonempty:
        last = plain[nonempty[-1]].strip()
        if last.startswith(_SYNTAX):
            for i in reversed(range(nonempty[-1])):
                if re.match(r"\s*(Cell In\s?\[|File )", plain[i]):
                    start = i
                    break
    if start is None:
        return text, "", None
    tail = [i for i in nonempty if i >= start]
    summary = plain[tail[-1]].strip() if tail else None
    if summary and not _EXC_LINE.fullmatch(summary):
        summary = summary.split(":", 1)[0] if ":" in summary else summary
    return "".join(lines[:start]), "".join(lines[start:]), summary


class RemoteCellError(Exception):
    """A ``%%sandbox --raise`` cell whose remote code raised; shown as the remote traceback."""

    def __init__(self, sandbox: str, summary: str, traceback_text: str) -> None:
        super().__init__(f"in sandbox {sandbox}: {summary}")
        self.sandbox = sandbox
        self.summary = summary
        self.traceback_text = traceback_text

    def _render_traceback_(self) -> list[str]:  # IPython shows this instead of our frames
        return self.traceback_text.rstrip("\n").split("\n")


def _items(result: Any) -> list[dict]:
    if isinstance(result, dict):
        return [c for c in result.get("content") or [] if isinstance(c, dict)]
    return [{"type": "text", "text": str(result)}]


def _write(stream: Any, text: str) -> None:
    if text:
        stream.write(text if text.endswith("\n") else text + "\n")
        stream.flush()


def _show_image(item: dict) -> None:
    mime = item.get("mimeType") or "image/png"
    data = item.get("data") or ""
    if mime in ("image/png", "image/jpeg"):
        display(Image(data=base64.b64decode(data), format=mime.split("/")[1]))
    else:
        display({mime: data}, raw=True)


def render_shell_result(result: Any) -> int | None:
    """Print a shell CallToolResult: stdout, stderr on stderr, a non-zero exit code noted."""
    code = None
    for item in _items(result):
        kind = item.get("description")
        text = item.get("text") or ""
        if item.get("type") == "image":
            _show_image(item)
        elif kind == "returncode":
            try:
                code = int(text.strip())
            except ValueError:
                _write(sys.stderr, text)
        elif kind == "stderr" or (result.get("isError") and kind is None):
            _write(sys.stderr, text)
        else:
            _write(sys.stdout, text)
    if code:
        _write(sys.stderr, f"[exit code {code}]")
    return code


def render_cell_result(result: Any, show_traceback: bool = True) -> tuple[str, str] | None:
    """Show an IPython CallToolResult in this notebook; ``(summary, traceback)`` if it raised.

    Order: stdout, images, stderr, then the traceback (on stderr, unless ``show_traceback``
    is False: the caller raises it), as a cell would show them.
    """
    stdout, stderr, images, others = [], [], [], []
    for item in _items(result):
        if item.get("type") == "image":
            images.append(item)
        elif item.get("description") == "stderr":
            stderr.append(item.get("text") or "")
        elif item.get("type") == "text":
            stdout.append(item.get("text") or "")
        else:
            others.append(item)
    output, tb, summary = split_traceback("".join(stdout))
    _write(sys.stdout, output)
    for item in images:
        _show_image(item)
    for item in others:
        display(item)
    _write(sys.stderr, "".join(stderr))
    if tb:
        if show_traceback:
            _write(sys.stderr, tb)
        return summary or "error", tb
    return None


# -------------------------------------------------------------------------- parsing


class _Done(Exception):
    """``--help`` was printed."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:
        raise UsageError(f"{message}\n{self.format_usage()}")

    def exit(self, status: int = 0, message: str | None = None) -> Any:
        if status:
            raise UsageError(message or self.format_usage())
        raise _Done


def _parsers() -> tuple[_Parser, _Parser]:
    line = _Parser(
        prog="%sandbox",
        description="Open, use and release jupyter-sandbox sandboxes.",
        epilog="%%sandbox [NAME] [--raise] runs the cell's Python in that sandbox.",
    )
    sub = line.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    p = sub.add_parser("open", help="open a sandbox and show it")
    p.add_argument("type", nargs="?", default="base", help="sandbox type (default: base)")
    p.add_argument("--name", help="name to refer to it (default: sb1, sb2, ...)")
    sub.add_parser("list", help="the server's sandboxes (NAME: opened by this kernel)")
    p = sub.add_parser("tools", help="a sandbox's tools by group")
    p.add_argument("name", nargs="?", help="sandbox name (default: the last opened)")
    p = sub.add_parser("run", help="run a shell command: run [NAME] -- COMMAND")
    p.add_argument("name", nargs="?", help="sandbox name (default: the last opened)")
    p = sub.add_parser("close", help="release a sandbox: close NAME | --all")
    p.add_argument("name", nargs="?")
    p.add_argument("--all", action="store_true", help="every sandbox this kernel opened")
    p = sub.add_parser("connect", help="use this server from now on (no URL: discover one)")
    p.add_argument("url", nargs="?", help="the server's URL (a Jupyter server's too)")
    p.add_argument("--token", help="its bearer token (or Jupyter token)")
    sub.add_parser("help", help="this help")

    cell = _Parser(prog="%%sandbox", description="Run the cell's Python in a sandbox.")
    cell.add_argument("name", nargs="?", help="sandbox name (default: the last opened)")
    cell.add_argument(
        "--raise",
        dest="raise_",
        action="store_true",
        help="fail this cell when the remote code raises (default: print its traceback)",
    )
    return line, cell


_RUN_SEPARATOR = re.compile(r"(?:^|\s)--(?:\s|$)")


# --------------------------------------------------------------------------- magics


@magics_class
class SandboxMagics(Magics):
    """The ``%sandbox`` line magic and ``%%sandbox`` cell magic."""

    def __init__(self, shell: Any = None, sandboxes: NotebookSandboxes | None = None) -> None:
        super().__init__(shell)
        self.sandboxes = sandboxes or NotebookSandboxes()
        self._line_parser, self._cell_parser = _parsers()

    @line_cell_magic
    def sandbox(self, line: str, cell: str | None = None) -> Any:
        """Open, use and release sandboxes; ``%sandbox help`` lists the subcommands."""
        try:
            if cell is None:
                return self._line(line)
            return self._cell(line, cell)
        except _Done:
            return None
        except ServerNotFound as e:
            raise UsageError(str(e)) from None
        except SandboxError as e:
            message = str(e)
            if e.detail and e.detail not in message:
                message += f" ({e.detail})"
            raise UsageError(f"{type(e).__name__}: {message}") from None
        except requests.RequestException as e:
            raise UsageError(f"The sandbox server did not answer: {e}") from None

    # -- line
    def _line(self, line: str) -> Any:
        line = line.strip()
        head = line.split(None, 1)[0] if line else ""
        if head == "run":
            return self._run(line[len("run") :])
        if not line or head in ("help", "-h", "--help"):
            self._line_parser.print_help()
            return None
        try:
            argv = shlex.split(line)
        except ValueError as e:
            raise UsageError(f"{e}\n{self._line_parser.format_usage()}") from None
        args = self._line_parser.parse_args(argv)
        handler: Callable[[argparse.Namespace], Any] = getattr(self, f"_{args.command}")
        return handler(args)

    def _help(self, args: argparse.Namespace) -> None:
        self._line_parser.print_help()

    def _open(self, args: argparse.Namespace) -> None:
        sandboxes = self.sandboxes
        name = args.name or sandboxes.new_name()
        if name in sandboxes.live():
            raise UsageError(f"{name!r} is open already; close it first or choose another --name.")
        sandbox = sandboxes.make(args.type)
        handle = self._start(sandbox, args.type)
        sandboxes.add(name, sandbox, args.type)
        view = self._view(name, sandbox, args.type)
        if handle is not None:
            handle.update(view)
        else:
            display(view)

    def _start(self, sandbox: Sandbox, sandbox_type: str) -> Any:
        """Start the sandbox; after ``PROGRESS_AFTER`` s show a progress bar until it answers.

        Returns the progress bar's display handle (for the sandbox view), or None.
        """
        failure: list[BaseException] = []

        def start() -> None:
            try:
                sandbox.start()
            except BaseException as e:  # handed to the main thread
                failure.append(e)

        worker = threading.Thread(target=start, name="sandbox-open", daemon=True)
        began = time.monotonic()
        worker.start()
        handle = progress = None
        try:
            worker.join(PROGRESS_AFTER)
            if worker.is_alive():
                widgets = _widgets()
                if widgets is not None:
                    progress = widgets.OpeningProgress(sandbox_type)
                    handle = display(progress, display_id=True)
                else:
                    print(f"Starting a {sandbox_type} sandbox ...", flush=True)
                while worker.is_alive():
                    if progress is not None:
                        progress.update(self.sandboxes.health(), time.monotonic() - began)
                    worker.join(0.3)
        except KeyboardInterrupt:
            # Whatever the worker gets is released once it has it.
            threading.Thread(target=lambda: (worker.join(), sandbox.close()), daemon=True).start()
            raise
        if failure:
            if handle is not None:
                handle.update(f"Could not open a {sandbox_type} sandbox: {failure[0]}")
            if progress is not None:
                progress.close()
            raise failure[0]
        if progress is not None:
            progress.close()
        return handle

    def _view(self, name: str, sandbox: Sandbox, sandbox_type: str) -> Any:
        widgets = _widgets()
        if widgets is None:
            view: Any = _Summary(name, sandbox, sandbox_type)
        else:
            view = widgets.SandboxPanel(
                sandbox,
                name=name,
                server=self.sandboxes.server,
                on_release=lambda: self.sandboxes.mark_released(name),
            )
        self.sandboxes.views[name] = view
        return view

    def _list(self, args: argparse.Namespace) -> None:
        overview = self.sandboxes.overview()
        ours = {self.sandboxes.opened[n].sandbox_id: n for n in self.sandboxes.live()}
        now = time.time()
        rows = [
            (
                ours.get(s.get("id"), ""),
                s.get("id", ""),
                s.get("type", ""),
                s.get("state", ""),
                age(now - s["created"]) if s.get("created") else "—",
                age(now - s["last_active"]) + " ago" if s.get("last_active") else "—",
            )
            for s in overview.get("sandboxes", [])
        ]
        display(SandboxTable(rows, overview.get("pools") or {}, self.sandboxes.server.base_url))

    def _tools(self, args: argparse.Namespace) -> None:
        name, sandbox = self.sandboxes.get(args.name)
        tools = sandbox.list_tools()
        for group, entries in (tools or {}).items():
            names = ", ".join(entries) if isinstance(entries, dict) else str(entries)
            print(
                textwrap.fill(
                    f"{group} ({len(entries)}): {names}", width=100, subsequent_indent="    "
                )
            )

    def _run(self, rest: str) -> int | None:
        match = _RUN_SEPARATOR.search(rest)
        if match:
            before, command = rest[: match.start()], rest[match.end() :]
            words = before.split()
            if len(words) > 1:
                raise UsageError("usage: %sandbox run [NAME] -- COMMAND")
            name = words[0] if words else None
        else:
            words = rest.strip().split(None, 1)
            if len(words) < 2:
                raise UsageError("usage: %sandbox run [NAME] -- COMMAND")
            name, command = words
        if not command.strip():
            raise UsageError("usage: %sandbox run [NAME] -- COMMAND  (the command is missing)")
        _, sandbox = self.sandboxes.get(name)
        result = sandbox.call_tool("run_shell_command", {"command": command.strip()})
        render_shell_result(result)
        return None

    def _close(self, args: argparse.Namespace) -> None:
        if args.all:
            if args.name:
                raise UsageError("usage: %sandbox close NAME | --all")
            names = self.sandboxes.release_all()
            print(f"Released {', '.join(names)}." if names else "No sandbox was open.")
            return
        if not args.name:
            raise UsageError("usage: %sandbox close NAME | --all")
        name, sandbox = self.sandboxes.get(args.name)
        self.sandboxes.release(name)
        print(f"Released {name} ({sandbox.sandbox_id}).")

    def _connect(self, args: argparse.Namespace) -> None:
        info = self.sandboxes.connect(args.url, args.token)
        print(
            f"Using the sandbox server at {info.base_url} (pools: "
            f"{pools_text(self.sandboxes.health())})."
        )

    # -- cell
    def _cell(self, line: str, cell: str) -> None:
        try:
            argv = shlex.split(line)
        except ValueError as e:
            raise UsageError(str(e)) from None
        args = self._cell_parser.parse_args(argv)
        if args.name is None and not self.sandboxes.live():
            name = self.sandboxes.new_name()
            sandbox = self.sandboxes.make("base")
            self._start(sandbox, "base")
            self.sandboxes.add(name, sandbox, "base")
            print(f"(opened {name}: base sandbox {sandbox.sandbox_id})", flush=True)
        name, sandbox = self.sandboxes.get(args.name)
        result = sandbox.call_tool("run_ipython_cell", {"code": cell})
        failed = render_cell_result(result, show_traceback=not args.raise_)
        if failed and args.raise_:
            summary, tb = failed
            raise RemoteCellError(name, summary, tb)


# ------------------------------------------------------------ plain displays (no widgets)


class SandboxTable:
    """``%sandbox list``'s table: HTML in a notebook, aligned text elsewhere."""

    HEADERS = ("name", "id", "type", "state", "age", "last active")

    def __init__(self, rows: list[tuple], pools: dict, server: str) -> None:
        self.rows = rows
        self.pools = pools
        self.server = server

    def _pools(self) -> str:
        parts = [
            f"{name} {p.get('warm', 0)}/{p.get('target', 0)} warm, {p.get('in_use', 0)} in use"
            for name, p in sorted(self.pools.items())
        ]
        return "; ".join(parts) or "none"

    def __repr__(self) -> str:
        table = [self.HEADERS, *[tuple(str(c) for c in row) for row in self.rows]]
        widths = [max(len(r[i]) for r in table) for i in range(len(self.HEADERS))]
        lines = [
            "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in table
        ]
        if not self.rows:
            lines.append("(no sandboxes handed out)")
        lines.append(f"server {self.server}; pools: {self._pools()}")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        from html import escape

        head = "".join(f"<th>{escape(h)}</th>" for h in self.HEADERS)
        body = (
            "".join(
                "<tr>"
                + "".join(
                    f"<td><b>{escape(str(c))}</b></td>" if i == 0 else f"<td>{escape(str(c))}</td>"
                    for i, c in enumerate(row)
                )
                + "</tr>"
                for row in self.rows
            )
            or f'<tr><td colspan="{len(self.HEADERS)}">no sandboxes handed out</td></tr>'
        )
        return (
            f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
            f"<p><small>server {escape(self.server)}; pools: {escape(self._pools())}"
            "</small></p>"
        )


class _Summary:
    """What ``%sandbox open`` shows when ipywidgets is not installed."""

    def __init__(self, name: str, sandbox: Sandbox, sandbox_type: str) -> None:
        self.name, self.sandbox, self.type = name, sandbox, sandbox_type
        self.released = False

    def mark_released(self) -> None:
        self.released = True

    def __repr__(self) -> str:
        state = "released" if self.released else "running"
        return f"Sandbox {self.name}: {self.type} {self.sandbox.sandbox_id} ({state})"

    def _repr_html_(self) -> str:
        from html import escape

        return f"<p>{escape(repr(self))}</p>"


def _widgets() -> Any:
    try:
        from . import widgets
    except ImportError:  # ipywidgets is optional
        return None
    return widgets


# ------------------------------------------------------------------- extension hooks

_active: SandboxMagics | None = None


def get_sandbox(name: str | None = None) -> Sandbox:
    """The SDK object of a sandbox ``%sandbox`` opened (default: the last one)."""
    if _active is None:
        raise RuntimeError("The sandbox magics are not loaded: run `%load_ext jupyter_sandbox`.")
    return _active.sandboxes.get(name)[1]


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext jupyter_sandbox``: register the magics and release on shutdown."""
    global _active
    magics = SandboxMagics(ipython)
    ipython.register_magics(magics)
    release = magics.sandboxes.release_all_quietly

    def on_exit(change: dict) -> None:  # a shutdown/restart request sets shell.exit_now
        if change.get("new"):
            release()

    magics._on_exit = on_exit  # type: ignore[attr-defined]
    ipython.observe(on_exit, names="exit_now")
    atexit.register(release)
    _active = magics


def unload_ipython_extension(ipython: Any) -> None:
    """``%unload_ext jupyter_sandbox``: release this kernel's sandboxes, drop the hooks."""
    global _active
    magics, _active = _active, None
    if magics is None:
        return
    magics.sandboxes.release_all_quietly()
    atexit.unregister(magics.sandboxes.release_all_quietly)
    with contextlib.suppress(ValueError):
        ipython.unobserve(magics._on_exit, names="exit_now")  # type: ignore[attr-defined]
    ipython.magics_manager.magics["line"].pop("sandbox", None)
    ipython.magics_manager.magics["cell"].pop("sandbox", None)
