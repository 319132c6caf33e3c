"""HTTP plumbing shared by the sync and async clients.

Everything that does not depend on the I/O style lives here exactly once: settings
resolution (arguments, then environment), URL building, the RPC request bodies of the
AgentScope wire API, the ``{"data": ...}`` envelope, and the mapping of HTTP errors to
:mod:`jupyter_sandbox.client.errors`. The two transports, :class:`SyncTransport`
(one ``requests.Session``) and :class:`AsyncTransport` (one ``httpx.AsyncClient``), only
send bytes and hand the answer to the shared functions.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import httpx
import requests

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

logger = logging.getLogger("jupyter_sandbox.client")

#: Environment variable read when ``base_url`` is not passed.
ENV_URL = "JUPYTER_SANDBOX_URL"
#: Environment variable read when ``bearer_token`` is not passed.
ENV_TOKEN = "JUPYTER_SANDBOX_TOKEN"
#: Environment variable holding the HTTP timeout in seconds (same name as upstream).
ENV_TIMEOUT = "RUNTIME_SANDBOX_TIMEOUT"
DEFAULT_TIMEOUT = 60.0

_MAX_DETAIL = 2000
# Details by which the server says "this sandbox does not exist" (any status code).
_SANDBOX_MISSING = re.compile(
    r"no container found|sandbox not found|no sandbox found|unknown sandbox|"
    r"runtime url not found",
    re.IGNORECASE,
)
# Alphabet of the 22-character session ids the official SDK sends (shortuuid style).
_SESSION_ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


# --------------------------------------------------------------------------- settings


def resolve_base_url(base_url: str | None) -> str:
    """Return the manager URL: the argument, else ``$JUPYTER_SANDBOX_URL``.

    Raises:
        ValueError: if neither is set (this client has no embedded mode).
    """
    url = base_url or os.environ.get(ENV_URL, "")
    url = url.strip().rstrip("/")
    if not url:
        raise ValueError(
            "base_url is required: jupyter_sandbox.client talks to a running sandbox server "
            "and has no embedded mode. Pass base_url='http://host:port' (the server's URL, "
            f"including any base path) or set the {ENV_URL} environment variable.",
        )
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"base_url must start with http:// or https://, got {url!r}")
    return url


def resolve_token(bearer_token: str | None) -> str | None:
    """Return the bearer token: the argument, else ``$JUPYTER_SANDBOX_TOKEN``, else None."""
    if bearer_token:
        return bearer_token
    return os.environ.get(ENV_TOKEN) or None


def resolve_timeout() -> float:
    """Return the HTTP timeout in seconds from ``$RUNTIME_SANDBOX_TIMEOUT`` (default 60)."""
    raw = os.environ.get(ENV_TIMEOUT, "").strip()
    if not raw:
        return DEFAULT_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{ENV_TIMEOUT} must be a number of seconds, got {raw!r}") from None
    if value <= 0:
        raise ValueError(f"{ENV_TIMEOUT} must be positive, got {raw!r}")
    return value


def type_value(sandbox_type: Any) -> str:
    """The wire value of a sandbox type: a str as given, or an enum member's ``.value``.

    Unknown types are not checked here; the server validates them.
    """
    value = getattr(sandbox_type, "value", sandbox_type)
    if not isinstance(value, str) or not value:
        raise ValueError(f"sandbox_type must be a non-empty string, got {sandbox_type!r}")
    return value


def new_session_ctx_id() -> str:
    """A fresh random 22-character session id, like the official SDK's."""
    return "".join(secrets.choice(_SESSION_ALPHABET) for _ in range(22))


@dataclass(frozen=True)
class Endpoint:
    """Resolved connection settings of one sandbox object."""

    base_url: str
    bearer_token: str | None
    timeout: float

    @classmethod
    def resolve(cls, base_url: str | None, bearer_token: str | None) -> Endpoint:
        """Build from constructor arguments, falling back to the environment."""
        return cls(resolve_base_url(base_url), resolve_token(bearer_token), resolve_timeout())

    def headers(self) -> dict[str, str]:
        """Headers sent with every request (the Authorization header when a token is set)."""
        if self.bearer_token:
            return {"Authorization": f"Bearer {self.bearer_token}"}
        return {}

    def rpc_url(self, route: str) -> str:
        """URL of an RPC route, e.g. ``rpc_url("call_tool")``."""
        return f"{self.base_url}/{route}"

    def proxy_url(self, sandbox_id: str, path: str) -> str:
        """URL of a box route through the manager proxy: ``{base}/proxy/{id}/{path}``."""
        return f"{self.base_url}/proxy/{quote(sandbox_id, safe='')}/{path.lstrip('/')}"

    def desktop_url(self, sandbox_id: str, runtime_token: str) -> str:
        """The noVNC page of a desktop-capable sandbox, password = its runtime token."""
        query = urlencode({"password": runtime_token})
        return f"{self.base_url}/desktop/{quote(sandbox_id, safe='')}/vnc/vnc_relay.html?{query}"


# ------------------------------------------------------------------- RPC request bodies
# The exact bodies the official SDK sends (wire §1.3, §1.6); keys with None are kept.


def create_from_pool_body(sandbox_type: str, session_ctx_id: str | None = None) -> dict:
    """Body of ``/create_from_pool``."""
    return {
        "sandbox_type": sandbox_type,
        "meta": {"session_ctx_id": session_ctx_id or new_session_ctx_id()},
    }


def identity_body(sandbox_id: str) -> dict:
    """Body of ``/release``, ``/get_info``, ``/check_health``."""
    return {"identity": sandbox_id}


def list_tools_body(sandbox_id: str, tool_type: str | None) -> dict:
    """Body of ``/list_tools``."""
    return {"identity": sandbox_id, "tool_type": tool_type}


def call_tool_body(sandbox_id: str, name: str, arguments: Mapping[str, Any] | None) -> dict:
    """Body of ``/call_tool``; ``arguments`` is always an object (``{}`` when empty)."""
    return {
        "identity": sandbox_id,
        "tool_name": name,
        "arguments": dict(arguments) if arguments else {},
    }


def add_mcp_servers_body(sandbox_id: str, server_configs: dict, overwrite: bool) -> dict:
    """Body of ``/add_mcp_servers``."""
    return {"identity": sandbox_id, "server_configs": server_configs, "overwrite": overwrite}


def created_sandbox_id(data: Any, sandbox_type: str, url: str) -> str:
    """Validate the ``data`` of a create call and return the new sandbox id.

    Raises:
        NoSandboxAvailableError: ``data`` is null (the server could not hand one out).
        SandboxServerError: ``data`` is not a non-empty string.
    """
    if data is None:
        raise NoSandboxAvailableError(
            f"No sandbox available: the server could not hand out a {sandbox_type!r} sandbox. "
            "Its max_sandboxes limit may be reached, or the warm pool was empty and creating "
            "a new sandbox failed (see the server log).",
            status=200,
            url=url,
        )
    if not isinstance(data, str) or not data:
        raise SandboxServerError(
            f"POST {url} returned an unexpected sandbox id: {data!r}",
            status=200,
            detail=repr(data),
            url=url,
        )
    return data


# ------------------------------------------------------------- response / error mapping


def extract_detail(body: bytes) -> str | None:
    """The server's error text: ``detail`` (or ``error``) of a JSON body, else the body."""
    if not body:
        return None
    text = body.decode("utf-8", errors="replace")
    try:
        payload = json.loads(text)
    except ValueError:
        payload = None
    if isinstance(payload, dict):
        for key in ("detail", "error", "message"):
            if key in payload:
                value = payload[key]
                text = value if isinstance(value, str) else json.dumps(value)
                break
    text = text.strip()
    if len(text) > _MAX_DETAIL:
        text = text[:_MAX_DETAIL] + "..."
    return text or None


def error_from_response(
    status: int,
    body: bytes,
    *,
    method: str,
    url: str,
    workspace: bool = False,
) -> SandboxError:
    """Map a non-2xx answer to an exception. This is the only place that does it.

    Args:
        status: HTTP status code.
        body: Raw response body.
        method: HTTP method of the request (for the message).
        url: URL of the request (for the message).
        workspace: True for the ``/proxy/{id}/workspace/...`` file API, where 403 and a
            plain 404 come from the box (a path outside /workspace, a missing file) rather
            than from the manager.
    """
    detail = extract_detail(body)
    where = f"{method} {url}"
    said = f": {detail}" if detail else ""
    kwargs: dict[str, Any] = {"status": status, "detail": detail, "url": url}

    if status == 401 or (status == 403 and not workspace):
        return AuthenticationError(
            f"{where} was rejected with HTTP {status}{said}. Check the bearer token "
            f"(bearer_token= or ${ENV_TOKEN}).",
            **kwargs,
        )
    if status == 403:
        return WorkspacePermissionError(f"{where} failed with HTTP 403{said}", **kwargs)
    sandbox_missing = bool(detail and _SANDBOX_MISSING.search(detail))
    if status == 404 and workspace and not sandbox_missing:
        return WorkspaceNotFoundError(f"{where} failed with HTTP 404{said}", **kwargs)
    if status == 404 or sandbox_missing:
        return SandboxNotFoundError(
            f"{where} failed with HTTP {status}: sandbox or route not found{said}",
            **kwargs,
        )
    return SandboxServerError(f"{where} failed with HTTP {status}{said}", **kwargs)


def parse_json(body: bytes, *, method: str, url: str, status: int = 200) -> Any:
    """Decode a JSON body, raising :class:`SandboxServerError` if it is not JSON."""
    try:
        return json.loads(body)
    except ValueError:
        raise SandboxServerError(
            f"{method} {url} returned a body that is not JSON",
            status=status,
            detail=extract_detail(body),
            url=url,
        ) from None


def unwrap_envelope(body: bytes, *, url: str, status: int = 200) -> Any:
    """Return ``data`` of an RPC answer ``{"data": ...}``, unchanged."""
    payload = parse_json(body, method="POST", url=url, status=status)
    if not isinstance(payload, dict) or "data" not in payload:
        raise SandboxServerError(
            f"POST {url} returned JSON without a 'data' key",
            status=status,
            detail=extract_detail(body),
            url=url,
        )
    return payload["data"]


def connection_error(exc: Exception, *, method: str, url: str, timeout: float) -> SandboxError:
    """Map a transport exception (requests or httpx) to :class:`SandboxConnectionError`."""
    if isinstance(exc, (requests.Timeout, httpx.TimeoutException)):
        message = f"{method} {url} timed out after {timeout:g} s (set {ENV_TIMEOUT} to change it)"
    else:
        message = f"{method} {url} failed: cannot reach the sandbox server ({exc})"
    return SandboxConnectionError(message, url=url)


# ------------------------------------------------------------------------- transports


class SyncTransport:
    """One ``requests.Session`` per sandbox object: keep-alive connections are reused."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.session = requests.Session()
        self.session.headers.update(endpoint.headers())

    def request(
        self,
        method: str,
        url: str,
        *,
        workspace: bool = False,
        stream: bool = False,
        **kwargs: Any,
    ) -> requests.Response:
        """Send a request; raise the mapped exception on a transport error or non-2xx."""
        try:
            resp = self.session.request(
                method, url, timeout=self.endpoint.timeout, stream=stream, **kwargs
            )
        except requests.RequestException as exc:
            raise connection_error(
                exc, method=method, url=url, timeout=self.endpoint.timeout
            ) from exc
        if resp.status_code >= 300:
            try:
                body = resp.content
            except requests.RequestException:
                body = b""
            finally:
                resp.close()
            raise error_from_response(
                resp.status_code, body, method=method, url=url, workspace=workspace
            )
        return resp

    def rpc(self, route: str, body: dict) -> Any:
        """POST an RPC route and return the ``data`` of its envelope."""
        url = self.endpoint.rpc_url(route)
        resp = self.request("POST", url, json=body)
        return unwrap_envelope(resp.content, url=url, status=resp.status_code)

    def close(self) -> None:
        """Close pooled connections (the session stays usable and reconnects on demand)."""
        self.session.close()


class AsyncTransport:
    """One ``httpx.AsyncClient`` per sandbox object, created on first use."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self._client: httpx.AsyncClient | None = None

    @property
    def client(self) -> httpx.AsyncClient:
        """The underlying client (created lazily, re-created after :meth:`aclose`)."""
        if self._client is None or self._client.is_closed:
            self._client = httpx.AsyncClient(
                headers=self.endpoint.headers(), timeout=self.endpoint.timeout
            )
        return self._client

    async def request(
        self,
        method: str,
        url: str,
        *,
        workspace: bool = False,
        stream: bool = False,
        **kwargs: Any,
    ) -> httpx.Response:
        """Send a request; raise the mapped exception on a transport error or non-2xx.

        With ``stream=True`` the body is not read; the caller must ``aclose()`` the response.
        """
        client = self.client
        try:
            req = client.build_request(method, url, **kwargs)
            resp = await client.send(req, stream=stream)
        except httpx.HTTPError as exc:
            raise connection_error(
                exc, method=method, url=url, timeout=self.endpoint.timeout
            ) from exc
        if resp.status_code >= 300:
            try:
                body = await resp.aread()
            except httpx.HTTPError:
                body = b""
            finally:
                await resp.aclose()
            raise error_from_response(
                resp.status_code, body, method=method, url=url, workspace=workspace
            )
        return resp

    async def rpc(self, route: str, body: dict) -> Any:
        """POST an RPC route and return the ``data`` of its envelope."""
        url = self.endpoint.rpc_url(route)
        resp = await self.request("POST", url, json=body)
        return unwrap_envelope(resp.content, url=url, status=resp.status_code)

    async def aclose(self) -> None:
        """Close the client and its connections."""
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()
