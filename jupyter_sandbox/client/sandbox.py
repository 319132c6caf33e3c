"""Synchronous sandbox classes, API-compatible with ``agentscope_runtime.sandbox``.

Switching from the official SDK (remote mode) is an import change::

    from jupyter_sandbox.client import BaseSandbox   # was: from agentscope_runtime.sandbox ...

    with BaseSandbox(base_url="http://127.0.0.1:8888/sandbox", bearer_token="...") as sb:
        print(sb.run_shell_command("echo hi"))
        sb.fs.write("notes.txt", "hello")

Differences from the official SDK: ``base_url`` is required (or ``$JUPYTER_SANDBOX_URL``;
there is no embedded mode), and errors raise :class:`~jupyter_sandbox.client.SandboxError`
subclasses instead of returning ``"Error: ..."`` strings.
"""

from __future__ import annotations

from typing import Any, TypeVar

from . import _http
from ._tools import BaseTools, BrowserTools, FilesystemTools, GuiTools, ToolHelpers
from .errors import SandboxError, SandboxServerError
from .fs import SandboxFS

__all__ = [
    "BaseSandbox",
    "BrowserSandbox",
    "FilesystemSandbox",
    "GuiSandbox",
    "Sandbox",
    "SandboxBase",
]

logger = _http.logger

_S = TypeVar("_S", bound="Sandbox")
_BUILTIN_DEFAULTS = frozenset(
    f"{t}{suffix}" for t in ("base", "filesystem", "browser", "gui") for suffix in ("", "_async")
)


class SandboxBase(ToolHelpers):
    """State and settings shared by :class:`Sandbox` and :class:`SandboxAsync`.

    Args:
        sandbox_id: Attach to this existing sandbox instead of acquiring a new one on
            ``start()`` / ``with``. It is still released on ``close()``, as upstream.
        base_url: URL of the sandbox server (the manager API root). Defaults to
            ``$JUPYTER_SANDBOX_URL``; required.
        bearer_token: Token sent as ``Authorization: Bearer <token>``. Defaults to
            ``$JUPYTER_SANDBOX_TOKEN``; no header when unset.
        sandbox_type: Type to acquire, a string such as ``"base"`` or an enum member with
            a ``.value`` (e.g. the official ``SandboxType``). Sent as given; the server
            validates it.
        workspace_dir: Only meaningful for the official SDK's embedded mode, which this
            client does not have. Must be None.

    The HTTP timeout is ``$RUNTIME_SANDBOX_TIMEOUT`` seconds (default 60).
    """

    def __init__(
        self,
        sandbox_id: str | None = None,
        base_url: str | None = None,
        bearer_token: str | None = None,
        sandbox_type: Any = "base",
        workspace_dir: str | None = None,
    ) -> None:
        if workspace_dir:
            raise ValueError(
                "workspace_dir is not supported: it only exists in the official SDK's "
                "embedded mode, and jupyter_sandbox.client always talks to a server. "
                "Upload files with sandbox.fs.write()/write_from_path() instead.",
            )
        self._endpoint = _http.Endpoint.resolve(base_url, bearer_token)
        self.sandbox_type: str = _http.type_value(sandbox_type)
        # A class registered with @SandboxRegistry.register asks for its own type when
        # the type passed down is just a built-in parent class's default.
        registered = getattr(type(self), "_registered_sandbox_type", None)
        if registered and self.sandbox_type in _BUILTIN_DEFAULTS:
            self.sandbox_type = registered
        self.workspace_dir: str | None = None
        #: Always False: there is no embedded mode (attribute kept for compatibility).
        self.embed_mode = False
        self._sandbox_id: str | None = sandbox_id or None
        self._released = False
        self._sync: _http.SyncTransport | None = None

    # ----------------------------------------------------------------- properties

    @property
    def base_url(self) -> str:
        """The server URL (without a trailing slash)."""
        return self._endpoint.base_url

    @property
    def timeout(self) -> float:
        """HTTP timeout in seconds (from ``$RUNTIME_SANDBOX_TIMEOUT``)."""
        return self._endpoint.timeout

    @property
    def sandbox_id(self) -> str | None:
        """The bound sandbox id, or None before ``start()`` when none was given."""
        return self._sandbox_id

    @sandbox_id.setter
    def sandbox_id(self, value: str) -> None:
        if not value:
            raise ValueError("Sandbox ID cannot be empty.")
        self._sandbox_id = value
        self._released = False

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} id={self._sandbox_id!r} type={self.sandbox_type!r} "
            f"server={self.base_url!r}>"
        )

    # ------------------------------------------------------------------- helpers

    def _require_id(self) -> str:
        if not self._sandbox_id:
            raise SandboxError(
                f"{type(self).__name__} is not started (sandbox_id is None). Use "
                "`with Sandbox(...) as sb:` / `async with SandboxAsync(...) as sb:`, call "
                "start() / start_async(), or pass sandbox_id=.",
            )
        return self._sandbox_id

    @property
    def _sync_http(self) -> _http.SyncTransport:
        """The sync transport (one ``requests.Session``), created on first use."""
        if self._sync is None:
            self._sync = _http.SyncTransport(self._endpoint)
        return self._sync

    def _release_failed(self, sandbox_id: str, exc: BaseException) -> None:
        logger.error("Releasing sandbox %s failed: %s", sandbox_id, exc)

    def _release_done(self, sandbox_id: str, result: Any) -> None:
        if result is False:
            logger.warning("The server could not release sandbox %s cleanly.", sandbox_id)
        self._released = True

    def _desktop_url(self, healthy: Any, info: Any) -> str:
        """Build the desktop (noVNC) URL from ``check_health`` and ``get_info`` answers."""
        sandbox_id = self._require_id()
        if not healthy:
            raise SandboxError(f"Sandbox {sandbox_id} is not healthy")
        token = info.get("runtime_token") if isinstance(info, dict) else None
        if not token:
            raise SandboxServerError(
                f"get_info of sandbox {sandbox_id} has no runtime_token; cannot build the "
                "desktop URL",
                detail=repr(info),
            )
        return self._endpoint.desktop_url(sandbox_id, token)


class Sandbox(SandboxBase):
    """A sandbox on a remote jupyter-sandbox (or AgentScope Runtime) server, sync API.

    ``with Sandbox(...) as sb`` acquires a sandbox (``POST /create_from_pool``) unless
    ``sandbox_id`` was given, and releases it (``POST /release``) on exit. All requests of
    one object share one ``requests.Session`` (keep-alive connection reuse).

    Attributes:
        fs: The workspace file API (:class:`~jupyter_sandbox.client.SandboxFS`).
    """

    fs: SandboxFS

    def __init__(
        self,
        sandbox_id: str | None = None,
        base_url: str | None = None,
        bearer_token: str | None = None,
        sandbox_type: Any = "base",
        workspace_dir: str | None = None,
    ) -> None:
        super().__init__(sandbox_id, base_url, bearer_token, sandbox_type, workspace_dir)
        self.fs = SandboxFS(self)

    def _tool(self, name: str, arguments: dict[str, Any]) -> Any:
        return self.call_tool(name, arguments)

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self: _S) -> _S:
        return self.start()

    def __exit__(self, exc_type, exc_value, traceback) -> None:
        self.close()

    def start(self: _S) -> _S:
        """Acquire a sandbox (``POST /create_from_pool``) unless one is already bound.

        Returns:
            self

        Raises:
            NoSandboxAvailableError: the server could not hand out a sandbox.
            SandboxError: any other failure (authentication, connection, server error).
        """
        if self._sandbox_id is None:
            body = _http.create_from_pool_body(self.sandbox_type)
            data = self._sync_http.rpc("create_from_pool", body)
            self._sandbox_id = _http.created_sandbox_id(
                data, self.sandbox_type, self._endpoint.rpc_url("create_from_pool")
            )
            self._released = False
        return self

    def close(self) -> None:
        """Release the sandbox (``POST /release``). Errors are logged, not raised.

        Calling it again after a successful release does nothing.
        """
        sandbox_id = self._sandbox_id
        if sandbox_id is not None and not self._released:
            try:
                result = self._sync_http.rpc("release", _http.identity_body(sandbox_id))
            except Exception as exc:  # close() must not raise
                self._release_failed(sandbox_id, exc)
            else:
                self._release_done(sandbox_id, result)
        if self._sync is not None:
            self._sync.close()

    # -------------------------------------------------------------------- the API

    def get_info(self) -> dict:
        """Return the server's record of this sandbox (``POST /get_info``).

        Includes ``runtime_token``, ``url``, ``version``, ``state``, ``session_ctx_id``.
        """
        return self._sync_http.rpc("get_info", _http.identity_body(self._require_id()))

    def list_tools(self, tool_type: str | None = None) -> dict:
        """Return the tool catalogue, ``{group: {tool: {"name", "json_schema"}}}``.

        Args:
            tool_type: Only this group (e.g. ``"generic"``), as ``{tool_type: {...}}``.
        """
        body = _http.list_tools_body(self._require_id(), tool_type)
        return self._sync_http.rpc("list_tools", body)

    def call_tool(self, name: str, arguments: dict[str, Any] | None = None) -> Any:
        """Run a tool and return its result unchanged (an MCP CallToolResult dict).

        A tool that fails *inside* the sandbox is not an exception: the result has
        ``"isError": true``. Exceptions mean the request itself failed.
        """
        body = _http.call_tool_body(self._require_id(), name, arguments)
        return self._sync_http.rpc("call_tool", body)

    def add_mcp_servers(self, server_configs: dict, overwrite: bool = False) -> Any:
        """Start extra MCP servers in the sandbox (``{"mcpServers": {name: {...}}}``).

        Args:
            server_configs: Claude-Desktop style MCP configuration.
            overwrite: Replace servers that already exist with the same name.
        """
        body = _http.add_mcp_servers_body(self._require_id(), server_configs, overwrite)
        return self._sync_http.rpc("add_mcp_servers", body)


class DesktopMixin:
    """``desktop_url`` of the desktop-capable types (filesystem, browser, gui)."""

    @property
    def desktop_url(self: Any) -> str:
        """URL of the sandbox's noVNC desktop through the server.

        ``{base_url}/desktop/{sandbox_id}/vnc/vnc_relay.html?password={runtime_token}``;
        checks health first (``/check_health`` then ``/get_info``, like the official SDK).
        """
        healthy = self._sync_http.rpc("check_health", _http.identity_body(self._require_id()))
        return self._desktop_url(healthy, self.get_info())


class BaseSandbox(BaseTools, Sandbox):
    """The ``base`` sandbox: ``run_shell_command`` and ``run_ipython_cell``."""

    def __init__(
        self,
        sandbox_id: str | None = None,
        base_url: str | None = None,
        bearer_token: str | None = None,
        sandbox_type: Any = "base",
        workspace_dir: str | None = None,
    ) -> None:
        super().__init__(sandbox_id, base_url, bearer_token, sandbox_type, workspace_dir)


class FilesystemSandbox(FilesystemTools, DesktopMixin, BaseSandbox):
    """The ``filesystem`` sandbox: the filesystem MCP tools plus the base tools."""

    def __init__(
        self,
        sandbox_id: str | None = None,
        base_url: str | None = None,
        bearer_token: str | None = None,
        sandbox_type: Any = "filesystem",
        workspace_dir: str | None = None,
    ) -> None:
        super().__init__(sandbox_id, base_url, bearer_token, sandbox_type, workspace_dir)


class BrowserSandbox(BrowserTools, DesktopMixin, BaseSandbox):
    """The ``browser`` sandbox: the Playwright MCP tools plus the base tools."""

    def __init__(
        self,
        sandbox_id: str | None = None,
        base_url: str | None = None,
        bearer_token: str | None = None,
        sandbox_type: Any = "browser",
        workspace_dir: str | None = None,
    ) -> None:
        super().__init__(sandbox_id, base_url, bearer_token, sandbox_type, workspace_dir)


class GuiSandbox(GuiTools, DesktopMixin, BaseSandbox):
    """The ``gui`` sandbox: ``computer_use`` on an X11 desktop plus the base tools."""

    def __init__(
        self,
        sandbox_id: str | None = None,
        base_url: str | None = None,
        bearer_token: str | None = None,
        sandbox_type: Any = "gui",
        workspace_dir: str | None = None,
    ) -> None:
        super().__init__(sandbox_id, base_url, bearer_token, sandbox_type, workspace_dir)
