"""jupyter-sandbox's Python SDK, API-compatible with ``agentscope_runtime.sandbox``.

The classes mirror the official SDK's remote mode, so switching is an import change::

    from jupyter_sandbox.client import BaseSandbox

    with BaseSandbox(base_url="http://127.0.0.1:8888/sandbox", bearer_token="t") as sb:
        result = sb.run_shell_command("echo hi")       # a CallToolResult dict
        sb.fs.write("hello.txt", "hi")

``base_url`` defaults to ``$JUPYTER_SANDBOX_URL`` and ``bearer_token`` to
``$JUPYTER_SANDBOX_TOKEN``; the HTTP timeout is ``$RUNTIME_SANDBOX_TIMEOUT`` (60 s).
Unlike the official SDK, failures raise :class:`SandboxError` subclasses instead of being
returned as ``"Error: ..."`` strings.
"""

from .async_sandbox import (
    BaseSandboxAsync,
    BrowserSandboxAsync,
    FilesystemSandboxAsync,
    GuiSandboxAsync,
    SandboxAsync,
)
from .errors import (
    AuthenticationError,
    NoSandboxAvailableError,
    SandboxConnectionError,
    SandboxError,
    SandboxNotFoundError,
    SandboxServerError,
    WorkspaceNotFoundError,
    WorkspacePermissionError,
)
from .fs import SandboxFS, SandboxFSAsync
from .sandbox import BaseSandbox, BrowserSandbox, FilesystemSandbox, GuiSandbox, Sandbox

__all__ = [
    # sync
    "Sandbox",
    "BaseSandbox",
    "FilesystemSandbox",
    "BrowserSandbox",
    "GuiSandbox",
    # async
    "SandboxAsync",
    "BaseSandboxAsync",
    "FilesystemSandboxAsync",
    "BrowserSandboxAsync",
    "GuiSandboxAsync",
    # workspace files
    "SandboxFS",
    "SandboxFSAsync",
    # errors
    "SandboxError",
    "AuthenticationError",
    "SandboxNotFoundError",
    "WorkspaceNotFoundError",
    "WorkspacePermissionError",
    "NoSandboxAvailableError",
    "SandboxServerError",
    "SandboxConnectionError",
]
