"""The backend interface: how the manager makes, inspects and destroys sandboxes.

A backend knows processes, containers or pods; it never sees HTTP requests or records.
It starts a box inside the sandbox and returns once that box is ready to answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

from traitlets.config import LoggingConfigurable


class BackendError(RuntimeError):
    """A sandbox could not be made or reached; the message says why."""


class BackendUnavailable(BackendError):
    """The backend cannot work on this machine (e.g. bubblewrap is missing)."""


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*$", re.IGNORECASE)


def parse_size(value: str | int) -> int:
    """`1g`, `512m`, `1GiB`, `1048576` → bytes (powers of 1024, like Docker)."""
    if isinstance(value, int):
        return value
    match = _SIZE.match(str(value))
    if not match:
        raise ValueError(f"not a size: {value!r} (use e.g. 512m or 1g)")
    number, unit = match.groups()
    return int(float(number) * 1024 ** "bkmgt".index(unit.lower() or "b"))


@dataclass(frozen=True)
class Limits:
    memory_bytes: int
    cpus: float
    pids: int


@dataclass
class SandboxSpec:
    """Everything a backend needs to make one sandbox."""

    name: str  # the public id (container_prefix + session id); unique
    sandbox_type: str
    image: str
    workspace: str  # host directory mounted read-write at /workspace
    token: str  # the box's bearer token
    call_timeout: float
    limits: Limits
    network: bool
    readonly_mounts: dict[str, str] = field(default_factory=dict)  # host path → sandbox path
    environment: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    # Backend-specific extras from the type's registration (Docker: containers.create kwargs).
    runtime_config: dict[str, Any] = field(default_factory=dict)
    tools: tuple[str, ...] = ()  # built-in tool groups of the box
    mcp_servers: dict[str, Any] = field(default_factory=dict)  # MCP servers the box starts

    def box_config(self, workspace: str) -> dict[str, Any]:
        """The JSON config line the box reads on stdin (box/__main__.py)."""
        return {
            "token": self.token,
            "workspace": workspace,
            "call_timeout": self.call_timeout,
            "tools": list(self.tools),
            "mcp_servers": self.mcp_servers,
        }


@dataclass(frozen=True)
class Started:
    """A ready sandbox: its backend id and how to reach its box."""

    container_id: str
    url: str  # "unix:/path/to/box.sock" or "http://host:port"
    ports: tuple[int, ...] = ()


class Backend(LoggingConfigurable):
    """Base class of the local, Docker and Kubernetes backends."""

    name = "abstract"

    def check(self) -> None:
        """Raise BackendUnavailable, saying what to install, if this backend cannot run here."""

    async def create(self, spec: SandboxSpec) -> Started:
        """Make the sandbox and return once its box answers. Transactional: on any failure,
        everything made so far is destroyed before the error is raised."""
        raise NotImplementedError

    async def destroy(self, container_id: str) -> None:
        """Destroy a sandbox and everything it holds; idempotent."""
        raise NotImplementedError

    async def park(self, container_id: str) -> None:
        """A new sandbox is going into the warm pool (a backend may pause it there)."""

    async def unpark(self, container_id: str) -> None:
        """A pooled sandbox was claimed: make it ready to run (undo `park`)."""

    def status(self, container_id: str) -> str | None:
        """`running`, `paused` (parked), `exited`, … or None when the backend does not know
        the id. Cheap: no I/O."""
        raise NotImplementedError

    async def workspace_updated(self, container_id: str, path: str) -> None:
        """Files were put into a running sandbox's host workspace `path` (a restore moved or
        loaded them there). A backend whose sandboxes do not see that directory live (the
        kubernetes backend's emptyDir) copies them in; the others have nothing to do."""

    def describe(self, container_id: str) -> str | None:
        """Why a sandbox is in its state, in the platform's words (e.g. a pod's phase and
        `OOMKilled`), for error messages; None when there is nothing to add. Cheap: no I/O."""
        return None

    async def create_in_thread(
        self, pool: Executor, create_sync: Callable[[SandboxSpec], Started], spec: SandboxSpec
    ) -> Started:
        """Run a blocking create in `pool`, transactionally: a thread cannot be interrupted,
        so a create cancelled meanwhile (a shutdown while warming) is let finish and then
        destroyed, leaving nothing behind. For backends with blocking clients."""
        future = asyncio.get_running_loop().run_in_executor(pool, create_sync, spec)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                started = await future
                await self.destroy(started.container_id)
            raise

    async def reap_orphans(self, keep: set[str] | None = None) -> int:
        """Destroy sandboxes left behind by dead server processes, except those in `keep`
        (container ids that shared state still serves); return how many."""
        return 0

    async def close(self) -> None:
        """Release the backend's own resources (not the sandboxes)."""
