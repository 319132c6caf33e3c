"""Asynchronous sandbox classes, API-compatible with ``agentscope_runtime.sandbox``.

::

    from jupyter_sandbox.client import BaseSandboxAsync

    async with BaseSandboxAsync(base_url="http://127.0.0.1:8888/sandbox") as sb:
        print(await sb.run_shell_command("echo hi"))
        await sb.fs.write_async("notes.txt", "hello")

Like the official SDK, the async classes call the ``*_async`` routes
(``/create_from_pool_async``, ``/call_tool_async``, ...) and default to the ``*_async``
sandbox types (``base_async``, ...). All requests of one object share one
``httpx.AsyncClient``, created on first use in the running event loop.
"""

from __future__ import annotations

from typing import Any, TypeVar

from . import _http
from ._tools import BaseTools, BrowserTools, FilesystemTools, GuiTools, async_helpers
from .fs import SandboxFSAsync
from .sandbox import DesktopMixin, SandboxBase

__all__ = [
    "BaseSandboxAsync",
    "BrowserSandboxAsync",
    "FilesystemSandboxAsync",
    "GuiSandboxAsync",
    "SandboxAsync",
]


_A = TypeVar("_A", bound="SandboxAsync")


class SandboxAsync(SandboxBase):
    """A sandbox on a remote server, async API. See :class:`SandboxBase` for arguments.

    ``async with SandboxAsync(...) as sb`` acquires a sandbox
    (``POST /create_from_pool_async``) unless ``sandbox_id`` was given, and releases it
    (``POST /release_async``) on exit.

    Attributes:
        fs: The workspace file API (:class:`~jupyter_sandbox.client.SandboxFSAsync`).
    """

    fs: SandboxFSAsync

    def __init__(
        self,
        sandbox_id: str | None = None,
        base_url: str | None = None,
        bearer_token: str | None = None,
        sandbox_type: Any = "base",
        workspace_dir: str | None = None,
    ) -> None:
        super().__init__(sandbox_id, base_url, bearer_token, sandbox_type, workspace_dir)
        self._async: _http.AsyncTransport | None = None
        self.fs = SandboxFSAsync(self)

    @property
    def _async_http(self) -> _http.AsyncTransport:
        """The async transport (one ``httpx.AsyncClient``), created on first use."""
        if self._async is None:
            self._async = _http.AsyncTransport(self._endpoint)
        return self._async

    def _tool(self, name: str, arguments: dict[str, Any]) -> Any:
        return self.call_tool_async(name, arguments)

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self: _A) -> _A:
        return await self.start_async()

    async def __aexit__(self, exc_type, exc_value, traceback) -> None:
        await self.close_async()

    async def start_async(self: _A) -> _A:
        """Acquire a sandbox (``POST /create_from_pool_async``) unless one is bound.

        Raises:
            NoSandboxAvailableError: the server could not hand out a sandbox.
            SandboxError: any other failure.
        """
        if self._sandbox_id is None:
            route = "create_from_pool_async"
            body = _http.create_from_pool_body(self.sandbox_type)
            data = await self._async_http.rpc(route, body)
            self._sandbox_id = _http.created_sandbox_id(
                data, self.sandbox_type, self._endpoint.rpc_url(route)
            )
            self._released = False
        return self

    async def close_async(self) -> None:
        """Release the sandbox (``POST /release_async``). Errors are logged, not raised."""
        sandbox_id = self._sandbox_id
        if sandbox_id is not None and not self._released:
            try:
                body = _http.identity_body(sandbox_id)
                result = await self._async_http.rpc("release_async", body)
            except Exception as exc:  # close must not raise
                self._release_failed(sandbox_id, exc)
            else:
                self._release_done(sandbox_id, result)
        if self._async is not None:
            await self._async.aclose()
        if self._sync is not None:
            self._sync.close()

    # -------------------------------------------------------------------- the API

    def get_info(self) -> dict:
        """Blocking ``POST /get_info`` (kept for parity with the official async class)."""
        return self._sync_http.rpc("get_info", _http.identity_body(self._require_id()))

    async def get_info_async(self) -> dict:
        """Return the server's record of this sandbox (``POST /get_info_async``)."""
        body = _http.identity_body(self._require_id())
        return await self._async_http.rpc("get_info_async", body)

    async def list_tools_async(self, tool_type: str | None = None) -> dict:
        """Return the tool catalogue. See :meth:`Sandbox.list_tools`."""
        body = _http.list_tools_body(self._require_id(), tool_type)
        return await self._async_http.rpc("list_tools_async", body)

    async def call_tool_async(self, name: str, arguments: dict[str, Any] | None = None) -> Any:
        """Run a tool and return its result unchanged. See :meth:`Sandbox.call_tool`."""
        body = _http.call_tool_body(self._require_id(), name, arguments)
        return await self._async_http.rpc("call_tool_async", body)

    async def add_mcp_servers_async(self, server_configs: dict, overwrite: bool = False) -> Any:
        """Start extra MCP servers in the sandbox. See :meth:`Sandbox.add_mcp_servers`."""
        body = _http.add_mcp_servers_body(self._require_id(), server_configs, overwrite)
        return await self._async_http.rpc("add_mcp_servers_async", body)


class AsyncDesktopMixin:
    """``get_desktop_url_async`` of the desktop-capable async types."""

    async def get_desktop_url_async(self: Any) -> str:
        """URL of the sandbox's noVNC desktop. See :attr:`DesktopMixin.desktop_url`."""
        body = _http.identity_body(self._require_id())
        healthy = await self._async_http.rpc("check_health_async", body)
        return self._desktop_url(healthy, await self.get_info_async())


class BaseSandboxAsync(async_helpers(BaseTools), SandboxAsync):
    """The ``base`` sandbox, async: ``await run_shell_command()`` / ``run_ipython_cell()``."""

    def __init__(
        self,
        sandbox_id: str | None = None,
        base_url: str | None = None,
        bearer_token: str | None = None,
        sandbox_type: Any = "base_async",
        workspace_dir: str | None = None,
    ) -> None:
        super().__init__(sandbox_id, base_url, bearer_token, sandbox_type, workspace_dir)


class FilesystemSandboxAsync(
    async_helpers(FilesystemTools), DesktopMixin, AsyncDesktopMixin, BaseSandboxAsync
):
    """The ``filesystem`` sandbox, async."""

    def __init__(
        self,
        sandbox_id: str | None = None,
        base_url: str | None = None,
        bearer_token: str | None = None,
        sandbox_type: Any = "filesystem_async",
        workspace_dir: str | None = None,
    ) -> None:
        super().__init__(sandbox_id, base_url, bearer_token, sandbox_type, workspace_dir)


class BrowserSandboxAsync(
    async_helpers(BrowserTools), DesktopMixin, AsyncDesktopMixin, BaseSandboxAsync
):
    """The ``browser`` sandbox, async."""

    def __init__(
        self,
        sandbox_id: str | None = None,
        base_url: str | None = None,
        bearer_token: str | None = None,
        sandbox_type: Any = "browser_async",
        workspace_dir: str | None = None,
    ) -> None:
        super().__init__(sandbox_id, base_url, bearer_token, sandbox_type, workspace_dir)


class GuiSandboxAsync(async_helpers(GuiTools), DesktopMixin, AsyncDesktopMixin, BaseSandboxAsync):
    """The ``gui`` sandbox, async."""

    def __init__(
        self,
        sandbox_id: str | None = None,
        base_url: str | None = None,
        bearer_token: str | None = None,
        sandbox_type: Any = "gui_async",
        workspace_dir: str | None = None,
    ) -> None:
        super().__init__(sandbox_id, base_url, bearer_token, sandbox_type, workspace_dir)
