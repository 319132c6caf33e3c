"""``/kernel/channels``: the box's IPython kernel over Jupyter's websocket protocol.

A notebook (through the sandbox server's ``/kernels/<id>/channels`` relay and the host-side
kernel proxy, ``jupyter_sandbox.kernels``) drives the very kernel the agents' ``run_ipython_cell``
uses: the same variables, the same cwd (the workspace), the same files. Each websocket gets its
own jupyter_client client on the box's kernel, with a session of its own (so its own DEALER
identities: replies come back to it alone, and the agents' client keeps its replies). Shell
requests from both queue in the kernel and run one at a time; iopub is broadcast, so the agents'
cells' messages reach the notebook too (frontends show only their own cells' output). An agent's
cell that times out interrupts the kernel, whoever's cell is running then.

Frames are those of jupyter_server's ``/api/kernels/<id>/channels`` (the legacy protocol, no
subprotocol): a text frame is one JSON message ``{"header", "parent_header", "metadata",
"content", "channel"}``; a message with binary buffers is a binary frame (a count and offsets as
big-endian uint32, the JSON, then the buffers; see :func:`encode_frame`).

Handled here rather than by the kernel:

* ``interrupt_request`` on ``control``: the box's kernel manager interrupts the kernel (SIGINT),
  and the answer is an ``interrupt_reply``. The kernel itself is launched with signal interrupts.
* The kernel dying (a crash, or ``shutdown_request`` that a client sent on): the box restarts it
  (as it does for the agents), this bridge reconnects to the new one and tells the client with
  an iopub ``status`` of ``restarting``, then ``idle``. Its state is lost, as for any restart.

Auth is the box's bearer token in the Authorization header, as every other box route; only the
sandbox server can open this socket. Several clients may be connected at once.

The bridge follows :class:`~jupyter_sandbox.box.kernel.IPythonKernel`'s current kernel manager
(``IPythonKernel.ready_manager``), which changes on every restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import struct
from typing import Any

import tornado.web
import tornado.websocket
from jupyter_client.jsonutil import json_default
from jupyter_client.session import Session

from .auth import BoxTokenMixin

log = logging.getLogger(__name__)

CHANNELS = ("shell", "control", "stdin", "iopub")
CLIENT_CHANNELS = ("shell", "control", "stdin")  # the ones a client may send on
MAX_MESSAGE_SIZE = 2**26  # as the server's relay (BoxClient.websocket)
WATCH_INTERVAL = 0.25  # how often the bridge checks whether the box restarted its kernel
NUDGE_TIMEOUT = 10.0


# -- frames ----------------------------------------------------------------------------------


def encode_frame(msg: dict[str, Any], channel: str) -> str | bytes:
    """A message as a websocket frame: JSON text, or jupyter_server's binary layout when the
    message has buffers (``!I`` count n, n ``!I`` offsets from the start, JSON, buffers)."""
    wire = {
        "header": msg.get("header") or {},
        "msg_id": (msg.get("header") or {}).get("msg_id"),
        "msg_type": (msg.get("header") or {}).get("msg_type"),
        "parent_header": msg.get("parent_header") or {},
        "metadata": msg.get("metadata") or {},
        "content": msg.get("content") or {},
        "channel": channel,
    }
    buffers = [bytes(b) for b in msg.get("buffers") or []]
    body = json.dumps(wire, default=json_default)
    if not buffers:
        return body
    parts = [body.encode("utf-8"), *buffers]
    offsets = [4 * (len(parts) + 1)]
    for part in parts[:-1]:
        offsets.append(offsets[-1] + len(part))
    return struct.pack(f"!{len(parts) + 1}I", len(parts), *offsets) + b"".join(parts)


def decode_frame(frame: str | bytes) -> dict[str, Any]:
    """A frame back to a message dict (with ``channel`` and ``buffers``); ValueError if bad."""
    buffers: list[bytes] = []
    if isinstance(frame, bytes):
        if len(frame) < 4:
            raise ValueError("binary frame too short")
        (count,) = struct.unpack_from("!I", frame)
        if count < 1 or 4 * (count + 1) > len(frame):
            raise ValueError("binary frame has a bad part count")
        offsets = list(struct.unpack_from(f"!{count}I", frame, 4)) + [len(frame)]
        if any(b < a for a, b in zip(offsets, offsets[1:], strict=False)) or offsets[0] < 4 * (
            count + 1
        ):
            raise ValueError("binary frame has bad offsets")
        parts = [frame[a:b] for a, b in zip(offsets, offsets[1:], strict=False)]
        frame, buffers = parts[0], parts[1:]
    msg = json.loads(frame)
    if not isinstance(msg, dict) or not isinstance(msg.get("header"), dict):
        raise ValueError("a message must be a JSON object with a header")
    for key in ("parent_header", "metadata", "content"):
        if not isinstance(msg.get(key), dict):
            msg[key] = {}
    msg["buffers"] = buffers
    return msg


# -- the bridge ------------------------------------------------------------------------------


class KernelBridge:
    """One websocket's client on the box's kernel; `send` writes a frame to the websocket."""

    def __init__(self, kernel: Any, send: Any) -> None:
        self.kernel = kernel
        self._send = send
        self._km: Any = None
        self._kc: Any = None
        self._pumps: list[asyncio.Task] = []
        self._watcher: asyncio.Task | None = None
        self._closed = False
        self._nudges: set[str] = set()  # our own kernel_info requests

    async def start(self) -> None:
        await self.kernel.wait_started()
        km = await self._wait_manager()
        await self._connect(km)
        self._watcher = asyncio.ensure_future(self._watch())

    async def _wait_manager(self) -> Any:
        while (km := self.kernel.ready_manager) is None:
            if self._closed:
                raise asyncio.CancelledError
            await asyncio.sleep(WATCH_INTERVAL)
        return km

    async def _connect(self, km: Any) -> None:
        # A session of its own: km.client() would share the manager's, and so the box's own
        # client's ZMQ identity, and the kernel (ROUTER_HANDOVER) would route the agents'
        # replies to us.
        session = Session(key=km.session.key, signature_scheme=km.session.signature_scheme)
        kc = km.client(session=session)
        kc.start_channels(shell=True, iopub=True, stdin=True, control=True, hb=False)
        self._km, self._kc = km, kc
        await self._nudge(kc)
        self._pumps = [asyncio.ensure_future(self._pump(name)) for name in CHANNELS]

    async def _nudge(self, kc: Any) -> None:
        """Wait until our iopub subscription is live (a SUB misses what is published before
        it connects): ask for kernel_info until an iopub message arrives, as jupyter_server
        does. The nudges' replies and statuses are ours alone: the pumps drop them."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + NUDGE_TIMEOUT
        while loop.time() < deadline:
            self._nudges.add(kc.kernel_info())
            try:
                await kc.iopub_channel.get_msg(timeout=0.2)
                return
            except Exception:
                continue
        log.warning("the kernel's iopub did not answer in %g s", NUDGE_TIMEOUT)

    async def _pump(self, name: str) -> None:
        channel = getattr(self._kc, f"{name}_channel")
        while True:
            try:
                msg = await channel.get_msg()
            except (ValueError, KeyError):
                log.exception("bad message on the kernel's %s channel", name)
                continue
            if (msg.get("parent_header") or {}).get("msg_id") in self._nudges:
                continue
            try:
                await self._send(encode_frame(msg, name))
            except tornado.websocket.WebSocketClosedError:
                return

    async def _watch(self) -> None:
        """Follow the box's kernel restarts (crash, or a client's shutdown_request)."""
        while not self._closed:
            await asyncio.sleep(WATCH_INTERVAL)
            if self.kernel.ready_manager is self._km and self._kc is not None:
                continue
            log.info("the kernel was restarted; reconnecting a notebook's channels")
            await self._disconnect()
            with contextlib.suppress(tornado.websocket.WebSocketClosedError):
                await self._send(self._status("restarting"))
            try:
                await self._connect(await self._wait_manager())
            except asyncio.CancelledError:
                raise
            except Exception as e:  # it died again meanwhile: the next round retries
                log.warning("reconnecting to the kernel failed: %s", e)
                await self._disconnect()
                continue
            with contextlib.suppress(tornado.websocket.WebSocketClosedError):
                await self._send(self._status("idle"))

    def _status(self, state: str) -> str | bytes:
        msg = self._session().msg("status", {"execution_state": state})
        return encode_frame(msg, "iopub")

    def _session(self) -> Any:
        if self._kc is not None:
            return self._kc.session
        return Session(key=b"")

    async def handle(self, frame: str | bytes) -> None:
        """A frame from the websocket: to the kernel, or answered here (interrupts)."""
        try:
            msg = decode_frame(frame)
        except ValueError as e:
            log.warning("dropping a malformed kernel message: %s", e)
            return
        channel = msg.pop("channel", None)
        if channel not in CLIENT_CHANNELS:
            log.warning("dropping a kernel message for channel %r", channel)
            return
        if self._kc is None:
            return  # between kernels: dropped, as a dead kernel would
        if msg["header"].get("msg_type") == "interrupt_request":
            await self._interrupt(msg, channel)
            return
        try:
            getattr(self._kc, f"{channel}_channel").send(msg)
        except Exception as e:  # a message Session cannot serialise: dropped, not fatal
            log.warning("dropping a kernel message: %s", e)

    async def _interrupt(self, msg: dict[str, Any], channel: str) -> None:
        status = {"status": "ok"}
        try:
            if self._km is not None:
                await self._km.interrupt_kernel()
        except Exception as e:
            log.warning("interrupting the kernel failed: %s", e)
            status = {"status": "error", "ename": type(e).__name__, "evalue": str(e)}
        reply = self._session().msg("interrupt_reply", status, parent=msg["header"])
        with contextlib.suppress(tornado.websocket.WebSocketClosedError):
            await self._send(encode_frame(reply, channel))

    async def _disconnect(self) -> None:
        self._km = None
        for task in self._pumps:
            task.cancel()
        for task in self._pumps:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._pumps = []
        if self._kc is not None:
            kc, self._kc = self._kc, None
            kc.stop_channels()

    async def close(self) -> None:
        self._closed = True
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._watcher
        await self._disconnect()


class KernelChannelsHandler(BoxTokenMixin, tornado.websocket.WebSocketHandler):
    """``WS /kernel/channels``: a :class:`KernelBridge` per connection; box token required."""

    def initialize(self, box: Any) -> None:
        self.box = box
        self.box_token = box.token
        self._bridge: KernelBridge | None = None
        self._closing: asyncio.Future | None = None

    @property
    def max_message_size(self) -> int:
        return MAX_MESSAGE_SIZE

    async def open(self) -> None:  # type: ignore[override]
        # Registered first, so a client that leaves while the kernel starts closes it.
        self._bridge = bridge = KernelBridge(self.box.kernel, self._write)
        try:
            await bridge.start()
        except asyncio.CancelledError:
            return  # closed meanwhile
        except Exception as e:
            log.warning("the kernel is not available to a notebook: %s", e)
            self.close(1011, "the IPython kernel did not start")
            return
        if self.ws_connection is None or self.ws_connection.is_closing():
            await bridge.close()  # the client left while we connected
            return
        self.set_nodelay(True)

    async def _write(self, frame: str | bytes) -> None:
        await self.write_message(frame, binary=isinstance(frame, bytes))

    async def on_message(self, message: str | bytes) -> None:
        if self._bridge is not None:
            await self._bridge.handle(message)

    def on_close(self) -> None:
        if self._bridge is not None:
            bridge, self._bridge = self._bridge, None
            self._closing = asyncio.ensure_future(bridge.close())
