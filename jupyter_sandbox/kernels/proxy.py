"""The kernel proxy: a Jupyter kernel process whose kernel runs in a sandbox.

jupyter_client starts it as any kernel (``-f <connection file>``); it binds the connection
file's five ZMQ sockets, claims a sandbox of its type from the sandbox server and relays:

* shell, control, stdin (frontend → kernel): verified with the connection file's key, sent on
  the server's ``/kernels/<id>/channels`` websocket as jupyter_server's JSON frames;
* everything coming back: signed with the key and sent on the matching socket (iopub to the
  PUB socket; replies and ``input_request`` to the frontend identity that sent the request);
* heartbeat: echoed here (the process is alive; the websocket's own pings watch the link).

``shutdown_request`` is answered here: reply, release the sandbox, exit. SIGINT (the
kernelspec's ``interrupt_mode: signal``) becomes an ``interrupt_request`` on ``control``, which
the box turns into a SIGINT to its kernel. SIGTERM, SIGHUP and the parent dying release the
sandbox too. A websocket that drops is reconnected for up to :data:`RECONNECT_TIMEOUT`; after
that the proxy exits (the frontend sees the kernel die, and its restart claims a new sandbox).

If no sandbox can be had, the proxy stays up as an *error kernel*: it answers ``kernel_info``
and fails every cell with the reason, so the notebook shows why instead of a restart loop.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import platform
import signal
import sys
from collections import OrderedDict
from typing import Any
from urllib.parse import quote

import zmq
import zmq.asyncio
from jupyter_client.session import Session
from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.websocket import WebSocketClientConnection, WebSocketClosedError, websocket_connect

from ..box.kernel_channels import MAX_MESSAGE_SIZE, decode_frame, encode_frame

log = logging.getLogger("jupyter_sandbox.kernels")

CLAIM_TIMEOUT = 300.0  # a cold sandbox (or a busy server) may take a while
CONNECT_TIMEOUT = 20.0
RECONNECT_TIMEOUT = 30.0
RELEASE_TIMEOUT = 15.0
PING_INTERVAL = 30.0
PARENT_POLL = 1.0
MAX_ROUTES = 4096  # request ids remembered to route replies to the frontend that asked
ROUTERS = ("shell", "control", "stdin")


class Unavailable(RuntimeError):
    """No sandbox (or no link to it); the message is what the notebook is told."""


def _endpoint(conn: dict[str, Any], channel: str) -> str:
    transport, ip, port = conn.get("transport", "tcp"), conn["ip"], conn[f"{channel}_port"]
    if transport == "ipc":
        return f"ipc://{ip}-{port}"
    if ":" in ip and not ip.startswith("["):
        ip = f"[{ip}]"
    return f"{transport}://{ip}:{port}"


def _ws_url(base_url: str, sandbox_id: str) -> str:
    base = base_url.rstrip("/")
    if base.startswith("https://"):
        base = "wss://" + base[len("https://") :]
    elif base.startswith("http://"):
        base = "ws://" + base[len("http://") :]
    return f"{base}/kernels/{quote(sandbox_id, safe='')}/channels"


class KernelProxy:
    def __init__(self, conn: dict[str, Any], sandbox_type: str) -> None:
        self.conn = conn
        self.sandbox_type = sandbox_type
        key = conn.get("key", "")
        self.session = Session(
            key=key.encode() if isinstance(key, str) else key,
            signature_scheme=conn.get("signature_scheme", "hmac-sha256"),
            username="kernel",
        )
        self.ctx = zmq.asyncio.Context()
        self.sockets: dict[str, zmq.asyncio.Socket] = {}
        self.sandbox: Any = None  # the SDK object, once claimed
        self.server: Any = None
        self.ws: WebSocketClientConnection | None = None
        self.linked = asyncio.Event()
        self.stopped = asyncio.Event()
        self.exit_code = 0
        self.error: str | None = None  # set: we are an error kernel
        self._routes: OrderedDict[str, list[bytes]] = OrderedDict()
        self._last: dict[str, list[bytes]] = {}
        self._own: set[str] = set()  # our own requests (interrupts): their replies are ours
        self._pending: list[tuple[dict[str, Any], str]] = []  # received before the link
        self._tasks: list[asyncio.Task] = []

    # -- lifecycle ---------------------------------------------------------------------------

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGINT, self._on_sigint)
        for signum in (signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(signum, self.stop)
        self._bind()
        self._spawn(self._heartbeat())
        self._spawn(self._watch_parent())
        for channel in ROUTERS:
            self._spawn(self._from_frontend(channel))
        claim = asyncio.ensure_future(self._claim_and_link())
        stop = asyncio.ensure_future(self.stopped.wait())
        await asyncio.wait([claim, stop], return_when=asyncio.FIRST_COMPLETED)
        if not claim.done():
            # Stopped while claiming: let the claim finish (briefly) so it can be released.
            with contextlib.suppress(asyncio.TimeoutError, Exception):
                await asyncio.wait_for(asyncio.shield(claim), 10)
            claim.cancel()
        elif claim.exception() is not None:
            self._become_error_kernel(claim.exception())
        if self.ws is not None:
            self._spawn(self._from_server())
        await self.stopped.wait()
        await self._close()
        return self.exit_code

    def stop(self, code: int = 0) -> None:
        if not self.stopped.is_set():
            self.exit_code = code
            self.stopped.set()

    def _spawn(self, coro: Any) -> None:
        self._tasks.append(asyncio.ensure_future(coro))

    def _bind(self) -> None:
        kinds = {"shell": zmq.ROUTER, "control": zmq.ROUTER, "stdin": zmq.ROUTER,
                 "iopub": zmq.PUB, "hb": zmq.REP}  # fmt: skip
        for channel, kind in kinds.items():
            sock = self.ctx.socket(kind)
            sock.linger = 1000  # replies sent just before exiting still go out
            if kind == zmq.ROUTER:
                sock.router_handover = 1  # a frontend that reconnects keeps its identity
            sock.bind(_endpoint(self.conn, channel))
            self.sockets[channel] = sock

    async def _close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.ws is not None:
            self.ws.close()
        await self._release()
        for sock in self.sockets.values():
            sock.close()
        self.ctx.term()

    async def _release(self) -> None:
        sandbox, self.sandbox = self.sandbox, None
        if sandbox is None:
            return
        log.info("releasing sandbox %s", sandbox.sandbox_id)
        try:
            await asyncio.wait_for(sandbox.close_async(), RELEASE_TIMEOUT)
        except Exception as e:
            log.error("releasing sandbox %s failed: %s", sandbox.sandbox_id, e)

    async def _watch_parent(self) -> None:
        """Exit (releasing the sandbox) when the process that started us is gone."""
        parent = os.getppid()
        while True:
            await asyncio.sleep(PARENT_POLL)
            if os.getppid() != parent:
                log.warning("the kernel's parent process %d exited; shutting down", parent)
                self.stop()
                return

    # -- the sandbox and the link to it ------------------------------------------------------

    async def _claim_and_link(self) -> None:
        from ..client import SandboxAsync, SandboxError
        from ..discovery import ServerNotFound, find_server

        try:
            self.server = await asyncio.to_thread(find_server)
        except ServerNotFound as e:
            raise Unavailable(str(e)) from None
        sandbox = SandboxAsync(
            base_url=self.server.base_url,
            bearer_token=self.server.token or None,
            sandbox_type=self.sandbox_type,
        )
        try:
            await asyncio.wait_for(sandbox.start_async(), CLAIM_TIMEOUT)
        except (SandboxError, asyncio.TimeoutError) as e:
            await sandbox.close_async()
            raise Unavailable(
                f"Could not get a {self.sandbox_type!r} sandbox from {self.server.base_url}: "
                f"{e or type(e).__name__}"
            ) from None
        self.sandbox = sandbox
        log.info(
            "kernel in sandbox %s (type %s) of %s",
            sandbox.sandbox_id, self.sandbox_type, self.server.base_url,
        )  # fmt: skip
        try:
            self.ws = await self._connect()
        except Unavailable:
            await self._release()
            raise
        self._set_linked()

    async def _connect(self) -> WebSocketClientConnection:
        assert self.sandbox is not None
        headers = {"Authorization": f"Bearer {self.server.token}"} if self.server.token else {}
        request = HTTPRequest(
            _ws_url(self.server.base_url, self.sandbox.sandbox_id),
            headers=headers,
            connect_timeout=CONNECT_TIMEOUT,
            request_timeout=CONNECT_TIMEOUT,
        )
        try:
            return await websocket_connect(
                request, max_message_size=MAX_MESSAGE_SIZE, ping_interval=PING_INTERVAL
            )
        except HTTPClientError as e:
            detail = ""
            if e.response is not None and e.response.body:
                with contextlib.suppress(ValueError, AttributeError):
                    detail = json.loads(e.response.body).get("detail", "")
            raise Unavailable(
                f"The sandbox server refused the kernel's websocket: {e.code} {detail}".strip()
            ) from None
        except Exception as e:
            raise Unavailable(f"Cannot reach the sandbox's kernel: {e}") from None

    async def _reconnect(self) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + RECONNECT_TIMEOUT
        delay = 0.25
        while loop.time() < deadline and not self.stopped.is_set():
            try:
                self.ws = await self._connect()
                log.info("reconnected to sandbox %s", self.sandbox.sandbox_id)
                self._set_linked()
                return True
            except Unavailable as e:
                log.warning("reconnecting: %s", e)
                if " 404" in str(e) or " 401" in str(e) or " 403" in str(e):
                    return False  # the sandbox is gone, or we may not use it
            await asyncio.sleep(delay)
            delay = min(delay * 2, 4.0)
        return False

    # -- relaying ----------------------------------------------------------------------------

    def _remember(self, msg_id: str, idents: list[bytes]) -> None:
        self._routes[msg_id] = idents
        self._routes.move_to_end(msg_id)
        while len(self._routes) > MAX_ROUTES:
            self._routes.popitem(last=False)

    async def _from_frontend(self, channel: str) -> None:
        sock = self.sockets[channel]
        while True:
            frames = await sock.recv_multipart()
            try:
                idents, parts = self.session.feed_identities(frames)
                msg = self.session.deserialize(parts)
            except Exception as e:
                log.warning("dropping a bad message on %s: %s", channel, e)
                continue
            try:
                self._handle_frontend(msg, channel, idents)
            except Exception:  # one bad message must not make the kernel deaf
                log.exception("could not relay a message on %s", channel)

    def _handle_frontend(self, msg: dict[str, Any], channel: str, idents: list[bytes]) -> None:
        header = msg["header"]
        log.debug("frontend %s %s %s %s", channel, header["msg_type"], header["msg_id"], idents)
        self._remember(header["msg_id"], idents)
        self._last[channel] = idents
        if header["msg_type"] == "shutdown_request" and channel in ("shell", "control"):
            self._shutdown(msg, channel, idents)
        elif self.error is not None:
            self._answer_error(msg, channel, idents)
        elif not self.linked.is_set():
            self._pending.append((msg, channel))  # sent once the link is up
        else:
            self._to_server(msg, channel)

    def _to_server(self, msg: dict[str, Any], channel: str) -> None:
        """Queue a message on the websocket (in order: tornado queues frames at once)."""
        assert self.ws is not None
        try:
            sent = self.ws.write_message(
                encode_frame(msg, channel), binary=bool(msg.get("buffers"))
            )
        except WebSocketClosedError:
            sent = None
        if sent is None:
            log.warning("the link to the sandbox is down; dropped a %s", msg["msg_type"])
            return

        def done(future: asyncio.Future) -> None:
            if future.cancelled() or future.exception() is not None:
                log.warning("the link to the sandbox is down; dropped a %s", msg["msg_type"])

        sent.add_done_callback(done)

    def _set_linked(self) -> None:
        self.linked.set()
        pending, self._pending = self._pending, []
        for msg, channel in pending:
            if self.error is not None:
                self._answer_error(msg, channel, self._routes.get(msg["header"]["msg_id"], []))
            else:
                self._to_server(msg, channel)

    async def _from_server(self) -> None:
        while True:
            assert self.ws is not None
            frame = await self.ws.read_message()
            if frame is None:
                self.linked.clear()
                log.warning("the link to sandbox %s closed; reconnecting", self.sandbox.sandbox_id)
                if await self._reconnect():
                    continue
                log.error("lost the sandbox's kernel; exiting")
                self.stop(1)
                return
            try:
                self._to_frontend(decode_frame(frame))
            except Exception as e:  # one bad message must not end the relay
                log.warning("dropping a message from the sandbox: %s", e)

    def _to_frontend(self, msg: dict[str, Any]) -> None:
        channel = msg.pop("channel", None)
        msg_type = msg["header"].get("msg_type", "")
        log.debug("kernel %s %s parent %s", channel, msg_type, msg["parent_header"].get("msg_id"))
        if channel == "iopub":
            topic = f"kernel.{self.sandbox.sandbox_id}.{msg_type}".encode()
            self.session.send(self.sockets["iopub"], msg, ident=topic)
            return
        if channel not in ROUTERS:
            return
        parent_id = (msg.get("parent_header") or {}).get("msg_id")
        if parent_id in self._own:
            self._own.discard(parent_id)
            return
        if msg_type == "kernel_info_reply":
            msg["content"]["jupyter_sandbox"] = self._identity()
        idents = self._routes.get(parent_id) if parent_id else None
        if idents is None:
            fallback = ("stdin", "shell") if channel == "stdin" else (channel,)
            idents = next((self._last[c] for c in fallback if c in self._last), None)
        if idents is None:
            log.warning("no frontend to send a %s to; dropped", msg_type)
            return
        self.session.send(self.sockets[channel], msg, ident=idents)

    def _identity(self) -> dict[str, Any]:
        return {
            "sandbox_id": self.sandbox.sandbox_id if self.sandbox else None,
            "sandbox_type": self.sandbox_type,
            "server": self.server.base_url if self.server else None,
        }

    async def _heartbeat(self) -> None:
        sock = self.sockets["hb"]
        while True:
            await sock.send_multipart(await sock.recv_multipart())

    # -- requests answered here --------------------------------------------------------------

    def _on_sigint(self) -> None:
        if not self.linked.is_set() or self.error is not None or self.ws is None:
            return  # nothing runs yet (or the link is down): nothing to interrupt
        msg = self.session.msg("interrupt_request", {})
        self._own.add(msg["header"]["msg_id"])
        self._to_server(msg, "control")

    def _shutdown(self, msg: dict[str, Any], channel: str, idents: list[bytes]) -> None:
        restart = bool(msg["content"].get("restart"))
        content = {"status": "ok", "restart": restart}
        parent = msg["header"]
        self.session.send(self.sockets[channel], "shutdown_reply", content, parent, ident=idents)
        self.session.send(self.sockets["iopub"], "shutdown_reply", content, parent)
        log.info("shutdown requested (restart=%s)", restart)
        self.stop()

    def _become_error_kernel(self, error: BaseException) -> None:
        self.error = str(error) if isinstance(error, Unavailable) else repr(error)
        log.error("%s", self.error)
        self._set_linked()  # frontend messages queued meanwhile are answered now

    def _answer_error(self, msg: dict[str, Any], channel: str, idents: list[bytes]) -> None:
        """Answer a request as a kernel that cannot run anything would."""
        assert self.error is not None
        header = msg["header"]
        msg_type = header["msg_type"]
        if not msg_type.endswith("_request"):
            return  # input_reply, comm messages: nothing to do
        iopub, sock = self.sockets["iopub"], self.sockets[channel]
        self.session.send(iopub, "status", {"execution_state": "busy"}, header)
        reply_type = msg_type[: -len("_request")] + "_reply"
        error = {"ename": "SandboxUnavailable", "evalue": self.error, "traceback": [self.error]}
        if msg_type == "kernel_info_request":
            content: dict[str, Any] = {
                "status": "ok",
                "protocol_version": "5.3",
                "implementation": "jupyter_sandbox",
                "implementation_version": "0",
                "language_info": {
                    "name": "python",
                    "version": platform.python_version(),
                    "mimetype": "text/x-python",
                    "file_extension": ".py",
                    "pygments_lexer": "ipython3",
                    "codemirror_mode": {"name": "ipython", "version": 3},
                    "nbconvert_exporter": "python",
                },
                "banner": f"No sandbox: {self.error}",
                "help_links": [],
                "jupyter_sandbox": {**self._identity(), "error": self.error},
            }
        elif msg_type == "execute_request":
            self.session.send(iopub, "error", error, header)
            content = {"status": "error", "execution_count": 0, **error}
        elif msg_type == "interrupt_request":
            content = {"status": "ok"}
        else:
            content = {"status": "error", **error}
        self.session.send(sock, reply_type, content, header, ident=idents)
        self.session.send(iopub, "status", {"execution_state": "idle"}, header)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m jupyter_sandbox.kernels",
        description="A Jupyter kernel that runs in a sandbox of the sandbox server (started "
        "by Jupyter from a sandbox-<type> kernelspec). `install` installs the kernelspecs.",
    )
    parser.add_argument("-f", "--connection-file", required=True)
    parser.add_argument("--type", default="base", help="the sandbox type (default: base)")
    parser.add_argument(
        "--log-level", default=os.environ.get("JUPYTER_SANDBOX_KERNEL_LOG_LEVEL", "INFO")
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=args.log_level.upper(),
        format="[%(levelname)1.1s %(asctime)s sandbox-kernel %(process)d] %(message)s",
    )
    with open(args.connection_file) as f:
        conn = json.load(f)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    return asyncio.run(KernelProxy(conn, args.type).run())
