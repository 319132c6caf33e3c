"""Finding the sandbox server from a notebook kernel (magics, widgets, sandbox kernels).

Explicit settings win: ``JUPYTER_SANDBOX_URL`` (and ``JUPYTER_SANDBOX_TOKEN``). Otherwise the
running Jupyter servers (``jupyter_server``'s runtime files, which hold their tokens) are
searched for one that serves this extension under ``sandbox/``, preferring the server this
kernel descends from. Nothing found raises :class:`ServerNotFound`, whose message says how to
connect.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import requests

PROBE_TIMEOUT = 2.0


class ServerNotFound(RuntimeError):
    """No sandbox server is configured or running; the message says what to do."""


@dataclass(frozen=True)
class ServerInfo:
    base_url: str  # the sandbox routes' root, e.g. http://127.0.0.1:8888/sandbox
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}


HOW_TO_CONNECT = (
    "No jupyter-sandbox server found. Run this notebook in a Jupyter server that has the "
    "jupyter_sandbox extension (it is enabled when the package is installed), or start one "
    "(`jupyter sandbox-server --SandboxApp.bearer_token=...`) and set JUPYTER_SANDBOX_URL and "
    "JUPYTER_SANDBOX_TOKEN, or run `%sandbox connect URL --token TOKEN`."
)


def _ancestors() -> set[int]:
    """This process's parent, grandparent, ... (Linux /proc; empty elsewhere)."""
    pids, pid = set(), os.getppid()
    while pid > 1 and pid not in pids:
        pids.add(pid)
        try:
            with open(f"/proc/{pid}/stat") as f:
                pid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return pids


def _answers(info: ServerInfo) -> bool:
    try:
        response = requests.get(f"{info.base_url}/health", timeout=PROBE_TIMEOUT)
    except requests.RequestException:
        return False
    return response.status_code == 200 and "pools" in response.text


def running_servers() -> list[ServerInfo]:
    """Running Jupyter servers with the extension, this kernel's own server first."""
    try:
        from jupyter_server.serverapp import list_running_servers
    except ImportError:
        return []
    ancestors = _ancestors()
    found = []
    for server in list_running_servers():
        url = server.get("url", "").rstrip("/")
        info = ServerInfo(f"{url}/sandbox", server.get("token", ""))
        found.append((server.get("pid") not in ancestors, info))
    found.sort(key=lambda pair: pair[0])
    return [info for _, info in found if _answers(info)]


def find_server() -> ServerInfo:
    """The server to use: the environment's, else a running Jupyter server's."""
    url = os.environ.get("JUPYTER_SANDBOX_URL")
    if url:
        return ServerInfo(url.rstrip("/"), os.environ.get("JUPYTER_SANDBOX_TOKEN", ""))
    servers = running_servers()
    if servers:
        return servers[0]
    raise ServerNotFound(HOW_TO_CONNECT)
