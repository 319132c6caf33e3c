"""The sandbox manager: records, warm pools, admission, leases, and every RPC of the wire API.

Each public coroutine here is one route of the AgentScope manager API (wire §1.2); the HTTP
layer only decodes bodies and encodes `{"data": …}`. Warm pools hold ready sandboxes per type;
a claim pops one, binds the caller's session and answers, and a refill starts at once. A
released sandbox is destroyed, never reused.

Leases (wire §4.7): a session's sandboxes stay alive while the session uses them. Every call
that works in a sandbox renews its session's lease; a session idle for `heartbeat_timeout` is
*culled*: its sandboxes are destroyed and marked `recycled`, their workspaces kept. The next
use of any of its ids *restores* it: a new sandbox per recycled one, the workspace moved in,
and the old id `replaced`, redirecting to the new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import itertools
import logging
import os
import re
import secrets
import shutil
import socket
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from ..backends import Backend, BackendError, Limits, SandboxSpec, parse_size
from ..storage import StorageError, WorkspaceStorage, check_key
from . import registry
from .boxclient import GENERIC_TOOLS, BoxClient, BoxUnreachable
from .records import LIVE_STATES, SandboxRecord, State, new_session_id
from .state import SharedState, StateUnavailable

MAX_REDIRECTS = 10
HOST = socket.gethostname()
REFILL_DELAY = 0.05  # seconds from a pool claim to the start of its replacement


_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _check_meta(meta: Any) -> None:
    if meta is None:
        return
    if not isinstance(meta, dict):
        raise InvalidRequest("meta must be a JSON object")
    session = meta.get("session_ctx_id")
    if session is not None and not isinstance(session, str):
        raise InvalidRequest("meta.session_ctx_id must be a string")


class SandboxNotFound(LookupError):
    def __init__(self, identity: str):
        self.identity = identity
        super().__init__(f"No sandbox found with id: {identity}")


class InvalidRequest(ValueError):
    """A request the manager refuses for what it asks, not for how it was sent."""


GENERIC_SCHEMAS = {
    "run_ipython_cell": ("Run an IPython cell.", "code", "IPython code to execute"),
    "run_shell_command": ("Run a shell command.", "command", "Shell command to execute"),
}


def _generic_group() -> dict[str, Any]:
    group = {}
    for name, (description, arg, arg_description) in GENERIC_SCHEMAS.items():
        group[name] = {
            "name": name,
            "json_schema": {
                "type": "function",
                "function": {
                    "name": name,
                    "description": description,
                    "parameters": {
                        "type": "object",
                        "properties": {arg: {"type": "string", "description": arg_description}},
                        "required": [arg],
                    },
                },
            },
        }
    return group


def tool_error(text: str) -> dict[str, Any]:
    """A CallToolResult that reports a failure, so MCP-validating clients still accept it."""
    return {"meta": None, "content": [{"type": "text", "text": text}], "isError": True}


@dataclass
class ManagerSettings:
    server_id: str
    sandbox_types: list[str]
    pool_size: int = 1
    container_prefix: str = "runtime-sandbox-container-"
    mount_dir: str = "sessions_mount_dir"
    readonly_mounts: dict[str, str] = field(default_factory=dict)
    call_timeout: float = 60.0
    network: bool = True
    limits: Limits = field(default_factory=lambda: Limits(1 << 30, 1.0, 256))
    max_sandboxes: int = 0
    auto_cleanup: bool = True
    refill_concurrency: int = 2
    heartbeat_timeout: float = 300.0  # idle seconds before a session is culled; 0: never
    watcher_interval: float = 1.0  # seconds between lease and garbage scans; 0: no watcher
    released_ttl: float = 3600.0  # seconds released/replaced/recycled records stay readable
    storage: WorkspaceStorage | None = None  # None: workspaces stay in mount_dir only
    storage_prefix: str = ""  # keys are `<prefix>/<session id>`
    allow_mount_dir: bool = False  # honour a client's `mount_dir` on create
    state: SharedState | None = None  # Redis: records, sessions and pools shared by servers


class SandboxManager:
    """Owns every sandbox this server made; the only user of the backend.

    Alone, it keeps records, sessions and pools in memory. With shared state (Redis), those
    live there and `records` is this process's cache: every lookup reads the shared record, a
    pool is a Redis list that one process at a time (the holder of its lease lock) refills,
    and any process can serve any sandbox, since a record says how to reach its box.
    """

    def __init__(self, backend: Backend, settings: ManagerSettings, log: logging.Logger):
        self.backend = backend
        self.settings = settings
        self.log = log
        self.records: dict[str, SandboxRecord] = {}
        self.sessions: dict[str, list[str]] = {}
        self.pools: dict[str, deque[SandboxRecord]] = {t: deque() for t in settings.sandbox_types}
        self._pending: dict[str, int] = dict.fromkeys(settings.sandbox_types, 0)  # warming
        self._cold_starting = 0
        self._last_purge = 0.0
        self._clients: dict[str, BoxClient] = {}
        self._refill_slots = asyncio.Semaphore(settings.refill_concurrency)
        self._tasks: set[asyncio.Task] = set()
        self._teardowns: set[asyncio.Task] = set()  # never cancelled: they free resources
        self._restoring: dict[str, asyncio.Lock] = {}  # session → one restore at a time
        self._unsaved: dict[str, SandboxRecord] = {}  # workspaces whose save failed: retried
        self._saving: dict[str, asyncio.Future] = {}  # sandbox name → its save in progress
        self._client_dirs: set[str] = set()  # mount dirs chosen by clients: never deleted
        self._watcher: asyncio.Task | None = None
        self._closing = False
        self._mount_root = os.path.abspath(settings.mount_dir)
        self.state = settings.state
        self.server_id = settings.server_id

    # -- lifecycle ---------------------------------------------------------------------------

    async def startup(self) -> None:
        """Reap what a dead predecessor left behind, then start warming the pools. With shared
        state that is not reachable yet, keep trying in the background (requests answer 503)."""
        try:
            await self._start()
        except StateUnavailable as e:
            self.log.error("%s; retrying every 2 s (requests answer 503 meanwhile)", e)
            self._spawn(self._start_when_state_returns())

    async def _start_when_state_returns(self) -> None:
        while not self._closing:
            await asyncio.sleep(2)
            try:
                await self._start()
            except StateUnavailable:
                continue
            self.log.info("shared state is reachable: pools and the watcher started")
            return

    async def _start(self) -> None:
        live: list[dict[str, Any]] = []
        if self.state is not None:
            await self.state.ping()  # fail fast, with the reason, when Redis is not there
            live = [
                r
                for r in await self.state.scan_records()
                if r.get("state") in ("warm", "running") and r.get("container_id")
            ]
        reaped = await self.backend.reap_orphans({r["container_id"] for r in live})
        if reaped:
            self.log.info("reaped %d sandbox(es) left behind by a previous server", reaped)
        # Records of this host whose sandbox is gone (a local jail dies with its server):
        # released, so no record claims a sandbox that does not exist.
        stale = [
            self._cache(r)
            for r in live
            if r.get("host") == HOST and self.backend.status(r["container_id"]) is None
        ]
        for record in stale:
            self._retire(record)
            await self._publish(record)
        if stale:
            self.log.info("released %d record(s) whose sandbox no longer exists", len(stale))
        for sandbox_type in self.pools:
            self._refill(sandbox_type)
        if self.settings.watcher_interval > 0:
            self._watcher = asyncio.ensure_future(self._watch())

    async def shutdown(self) -> None:
        self._closing = True
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.gather(self._watcher, return_exceptions=True)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.settings.auto_cleanup:
            await self.cleanup()
        await self._drain_teardowns()
        await self._retry_saves()
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()
        await self.backend.close()
        if self.state is not None:
            await self.state.close()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- pools -------------------------------------------------------------------------------

    def _live_count(self) -> int:
        """Sandboxes this process made (max_sandboxes is per server process)."""
        live = sum(
            r.state in LIVE_STATES and r.server_id in (None, self.server_id)
            for r in self.records.values()
        )
        return live + sum(self._pending.values()) + self._cold_starting

    def _admit(self) -> bool:
        limit = self.settings.max_sandboxes
        return limit <= 0 or self._live_count() < limit

    def _refill(self, sandbox_type: str) -> None:
        if self._closing or sandbox_type not in self.pools:
            return
        if self.state is not None:
            self._spawn(self._refill_shared(sandbox_type))
            return
        missing = (
            self.settings.pool_size - len(self.pools[sandbox_type]) - self._pending[sandbox_type]
        )
        for _ in range(missing):
            if not self._admit():
                return
            self._pending[sandbox_type] += 1
            self._spawn(self._warm_one(sandbox_type))

    async def _refill_shared(self, sandbox_type: str) -> None:
        """Refill a shared pool, if this process holds its lease: several servers sharing
        one Redis never overfill it."""
        assert self.state is not None
        ttl = max(5.0, 3 * self.settings.watcher_interval)
        try:
            if not await self.state.acquire(f"pool:{sandbox_type}", self.server_id, ttl):
                return
            missing = (
                self.settings.pool_size
                - await self.state.pool_len(sandbox_type)
                - self._pending[sandbox_type]
            )
        except Exception as e:
            self.log.warning("cannot refill the %s pool now: %s", sandbox_type, e)
            return
        for _ in range(missing):
            if not self._admit():
                return
            self._pending[sandbox_type] += 1
            self._spawn(self._warm_one(sandbox_type))

    async def _warm_one(self, sandbox_type: str) -> None:
        """Add one warm sandbox to a pool, retrying with backoff while the backend fails."""
        spec_type = registry.resolve(sandbox_type, sandbox_type)
        try:
            for attempt in itertools.count():
                try:
                    async with self._refill_slots:
                        record = await self._make(spec_type, None, {}, warm=True)
                        await self._park(record)
                except Exception as e:
                    delay = min(30.0, 0.5 * 2**attempt)
                    self.log.error(
                        "warming a %s sandbox failed (retry in %.1f s): %s", sandbox_type, delay, e
                    )
                    await asyncio.sleep(delay)
                    if self._closing:
                        return
                else:
                    if self.state is None:
                        self.pools[sandbox_type].append(record)
                        return
                    try:
                        await self.state.pool_push(sandbox_type, record.to_store())
                        return
                    except Exception as e:  # nothing half-made: the sandbox goes
                        self.log.error("pooling %s failed: %s", record.container_name, e)
                        self._retire(record)
                        await asyncio.sleep(min(30.0, 0.5 * 2**attempt))
        finally:
            self._pending[sandbox_type] -= 1

    async def _park(self, record: SandboxRecord) -> None:
        try:
            await self.backend.park(record.container_id or "")
        except BaseException:
            self._retire(record)
            raise

    async def pool_status(self) -> dict[str, dict[str, int]]:
        status = {}
        for t, q in self.pools.items():
            warm = len(q) if self.state is None else await self.state.pool_len(t)
            status[t] = {
                "warm": warm,
                "target": self.settings.pool_size,
                "starting": self._pending[t],
            }
        return status

    # -- create / claim ----------------------------------------------------------------------

    async def _make(
        self,
        spec_type: registry.TypeSpec,
        meta: dict | None,
        environment: dict[str, str],
        warm: bool = False,
        workspace: str | None = None,
        storage_key: str | None = None,
    ) -> SandboxRecord:
        """Create a sandbox; with `warm`, return only once everything in it (the IPython
        kernel) is up, as a pooled sandbox must be. Otherwise once its box answers.

        `workspace` is a client's own mount dir (allow_mount_dir); `storage_key` a stored
        workspace to load into the new one before the sandbox starts."""
        session_id = new_session_id()
        name = self.settings.container_prefix + session_id
        if workspace is None:
            workspace = os.path.join(self._mount_root, session_id)
            os.makedirs(workspace, exist_ok=False)
        else:
            os.makedirs(workspace, exist_ok=True)
            self._client_dirs.add(workspace)
        if storage_key and self.settings.storage is not None:
            try:
                await _in_thread(self.settings.storage.load, storage_key, workspace)
            except StorageError:
                self._remove_workspace(workspace)
                raise
        record = SandboxRecord(
            session_id=session_id,
            container_name=name,
            sandbox_type=spec_type.name,
            version=spec_type.image,
            runtime_token=secrets.token_hex(16),
            mount_dir=workspace,
            timeout=spec_type.timeout or self.settings.call_timeout,
            storage_path=storage_key or self._storage_key(session_id),
            server_id=self.server_id,
            host=HOST,
        )
        spec = self._spec(record, spec_type, {**spec_type.environment, **environment})
        try:
            started = await self.backend.create(spec)
        except BaseException:
            self._remove_workspace(workspace)
            raise
        record.container_id = started.container_id
        record.url = started.url
        record.ports = list(started.ports)
        client = BoxClient(started.url, record.runtime_token, record.timeout)
        try:
            # Open the pooled connection now: the first call after a claim must not pay for it.
            reason = await client.unhealthy_reason(wait_kernel=warm, timeout=60)
            if reason is not None:
                raise BackendError(f"sandbox {name} started but {reason}")
            record.bind(meta)
            await self._publish(record)
            await self._bind_session(record)
        except BaseException:  # cancellation included: never leave a sandbox unrecorded
            await client.aclose()
            await asyncio.shield(self.backend.destroy(started.container_id))
            self._remove_workspace(workspace)
            if self.state is not None:
                with contextlib.suppress(Exception):
                    await self.state.delete_record(name)
            raise
        self._clients[name] = client
        self.records[name] = record
        return record

    def _spec(
        self, record: SandboxRecord, spec_type: registry.TypeSpec, environment: dict[str, str]
    ) -> SandboxSpec:
        default = self.settings.limits
        limits = Limits(
            parse_size(spec_type.memory) if spec_type.memory else default.memory_bytes,
            spec_type.cpus or default.cpus,
            spec_type.pids or default.pids,
        )
        return SandboxSpec(
            name=record.container_name,
            sandbox_type=record.sandbox_type,
            image=record.version,
            workspace=record.mount_dir,
            token=record.runtime_token,
            call_timeout=record.timeout,
            limits=limits,
            network=self.settings.network,
            readonly_mounts=self.settings.readonly_mounts,
            # The box tells tools where the read-only mounts are (the filesystem tools read them).
            environment={
                "SANDBOX_READONLY_MOUNTS": ":".join(self.settings.readonly_mounts.values()),
                **environment,
            },
            runtime_config=spec_type.runtime_config,
            tools=spec_type.tools,
            mcp_servers=spec_type.mcp_servers,
            labels={
                "server-id": self.settings.server_id,
                "sandbox-type": record.sandbox_type,
                "session-id": record.session_id,
            },
        )

    async def _publish(self, record: SandboxRecord) -> None:
        """Write a record to the shared state (no-op alone)."""
        if self.state is not None:
            await self.state.put_record(record.to_store())

    async def _session_names(self, session: str) -> list[str]:
        if self.state is not None:
            return await self.state.get_session(session)
        return list(self.sessions.get(session, []))

    async def _set_session(self, session: str, names: list[str]) -> None:
        if self.state is not None:
            await self.state.set_session(session, names)
        elif names:
            self.sessions[session] = names
        else:
            self.sessions.pop(session, None)

    async def _bind_session(self, record: SandboxRecord) -> None:
        if record.session_ctx_id:
            names = await self._session_names(record.session_ctx_id)
            if record.container_name not in names:
                await self._set_session(record.session_ctx_id, [*names, record.container_name])

    async def _unbind_session(self, record: SandboxRecord) -> None:
        if record.session_ctx_id:
            names = await self._session_names(record.session_ctx_id)
            if record.container_name in names:
                names.remove(record.container_name)
                await self._set_session(record.session_ctx_id, names)

    async def create_from_pool(
        self, sandbox_type: str | None = None, meta: dict | None = None
    ) -> str | None:
        spec_type = registry.resolve(sandbox_type, self.settings.sandbox_types[0])
        _check_meta(meta)
        while True:
            record = await self._pool_pop(spec_type.name)
            if record is None:
                break
            # The replacement starts just after this claim's first calls, not during them:
            # starting a sandbox keeps both cores of a small machine busy for ~0.2 s.
            asyncio.get_running_loop().call_later(REFILL_DELAY, self._refill, spec_type.name)
            if self.backend.status(record.container_id or "") not in ("running", "paused"):
                self.log.warning("discarding dead pooled sandbox %s", record.container_name)
                self._retire(record)
                continue
            try:
                await self.backend.unpark(record.container_id or "")
            except Exception as e:
                self.log.warning("discarding pooled sandbox %s: %s", record.container_name, e)
                self._retire(record)
                continue
            record.bind(meta)
            await self._publish(record)
            await self._bind_session(record)
            return record.container_name
        self._refill(spec_type.name)  # e.g. a pool that stopped at max_sandboxes
        return await self._create(spec_type, meta, {})

    async def _pool_pop(self, sandbox_type: str) -> SandboxRecord | None:
        if self.state is None:
            pool = self.pools.get(sandbox_type)
            return pool.popleft() if pool else None
        if sandbox_type not in self.pools:
            return None  # no pool of this type here: a cold create, as when it is empty
        data = await self.state.pool_pop(sandbox_type)
        return self._cache(data) if data else None

    def _cache(self, data: dict[str, Any]) -> SandboxRecord:
        """This process's copy of a shared record (updated in place, so references stay)."""
        fresh = SandboxRecord.from_store(data)
        record = self.records.get(fresh.container_name)
        if record is None:
            self.records[fresh.container_name] = record = fresh
        else:
            record.__dict__.update(fresh.__dict__)
        name = record.container_name
        if record.state in LIVE_STATES and record.url and name not in self._clients:
            self._clients[name] = BoxClient(record.url, record.runtime_token, record.timeout)
        elif record.state not in LIVE_STATES and name in self._clients:
            asyncio.ensure_future(self._clients.pop(name).aclose())  # released elsewhere
        return record

    def _prune_cache(self) -> None:
        """With shared state, Redis is the truth: forget cached records that are not live
        (they are read again if needed), so a long-lived server's cache does not grow."""
        busy = self._unsaved.keys() | self._saving.keys()
        for name, record in list(self.records.items()):
            if record.state not in LIVE_STATES and name not in busy:
                del self.records[name]

    async def create(
        self,
        sandbox_type: str | None = None,
        mount_dir: str | None = None,
        storage_path: str | None = None,
        environment: dict[str, str] | None = None,
        meta: dict | None = None,
    ) -> str | None:
        spec_type = registry.resolve(sandbox_type, self.settings.sandbox_types[0])
        workspace = None
        if mount_dir:
            # A host path chosen by a client exposes the host (upstream §7.2 item 6): only
            # when the operator allows it, as upstream's ALLOW_MOUNT_DIR.
            if not self.settings.allow_mount_dir:
                raise InvalidRequest(
                    "mount_dir is not allowed on this server (SandboxApp.allow_mount_dir)"
                )
            workspace = os.path.abspath(str(mount_dir))
        storage_key = None
        if storage_path:
            if self.settings.storage is None:
                raise InvalidRequest("storage_path needs workspace storage (SandboxApp.storage)")
            try:
                storage_key = self._storage_key(check_key(str(storage_path)))
            except ValueError as e:
                raise InvalidRequest(str(e)) from None
        _check_meta(meta)
        environment = environment or {}
        if not isinstance(environment, dict):
            raise InvalidRequest("environment must be a JSON object of strings")
        bad = [
            k
            for k, v in environment.items()
            if not isinstance(v, str) or not _ENV_NAME.match(k) or "\x00" in v
        ]
        if bad:
            raise InvalidRequest(
                "environment must map variable names (letters, digits, _) to strings "
                f"without NUL characters; not: {', '.join(map(repr, bad))}"
            )
        return await self._create(spec_type, meta, environment, workspace, storage_key)

    async def _create(
        self,
        spec_type: registry.TypeSpec,
        meta: dict | None,
        environment: dict[str, str],
        workspace: str | None = None,
        storage_key: str | None = None,
    ) -> str | None:
        if not self._admit():
            self.log.warning(
                "refused to create a %s sandbox: max_sandboxes=%d reached",
                spec_type.name,
                self.settings.max_sandboxes,
            )
            return None
        self._cold_starting += 1  # counted against max_sandboxes while it starts
        try:
            record = await self._make(
                spec_type, meta, environment, workspace=workspace, storage_key=storage_key
            )
        except (BackendError, StorageError) as e:
            self.log.error("creating a %s sandbox failed: %s", spec_type.name, e)
            return None
        except StateUnavailable:
            raise  # a 503 that says Redis is away; the sandbox was destroyed, not half-made
        except Exception:  # a bug or the host (ENOSPC, EMFILE): still answer {"data": null}
            self.log.exception("creating a %s sandbox failed", spec_type.name)
            return None
        finally:
            self._cold_starting -= 1
        return record.container_name

    # -- lookup ------------------------------------------------------------------------------

    async def _lookup(self, identity: str) -> SandboxRecord:
        if not isinstance(identity, str) or not identity:
            raise InvalidRequest("identity must be a non-empty string (a sandbox id)")
        names = [identity, self.settings.container_prefix + identity]
        record = None
        for name in names:
            record = await self._get(name)
            if record is not None:
                break
        for _ in range(MAX_REDIRECTS):
            if record is None:
                raise SandboxNotFound(identity)
            if record.state != State.REPLACED or not record.redirect_to:
                return record
            record = await self._get(record.redirect_to)
        raise InvalidRequest(f"Redirect loop detected for {identity}")

    async def _get(self, name: str) -> SandboxRecord | None:
        if self.state is None:
            return self.records.get(name)
        data = await self.state.get_record(name)
        if data is None:
            self.records.pop(name, None)
            return None
        return self._cache(data)

    async def _use(self, identity: str) -> tuple[SandboxRecord, BoxClient]:
        """The live sandbox behind `identity`, its session restored first if it was culled;
        renews the session's lease. Every call that works in a sandbox goes through here."""
        record = await self._lookup(identity)
        if record.state == State.RECYCLED:
            record = await self._restore(record)
        client = self._clients.get(record.container_name)
        if record.state not in LIVE_STATES or client is None:
            raise SandboxNotFound(f"{identity} (it is {record.state.value})")
        record.touch()
        await self._publish(record)
        return record, client

    # -- leases: culling idle sessions, restoring them, forgetting old records -----------------

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.settings.watcher_interval)
            try:
                if await self._lead("watcher"):
                    await self._cull_idle_sessions()
                    await self._collect_garbage()
                await self._retry_saves()
                if self.state is not None:  # the pool leases move when a holder dies
                    self._prune_cache()
                    for sandbox_type in self.pools:
                        await self._refill_shared(sandbox_type)
            except Exception as e:
                self.log.error("the lease watcher failed (it keeps running): %s", e)

    async def _lead(self, task: str) -> bool:
        """Alone: always. Shared: whether this process holds the lease of a fleet-wide task."""
        if self.state is None:
            return True
        ttl = max(5.0, 3 * self.settings.watcher_interval)
        return await self.state.acquire(task, self.server_id, ttl)

    async def _all_records(self) -> list[SandboxRecord]:
        if self.state is None:
            return list(self.records.values())
        return [self._cache(data) for data in await self.state.scan_records()]

    async def _cull_idle_sessions(self) -> None:
        timeout = self.settings.heartbeat_timeout
        if timeout <= 0:
            return
        now = time.time()
        sessions: dict[str, list[SandboxRecord]] = {}
        for r in await self._all_records():
            if r.state == State.RUNNING and r.session_ctx_id:
                sessions.setdefault(r.session_ctx_id, []).append(r)
        for session, running in sessions.items():
            if session in self._restoring:
                continue
            heartbeat = max(r.last_active_at or r.updated_at for r in running)
            if now - heartbeat > timeout:
                self.log.info(
                    "culling session %s: idle for %.0f s (heartbeat_timeout %g s)",
                    session, now - heartbeat, timeout,
                )  # fmt: skip
                await asyncio.gather(*(self._recycle(r) for r in running))

    async def _recycle(self, record: SandboxRecord) -> None:
        """Destroy a culled sandbox but keep its record, session and workspace."""
        record.state = State.RECYCLED
        record.recycled_at = record.updated_at = time.time()
        record.recycle_reason = "heartbeat_timeout"
        await self._publish(record)
        await self._dispose(record, self._clients.pop(record.container_name, None))

    async def _restore(self, record: SandboxRecord) -> SandboxRecord:
        """Bring a culled session back: one new sandbox per recycled one, workspaces moved
        in, old ids redirected. Concurrent callers wait for the same restore."""
        session = record.session_ctx_id or record.container_name
        lock = self._restoring.setdefault(session, asyncio.Lock())
        try:
            async with lock:
                names = await self._session_names(session) or [record.container_name]
                for name in names:
                    old = await self._get(name)
                    if old is not None and old.state == State.RECYCLED:
                        await self._revive(old)
        finally:
            if not lock.locked():
                self._restoring.pop(session, None)
        return await self._lookup(record.container_name)

    async def _revive(self, old: SandboxRecord) -> None:
        spec_type = registry.resolve(old.sandbox_type, old.sandbox_type)
        if old.mount_dir in self._client_dirs:  # a client's own directory stays its workspace
            name = await self._create(spec_type, old.meta, {}, workspace=old.mount_dir)
        else:
            name = await self.create_from_pool(spec_type.name, old.meta)
        if name is None:
            raise BackendError(
                f"cannot restore {old.container_name}: no sandbox could be made (see the log)"
            )
        new = self.records[name]
        saving = self._saving.get(old.container_name)
        if saving is not None:  # never move files out from under a save
            await asyncio.wait([saving])
        try:
            if os.path.isdir(old.mount_dir):  # no storage, or its save has not succeeded yet
                _move_workspace(old.mount_dir, new.mount_dir)
            elif self.settings.storage is not None and old.storage_path:
                await _in_thread(self.settings.storage.load, old.storage_path, new.mount_dir)
            await self.backend.workspace_updated(new.container_id or "", new.mount_dir)
        except (OSError, StorageError, BackendError) as e:
            self._retire(new)  # the culled record stays, and a later call tries again
            await self._unbind_session(new)
            raise BackendError(f"cannot restore {old.container_name}: {e}") from None
        self._unsaved.pop(old.container_name, None)
        new.storage_path = old.storage_path
        await self._publish(new)
        old.state = State.REPLACED
        old.redirect_to = name
        old.updated_at = time.time()
        await self._publish(old)
        await self._unbind_session(old)
        self.log.info("restored %s as %s", old.container_name, name)

    async def _collect_garbage(self) -> None:
        """Forget released, replaced and recycled records after `released_ttl` (upstream
        keeps recycled ones forever). A forgotten recycled sandbox's workspace stays on disk."""
        ttl = self.settings.released_ttl
        if ttl <= 0:
            return
        horizon = time.time() - ttl
        since = {
            State.RELEASED: lambda r: r.released_at,
            State.REPLACED: lambda r: r.updated_at,
            State.RECYCLED: lambda r: r.recycled_at,
        }
        stale = [
            r
            for r in await self._all_records()
            if r.state in since and (since[r.state](r) or 0) < horizon
        ]
        for record in stale:
            self.records.pop(record.container_name, None)
            if self.state is not None:
                await self.state.delete_record(record.container_name)
            await self._unbind_session(record)

    # -- RPCs --------------------------------------------------------------------------------

    async def release(self, identity: str) -> bool:
        try:
            record = await self._lookup(identity)
        except SandboxNotFound:
            return True  # already released, as upstream
        if record.state == State.RELEASED:
            return True
        self._retire(record)
        if self.state is not None:  # every server sees it released once this answers
            await self._publish(record)
            await self._unbind_session(record)
        return True

    def _retire(self, record: SandboxRecord) -> None:
        """Retire a record at once; its processes are torn down in the background, so a
        release answers in milliseconds and the sandbox is already unreachable."""
        record.state = State.RELEASED
        record.released_at = record.updated_at = time.time()
        if self.state is None and record.session_ctx_id in self.sessions:
            names = self.sessions[record.session_ctx_id]
            with contextlib.suppress(ValueError):
                names.remove(record.container_name)
            if not names:
                del self.sessions[record.session_ctx_id]
        client = self._clients.pop(record.container_name, None)
        task = asyncio.ensure_future(self._teardown(record, client))
        self._teardowns.add(task)
        task.add_done_callback(self._teardowns.discard)
        if not self._closing:
            for sandbox_type in self.pools:  # capacity was freed: pools stopped by the limit
                self._refill(sandbox_type)

    async def _teardown(self, record: SandboxRecord, client: BoxClient | None) -> None:
        if self.state is not None:
            try:
                await self._publish(record)
                await self._unbind_session(record)
            except Exception as e:  # the sandbox goes anyway; its record says so later
                self.log.error("recording the release of %s failed: %s", record.container_name, e)
        await self._dispose(record, client)

    async def _dispose(self, record: SandboxRecord, client: BoxClient | None) -> None:
        """Destroy a sandbox that is no longer served, then save (or drop) its workspace."""
        if client is not None:
            await client.aclose()
        if record.container_id:
            try:
                await self.backend.destroy(record.container_id)
            except Exception as e:
                self.log.error("destroying %s failed: %s", record.container_name, e)
        await self._save_workspace(record)

    def _storage_key(self, session_id: str) -> str | None:
        if self.settings.storage is None:
            return None
        return "/".join(p for p in (self.settings.storage_prefix.strip("/"), session_id) if p)

    async def _save_workspace(self, record: SandboxRecord) -> None:
        """After a sandbox is gone: save its workspace to storage, then remove the local copy.
        A failed save keeps the copy and is retried by the watcher: nothing is lost."""
        path = record.mount_dir
        storage = self.settings.storage
        if storage is None or not record.storage_path or not os.path.isdir(path):
            self._unsaved.pop(record.container_name, None)  # nothing (left) to save
            self._remove_workspace(path)
            return
        if record.session_ctx_id is None and not os.listdir(path):
            self._remove_workspace(path)  # a never-used sandbox: nothing to keep
            return
        saving = asyncio.ensure_future(_in_thread(storage.save, path, record.storage_path))
        self._saving[record.container_name] = saving
        try:
            sent = await asyncio.shield(saving)
        except StorageError as e:
            self.log.error("%s; the workspace stays in %s and the save is retried", e, path)
            self._unsaved[record.container_name] = record
            return
        finally:
            self._saving.pop(record.container_name, None)
        self._unsaved.pop(record.container_name, None)
        self.log.info(
            "saved %s to %s (%d file(s) sent)",
            record.container_name, storage.describe(record.storage_path), sent,
        )  # fmt: skip
        if path not in self._client_dirs:
            shutil.rmtree(path, ignore_errors=True)

    async def _retry_saves(self) -> None:
        for record in list(self._unsaved.values()):
            if record.session_ctx_id in self._restoring:
                continue  # the restore takes the local copy itself
            if record.state in (State.RELEASED, State.RECYCLED):
                await self._save_workspace(record)
            else:  # restored from its local copy meanwhile
                self._unsaved.pop(record.container_name, None)

    async def _drain_teardowns(self) -> None:
        while self._teardowns:
            await asyncio.gather(*list(self._teardowns), return_exceptions=True)

    def _remove_workspace(self, path: str) -> None:
        # Only empty workspaces go: files a sandbox wrote are its user's data.
        with contextlib.suppress(OSError):
            os.rmdir(path)

    async def get_info(self, identity: str) -> dict[str, Any]:
        return (await self._lookup(identity)).to_wire()

    async def get_status(self, identity: str) -> str | None:
        try:
            record = await self._lookup(identity)
        except SandboxNotFound:
            return None
        if record.state == State.RELEASED:
            return "removed"
        if record.state == State.RECYCLED:  # culled: being or already destroyed
            return "exited"
        return self.backend.status(record.container_id or "") or "exited"

    async def _find_live(self, identity: str) -> SandboxRecord | None:
        """The live record for `identity`, or None (start/stop answer false, as upstream)."""
        try:
            record = await self._lookup(identity)
        except SandboxNotFound:
            return None
        return record if record.state in LIVE_STATES else None

    async def start(self, identity: str) -> bool:
        """Start a stopped sandbox again: a fresh box on the same workspace."""
        record = await self._find_live(identity)
        if record is None:
            return False
        if self.backend.status(record.container_id or "") == "running":
            return True
        spec_type = registry.resolve(record.sandbox_type, record.sandbox_type)
        spec = self._spec(record, spec_type, dict(spec_type.environment))
        os.makedirs(record.mount_dir, exist_ok=True)
        if record.container_id:
            await self.backend.destroy(record.container_id)  # a crashed box's remains
        try:
            started = await self.backend.create(spec)
        except BackendError as e:
            self.log.error("starting %s failed: %s", record.container_name, e)
            return False
        if record.state not in LIVE_STATES:  # released while it was starting
            await self.backend.destroy(started.container_id)
            return False
        old = self._clients.pop(record.container_name, None)
        if old is not None:
            await old.aclose()
        record.container_id, record.url = started.container_id, started.url
        self._clients[record.container_name] = BoxClient(
            started.url, record.runtime_token, record.timeout
        )
        return True

    async def stop(self, identity: str) -> bool:
        """Stop a sandbox's processes; its record and workspace stay (status `exited`)."""
        record = await self._find_live(identity)
        if record is None:
            return False
        if record.container_id:
            await self.backend.destroy(record.container_id)
        return True

    async def check_health(self, identity: str) -> bool:
        record, client = await self._use(identity)
        return await client.healthy()

    async def list_tools(
        self, identity: str, tool_type: str | None = None, **extra: Any
    ) -> dict[str, Any]:
        record, client = await self._use(identity)
        try:
            response = await client.request("GET", "/mcp/list_tools")
            groups = response.json() if response.status_code == 200 else {}
            if response.status_code != 200:
                # The catalogue stays a dict of groups (clients iterate it); the generic tools
                # still work, and a call to a missing tool returns the box's reason.
                self.log.warning("list_tools of %s: %s", record.container_name, response.text)
        except BoxUnreachable as e:
            return tool_error(self._unreachable(record, e))
        groups["generic"] = _generic_group()
        if tool_type:
            return {tool_type: groups.get(tool_type, {})}
        return groups

    async def call_tool(
        self, identity: str, tool_name: str, arguments: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        if not isinstance(tool_name, str) or not tool_name:
            raise InvalidRequest("tool_name must be a non-empty string")
        arguments = arguments or {}
        if not isinstance(arguments, dict):
            raise InvalidRequest("arguments must be a JSON object")
        record, client = await self._use(identity)
        if tool_name in GENERIC_TOOLS:
            path, body = f"/tools/{tool_name}", arguments
        else:
            path, body = "/mcp/call_tool", {"tool_name": tool_name, "arguments": arguments}
        try:
            response = await client.request("POST", path, json=body)
        except BoxUnreachable as e:
            return tool_error(self._unreachable(record, e))
        if response.status_code != 200:
            return tool_error(_detail(response))
        return response.json()

    async def add_mcp_servers(
        self, identity: str, server_configs: dict | None = None, overwrite: bool = False
    ) -> Any:
        record, client = await self._use(identity)
        try:
            response = await client.request(
                "POST",
                "/mcp/add_servers",
                json={"server_configs": server_configs or {}, "overwrite": bool(overwrite)},
            )
        except BoxUnreachable as e:
            return tool_error(self._unreachable(record, e))
        if response.status_code != 200:
            return tool_error(_detail(response))
        return response.text

    async def overview(self) -> dict[str, Any]:
        """Pools and handed-out sandboxes, for people (the JupyterLab panel, `%sandbox list`):
        `{"pools": {type: {warm, target, starting, in_use}}, "sandboxes": [...]}`, newest
        first. Released and replaced records are left out; recycled (culled) ones stay, since
        their next use restores them."""
        pooled = {r.container_name for pool in self.pools.values() for r in pool}
        sandboxes = []
        for r in await self._all_records():
            if r.container_name in pooled or r.state in (State.RELEASED, State.REPLACED):
                continue
            sandboxes.append({
                "id": r.container_name,
                "type": r.sandbox_type,
                "state": r.state.value,
                "session": r.session_ctx_id,
                "created": r.created_at,
                "last_active": r.last_active_at,
                "desktop": "desktop" in _tools_of(r.sandbox_type),
            })  # fmt: skip
        sandboxes.sort(key=lambda s: s["created"], reverse=True)
        pools = await self.pool_status()
        for sandbox_type, pool in pools.items():
            pool["in_use"] = sum(
                1 for s in sandboxes if s["type"] == sandbox_type and s["state"] != "recycled"
            )
        return {"pools": pools, "sandboxes": sandboxes}

    async def get_session_mapping(self, session_ctx_id: str) -> list[str]:
        return await self._session_names(session_ctx_id)

    async def list_session_keys(self) -> list[str]:
        if self.state is not None:
            return await self.state.session_keys()
        return list(self.sessions)

    async def cleanup(self) -> None:
        """Destroy every sandbox this server made, pooled ones included; with shared state,
        never another server's."""
        try:
            records = await self._all_records()
            for sandbox_type, pool in self.pools.items():
                pool.clear()
                if self.state is not None:
                    await self.state.pool_take_owned(sandbox_type, self.server_id)
        except StateUnavailable as e:  # still destroy what this process knows it made
            self.log.error("%s; cleaning up the sandboxes this process knows of", e)
            records = list(self.records.values())
        doomed = [
            r for r in records if r.state in LIVE_STATES and r.server_id in (None, self.server_id)
        ]
        for record in doomed:
            self._retire(record)
        await self._drain_teardowns()
        if doomed:
            self.log.info("destroyed %d sandbox(es)", len(doomed))
        if not self._closing:
            for sandbox_type in self.pools:
                self._refill(sandbox_type)

    # -- proxy -------------------------------------------------------------------------------

    async def open_proxy(
        self,
        identity: str,
        method: str,
        path: str,
        params: Any,
        headers: dict[str, str],
        body: bytes | None,
    ):
        """Forward one request to the box's workspace API; the caller streams the reply."""
        record, client = await self._use(identity)
        try:
            return await client.stream(method, "/" + path.lstrip("/"), params, headers, body)
        except BoxUnreachable as e:
            raise BackendError(self._unreachable(record, e)) from e

    # -- the desktop (gui): the box serves noVNC and a VNC websocket bridge -----------------

    async def desktop_password_matches(self, identity: str, given: str) -> bool:
        """Is `given` the sandbox's own token (the `password` of the SDK's `desktop_url`)?"""
        try:
            record = await self._lookup(identity)
        except SandboxNotFound:
            return False
        return hmac.compare_digest(given.encode(), record.runtime_token.encode())

    async def desktop_token(self, identity: str) -> str:
        """The sandbox's token, to set as the desktop's cookie once a caller proved access."""
        return (await self._lookup(identity)).runtime_token

    async def open_desktop(
        self, identity: str, path: str, params: Any, headers: dict[str, str]
    ) -> Any:
        """GET one file of the sandbox's noVNC page; the caller streams the reply."""
        if not path.startswith("vnc/"):
            raise SandboxNotFound(f"{identity}/{path} (the desktop serves vnc/ only)")
        await self._with_desktop(identity)
        return await self.open_proxy(identity, "GET", path, params, headers, None)

    async def open_desktop_socket(self, identity: str, subprotocols: list[str]) -> Any:
        """A websocket to the sandbox's VNC server (through its box)."""
        await self._with_desktop(identity)
        record, client = await self._use(identity)
        try:
            return await client.websocket("/websockify", subprotocols=subprotocols)
        except BoxUnreachable as e:
            raise BackendError(self._unreachable(record, e)) from e

    async def open_kernel_socket(self, identity: str) -> Any:
        """A websocket to the sandbox's IPython kernel (the box's Jupyter-protocol bridge,
        the one `run_ipython_cell` uses); renews the session's lease like any call."""
        record, client = await self._use(identity)
        try:
            return await client.websocket("/kernel/channels")
        except BoxUnreachable as e:
            raise BackendError(self._unreachable(record, e)) from e

    async def _with_desktop(self, identity: str) -> None:
        record = await self._lookup(identity)
        if "desktop" not in _tools_of(record.sandbox_type):
            raise SandboxNotFound(f"{identity} has no desktop (its type is {record.sandbox_type})")

    def _unreachable(self, record: SandboxRecord, error: Exception) -> str:
        status = self.backend.status(record.container_id or "") or "exited"
        if status != "running":
            detail = self.backend.describe(record.container_id or "")
            status += f"; {detail}" if detail else ""
            return f"Sandbox {record.container_name} is not running (status: {status})."
        return f"Sandbox {record.container_name} did not answer: {error}"


def _tools_of(sandbox_type: str) -> tuple[str, ...]:
    """The built-in tool groups of a type (none for a type this process does not know)."""
    try:
        return registry.resolve(sandbox_type, sandbox_type).tools
    except registry.UnknownSandboxType:
        return ()


async def _in_thread(fn: Any, *args: Any) -> Any:
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


def _move_workspace(source: str, target: str) -> None:
    """Move a culled sandbox's files into its successor's (empty) workspace."""
    if not os.path.isdir(source) or os.path.realpath(source) == os.path.realpath(target):
        return
    for entry in os.listdir(source):
        os.replace(os.path.join(source, entry), os.path.join(target, entry))
    with contextlib.suppress(OSError):
        os.rmdir(source)


def _detail(response: Any) -> str:
    try:
        return str(response.json().get("detail") or response.text)
    except ValueError:
        return response.text or f"HTTP {response.status_code}"
