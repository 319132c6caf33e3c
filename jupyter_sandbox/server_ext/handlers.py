"""HTTP handlers: the AgentScope wire routes, the workspace proxy and the health probe.

A handler decodes the request, calls one manager coroutine, and encodes `{"data": …}`;
errors become `{"detail": "Error in <route>: …"}` with a status saying what went wrong
(400 bad body, 401 no or wrong token, 404 unknown sandbox, 502 a sandbox that does not
answer). The official SDK treats every non-2xx alike, so specific statuses cost nothing.
"""

from __future__ import annotations

import asyncio
import inspect
import json
from typing import Any

from jupyter_server.auth import User
from jupyter_server.base.handlers import JupyterHandler
from jupyter_server.extension.handler import ExtensionHandlerMixin
from jupyter_server.utils import url_path_join
from tornado import web
from tornado.websocket import WebSocketClientConnection, WebSocketClosedError, WebSocketHandler

from ..backends import BackendError
from ..manager import InvalidRequest, SandboxManager, SandboxNotFound, UnknownSandboxType
from ..manager.state import StateUnavailable
from .auth import bearer_from_header, token_matches

# Route name → manager method. Every route also answers as `<name>_async`.
RPC_METHODS = (
    "create_from_pool",
    "create",
    "release",
    "get_info",
    "get_status",
    "start",
    "stop",
    "check_health",
    "list_tools",
    "call_tool",
    "add_mcp_servers",
    "get_session_mapping",
    "list_session_keys",
    "cleanup",
)
# Routes that pass unknown keys through (upstream gives them to the box client).
OPEN_ROUTES = {"list_tools"}
SANDBOX_CLIENT = User(username="sandbox-client", name="sandbox client")
HOP_BY_HOP = {
    "host", "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
    "trailers", "transfer-encoding", "upgrade", "authorization", "cookie", "content-length",
}  # fmt: skip


class JSONErrorsMixin:
    """Errors as `{"detail": …}` (never Jupyter's HTML pages), and no traceback logging for
    expected refusals: the access log line already says status and route."""

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        detail = getattr(exc, "log_message", None) or self._reason  # type: ignore[attr-defined]
        if status_code == 401:
            self.set_header("WWW-Authenticate", "Bearer")  # type: ignore[attr-defined]
        self.set_header("Content-Type", "application/json")  # type: ignore[attr-defined]
        self.finish(json.dumps({"detail": detail}))  # type: ignore[attr-defined]

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if isinstance(value, web.HTTPError):
            return
        super().log_exception(typ, value, tb)  # type: ignore[misc]


class SandboxHandler(JSONErrorsMixin, ExtensionHandlerMixin, JupyterHandler):
    """Base handler: bearer auth (or Jupyter's own auth in extension mode), JSON errors."""

    json_only = True  # POST bodies must be JSON when the server has no token

    @property
    def sandbox_app(self) -> Any:
        return self.extensionapp

    @property
    def manager(self) -> SandboxManager:
        return self.sandbox_app.manager

    async def prepare(self) -> None:  # type: ignore[override]
        if not self.check_host():  # DNS rebinding: a web page posing as this host
            raise web.HTTPError(403, "Host header not allowed")
        app = self.sandbox_app
        expected = app.bearer_token
        given = bearer_from_header(self.request.headers.get("Authorization"))
        if await self._sandbox_capability():
            self._sandbox_token_auth = True
            self.current_user = self._jupyter_current_user = SANDBOX_CLIENT
            return
        # With no token, a web page could still send a "simple" cross-site POST; those cannot
        # carry a JSON content type without a CORS preflight, which is refused.
        open_server = not expected and app.standalone
        json_body = self.request.headers.get("Content-Type", "").startswith("application/json")
        if open_server and self.json_only and self.request.method == "POST" and not json_body:
            raise web.HTTPError(
                415, "Content-Type must be application/json on a server without a token"
            )
        if open_server or token_matches(given, expected):
            # Our token (or an open standalone server): no Jupyter login, no XSRF cookie.
            self._sandbox_token_auth = True
            self.current_user = self._jupyter_current_user = SANDBOX_CLIENT
            return
        if app.standalone:
            raise _unauthorized(given)
        user = self.identity_provider.get_user(self)
        if inspect.isawaitable(user):
            user = await user
        if user is None:
            raise _unauthorized(given)
        self.current_user = self._jupyter_current_user = user
        if self.request.method not in {"GET", "HEAD", "OPTIONS"}:
            self.check_xsrf_cookie()

    async def _sandbox_capability(self) -> bool:
        """Does the request carry a credential for one sandbox only (the desktop's)?"""
        return False

    def check_xsrf_cookie(self) -> None:
        if getattr(self, "_sandbox_token_auth", False):
            return None  # bearer-token requests carry no cookies, so XSRF cannot apply
        return super().check_xsrf_cookie()

    def write_json(self, payload: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(payload))


def _unauthorized(given: str | None) -> web.HTTPError:
    message = "Invalid authentication credentials" if given else "Authentication required"
    return web.HTTPError(401, message)


class HealthHandler(JSONErrorsMixin, ExtensionHandlerMixin, JupyterHandler):
    """`GET /health`: the only unauthenticated route (load balancers and probes use it)."""

    def check_xsrf_cookie(self) -> None:
        return None

    async def prepare(self) -> None:  # type: ignore[override]
        return None

    async def get(self) -> None:
        app = self.extensionapp
        self.set_header("Content-Type", "application/json")
        try:
            pools = await app.manager.pool_status()
        except StateUnavailable as e:
            self.set_status(503)
            self.finish(json.dumps({"status": "unhealthy", "detail": str(e)}))
            return
        self.finish(
            json.dumps(
                {
                    "status": "healthy",
                    "version": str(list(app.sandbox_types)),
                    "backend": app.backend,
                    "pools": pools,
                }
            )
        )


class RPCHandler(SandboxHandler):
    """`POST /<method>` and `POST /<method>_async`: JSON kwargs in, `{"data": …}` out."""

    async def post(self, route: str) -> None:
        name = route.removesuffix("_async")
        kwargs = self._kwargs(route, name)
        method = getattr(self.manager, name)
        try:
            result = await method(**kwargs)
        except SandboxNotFound as e:
            raise web.HTTPError(404, f"Error in {route}: {e}") from None
        except (InvalidRequest, UnknownSandboxType) as e:
            raise web.HTTPError(400, f"Error in {route}: {e}") from None
        except BackendError as e:
            raise web.HTTPError(502, f"Error in {route}: {e}") from None
        except StateUnavailable as e:
            raise web.HTTPError(503, f"Error in {route}: {e}") from None
        self.write_json({"data": result})

    def _kwargs(self, route: str, name: str) -> dict[str, Any]:
        body = self.request.body.strip()
        try:
            kwargs = json.loads(body) if body else {}
        except ValueError as e:
            raise web.HTTPError(400, f"Error in {route}: malformed JSON body: {e}") from None
        if kwargs is None:
            kwargs = {}
        if not isinstance(kwargs, dict):
            raise web.HTTPError(400, f"Error in {route}: the body must be a JSON object")
        params, required = SIGNATURES[name]
        if "args" in kwargs and params:
            # The official async SDK sends `{"args": <first positional>}` (wire §1.3.10).
            args = kwargs.pop("args")
            first = args[0] if isinstance(args, list) and args else args
            kwargs.setdefault(params[0], first)
        kwargs = {k: v for k, v in kwargs.items() if v is not None}
        if name not in OPEN_ROUTES:
            unknown = sorted(set(kwargs) - set(params))
            if unknown:
                raise web.HTTPError(
                    400,
                    f"Error in {route}: unexpected keyword argument(s) {', '.join(unknown)}; "
                    f"expected: {', '.join(params) or 'none'}",
                )
        missing = [p for p in required if p not in kwargs]
        if missing:
            raise web.HTTPError(400, f"Error in {route}: missing {', '.join(missing)}")
        return kwargs


def _signature(name: str) -> tuple[list[str], list[str]]:
    """(accepted, required) keyword names of a manager RPC."""
    params = [
        p
        for p in inspect.signature(getattr(SandboxManager, name)).parameters.values()
        if p.name != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    ]
    return [p.name for p in params], [p.name for p in params if p.default is p.empty]


# Computed once: every RPC validates its body against these.
SIGNATURES = {name: _signature(name) for name in RPC_METHODS}


class ProxyHandler(SandboxHandler):
    """`/proxy/<id>/<path>`: streams to the box's workspace API with the box's own token.

    The client's Authorization header is replaced, not forwarded (upstream forwards both and
    every `fs` call fails with 403 when a bearer token is set).
    """

    json_only = False  # uploads are raw or multipart; a sandbox id is an unguessable capability

    async def _forward(self, identity: str, path: str) -> None:
        headers = {k: v for k, v in self.request.headers.items() if k.lower() not in HOP_BY_HOP}
        params = [
            (k, v.decode(errors="replace"))
            for k, values in self.request.query_arguments.items()
            for v in values
        ]
        try:
            response = await self.manager.open_proxy(
                identity, self.request.method, path, params, headers, self.request.body or None
            )
        except SandboxNotFound:
            raise web.HTTPError(404, f"sandbox not found: {identity}") from None
        except BackendError as e:
            raise web.HTTPError(502, f"proxy upstream error: {e}") from None
        except StateUnavailable as e:
            raise web.HTTPError(503, str(e)) from None
        try:
            self.set_status(response.status_code)
            for key, value in response.headers.items():
                if key.lower() not in HOP_BY_HOP:
                    self.set_header(key, value)
            if response.status_code == 204:
                self.clear_header("Content-Type")
                await self.finish()
                return
            async for chunk in response.aiter_raw():
                self.write(chunk)
                await self.flush()
            await self.finish()
        finally:
            await response.aclose()

    get = post = put = delete = patch = _forward  # type: ignore[assignment]


class DesktopAuthMixin:
    """Auth of `/desktop/<id>`: a browser page (an iframe, noVNC's websocket) cannot send an
    Authorization header, so these routes also take credentials in the query: the server's
    token as `?token=`, or, for that one sandbox only, its own token as `?password=` (the
    official SDK's `desktop_url`). Once a request is in, a cookie scoped to the sandbox's
    desktop path carries the sandbox's token, so the page's scripts and its websocket load
    without the query; the server's token never goes into a cookie."""

    COOKIE = "jupyter-sandbox-desktop"

    async def _sandbox_capability(self: Any) -> bool:
        identity = self.path_args[0]
        manager = self.manager
        candidates = [
            self.get_query_argument("password", ""),
            self.get_cookie(self.COOKIE, ""),
        ]
        for given in candidates:
            if given and await manager.desktop_password_matches(identity, given):
                return True
        return False

    async def prepare(self: Any) -> None:
        token = self.get_query_argument("token", "")
        if token and not self.request.headers.get("Authorization"):
            self.request.headers["Authorization"] = f"Bearer {token}"
        await super().prepare()  # type: ignore[misc]
        try:
            runtime_token = await self.manager.desktop_token(self.path_args[0])
        except SandboxNotFound:
            return  # the route itself answers 404
        except StateUnavailable as e:
            raise web.HTTPError(503, str(e)) from None
        prefix = url_path_join(self.sandbox_app.desktop_base, self.path_args[0])
        self.set_cookie(
            self.COOKIE, runtime_token, path=prefix, httponly=True, samesite="Strict"
        )


class DesktopHandler(DesktopAuthMixin, SandboxHandler):
    """`GET /desktop/<id>/vnc/<file>`: the sandbox's noVNC page, from its box."""

    async def get(self, identity: str, path: str) -> None:
        headers = {k: v for k, v in self.request.headers.items() if k.lower() not in HOP_BY_HOP}
        try:
            response = await self.manager.open_desktop(identity, path, [], headers)
        except SandboxNotFound as e:
            raise web.HTTPError(404, f"no such desktop: {e}") from None
        except BackendError as e:
            raise web.HTTPError(502, f"desktop upstream error: {e}") from None
        try:
            self.set_status(response.status_code)
            for key, value in response.headers.items():
                if key.lower() not in HOP_BY_HOP:
                    self.set_header(key, value)
            async for chunk in response.aiter_raw():
                self.write(chunk)
            await self.finish()
        finally:
            await response.aclose()


class RelaySocketHandler(WebSocketHandler, SandboxHandler):
    """A websocket relayed frame by frame to one of a sandbox's box sockets, binary frames as
    binary. The upstream socket is opened before the upgrade, so that failures are plain HTTP
    statuses; either side closing closes the other."""

    upstream: WebSocketClientConnection | None = None
    not_found = "no such sandbox"

    async def open_upstream(self, identity: str) -> WebSocketClientConnection:
        raise NotImplementedError

    async def get(self, identity: str) -> None:  # type: ignore[override]
        try:
            self.upstream = await self.open_upstream(identity)
        except SandboxNotFound as e:
            raise web.HTTPError(404, f"{self.not_found}: {e}") from None
        except InvalidRequest as e:
            raise web.HTTPError(400, str(e)) from None
        except BackendError as e:
            raise web.HTTPError(502, f"upstream error: {e}") from None
        except StateUnavailable as e:
            raise web.HTTPError(503, str(e)) from None
        await super().get(identity)
        if self.ws_connection is None and self.upstream is not None:
            self.upstream.close()  # the upgrade was refused (bad origin, not a websocket)

    def open(self, identity: str) -> None:  # type: ignore[override]
        asyncio.ensure_future(self._pump())

    async def _pump(self) -> None:
        assert self.upstream is not None
        while True:
            message = await self.upstream.read_message()
            if message is None:
                break
            try:
                await self.write_message(message, binary=isinstance(message, bytes))
            except WebSocketClosedError:
                break
        self.close()

    async def on_message(self, message: str | bytes) -> None:
        if self.upstream is not None:
            try:
                await self.upstream.write_message(message, binary=isinstance(message, bytes))
            except WebSocketClosedError:
                self.close()

    def on_close(self) -> None:
        if self.upstream is not None:
            self.upstream.close()


class DesktopSocketHandler(DesktopAuthMixin, RelaySocketHandler):
    """`WS /desktop/<id>`: noVNC's websocket to the sandbox's VNC server (upstream relays
    VNC's binary frames as text, issue #371)."""

    not_found = "no such desktop"

    async def open_upstream(self, identity: str) -> WebSocketClientConnection:
        offered = self.request.headers.get("Sec-WebSocket-Protocol", "")
        subprotocols = [p.strip() for p in offered.split(",") if p.strip()]
        return await self.manager.open_desktop_socket(identity, subprotocols)

    def select_subprotocol(self, subprotocols: list[str]) -> str | None:
        chosen = self.upstream.selected_subprotocol if self.upstream else None
        return chosen if chosen in subprotocols else None

    def check_origin(self, origin: str) -> bool:
        # A token or the sandbox's cookie (SameSite=Strict) is required anyway; the page
        # embedding the desktop may be a notebook on another origin.
        return True


class OverviewHandler(SandboxHandler):
    """`GET /api/sandboxes`: pools and handed-out sandboxes (the JupyterLab panel's view)."""

    async def get(self) -> None:
        try:
            self.write_json(await self.manager.overview())
        except StateUnavailable as e:
            raise web.HTTPError(503, str(e)) from None


class KernelSocketHandler(RelaySocketHandler):
    """`WS /kernels/<id>/channels`: relays a sandbox kernel's Jupyter websocket protocol
    (jupyter_server's JSON/binary frames) to its box's `/kernel/channels`, frame by frame.

    The host-side kernel proxy (`python -m jupyter_sandbox.kernels`) is the usual client.
    Auth is the server's token (Authorization header, or `?token=` for clients that cannot
    set headers) or, inside Jupyter, its own login; never a sandbox's password or cookie.
    While the socket is open the sandbox's lease is renewed, so an idle notebook's sandbox
    is not culled; once it closes, the usual heartbeat timeout applies.
    """

    _keepalive: asyncio.Task | None = None
    _by_token = False  # authenticated by the server's token (which no web page can send)

    @property
    def max_message_size(self) -> int:  # type: ignore[override]
        return 2**26  # as BoxClient.websocket: cells may return large outputs

    async def prepare(self) -> None:  # type: ignore[override]
        token = self.get_query_argument("token", "")
        if token and not self.request.headers.get("Authorization"):
            self.request.headers["Authorization"] = f"Bearer {token}"
        await super().prepare()
        expected = self.sandbox_app.bearer_token
        given = bearer_from_header(self.request.headers.get("Authorization"))
        self._by_token = bool(expected) and token_matches(given, expected)

    def check_origin(self, origin: str) -> bool:
        # A web page can open a websocket to any host, with the browser's cookies and without
        # a preflight: unless the server's token came with it, Jupyter's origin check applies
        # (Jupyter logins by cookie, and a server without a token).
        return self._by_token or JupyterHandler.check_origin(self)

    async def open_upstream(self, identity: str) -> WebSocketClientConnection:
        return await self.manager.open_kernel_socket(identity)

    def open(self, identity: str) -> None:  # type: ignore[override]
        super().open(identity)
        timeout = self.manager.settings.heartbeat_timeout
        if timeout > 0:
            self._keepalive = asyncio.ensure_future(self._renew(identity, min(60.0, timeout / 3)))

    async def _renew(self, identity: str, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.manager.check_health(identity)  # goes through the lease
            except Exception as e:
                self.log.debug("renewing the lease of %s failed: %s", identity, e)

    def on_close(self) -> None:
        if self._keepalive is not None:
            self._keepalive.cancel()
        super().on_close()


def route_table(prefix: str) -> list[tuple[str, type, dict]]:
    """Handler patterns under `prefix` (`""` standalone, `"sandbox"` inside Jupyter)."""
    rpc = "|".join(f"{m}(?:_async)?" for m in RPC_METHODS)
    return [
        (url_path_join("/", prefix, "health"), HealthHandler, {}),
        (url_path_join("/", prefix, rf"({rpc})"), RPCHandler, {}),
        (url_path_join("/", prefix, r"proxy/([^/]+)/(.*)"), ProxyHandler, {}),
        (url_path_join("/", prefix, "api/sandboxes"), OverviewHandler, {}),
        (url_path_join("/", prefix, r"desktop/([^/]+)/(.+)"), DesktopHandler, {}),
        (url_path_join("/", prefix, r"desktop/([^/]+)/?"), DesktopSocketHandler, {}),
        (url_path_join("/", prefix, r"kernels/([^/]+)/channels"), KernelSocketHandler, {}),
    ]
