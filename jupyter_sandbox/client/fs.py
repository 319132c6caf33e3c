"""``sandbox.fs``: the workspace file API of a sandbox (wire §1.4 / §2.4).

Every call goes through the server's proxy, ``/proxy/{sandbox_id}/workspace/...``, with
the same methods, query parameters and bodies as the official SDK. Relative paths are
relative to ``/workspace``; absolute paths must stay under it.

Errors raise: a missing path gives :class:`~jupyter_sandbox.client.WorkspaceNotFoundError`
(also a ``FileNotFoundError``), a path outside ``/workspace`` gives
:class:`~jupyter_sandbox.client.WorkspacePermissionError` (also a ``PermissionError``).

The request builders below are shared by :class:`SandboxFS` (sync) and
:class:`SandboxFSAsync` (async); the two classes only differ in how they send.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from typing import IO, TYPE_CHECKING, Any, Literal

import httpx
import requests

from . import _http

if TYPE_CHECKING:  # pragma: no cover
    from .async_sandbox import SandboxAsync
    from .sandbox import Sandbox

__all__ = ["SandboxFS", "SandboxFSAsync"]

OCTET_STREAM = "application/octet-stream"
TEXT_UTF8 = "text/plain; charset=utf-8"
_CHUNK = 1024 * 1024
_FORMATS = ("text", "bytes", "stream")

Data = str | bytes | bytearray | IO[bytes]


# ------------------------------------------------------------------ shared builders


def _read_params(path: str, fmt: str) -> dict[str, str]:
    if fmt not in _FORMATS:
        raise ValueError(f"fmt must be one of {_FORMATS}, got {fmt!r}")
    return {"path": path, "format": "text" if fmt == "text" else "bytes"}


def _list_params(path: str, depth: int | None) -> dict[str, Any]:
    params: dict[str, Any] = {"path": path}
    if depth is not None:
        params["depth"] = depth
    return params


def _body(data: Data, content_type: str) -> tuple[bytes | IO[bytes], str]:
    """The request body and Content-Type of a file upload.

    A str is sent as UTF-8 with ``text/plain; charset=utf-8``; bytes and file objects
    (opened in binary mode) with ``content_type``.
    """
    if isinstance(data, str):
        return data.encode("utf-8"), TEXT_UTF8
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data), content_type
    if hasattr(data, "read"):
        return data, content_type
    raise TypeError(f"data must be str, bytes, bytearray or a binary file object, not {data!r}")


def _batch(files: list[dict[str, Any]]) -> tuple[list[str], list[tuple[str, Any, str]]]:
    """Split ``write_many`` items into the ``paths`` fields and the ``files`` parts.

    Each item is ``{"path": ..., "data": str|bytes|file, "content_type": ...?}``; the part's
    filename is the basename of its path.
    """
    paths: list[str] = []
    parts: list[tuple[str, Any, str]] = []
    for item in files:
        path = item["path"]
        body, ctype = _body(item["data"], item.get("content_type") or OCTET_STREAM)
        paths.append(path)
        parts.append((os.path.basename(path) or "file", body, ctype))
    return paths, parts


def _decode_text(content: bytes, content_type: str | None) -> str:
    """Decode a text answer with the charset of its Content-Type (default UTF-8)."""
    charset = "utf-8"
    for param in (content_type or "").split(";")[1:]:
        key, _, value = param.partition("=")
        if key.strip().lower() == "charset" and value.strip():
            charset = value.strip().strip('"')
    try:
        return content.decode(charset, errors="replace")
    except LookupError:  # unknown charset name
        return content.decode("utf-8", errors="replace")


def _json(resp: requests.Response | httpx.Response, method: str) -> Any:
    return _http.parse_json(resp.content, method=method, url=str(resp.url), status=resp.status_code)


def _exists(payload: Any) -> bool:
    return bool(isinstance(payload, dict) and payload.get("exists"))


def _created(payload: Any) -> bool:
    return bool(isinstance(payload, dict) and payload.get("created"))


class _FSBase:
    """The binding to a sandbox, shared by both facades."""

    def __init__(self, sandbox: Sandbox | SandboxAsync) -> None:
        self._sandbox = sandbox

    @property
    def sandbox_id(self) -> str:
        """The sandbox these calls go to (raises if the sandbox is not started)."""
        return self._sandbox._require_id()

    def _url(self, route: str) -> str:
        return self._sandbox._endpoint.proxy_url(self.sandbox_id, f"workspace/{route}")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} of {self._sandbox!r}>"


# ----------------------------------------------------------------------------- sync


class SandboxFS(_FSBase):
    """Sync workspace file API, available as ``sandbox.fs``."""

    def _send(self, method: str, route: str, **kwargs: Any) -> requests.Response:
        return self._sandbox._sync_http.request(method, self._url(route), workspace=True, **kwargs)

    def read(
        self,
        path: str,
        fmt: Literal["text", "bytes", "stream"] = "text",
        *,
        chunk_size: int = _CHUNK,
    ) -> str | bytes | Iterator[bytes]:
        """Read a workspace file (``GET .../workspace/file?path=&format=``).

        Args:
            path: Workspace path.
            fmt: ``"text"`` (a str), ``"bytes"``, or ``"stream"`` (an iterator of byte
                chunks; the request is made, and errors raised, before it is returned).
            chunk_size: Chunk size of the ``"stream"`` iterator.
        """
        params = _read_params(path, fmt)
        if fmt == "stream":
            resp = self._send("GET", "file", params=params, stream=True)
            return _iter_sync(resp, chunk_size, self._sandbox._endpoint.timeout)
        resp = self._send("GET", "file", params=params)
        if fmt == "text":
            return _decode_text(resp.content, resp.headers.get("Content-Type"))
        return resp.content

    def write(
        self,
        path: str,
        data: Data,
        *,
        content_type: str = OCTET_STREAM,
    ) -> dict[str, Any]:
        """Create or overwrite a workspace file (``PUT .../workspace/file?path=``).

        Parent directories are created. A file object is streamed.

        Args:
            path: Workspace path.
            data: A str (sent as UTF-8 ``text/plain``), bytes, or a binary file object.
            content_type: Content-Type for bytes and file objects.

        Returns:
            The entry info ``{"path", "name", "type", "size", "mtime_ms"}``.
        """
        body, ctype = _body(data, content_type)
        resp = self._send(
            "PUT", "file", params={"path": path}, data=body, headers={"Content-Type": ctype}
        )
        return _json(resp, "PUT")

    def write_many(self, files: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Upload several files in one multipart request (``POST .../files:batch``).

        Args:
            files: ``[{"path": ..., "data": str|bytes|file, "content_type": ...?}, ...]``.

        Returns:
            The entry info of each written file.
        """
        if not files:
            return []
        paths, parts = _batch(files)
        resp = self._send(
            "POST",
            "files:batch",
            data=[("paths", p) for p in paths],
            files=[("files", part) for part in parts],
        )
        return _json(resp, "POST")

    def list(self, path: str, depth: int | None = 1) -> list[dict[str, Any]]:
        """List a workspace directory down to ``depth`` levels (flat list of entry infos)."""
        resp = self._send("GET", "list", params=_list_params(path, depth))
        return _json(resp, "GET")

    def exists(self, path: str) -> bool:
        """Whether a workspace path exists."""
        return _exists(_json(self._send("GET", "exists", params={"path": path}), "GET"))

    def remove(self, path: str) -> None:
        """Remove a file, or a directory recursively (no error if it does not exist)."""
        self._send("DELETE", "entry", params={"path": path})

    def move(self, source: str, destination: str) -> dict[str, Any]:
        """Move or rename a workspace entry; returns the destination's entry info."""
        resp = self._send("POST", "move", json={"source": source, "destination": destination})
        return _json(resp, "POST")

    def mkdir(self, path: str) -> bool:
        """Create a directory (and parents); False if it already existed."""
        return _created(_json(self._send("POST", "mkdir", json={"path": path}), "POST"))

    def write_from_path(
        self,
        workspace_path: str,
        local_path: str,
        *,
        content_type: str = OCTET_STREAM,
    ) -> dict[str, Any]:
        """Stream a local file to ``workspace_path``; returns its entry info."""
        with open(local_path, "rb") as f:
            return self.write(workspace_path, f, content_type=content_type)


def _iter_sync(resp: requests.Response, chunk_size: int, timeout: float) -> Iterator[bytes]:
    try:
        for chunk in resp.iter_content(chunk_size=chunk_size):
            if chunk:
                yield chunk
    except requests.RequestException as exc:
        raise _http.connection_error(exc, method="GET", url=resp.url, timeout=timeout) from exc
    finally:
        resp.close()


# ---------------------------------------------------------------------------- async


class SandboxFSAsync(_FSBase):
    """Async workspace file API, available as ``sandbox.fs`` of the async classes."""

    async def _send(self, method: str, route: str, **kwargs: Any) -> httpx.Response:
        return await self._sandbox._async_http.request(
            method, self._url(route), workspace=True, **kwargs
        )

    async def read_async(
        self,
        path: str,
        fmt: Literal["text", "bytes", "stream"] = "text",
    ) -> str | bytes | AsyncIterator[bytes]:
        """Read a workspace file; ``fmt="stream"`` returns an async iterator of chunks.

        See :meth:`SandboxFS.read`.
        """
        params = _read_params(path, fmt)
        if fmt == "stream":
            resp = await self._send("GET", "file", params=params, stream=True)
            return _iter_async(resp, self._sandbox._endpoint.timeout)
        resp = await self._send("GET", "file", params=params)
        if fmt == "text":
            return _decode_text(resp.content, resp.headers.get("Content-Type"))
        return resp.content

    async def write_async(
        self,
        path: str,
        data: Data,
        *,
        content_type: str = OCTET_STREAM,
    ) -> dict[str, Any]:
        """Create or overwrite a workspace file. See :meth:`SandboxFS.write`.

        A file object is read in a worker thread and streamed.
        """
        body, ctype = _body(data, content_type)
        content = body if isinstance(body, bytes) else _aiter_file(body)
        resp = await self._send(
            "PUT", "file", params={"path": path}, content=content, headers={"Content-Type": ctype}
        )
        return _json(resp, "PUT")

    async def write_many_async(self, files: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Upload several files in one multipart request. See :meth:`SandboxFS.write_many`."""
        if not files:
            return []
        paths, parts = _batch(files)
        loaded = []
        for name, body, ctype in parts:
            if not isinstance(body, bytes):
                body = await asyncio.to_thread(body.read)
            loaded.append(("files", (name, body, ctype)))
        resp = await self._send("POST", "files:batch", data={"paths": paths}, files=loaded)
        return _json(resp, "POST")

    async def list_async(self, path: str, depth: int | None = 1) -> list[dict[str, Any]]:
        """List a workspace directory. See :meth:`SandboxFS.list`."""
        resp = await self._send("GET", "list", params=_list_params(path, depth))
        return _json(resp, "GET")

    async def exists_async(self, path: str) -> bool:
        """Whether a workspace path exists."""
        return _exists(_json(await self._send("GET", "exists", params={"path": path}), "GET"))

    async def remove_async(self, path: str) -> None:
        """Remove a file, or a directory recursively (no error if it does not exist)."""
        await self._send("DELETE", "entry", params={"path": path})

    async def move_async(self, source: str, destination: str) -> dict[str, Any]:
        """Move or rename a workspace entry; returns the destination's entry info."""
        body = {"source": source, "destination": destination}
        return _json(await self._send("POST", "move", json=body), "POST")

    async def mkdir_async(self, path: str) -> bool:
        """Create a directory (and parents); False if it already existed."""
        return _created(_json(await self._send("POST", "mkdir", json={"path": path}), "POST"))

    async def write_from_path_async(
        self,
        workspace_path: str,
        local_path: str,
        *,
        content_type: str = OCTET_STREAM,
    ) -> dict[str, Any]:
        """Stream a local file to ``workspace_path``; returns its entry info."""
        f = await asyncio.to_thread(open, local_path, "rb")
        try:
            return await self.write_async(workspace_path, f, content_type=content_type)
        finally:
            f.close()


async def _aiter_file(f: IO[bytes], chunk_size: int = _CHUNK) -> AsyncIterator[bytes]:
    while True:
        chunk = await asyncio.to_thread(f.read, chunk_size)
        if not chunk:
            return
        yield chunk


async def _iter_async(resp: httpx.Response, timeout: float) -> AsyncIterator[bytes]:
    try:
        async for chunk in resp.aiter_bytes():
            if chunk:
                yield chunk
    except httpx.HTTPError as exc:
        raise _http.connection_error(exc, method="GET", url=str(resp.url), timeout=timeout) from exc
    finally:
        await resp.aclose()
