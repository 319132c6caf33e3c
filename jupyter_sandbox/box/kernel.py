"""run_ipython_cell: one long-lived ipykernel per box, driven through jupyter_client's async API.

The kernel runs in a child process (so a cell that crashes or hangs cannot take the box with it)
and talks ZMQ over ipc sockets in a private temporary directory. Two long-lived tasks read the
iopub and shell channels and hand the messages of the cell in progress to that call's queue; the
call's deadline and the kernel's death arrive in the same queue as sentinels, so a call awaits a
single queue and never polls.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any

from jupyter_client.asynchronous.client import AsyncKernelClient
from jupyter_client.kernelspec import KernelSpec, KernelSpecManager
from jupyter_client.manager import AsyncKernelManager

log = logging.getLogger(__name__)

MAX_OUTPUT_CHARS = 10 * 1024 * 1024
# How long an interrupted cell gets to unwind before the kernel is restarted instead.
INTERRUPT_GRACE = 3.0
STARTUP_TIMEOUT = 60.0

DIED_MESSAGE = "The IPython kernel died and was restarted; its state was lost."
_IMAGE_TYPES = ("image/png", "image/jpeg")

# The kernel is ipykernel_launcher with one difference: debugpy is hidden while the kernel
# initialises, because ipykernel imports it eagerly for its debugger (≈8 MB of RSS, and nobody
# debugs a sandbox's kernel over this API). It is importable again once the kernel runs.
# The cwd entry is dropped first, as ipykernel_launcher does, so a file in the workspace
# cannot shadow a module the kernel imports.
_LAUNCHER = """\
import sys
if sys.path and sys.path[0] == "":
    del sys.path[0]
sys.modules["debugpy"] = None
from ipykernel.kernelapp import IPKernelApp
app = IPKernelApp.instance()
app.initialize()
del sys.modules["debugpy"]
app.start()
"""

KERNEL_ARGV = [
    sys.executable,
    "-c",
    _LAUNCHER,
    "-f",
    "{connection_file}",
    # No history database: no sqlite file, no writer thread.
    "--HistoryManager.enabled=False",
]


class _SpecManager(KernelSpecManager):
    """Always returns our kernel spec, so no kernelspec installed on the machine is consulted."""

    def get_kernel_spec(self, kernel_name: str) -> KernelSpec:
        return KernelSpec(argv=KERNEL_ARGV, display_name="Python 3 (sandbox)", language="python")


@dataclass
class CellResult:
    stdout: str
    stderr: str
    # (mime type, base64 data)
    images: list[tuple[str, str]] = field(default_factory=list)


class _Timeout:
    pass


class _Died:
    pass


_TIMEOUT = _Timeout()
_DIED = _Died()


class _Collector:
    """Turns the iopub messages of one execution into the upstream stdout/stderr/image shape."""

    def __init__(self, execution_count: int = 1) -> None:
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self.images: list[tuple[str, str]] = []
        self._sizes = {"stdout": 0, "stderr": 0}
        self._truncated = {"stdout": False, "stderr": False}
        self.execution_count = execution_count
        self.idle = False
        self.replied = False

    def _add(self, name: str, text: str) -> None:
        room = MAX_OUTPUT_CHARS - self._sizes[name]
        if len(text) > room:
            text = text[: max(room, 0)]
            self._truncated[name] = True
        if text:
            (self.stdout if name == "stdout" else self.stderr).append(text)
            self._sizes[name] += len(text)

    def handle(self, msg: dict[str, Any]) -> None:
        kind = msg["msg_type"]
        content = msg["content"]
        if kind == "status":
            if content.get("execution_state") == "idle":
                self.idle = True
        elif kind == "stream":
            self._add("stderr" if content.get("name") == "stderr" else "stdout", content["text"])
        elif kind == "execute_input":
            # With store_history=False the count does not advance and execute_result carries 0;
            # upstream shows the shell's current count ("Out[1]"), which is this one.
            self.execution_count = content.get("execution_count") or self.execution_count
        elif kind in ("execute_result", "display_data", "update_display_data"):
            data = content.get("data") or {}
            for mime in _IMAGE_TYPES:
                if isinstance(data.get(mime), str):
                    # The text/plain of an image is just "<... Image object>": leave it out.
                    self.images.append((mime, "".join(data[mime].split())))
                    return
            text = data.get("text/plain")
            if not isinstance(text, str):
                return
            if kind == "execute_result":
                # IPython's displayhook starts a multi-line repr on its own line.
                sep = "\n" if "\n" in text else ""
                self._add("stdout", f"Out[{self.execution_count}]: {sep}{text}\n")
            else:
                self._add("stdout", text + "\n")
        elif kind == "error":
            # Upstream prints tracebacks (ANSI colours included) to stdout.
            self._add("stdout", "\n".join(content.get("traceback") or []) + "\n")

    def result(self, note: str | None = None) -> CellResult:
        stdout = "".join(self.stdout)
        stderr = "".join(self.stderr)
        for name in ("stdout", "stderr"):
            if self._truncated[name]:
                mark = f"\n[{name} truncated: output beyond {MAX_OUTPUT_CHARS // 2**20} MiB]\n"
                if name == "stdout":
                    stdout += mark
                else:
                    stderr += mark
        if note:
            if stderr and not stderr.endswith("\n"):
                stderr += "\n"
            stderr += note
        return CellResult(stdout=stdout, stderr=stderr, images=self.images)


class IPythonKernel:
    """One ipykernel, restarted when it dies; cells run one at a time."""

    def __init__(self, cwd: str, runtime_dir: str) -> None:
        self.cwd = cwd
        self.runtime_dir = runtime_dir
        self._km: AsyncKernelManager | None = None
        self._kc: AsyncKernelClient | None = None
        self._pumps: list[asyncio.Task] = []
        self._pidfd: int | None = None
        self._exit_waiter: asyncio.Future | None = None
        self._lock = asyncio.Lock()
        # (msg_id, queue) of the cell in progress
        self._current: tuple[str, asyncio.Queue] | None = None
        self._dead = False
        # The kernel died between calls and was restarted: tell the next caller.
        self._unreported_death = False
        self._restarts = 0
        self._background: asyncio.Future | None = None  # keeps the restart task referenced
        self._startup: asyncio.Future | None = None

    @property
    def pid(self) -> int | None:
        return getattr(self._km.provisioner, "pid", None) if self._km else None

    @property
    def ready_manager(self) -> AsyncKernelManager | None:
        """The current kernel's manager once it answered (None while it (re)starts). It is
        replaced on every restart, so holders (the notebook bridge) compare identities."""
        return self._km if self._km is not None and self._pumps else None

    # -- lifecycle ---------------------------------------------------------------------------

    def start_soon(self) -> None:
        """Start the kernel in the background: the box serves meanwhile, and cells (and
        `wait_started`) wait for it. A cold sandbox is healthy before its kernel is."""
        self._startup = asyncio.ensure_future(self._start_locked())

    async def _start_locked(self) -> None:
        async with self._lock:
            await self.start()

    async def wait_started(self) -> None:
        """Return once the first start finished; raise its error if it failed."""
        if self._startup is not None:
            await asyncio.shield(self._startup)

    async def start(self) -> None:
        """Launch the kernel and return once it has answered kernel_info."""
        self._restarts += 1
        km = AsyncKernelManager(
            kernel_spec_manager=_SpecManager(),
            kernel_name="sandbox",
            transport="ipc",
            # ipc endpoints and the connection file live in the private runtime dir,
            # never in the workspace.
            ip=os.path.join(self.runtime_dir, f"kernel{self._restarts}"),
            connection_file=os.path.join(self.runtime_dir, f"kernel{self._restarts}.json"),
        )
        # stdout must not be inherited: it is the box's "ready" pipe, and a kernel holding it
        # would keep the backend from ever seeing EOF. stderr goes to the box's log.
        await km.start_kernel(cwd=self.cwd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        self._km = km
        self._dead = False
        kc = km.client()
        # Only the channels we use: no heartbeat thread, no stdin or control sockets.
        kc.start_channels(shell=True, iopub=True, stdin=False, hb=False, control=False)
        self._kc = kc
        self._watch_exit()
        try:
            await kc.wait_for_ready(timeout=STARTUP_TIMEOUT)
        except Exception:
            await self._stop()
            raise
        self._pumps = [
            asyncio.ensure_future(self._pump("iopub")),
            asyncio.ensure_future(self._pump("shell")),
        ]
        log.info("IPython kernel %s ready", self.pid)

    async def _stop(self) -> None:
        self._unwatch_exit()
        for task in self._pumps:
            task.cancel()
        for task in self._pumps:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._pumps = []
        if self._kc is not None:
            self._kc.stop_channels()
            self._kc = None
        if self._km is not None:
            km, self._km = self._km, None
            try:
                await km.shutdown_kernel(now=True)
            except Exception:
                log.exception("error while stopping the kernel")

    async def shutdown(self) -> None:
        async with self._lock:
            await self._stop()

    async def _restart(self) -> None:
        log.warning("restarting the IPython kernel")
        await self._stop()
        await self.start()

    def _watch_exit(self) -> None:
        loop = asyncio.get_running_loop()
        pid = self.pid
        try:
            assert pid is not None
            self._pidfd = os.pidfd_open(pid)
        except (AssertionError, AttributeError, OSError):
            self._pidfd = None
            # No pidfd: fall back to the provisioner's own (slow-polling) wait.
            self._exit_waiter = asyncio.ensure_future(self._wait_exit_fallback())
            return
        loop.add_reader(self._pidfd, self._on_exit)

    async def _wait_exit_fallback(self) -> None:
        assert self._km is not None
        await self._km.provisioner.wait()
        self._on_exit()

    def _unwatch_exit(self) -> None:
        if self._pidfd is not None:
            asyncio.get_running_loop().remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None
        if self._exit_waiter is not None:
            self._exit_waiter.cancel()
            self._exit_waiter = None

    def _on_exit(self) -> None:
        if self._pidfd is not None:
            self._unwatch_exit()
        self._exit_waiter = None
        self._dead = True
        log.warning("the IPython kernel exited unexpectedly")
        if self._current is not None:
            self._current[1].put_nowait(_DIED)
        elif self._pumps:
            # Only once the kernel was up: during start(), wait_for_ready reports the death.
            self._background = asyncio.ensure_future(self._restart_in_background())

    async def _restart_in_background(self) -> None:
        # Restart now rather than on the next call, so that call does not wait for it.
        async with self._lock:
            if self._dead:
                try:
                    await self._restart()
                except Exception:
                    log.exception("could not restart the IPython kernel")
                    return
                self._unreported_death = True

    async def _pump(self, name: str) -> None:
        assert self._kc is not None
        channel = self._kc.iopub_channel if name == "iopub" else self._kc.shell_channel
        while True:
            try:
                msg = await channel.get_msg()
            except (ValueError, KeyError):
                # A message that fails to deserialise (bad signature, malformed): skip it.
                log.exception("bad message on the %s channel", name)
                continue
            current = self._current
            # Output of earlier, abandoned cells and status chatter is dropped here.
            parent = msg.get("parent_header") or {}
            if current is not None and parent.get("msg_id") == current[0]:
                current[1].put_nowait((name, msg))

    # -- execution ---------------------------------------------------------------------------

    async def execute(self, code: str, timeout: float) -> CellResult:
        first_start_failed = False
        if self._startup is not None:
            try:
                await self.wait_started()
            except Exception:
                first_start_failed = True
        async with self._lock:
            if self._dead or self._kc is None:
                try:
                    await self._restart()
                except Exception as e:
                    return CellResult(stdout="", stderr=f"The IPython kernel could not start: {e}")
                if not first_start_failed:
                    return CellResult(stdout="", stderr=DIED_MESSAGE)
            if self._unreported_death:
                self._unreported_death = False
                return CellResult(stdout="", stderr=DIED_MESSAGE)
            return await self._execute(code, timeout)

    async def _execute(self, code: str, timeout: float) -> CellResult:
        assert self._kc is not None and self._km is not None
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        collector = _Collector()
        # store_history=False as upstream: the execution count stays put and no Out cache grows.
        msg_id = self._kc.execute(
            code, silent=False, store_history=False, allow_stdin=False, stop_on_error=False
        )
        self._current = (msg_id, queue)
        timer = loop.call_later(timeout, queue.put_nowait, _TIMEOUT)
        try:
            outcome = await self._collect(queue, collector)
            if outcome is _TIMEOUT:
                log.info("cell timed out after %g s; interrupting the kernel", timeout)
                note = f"Execution timed out after {timeout:g} s; the kernel was interrupted"
                await self._km.interrupt_kernel()
                timer.cancel()
                timer = loop.call_later(INTERRUPT_GRACE, queue.put_nowait, _TIMEOUT)
                outcome = await self._collect(queue, collector)
                if outcome is _TIMEOUT:
                    await self._restart()
                    note = (
                        f"Execution timed out after {timeout:g} s; the kernel did not stop when"
                        " interrupted and was restarted; its state was lost."
                    )
                elif outcome is _DIED:
                    await self._restart()
                    note = DIED_MESSAGE
                return collector.result(note)
            if outcome is _DIED:
                await self._restart()
                return collector.result(DIED_MESSAGE)
            return collector.result()
        finally:
            timer.cancel()
            self._current = None

    @staticmethod
    async def _collect(queue: asyncio.Queue, collector: _Collector) -> object:
        """Feed the collector until the cell is idle and replied, or a sentinel arrives."""
        while not (collector.idle and collector.replied):
            item = await queue.get()
            if item is _TIMEOUT or item is _DIED:
                return item
            channel, msg = item
            if channel == "shell":
                if msg["msg_type"] == "execute_reply":
                    collector.replied = True
            else:
                collector.handle(msg)
        return None
