"""The box's HTTP surface: the tornado Application, bearer-token auth, and every route.

Handlers only translate HTTP to calls on the shell runner, the kernel and the workspace, and
their results to the upstream wire shapes (MCP ``CallToolResult`` dumps, entry-info JSON).
Every error body is ``{"detail": ...}``; no route ever answers with a traceback page.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import math
from dataclasses import dataclass, field
from typing import Any

import tornado.httputil
import tornado.web
from tornado.iostream import StreamClosedError

from .kernel import CellResult, IPythonKernel
from .kernel_channels import KernelChannelsHandler
from .mcp_servers import McpError, McpServers, describe_error
from .shell import ShellResult, ShellRunner
from .toolgroups import ToolGroup
from .workspace import CHUNK_SIZE, Workspace, WorkspaceError

log = logging.getLogger(__name__)

# Streamed uploads (PUT /workspace/file) go to disk chunk by chunk, so they may be large;
# other bodies are buffered in memory and keep tornado's 100 MB default.
MAX_UPLOAD_BYTES = 64 * 1024**3


@dataclass
class Box:
    """What the handlers share: configuration, the services and the tool groups."""

    token: str
    call_timeout: float
    workspace: Workspace
    shell: ShellRunner
    kernel: IPythonKernel
    groups: list[ToolGroup] = field(default_factory=list)  # the type's built-in tools
    mcp: McpServers = field(default_factory=McpServers)  # the type's and run-time servers
    _tools_started: asyncio.Future | None = None

    def start_soon(self, mcp_servers: dict[str, Any] | None = None) -> None:
        """Start the groups, the type's MCP servers and the kernel in the background."""
        self._tools_started = asyncio.ensure_future(self._start_tools(mcp_servers))

    async def _start_tools(self, mcp_servers: dict[str, Any] | None) -> None:
        # The desktop exports DISPLAY, which the kernel must inherit: it comes first.
        first = [g for g in self.groups if getattr(g, "sets_environment", False)]
        try:
            await asyncio.gather(*(g.start() for g in first))
        finally:
            self.kernel.start_soon()
        rest = [g.start() for g in self.groups if g not in first]
        if mcp_servers:
            rest.append(self.mcp.add(mcp_servers))
        await asyncio.gather(*rest)

    async def wait_tools(self) -> None:
        """Return once the tool groups and MCP servers started; raise what failed."""
        if self._tools_started is not None:
            await asyncio.shield(self._tools_started)

    async def wait_started(self) -> None:
        await self.wait_tools()
        await self.kernel.wait_started()

    async def close(self) -> None:
        if self._tools_started is not None and not self._tools_started.done():
            self._tools_started.cancel()
        for group in self.groups:
            try:
                await group.close()
            except Exception as e:  # one group failing to stop must not keep others running
                log.warning("stopping the %s tools failed: %s", group.name, e)
        await self.mcp.close()
        await self.kernel.shutdown()


class ApiError(tornado.web.HTTPError):
    """An HTTP error whose body is ``{"detail": detail}``."""

    def __init__(self, status: int, detail: Any) -> None:
        super().__init__(status)
        self.detail = detail


# -- result shapes (wire §1.3.6) -------------------------------------------------------------


def _text(text: str, description: str) -> dict[str, Any]:
    return {"type": "text", "text": text, "annotations": None, "description": description}


def shell_result_dump(result: ShellResult) -> dict[str, Any]:
    content = [_text(result.stdout, "stdout")]
    if result.stderr:
        content.append(_text(result.stderr, "stderr"))
    content.append(_text(str(result.returncode), "returncode"))
    return {"meta": None, "content": content, "isError": bool(result.stderr)}


def cell_result_dump(result: CellResult) -> dict[str, Any]:
    content = [_text(result.stdout, "stdout")]
    if result.stderr:
        content.append(_text(result.stderr, "stderr"))
    for mime, data in result.images:
        content.append({"type": "image", "data": data, "mimeType": mime, "annotations": None})
    return {"meta": None, "content": content, "isError": bool(result.stderr)}


# -- handlers --------------------------------------------------------------------------------


class BaseHandler(tornado.web.RequestHandler):
    """Checks the bearer token before anything else and renders every error as JSON."""

    box: Box

    def initialize(self, box: Box) -> None:
        self.box = box

    def prepare(self) -> Any:
        # Upstream reads the first Authorization header only.
        values = self.request.headers.get_list("Authorization")
        header = values[0] if values else ""
        if not header.startswith("Bearer "):
            raise ApiError(403, "Missing or invalid authorization header")
        given = header[len("Bearer ") :].encode("utf-8", "surrogateescape")
        if not hmac.compare_digest(given, self.box.token.encode("utf-8")):
            raise ApiError(403, "Invalid secret token")
        return None

    def compute_etag(self) -> None:
        # No ETag: hashing every downloaded file would cost time for nothing.
        return None

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, WorkspaceError):
            # The workspace knows no HTTP; its errors carry the status they map to.
            self.set_status(exc.status)
            detail = exc.detail
        elif isinstance(exc, ApiError):
            detail = exc.detail
        elif isinstance(exc, tornado.web.HTTPError):
            # tornado's own errors (bad query encoding, ...) keep their printf-style args apart.
            message = exc.log_message
            detail = (message % exc.args if exc.args else message) if message else self._reason
        elif exc is not None:
            detail = f"{type(exc).__name__}: {exc}"
        else:
            detail = self._reason
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"detail": detail}))

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if isinstance(value, (ApiError, WorkspaceError)):
            return  # an expected answer, not a fault
        super().log_exception(typ, value, tb)

    def write_json(self, obj: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        # json.dumps rather than tornado's encoder, which escapes "</" and so changes the bytes.
        self.finish(json.dumps(obj))

    def json_body(self) -> dict[str, Any]:
        body = self.request.body
        if not body or not body.strip():
            return {}
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError) as e:
            raise ApiError(400, f"Request body is not valid JSON: {e}") from None
        if not isinstance(data, dict):
            raise ApiError(400, "Request body must be a JSON object")
        return data

    def call_timeout(self, body: dict[str, Any]) -> float:
        """The box's call timeout, lowered by a ``timeout`` key in the body if given."""
        timeout = body.get("timeout")
        if timeout is None:
            return self.box.call_timeout
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, (int, float))
            or not math.isfinite(timeout)
            or timeout <= 0
        ):
            raise ApiError(400, "timeout must be a positive number of seconds")
        return min(float(timeout), self.box.call_timeout)

    def path_argument(self, name: str = "path") -> str:
        # strip=False: leading/trailing spaces are part of a file name.
        value = self.get_query_argument(name, None, strip=False)
        if value is None:
            raise ApiError(400, f"{name} is required")
        return value


class NotFoundHandler(BaseHandler):
    def prepare(self) -> Any:
        super().prepare()
        raise ApiError(404, "Not Found")


class HealthHandler(BaseHandler):
    async def get(self) -> None:
        # `?wait=kernel`: answer once the IPython kernel is up too (pools warm with it).
        if self.get_query_argument("wait", "") == "kernel":
            try:
                await self.box.wait_tools()
            except Exception as e:
                raise ApiError(503, f"the tools did not start: {describe_error(e)}") from e
            try:
                await self.box.kernel.wait_started()
            except Exception as e:
                raise ApiError(503, f"the IPython kernel did not start: {e}") from e
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish("OK")


class ShellHandler(BaseHandler):
    async def post(self) -> None:
        body = self.json_body()
        command = body.get("command")
        if not isinstance(command, str) or not command:
            raise ApiError(400, "Command is required.")
        if "\x00" in command:
            raise ApiError(400, "Command must not contain NUL characters.")
        timeout = self.call_timeout(body)
        result = await self.box.shell.run(command, timeout)
        self.write_json(shell_result_dump(result))


class IPythonHandler(BaseHandler):
    async def post(self) -> None:
        body = self.json_body()
        code = body.get("code")
        if not isinstance(code, str) or not code:
            raise ApiError(400, "Code is required.")
        timeout = self.call_timeout(body)
        result = await self.box.kernel.execute(code, timeout)
        self.write_json(cell_result_dump(result))


class McpListToolsHandler(BaseHandler):
    async def get(self) -> None:
        try:
            await self.box.wait_tools()
        except Exception as e:
            raise ApiError(500, f"the tools did not start: {describe_error(e)}") from None
        # Upstream answers {} when a box has no tool groups.
        groups = {g.name: g.list_group() for g in self.box.groups}
        groups.update(await self.box.mcp.list_tools())
        self.write_json(groups)


class McpCallToolHandler(BaseHandler):
    async def post(self) -> None:
        body = self.json_body()
        name = body.get("tool_name")
        arguments = body.get("arguments") or {}
        if not isinstance(arguments, dict):
            raise ApiError(400, "arguments must be a JSON object")
        if isinstance(name, str) and name:
            timeout = self.call_timeout(body)
            try:
                result = await asyncio.wait_for(self._call(name, arguments), timeout)
            except asyncio.TimeoutError:
                raise ApiError(500, f"Tool '{name}' timed out after {timeout:g} s") from None
            except Exception as e:  # the server failed mid-call: a tool error, not a crash
                raise ApiError(500, f"Tool '{name}' failed: {describe_error(e)}") from None
            if result is not None:
                self.write_json(result)
                return
        raise ApiError(404, f"Tool '{name}' not found.")

    async def _call(self, name: str, arguments: dict[str, Any]) -> dict[str, Any] | None:
        # Built-in groups first, then MCP servers in the order they were added.
        await self.box.wait_tools()
        for group in self.box.groups:
            result = await group.call(name, arguments)
            if result is not None:
                return result
        return await self.box.mcp.call(name, arguments)


class McpAddServersHandler(BaseHandler):
    async def post(self) -> None:
        body = self.json_body()
        try:
            await self.box.mcp.add(body.get("server_configs"), bool(body.get("overwrite")))
        except McpError as e:
            raise ApiError(500, str(e)) from None
        self.set_header("Content-Type", "text/plain")
        self.finish("OK")


@tornado.web.stream_request_body
class FileHandler(BaseHandler):
    """GET and PUT /workspace/file; PUT bodies stream straight to the file."""

    _upload: Any = None
    _upload_path: str | None = None

    def prepare(self) -> Any:
        super().prepare()
        if self.request.method == "PUT":
            self.request.connection.set_max_body_size(MAX_UPLOAD_BYTES)
            path = self.path_argument()
            self._upload_path, self._upload = self.box.workspace.open_for_writing(path)
        return None

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        # A streamed handler that fails before reading the whole request makes tornado drop
        # the connection after this reply; say so, or a keep-alive client reuses a dead socket.
        self.set_header("Connection", "close")
        super().write_error(status_code, **kwargs)

    def data_received(self, chunk: bytes) -> None:
        if self._upload is not None:
            self._upload.write(chunk)

    def put(self) -> None:
        assert self._upload is not None and self._upload_path is not None
        self._upload.close()
        self._upload = None
        self.write_json(self.box.workspace.entry_info(self._upload_path))

    def on_finish(self) -> None:
        self._close_upload()

    def on_connection_close(self) -> None:
        self._close_upload()

    def _close_upload(self) -> None:
        if self._upload is not None:
            self._upload.close()
            self._upload = None

    async def get(self) -> None:
        path = self.path_argument()
        fmt = self.get_query_argument("format", "text")
        if fmt not in ("text", "bytes"):
            raise ApiError(422, "format must be 'text' or 'bytes'")
        ws = self.box.workspace
        if fmt == "text":
            text = ws.read_text(path)
            self.set_header("Content-Type", "text/plain; charset=utf-8")
            self.finish(text.encode("utf-8"))
            return
        real = ws.file_for_reading(path)
        with open(real, "rb") as f:
            self.set_header("Content-Type", "application/octet-stream")
            while chunk := f.read(CHUNK_SIZE):
                self.write(chunk)
                try:
                    await self.flush()  # waits for the socket: back-pressure on big files
                except StreamClosedError:
                    return
        self.finish()


class BatchHandler(BaseHandler):
    """POST /workspace/files:batch: multipart with repeated ``files`` parts and ``paths`` fields."""

    def post(self) -> None:
        content_type = self.request.headers.get("Content-Type", "")
        if not content_type.startswith("multipart/form-data"):
            raise ApiError(400, "expected a multipart/form-data body")
        arguments: dict[str, list[bytes]] = {}
        files: dict[str, list[tornado.httputil.HTTPFile]] = {}
        tornado.httputil.parse_body_arguments(content_type, self.request.body, arguments, files)
        uploads = files.get("files", [])
        if not uploads:
            raise ApiError(400, "`files` is required")
        raw_paths = arguments.get("paths")
        if raw_paths:
            if len(raw_paths) != len(uploads):
                raise ApiError(400, "`paths` length must match `files` length")
            try:
                targets = [p.decode("utf-8") for p in raw_paths]
            except UnicodeDecodeError:
                raise ApiError(400, "`paths` must be UTF-8") from None
        else:
            targets = [u.filename for u in uploads]
        ws = self.box.workspace
        # Check every target before writing any, so a refused one leaves nothing half-done.
        reals = [ws.check_writable(t) for t in targets]
        self.write_json([ws.write_bytes(r, u.body) for r, u in zip(reals, uploads, strict=True)])


class ListHandler(BaseHandler):
    def get(self) -> None:
        path = self.path_argument()
        raw_depth = self.get_query_argument("depth", "1")
        try:
            depth = int(raw_depth)
        except ValueError:
            raise ApiError(422, "depth must be an integer") from None
        self.write_json(self.box.workspace.list(path, depth))


class ExistsHandler(BaseHandler):
    def get(self) -> None:
        self.write_json({"exists": self.box.workspace.exists(self.path_argument())})


class EntryHandler(BaseHandler):
    def delete(self) -> None:
        self.box.workspace.remove(self.path_argument())
        self.set_status(204)
        self.finish()


def _optional_str(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise ApiError(400, f"{key} must be a string")
    return value


class MoveHandler(BaseHandler):
    def post(self) -> None:
        body = self.json_body()
        source = _optional_str(body, "source")
        destination = _optional_str(body, "destination")
        self.write_json(self.box.workspace.move(source, destination))


class MkdirHandler(BaseHandler):
    def post(self) -> None:
        path = _optional_str(self.json_body(), "path")
        self.write_json({"created": self.box.workspace.mkdir(path)})


def make_app(box: Box) -> tornado.web.Application:
    kw = {"box": box}
    # A group may serve HTTP too (the desktop's noVNC page and VNC websocket).
    extra = [r for g in box.groups if hasattr(g, "routes") for r in g.routes(box.token)]
    return tornado.web.Application(
        [
            *extra,
            (r"/healthz", HealthHandler, kw),
            (r"/tools/run_shell_command", ShellHandler, kw),
            (r"/tools/run_ipython_cell", IPythonHandler, kw),
            (r"/kernel/channels", KernelChannelsHandler, kw),
            (r"/mcp/list_tools", McpListToolsHandler, kw),
            (r"/mcp/call_tool", McpCallToolHandler, kw),
            (r"/mcp/add_servers", McpAddServersHandler, kw),
            (r"/workspace/file", FileHandler, kw),
            (r"/workspace/files:batch", BatchHandler, kw),
            (r"/workspace/list", ListHandler, kw),
            (r"/workspace/exists", ExistsHandler, kw),
            (r"/workspace/entry", EntryHandler, kw),
            (r"/workspace/move", MoveHandler, kw),
            (r"/workspace/mkdir", MkdirHandler, kw),
        ],
        default_handler_class=NotFoundHandler,
        default_handler_args=kw,
        serve_traceback=False,
        compress_response=False,
    )
