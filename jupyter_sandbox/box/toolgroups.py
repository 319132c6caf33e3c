"""The tool groups a box serves besides its two generic tools, and how a box gets them.

A sandbox type names its built-in groups (``filesystem``, ``browser``, ``desktop``) in its
registration; the manager passes the names to the box in its config line, and the box makes
each group here. Every group answers ``list_tools`` under its own name and gets the first
look at ``call_tool``; MCP servers (added at run time or declared by the type) come after.
A group starts in the background while the box is already answering, so a pool's sandbox
is warm (browser launched, display up) before it is handed out: ``/healthz?wait=kernel``
waits for the groups too.
"""

from __future__ import annotations

from typing import Any, Protocol


class ToolGroup(Protocol):
    """One group of tools in a box."""

    name: str  # the group's key in `list_tools`
    # True for a group that exports environment variables (the desktop's DISPLAY) while it
    # starts: it starts before the kernel, which then inherits them. Optional attribute.

    async def start(self) -> None:
        """Bring the group's processes up (browser, display); raise if they cannot start."""

    def list_group(self) -> dict[str, Any]:
        """`{tool: {"name": tool, "json_schema": {"type": "function", "function": {...}}}}`."""

    async def call(self, name: str, arguments: dict[str, Any]) -> dict[str, Any] | None:
        """An MCP `CallToolResult` dict, or None when `name` is not one of this group's tools."""

    async def close(self) -> None:
        """Stop everything the group started; called once, when the box stops."""


BUILTIN = ("filesystem", "browser", "desktop")


def function_schema(
    name: str, description: str, properties: dict[str, Any], required: tuple[str, ...]
) -> dict[str, Any]:
    """A tool's `json_schema` as `list_tools` reports it (an OpenAI-style function)."""
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {"type": "object", "properties": properties, "required": list(required)},
        },
    }


def make_group(name: str, workspace: str, read_only: tuple[str, ...]) -> ToolGroup:
    """The built-in group called `name` (imported on use: a base box loads none of them)."""
    if name == "filesystem":
        from .fstools import FsTools

        return FsTools(workspace, read_only)
    if name == "browser":
        from .browser import BrowserTools

        return BrowserTools(workspace)
    if name == "desktop":
        from .desktop import Desktop

        return Desktop(workspace)
    raise ValueError(f"unknown tool group {name!r}; built-in groups: {', '.join(BUILTIN)}")
