"""Exceptions raised by :mod:`jupyter_sandbox.client`.

The official ``agentscope_runtime.sandbox`` SDK turns HTTP errors into ``"Error: ..."``
strings that are returned as if they were results. This client raises instead. Every
exception derives from :class:`SandboxError` and carries:

* ``status``: the HTTP status code, or ``None`` when there was no HTTP response
  (a connection failure or a timeout), or 200 for an empty create;
* ``detail``: the server's ``{"detail": ...}`` text (or the raw body), or ``None``.

Hierarchy::

    SandboxError
    ├── AuthenticationError          401, and 403 on the RPC routes
    ├── SandboxNotFoundError         404, "No container found ..." / "sandbox not found ..."
    │   └── WorkspaceNotFoundError   a missing workspace file (also a FileNotFoundError)
    ├── WorkspacePermissionError     403 from the workspace API (also a PermissionError)
    ├── NoSandboxAvailableError      create returned {"data": null} (also a RuntimeError)
    ├── SandboxServerError           any other non-2xx answer, or a malformed one
    └── SandboxConnectionError       no HTTP answer: refused, reset, timed out
"""

from __future__ import annotations

__all__ = [
    "AuthenticationError",
    "NoSandboxAvailableError",
    "SandboxConnectionError",
    "SandboxError",
    "SandboxNotFoundError",
    "SandboxServerError",
    "WorkspaceNotFoundError",
    "WorkspacePermissionError",
]


class SandboxError(Exception):
    """Base class of every error raised by the sandbox client.

    Args:
        message: Human-readable explanation (also ``str(exc)``).
        status: HTTP status code of the failed request, if there was a response.
        detail: The server's error detail (``{"detail": ...}``) or raw body, if any.
        url: The URL of the failed request, if any.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        detail: str | None = None,
        url: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.detail = detail
        self.url = url


class AuthenticationError(SandboxError):
    """The server rejected the credentials (HTTP 401, or 403 on an RPC route).

    Check ``bearer_token`` / the ``JUPYTER_SANDBOX_TOKEN`` environment variable.
    """


class SandboxNotFoundError(SandboxError):
    """The sandbox (or the route) does not exist on the server.

    Raised for HTTP 404 and for server details such as ``"No container found with id: ..."``
    or ``"sandbox not found: ..."``, which the upstream-compatible server sends with status 500.
    """


class WorkspaceNotFoundError(SandboxNotFoundError, FileNotFoundError):
    """A workspace path does not exist (``fs.read`` of a missing file, ``fs.move`` of a
    missing source, ``fs.list`` of a missing directory).

    It is a :class:`SandboxNotFoundError` (HTTP 404) and also a :class:`FileNotFoundError`,
    so ``except FileNotFoundError`` works as it does for local files.
    """


class WorkspacePermissionError(SandboxError, PermissionError):
    """The workspace API refused a path (HTTP 403), typically one outside ``/workspace``.

    Also a :class:`PermissionError`.
    """


class NoSandboxAvailableError(SandboxError, RuntimeError):
    """The server answered ``{"data": null}`` to a create request.

    This means it could not hand out a sandbox: its ``max_sandboxes`` limit is reached,
    or the warm pool was empty and creating a new sandbox failed. It is also a
    :class:`RuntimeError`, which is what the official SDK raises in this case.
    """


class SandboxServerError(SandboxError):
    """Any other non-2xx answer (or a 2xx answer that is not the expected JSON).

    ``status`` and ``detail`` hold the HTTP status and the server's detail text.
    """


class SandboxConnectionError(SandboxError):
    """The request got no HTTP answer: connection refused or reset, DNS failure, or a
    timeout (``RUNTIME_SANDBOX_TIMEOUT`` seconds, default 60). ``status`` is ``None``.
    """
