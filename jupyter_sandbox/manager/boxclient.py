"""The manager's HTTP client for one sandbox's box (one pooled connection per sandbox)."""

from __future__ import annotations

import socket
import ssl
from typing import Any

import httpx
from tornado.httpclient import HTTPRequest
from tornado.netutil import Resolver
from tornado.websocket import WebSocketClientConnection, websocket_connect

GENERIC_TOOLS = ("run_ipython_cell", "run_shell_command")


class BoxUnreachable(RuntimeError):
    """The box did not answer (its sandbox died or is stopping)."""


# Boxes speak plain HTTP, but httpx builds a TLS context for every client unless given one,
# and that costs ~17 ms: one shared context makes a client for a sandbox cheap (with shared
# state, a claim may be the first this process sees of a sandbox).
_TLS = ssl.create_default_context()


def _transport(url: str) -> tuple[httpx.AsyncHTTPTransport, str]:
    if url.startswith("unix:"):
        return httpx.AsyncHTTPTransport(uds=url[len("unix:") :], verify=_TLS), "http://box"
    return httpx.AsyncHTTPTransport(verify=_TLS), url.rstrip("/")


class _UnixSocketResolver(Resolver):
    """Resolves every host to one unix socket (a local jail's box), for tornado clients."""

    def initialize(self, path: str) -> None:  # type: ignore[override]
        self.path = path

    async def resolve(self, host: str, port: int, family: Any = socket.AF_UNSPEC) -> Any:
        return [(socket.AF_UNIX, self.path)]


class BoxClient:
    """Talks to a box with its token; connections are reused across calls."""

    def __init__(self, url: str, token: str, call_timeout: float):
        self.url = url
        self.token = token
        transport, base_url = _transport(url)
        # The box enforces call_timeout itself and answers; the margin covers its reply.
        self.http = httpx.AsyncClient(
            transport=transport,
            verify=_TLS,
            base_url=base_url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=httpx.Timeout(call_timeout + 15, connect=10),
        )

    async def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return await self.http.request(method, path, **kwargs)
        except httpx.TransportError as e:
            raise BoxUnreachable(str(e) or type(e).__name__) from e

    async def healthy(self, wait_kernel: bool = False, timeout: float = 5) -> bool:
        """Does the box answer (and, with `wait_kernel`, are its kernel and tools up)?"""
        return await self.unhealthy_reason(wait_kernel, timeout) is None

    async def unhealthy_reason(self, wait_kernel: bool = False, timeout: float = 5) -> str | None:
        """None when the box is healthy; else why not (its own words when it answered)."""
        params = {"wait": "kernel"} if wait_kernel else None
        try:
            response = await self.request("GET", "/healthz", params=params, timeout=timeout)
        except BoxUnreachable as e:
            return f"its box does not answer ({e})"
        if response.status_code == 200:
            return None
        try:
            detail = response.json().get("detail")
        except ValueError:
            detail = response.text
        return f"its box is not ready: {detail}"

    async def stream(
        self, method: str, path: str, params: Any, headers: dict[str, str], content: bytes | None
    ) -> httpx.Response:
        request = self.http.build_request(
            method, path, params=params, headers=headers, content=content
        )
        try:
            return await self.http.send(request, stream=True)
        except httpx.TransportError as e:
            raise BoxUnreachable(str(e) or type(e).__name__) from e

    async def websocket(
        self, path: str, query: str = "", subprotocols: list[str] | None = None
    ) -> WebSocketClientConnection:
        """A websocket to the box (the desktop's VNC bridge); raises BoxUnreachable."""
        resolver = None
        base = self.url
        if base.startswith("unix:"):
            resolver = _UnixSocketResolver(path=base[len("unix:") :])
            base = "http://box"
        url = "ws" + base.rstrip("/")[len("http") :] + path + (f"?{query}" if query else "")
        request = HTTPRequest(
            url, headers={"Authorization": f"Bearer {self.token}"}, connect_timeout=10
        )
        try:
            return await websocket_connect(
                request, subprotocols=subprotocols, resolver=resolver, max_message_size=2**26
            )
        except Exception as e:  # refused, reset, or a non-101 answer from the box
            raise BoxUnreachable(str(e) or type(e).__name__) from e

    async def aclose(self) -> None:
        await self.http.aclose()
