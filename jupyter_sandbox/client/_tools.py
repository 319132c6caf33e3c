"""Typed tool helpers (wire §2.2), written once for the sync and the async classes.

Each helper is exactly ``call_tool(name, arguments)`` with the argument names of the
official SDK. The mixins below call ``self._tool(name, arguments)``: sync sandboxes
implement it as :meth:`Sandbox.call_tool` (a result), async sandboxes as
:meth:`SandboxAsync.call_tool_async` (a coroutine). :func:`async_helpers` turns a mixin
into one whose public methods are real ``async def`` functions with the same signatures
and docstrings, so both families share a single definition of every helper.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

ToolArgs = dict[str, Any]


class ToolHelpers:
    """Root of the helper mixins: declares the hook they call."""

    def _tool(self, name: str, arguments: ToolArgs) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError


def async_helpers(mixin: type) -> type:
    """Return a mixin whose public methods are ``async`` wrappers of ``mixin``'s own.

    The wrappers keep the name, docstring and signature (``inspect.signature`` follows
    ``__wrapped__``) and are coroutine functions, like the official async classes'.
    """

    def wrap(func: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(func)
        async def method(self: Any, *args: Any, **kwargs: Any) -> Any:
            return await func(self, *args, **kwargs)

        return method

    namespace = {
        name: wrap(attr)
        for name, attr in vars(mixin).items()
        if not name.startswith("_") and inspect.isfunction(attr)
    }
    namespace["__doc__"] = f"Async versions of the {mixin.__name__} helpers."
    return type(f"{mixin.__name__}Async", (ToolHelpers,), namespace)


class BaseTools(ToolHelpers):
    """The two generic tools every sandbox type serves."""

    def run_ipython_cell(self, code: str) -> Any:
        """Run an IPython cell in the sandbox's kernel (state persists across calls).

        Args:
            code: IPython code to execute.

        Returns:
            The CallToolResult dict: ``{"meta", "content": [...], "isError"}``.
        """
        return self._tool("run_ipython_cell", {"code": code})

    def run_shell_command(self, command: str) -> Any:
        """Run a shell command (``/bin/sh -c``) in ``/workspace``.

        Args:
            command: Shell command to execute.

        Returns:
            The CallToolResult dict with stdout, stderr (if any) and returncode items.
        """
        return self._tool("run_shell_command", {"command": command})


class FilesystemTools(ToolHelpers):
    """Tools of the ``filesystem`` MCP server (paths are relative to ``/workspace``)."""

    def read_file(self, path: str) -> Any:
        """Read the complete contents of a file."""
        return self._tool("read_file", {"path": path})

    def read_multiple_files(self, paths: list) -> Any:
        """Read several files at once."""
        return self._tool("read_multiple_files", {"paths": paths})

    def write_file(self, path: str, content: str) -> Any:
        """Create or overwrite a file with ``content``."""
        return self._tool("write_file", {"path": path, "content": content})

    def edit_file(self, path: str, edits: list, dry_run: bool = False) -> Any:
        """Make line-based edits to a text file.

        Args:
            path: File to edit.
            edits: ``[{"oldText": ..., "newText": ...}, ...]``.
            dry_run: Only return a git-style diff of the changes.
        """
        return self._tool("edit_file", {"path": path, "edits": edits, "dryRun": dry_run})

    def create_directory(self, path: str) -> Any:
        """Create a directory (and its parents)."""
        return self._tool("create_directory", {"path": path})

    def list_directory(self, path: str) -> Any:
        """List a directory as ``[DIR] name`` / ``[FILE] name`` lines."""
        return self._tool("list_directory", {"path": path})

    def directory_tree(self, path: str) -> Any:
        """Return a recursive JSON tree of a directory."""
        return self._tool("directory_tree", {"path": path})

    def move_file(self, source: str, destination: str) -> Any:
        """Move or rename a file or directory."""
        return self._tool("move_file", {"source": source, "destination": destination})

    def search_files(
        self,
        path: str,
        pattern: str,
        exclude_patterns: list = [],  # noqa: B006 - same default as the official SDK; never mutated
    ) -> Any:
        """Recursively search for files and directories whose names match ``pattern``."""
        return self._tool(
            "search_files",
            {"path": path, "pattern": pattern, "excludePatterns": list(exclude_patterns)},
        )

    def get_file_info(self, path: str) -> Any:
        """Return metadata (size, times, type, permissions) of a path."""
        return self._tool("get_file_info", {"path": path})

    def list_allowed_directories(self) -> Any:
        """List the directories the filesystem tools may access."""
        return self._tool("list_allowed_directories", {})


class BrowserTools(ToolHelpers):
    """Tools of the ``playwright`` MCP server."""

    def browser_close(self) -> Any:
        """Close the page."""
        return self._tool("browser_close", {})

    def browser_resize(self, width: int, height: int) -> Any:
        """Resize the browser window."""
        return self._tool("browser_resize", {"width": width, "height": height})

    def browser_console_messages(self) -> Any:
        """Return all console messages of the page."""
        return self._tool("browser_console_messages", {})

    def browser_handle_dialog(self, accept: bool, prompt_text: str = "") -> Any:
        """Accept or dismiss a dialog (``prompt_text`` answers a prompt dialog)."""
        return self._tool("browser_handle_dialog", {"accept": accept, "promptText": prompt_text})

    def browser_file_upload(self, paths: list) -> Any:
        """Upload one or more files (absolute paths inside the sandbox)."""
        return self._tool("browser_file_upload", {"paths": paths})

    def browser_press_key(self, key: str) -> Any:
        """Press a key, e.g. ``"ArrowLeft"`` or ``"a"``."""
        return self._tool("browser_press_key", {"key": key})

    def browser_navigate(self, url: str) -> Any:
        """Navigate to a URL."""
        return self._tool("browser_navigate", {"url": url})

    def browser_navigate_back(self) -> Any:
        """Go back to the previous page."""
        return self._tool("browser_navigate_back", {})

    def browser_navigate_forward(self) -> Any:
        """Go forward to the next page."""
        return self._tool("browser_navigate_forward", {})

    def browser_network_requests(self) -> Any:
        """Return all network requests since the page loaded."""
        return self._tool("browser_network_requests", {})

    def browser_pdf_save(self, filename: str = "") -> Any:
        """Save the page as a PDF (in ``/workspace``)."""
        return self._tool("browser_pdf_save", {"filename": filename})

    def browser_take_screenshot(
        self,
        raw: bool = False,
        filename: str = "",
        element: str = "",
        ref: str = "",
    ) -> Any:
        """Take a screenshot of the page or of one element (``raw=True`` gives PNG)."""
        return self._tool(
            "browser_take_screenshot",
            {"raw": raw, "filename": filename, "element": element, "ref": ref},
        )

    def browser_snapshot(self) -> Any:
        """Capture the accessibility snapshot of the page (element refs for other tools)."""
        return self._tool("browser_snapshot", {})

    def browser_click(self, element: str, ref: str) -> Any:
        """Click an element (``ref`` from :meth:`browser_snapshot`)."""
        return self._tool("browser_click", {"element": element, "ref": ref})

    def browser_drag(
        self,
        start_element: str,
        start_ref: str,
        end_element: str,
        end_ref: str,
    ) -> Any:
        """Drag one element and drop it onto another."""
        return self._tool(
            "browser_drag",
            {
                "startElement": start_element,
                "startRef": start_ref,
                "endElement": end_element,
                "endRef": end_ref,
            },
        )

    def browser_hover(self, element: str, ref: str) -> Any:
        """Hover over an element."""
        return self._tool("browser_hover", {"element": element, "ref": ref})

    def browser_type(
        self,
        element: str,
        ref: str,
        text: str,
        submit: bool = False,
        slowly: bool = False,
    ) -> Any:
        """Type text into an editable element (``submit`` presses Enter afterwards)."""
        return self._tool(
            "browser_type",
            {"element": element, "ref": ref, "text": text, "submit": submit, "slowly": slowly},
        )

    def browser_select_option(self, element: str, ref: str, values: list) -> Any:
        """Select option(s) in a dropdown."""
        return self._tool(
            "browser_select_option", {"element": element, "ref": ref, "values": values}
        )

    def browser_tab_list(self) -> Any:
        """List the browser tabs."""
        return self._tool("browser_tab_list", {})

    def browser_tab_new(self, url: str = "") -> Any:
        """Open a new tab (blank unless ``url`` is given)."""
        return self._tool("browser_tab_new", {"url": url})

    def browser_tab_select(self, index: int) -> Any:
        """Select a tab by index."""
        return self._tool("browser_tab_select", {"index": index})

    def browser_tab_close(self, index: int | None = None) -> Any:
        """Close a tab by index (the current tab when ``index`` is None)."""
        return self._tool("browser_tab_close", {"index": index})

    def browser_wait_for(
        self,
        time: float | None = None,
        text: str | None = None,
        text_gone: str | None = None,
    ) -> Any:
        """Wait ``time`` seconds, or for ``text`` to appear, or for ``text_gone`` to go."""
        return self._tool("browser_wait_for", {"time": time, "text": text, "textGone": text_gone})


class GuiTools(ToolHelpers):
    """The ``computer`` tool of the ``computer-use`` MCP server (X11 desktop)."""

    def computer_use(
        self,
        action: str,
        coordinate: list[float] | tuple[float, float] | None = None,
        text: str | None = None,
    ) -> Any:
        """Use the mouse and keyboard of the sandbox desktop, or take a screenshot.

        Args:
            action: One of ``key``, ``type``, ``get_cursor_position``, ``mouse_move``,
                ``left_click``, ``left_click_drag``, ``right_click``, ``middle_click``,
                ``double_click``, ``get_screenshot``.
            coordinate: ``[x, y]`` for mouse actions (omitted from the call when None).
            text: Text for ``type`` / key combination for ``key`` (omitted when None).
        """
        arguments: ToolArgs = {"action": action}
        if coordinate is not None:
            arguments["coordinate"] = coordinate
        if text is not None:
            arguments["text"] = text
        return self._tool("computer", arguments)
