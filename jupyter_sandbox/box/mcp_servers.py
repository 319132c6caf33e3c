"""MCP servers added at run time (`add_mcp_servers`, wire §1.3.7 / §3.6): the box is their client.

Configs are Claude-Desktop style, `{"mcpServers": {name: {...}}}`: a `command` (with `args`,
`env`) starts a stdio server inside the sandbox; `{"type": "streamable_http"|"streamableHttp",
"url", "headers"}` connects over streamable HTTP, and any other entry with a `url` over SSE.
Each server lives in a task of its own that holds its connection (the `mcp` package's contexts
must be entered and left in one task), so stopping one never disturbs another. The `mcp`
package is imported on first use: a box that never adds a server does not pay for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
from typing import Any

log = logging.getLogger("jupyter_sandbox.box.mcp")
START_TIMEOUT = 30.0


class McpError(Exception):
    """A server could not be added or called; the message says which and why."""


class _Server:
    def __init__(self, name: str, config: dict[str, Any]):
        self.name = name
        self.config = config
        self.session: Any = None
        self.ready = asyncio.Event()
        self.stop = asyncio.Event()
        self.error: BaseException | None = None
        self.task: asyncio.Task | None = None

    async def run(self) -> None:
        from mcp import ClientSession

        try:
            async with contextlib.AsyncExitStack() as stack:
                read, write = await self._open(stack)
                self.session = await stack.enter_async_context(ClientSession(read, write))
                await self.session.initialize()
                self.ready.set()
                await self.stop.wait()
        except BaseException as e:  # noqa: BLE001 - reported to whoever waits for readiness
            self.error = e
            self.ready.set()

    async def _open(self, stack: contextlib.AsyncExitStack) -> tuple[Any, Any]:
        config = self.config
        if "command" in config:
            from mcp.client.stdio import StdioServerParameters, stdio_client

            command = shutil.which(config["command"]) or config["command"]
            params = StdioServerParameters(
                command=command,
                args=[str(a) for a in config.get("args", [])],
                env={**os.environ, **{k: str(v) for k, v in (config.get("env") or {}).items()}},
                cwd=os.getcwd(),
            )
            streams = await stack.enter_async_context(stdio_client(params))
            return streams[0], streams[1]
        url = config.get("url")
        if not isinstance(url, str):
            raise McpError("a server needs a `command` (stdio) or a `url` (HTTP)")
        headers = config.get("headers") or {}
        if config.get("type") in ("streamable_http", "streamableHttp"):
            from mcp.client.streamable_http import streamablehttp_client

            streams = await stack.enter_async_context(streamablehttp_client(url, headers=headers))
        else:
            from mcp.client.sse import sse_client

            streams = await stack.enter_async_context(sse_client(url, headers=headers))
        return streams[0], streams[1]


class McpServers:
    """The servers of one box, in the order they were added."""

    def __init__(self) -> None:
        self.servers: dict[str, _Server] = {}

    async def add(self, configs: Any, overwrite: bool = False) -> None:
        servers = configs.get("mcpServers") if isinstance(configs, dict) else None
        if not isinstance(servers, dict) or not servers:
            raise McpError("server_configs is required: {\"mcpServers\": {name: config}}")
        failed = []
        for name, config in servers.items():
            if not isinstance(config, dict):
                failed.append(f"{name}: its config must be an object")
                continue
            if name in self.servers:
                if not overwrite:
                    continue  # as upstream: existing names are kept unless overwrite
                await self._stop(self.servers.pop(name))
            server = _Server(name, config)
            server.task = asyncio.ensure_future(server.run())
            try:
                await asyncio.wait_for(server.ready.wait(), START_TIMEOUT)
            except asyncio.TimeoutError:
                server.error = TimeoutError(f"not ready in {START_TIMEOUT:g} s")
            if server.error is not None:
                await self._stop(server)
                failed.append(f"{name}: {describe_error(server.error)}")
                continue
            self.servers[name] = server
        if failed:
            raise McpError("Failed to initialize server: " + "; ".join(failed))

    async def list_tools(self) -> dict[str, dict[str, Any]]:
        groups = {}
        for name, server in self.servers.items():
            try:
                listed = await server.session.list_tools()
            except Exception as e:
                log.warning("listing the tools of MCP server %s failed: %s", name, e)
                continue
            groups[name] = {
                tool.name: {
                    "name": tool.name,
                    "json_schema": {
                        "type": "function",
                        "function": {
                            "name": tool.name,
                            "description": tool.description or "",
                            "parameters": tool.inputSchema,
                        },
                    },
                }
                for tool in listed.tools
            }
        return groups

    async def call(self, tool: str, arguments: dict[str, Any]) -> dict[str, Any] | None:
        """The first server (in order of addition) that has `tool` answers; None if none."""
        for server in self.servers.values():
            listed = await server.session.list_tools()
            if any(t.name == tool for t in listed.tools):
                result = await server.session.call_tool(tool, arguments)
                return result.model_dump(mode="json")
        return None

    async def close(self) -> None:
        for server in list(self.servers.values()):
            await self._stop(server)
        self.servers.clear()

    async def _stop(self, server: _Server) -> None:
        server.stop.set()
        if server.task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(server.task), 10)
            except (asyncio.TimeoutError, Exception):
                server.task.cancel()
                with contextlib.suppress(BaseException):
                    await server.task


def describe_error(error: BaseException) -> str:
    # anyio wraps failures in exception groups; the first leaf says what happened.
    while getattr(error, "exceptions", None):
        error = error.exceptions[0]  # type: ignore[attr-defined]
    return f"{type(error).__name__}: {error}"
