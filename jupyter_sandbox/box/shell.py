"""run_shell_command: one ``bash -c`` per call, in its own process group, with a deadline.

The process is driven with plain ``subprocess.Popen`` plus event-loop readers on its pipes and a
pidfd for its exit, rather than asyncio's subprocess layer, so that pipes held open by background
children can be closed by us and no thread is spawned per command.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
from dataclasses import dataclass

log = logging.getLogger(__name__)

# Per stream: enough for any sensible tool output, small enough that `yes` cannot exhaust memory.
MAX_OUTPUT_BYTES = 10 * 1024 * 1024
_READ_SIZE = 256 * 1024
# After bash exits, a background child (`server &`) may still hold the pipes open; wait this
# long for the rest of the output, then return instead of blocking until the child exits.
_PIPE_GRACE = 0.25


@dataclass
class ShellResult:
    stdout: str
    stderr: str
    returncode: int


class _Capture:
    """Reads one pipe without blocking, keeping at most ``limit`` bytes."""

    def __init__(self, loop: asyncio.AbstractEventLoop, fd: int, limit: int) -> None:
        self._loop = loop
        self._fd = fd
        self._limit = limit
        self._chunks: list[bytes] = []
        self._kept = 0
        self._dropped = 0
        self.eof = loop.create_future()
        os.set_blocking(fd, False)
        loop.add_reader(fd, self._on_readable)

    def _on_readable(self) -> None:
        try:
            data = os.read(self._fd, _READ_SIZE)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.stop()
            return
        room = self._limit - self._kept
        if room > 0:
            kept = data[:room]
            self._chunks.append(kept)
            self._kept += len(kept)
        # Keep draining past the limit so the writer finishes normally instead of blocking.
        self._dropped += max(0, len(data) - max(room, 0))

    def stop(self) -> None:
        self._loop.remove_reader(self._fd)
        if not self.eof.done():
            self.eof.set_result(None)

    def text(self, name: str) -> str:
        text = b"".join(self._chunks).decode("utf-8", errors="replace")
        if self._dropped:
            text += (
                f"\n[{name} truncated: output beyond {self._limit // (1024 * 1024)} MiB"
                f" was discarded ({self._dropped} bytes)]\n"
            )
        return text


def _watch_exit(loop: asyncio.AbstractEventLoop, proc: subprocess.Popen) -> asyncio.Future:
    """A future that completes when ``proc`` exits, without polling."""
    try:
        pidfd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):
        # No pidfd (old kernel, seccomp, non-Linux): one blocking wait in a worker thread.
        return loop.run_in_executor(None, proc.wait)
    fut = loop.create_future()

    def on_exit() -> None:
        loop.remove_reader(pidfd)
        os.close(pidfd)
        if not fut.done():
            fut.set_result(None)

    loop.add_reader(pidfd, on_exit)
    return fut


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


class ShellRunner:
    """Runs shell commands in the workspace; kills their whole process group at the deadline."""

    def __init__(self, cwd: str, max_output: int = MAX_OUTPUT_BYTES) -> None:
        self.cwd = cwd
        self.max_output = max_output
        self._running: set[int] = set()

    async def run(self, command: str, timeout: float) -> ShellResult:
        loop = asyncio.get_running_loop()
        # A new session makes the pid the process group id, so the deadline can kill
        # everything the command started, background jobs included.
        proc = subprocess.Popen(
            ["bash", "-c", command],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=self.cwd,
            start_new_session=True,
        )
        assert proc.stdout is not None and proc.stderr is not None
        self._running.add(proc.pid)
        out = _Capture(loop, proc.stdout.fileno(), self.max_output)
        err = _Capture(loop, proc.stderr.fileno(), self.max_output)
        timed_out = False
        try:
            exited = _watch_exit(loop, proc)
            done, _ = await asyncio.wait({exited}, timeout=timeout)
            if not done:
                timed_out = True
                _kill_group(proc.pid)
                await exited
            returncode = proc.wait()
            await asyncio.wait({out.eof, err.eof}, timeout=_PIPE_GRACE)
        finally:
            self._running.discard(proc.pid)
            out.stop()
            err.stop()
            proc.stdout.close()
            proc.stderr.close()
            if proc.returncode is None:  # cancelled before the exit: do not leave it running
                _kill_group(proc.pid)
                proc.wait()

        stderr = err.text("stderr")
        if timed_out:
            if stderr and not stderr.endswith("\n"):
                stderr += "\n"
            stderr += f"Command timed out after {timeout:g} s and was killed"
            returncode = -signal.SIGKILL
        return ShellResult(stdout=out.text("stdout"), stderr=stderr, returncode=returncode)

    def kill_all(self) -> None:
        """Kill the process groups of commands still running (used at shutdown)."""
        for pgid in list(self._running):
            _kill_group(pgid)
