"""Box startup: ``python -m jupyter_sandbox.box --listen unix:PATH | tcp:HOST:PORT``.

The protocol (docs/architecture.md): read one JSON line from stdin,
``{"token": str, "workspace": str = "/workspace", "call_timeout": float = 60, "tools": [str],
"mcp_servers": {"mcpServers": {...}}}``; bind, start the tool groups, the type's MCP servers and
the IPython kernel in the background (``GET /healthz?wait=kernel`` waits for all); then write
``{"ready": true}`` to stdout and close it. A failure before that writes
``{"ready": false, "error": "..."}`` and exits 1.
Logs go to stderr. SIGTERM or SIGINT stops the box, its kernel and any running commands.

The token arrives on stdin rather than in the environment so that the processes the box starts
(which inherit its environment) cannot read it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import logging
import math
import os
import shutil
import signal
import socket
import stat
import sys
import tempfile
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("jupyter_sandbox.box")

_PR_SET_DUMPABLE = 4
_MAX_CONFIG_LINE = 64 * 1024


class StartupError(Exception):
    """The box cannot start; the message is what the backend is told."""


@dataclass(frozen=True)
class Config:
    token: str
    workspace: str
    call_timeout: float
    tools: tuple[str, ...] = ()
    mcp_servers: dict[str, Any] | None = None


@dataclass(frozen=True)
class Listen:
    kind: str  # "unix" | "tcp"
    path: str = ""
    host: str = ""
    port: int = 0

    def __str__(self) -> str:
        return f"unix:{self.path}" if self.kind == "unix" else f"tcp:{self.host}:{self.port}"


def parse_listen(spec: str) -> Listen:
    kind, _, rest = spec.partition(":")
    if kind == "unix" and rest:
        return Listen("unix", path=rest)
    if kind == "tcp":
        host, _, port = rest.rpartition(":")
        host = host.strip("[]")  # [::1]:8000
        if host and port.isdigit() and int(port) < 65536:
            return Listen("tcp", host=host, port=int(port))
    raise StartupError(f"bad --listen {spec!r}: expected unix:PATH or tcp:HOST:PORT")


def parse_config(line: bytes) -> Config:
    if not line.strip():
        raise StartupError("no configuration line on stdin")
    try:
        data = json.loads(line)
    except ValueError as e:
        raise StartupError(f"the configuration line is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise StartupError("the configuration line must be a JSON object")
    token = data.get("token")
    if not isinstance(token, str) or not token:
        raise StartupError("token must be a non-empty string")
    workspace = data.get("workspace", "/workspace")
    if not isinstance(workspace, str) or not os.path.isabs(workspace):
        raise StartupError("workspace must be an absolute path")
    if not os.path.isdir(workspace):
        raise StartupError(f"workspace {workspace} is not a directory")
    timeout = data.get("call_timeout", 60)
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, (int, float))
        or not math.isfinite(timeout)
        or timeout <= 0
    ):
        raise StartupError("call_timeout must be a positive number of seconds")
    from .toolgroups import BUILTIN

    tools = data.get("tools") or []
    if not isinstance(tools, list) or any(t not in BUILTIN for t in tools):
        raise StartupError(f"tools must be a list of {', '.join(BUILTIN)}")
    mcp_servers = data.get("mcp_servers") or None
    if mcp_servers is not None and not isinstance(mcp_servers, dict):
        raise StartupError("mcp_servers must be an object")
    return Config(token, workspace, float(timeout), tuple(tools), mcp_servers)


def make_undumpable() -> None:
    """Forbid ptrace and /proc/<pid>/mem by same-uid processes, so tools cannot read the token.

    Best effort: without it the box still works, only less guarded. Children get a dumpable
    process again at execve, so the kernel and shell commands are unaffected.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    except (OSError, AttributeError) as e:
        log.warning("could not make the box undumpable: %s", e)


def bind(listen: Listen) -> list[socket.socket]:
    from tornado.netutil import bind_sockets, bind_unix_socket

    try:
        if listen.kind == "unix":
            return [bind_unix_socket(listen.path, mode=0o600)]
        return bind_sockets(listen.port, listen.host)
    except (OSError, ValueError) as e:
        raise StartupError(f"cannot listen on {listen}: {e}") from e


def make_runtime_dir(workspace: str, listen: Listen) -> str:
    """A private (0700) directory for kernel files and IPython's profile, outside the workspace.

    ``tempfile`` alone is not enough: when /tmp is not writable (a jail's root-owned tmpfs) it
    falls back to the cwd, which is the workspace. The unix socket's directory is the last
    resort, since the box must be able to write there anyway.
    """
    ws = os.path.realpath(workspace)
    ws_prefix = ws if ws.endswith(os.sep) else ws + os.sep
    candidates = [os.environ.get("TMPDIR"), "/tmp", "/dev/shm", "/var/tmp"]
    if listen.kind == "unix":
        candidates.append(os.path.dirname(os.path.abspath(listen.path)))
    for base in candidates:
        if not base or not os.path.isdir(base):
            continue
        real = os.path.realpath(base)
        if real == ws or real.startswith(ws_prefix):
            continue
        try:
            return tempfile.mkdtemp(prefix="jupyter-sandbox-box-", dir=real)
        except OSError:
            continue
    raise StartupError("no writable temporary directory outside the workspace (is /tmp writable?)")


def _write_stdout_line(obj: dict[str, Any]) -> None:
    data = (json.dumps(obj) + "\n").encode()
    while data:
        data = data[os.write(1, data) :]


def _close_stdout() -> None:
    # dup /dev/null over fd 1 instead of closing it, so a stray write cannot land on
    # whatever file a later open() would have got as fd 1.
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 1)
    os.close(devnull)


async def serve(listen: Listen, config: Config, runtime_dir: str, on_ready: Any) -> None:
    from tornado.httpserver import HTTPServer

    from .app import Box, make_app
    from .kernel import IPythonKernel
    from .shell import ShellRunner
    from .toolgroups import make_group
    from .workspace import Workspace

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    # Bind first: a taken address fails in milliseconds, before the kernel is started.
    sockets = bind(listen)
    read_only = tuple(filter(None, os.environ.get("SANDBOX_READONLY_MOUNTS", "").split(":")))
    box = Box(
        token=config.token,
        call_timeout=config.call_timeout,
        workspace=Workspace(config.workspace),
        shell=ShellRunner(cwd=config.workspace),
        kernel=IPythonKernel(cwd=config.workspace, runtime_dir=runtime_dir),
        groups=[make_group(name, config.workspace, read_only) for name in config.tools],
    )
    server = HTTPServer(make_app(box))
    warmup: asyncio.Future | None = None
    try:
        box.start_soon(config.mcp_servers)
        server.add_sockets(sockets)
        on_ready()
        # One throwaway command sets up asyncio's child watching and the shell's first exec
        # now, so a sandbox's first real command does not pay for them.
        warmup = asyncio.ensure_future(box.shell.run("true", 10))
        log.info("box listening on %s, workspace %s", listen, config.workspace)
        await stop.wait()
        log.info("stopping")
    finally:
        if warmup is not None:
            warmup.cancel()
        server.stop()
        for sock in sockets:
            sock.close()
        box.shell.kill_all()
        await box.close()
        if listen.kind == "unix":
            with contextlib.suppress(OSError):
                if stat.S_ISSOCK(os.lstat(listen.path).st_mode):
                    os.unlink(listen.path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m jupyter_sandbox.box",
        description="The sandbox box server. Reads one JSON config line from stdin.",
    )
    parser.add_argument("--listen", required=True, help="unix:PATH or tcp:HOST:PORT")
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )
    args = parser.parse_args(argv)

    logging.basicConfig(
        stream=sys.stderr,
        level=args.log_level,
        format="%(asctime)s box[%(process)d] %(levelname)s %(name)s: %(message)s",
    )
    if args.log_level != "DEBUG":
        logging.getLogger("tornado.access").setLevel(logging.WARNING)
    make_undumpable()

    ready = False

    def on_ready() -> None:
        nonlocal ready
        _write_stdout_line({"ready": True})
        _close_stdout()
        ready = True

    runtime_dir = None
    try:
        listen = parse_listen(args.listen)
        config = parse_config(sys.stdin.buffer.readline(_MAX_CONFIG_LINE))
        # Nothing more to read; the tool processes must not inherit the config pipe.
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
        # Kernel connection files, ipc sockets and IPython's profile dir live here, never in
        # the workspace (which may also be $HOME). Shell commands inherit the same settings.
        runtime_dir = make_runtime_dir(config.workspace, listen)
        os.environ["JUPYTER_RUNTIME_DIR"] = os.path.join(runtime_dir, "runtime")
        os.environ["IPYTHONDIR"] = os.path.join(runtime_dir, "ipython")
        asyncio.run(serve(listen, config, runtime_dir, on_ready))
        return 0
    except Exception as e:
        if isinstance(e, StartupError):
            error = str(e)
        else:
            log.exception("box failed")
            error = f"{type(e).__name__}: {e}"
        if not ready:
            log.error("start failed: %s", error)
            with contextlib.suppress(OSError):
                _write_stdout_line({"ready": False, "error": error})
        return 1
    finally:
        if runtime_dir is not None:
            shutil.rmtree(runtime_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
