"""Shared state in Redis: what several server processes (one host or many) need to serve one
fleet of sandboxes. Key names follow the seed's (wire §4.6), so its tooling can read them:

| key | type | content |
|---|---|---|
| `<container name>` | string | the record (ContainerModel JSON, plus `server_id`, its owner) |
| `session_mapping:<session_ctx_id>` | string | JSON list of container names |
| `<pool_key>:<type>` | list | records (JSON) of warm sandboxes, oldest first |
| `<port_key>` | set | host ports published by sandboxes |
| `jupyter-sandbox:lock:<name>` | string | a lease lock's owner; expires |

Every failure to reach Redis raises `StateUnavailable`, which the HTTP layer answers with
503; redis-py reconnects by itself once Redis is back.
"""

from __future__ import annotations

import json
from typing import Any

DEFAULT_POOL_KEY = "_runtime_sandbox_container_container_pool"
DEFAULT_PORT_KEY = "_runtime_sandbox_container_occupied_ports"
SESSION_PREFIX = "session_mapping:"
LOCK_PREFIX = "jupyter-sandbox:lock:"

# Renew or release a lock only if we still own it (a compare-and-set in one step).
_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('expire', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
"""


class StateUnavailable(RuntimeError):
    """Redis does not answer; the message names it (never with its password)."""


class SharedState:
    """Records, sessions, pools, ports and locks in Redis."""

    def __init__(
        self,
        url: str,
        container_prefix: str,
        pool_key: str = DEFAULT_POOL_KEY,
        port_key: str = DEFAULT_PORT_KEY,
    ):
        import redis.asyncio

        self._errors = (redis.RedisError, OSError)
        self.redis = redis.asyncio.from_url(
            url,
            decode_responses=True,
            socket_timeout=3,
            socket_connect_timeout=2,
            health_check_interval=10,
        )
        self.prefix = container_prefix
        self.pool_key = pool_key
        self.port_key = port_key
        kw = self.redis.connection_pool.connection_kwargs
        self.where = f"redis://{kw.get('host', '?')}:{kw.get('port', '?')}/{kw.get('db', 0)}"

    async def _call(self, coro: Any) -> Any:
        try:
            return await coro
        except self._errors as e:
            raise StateUnavailable(f"shared state ({self.where}) is unreachable: {e}") from None

    async def ping(self) -> None:
        await self._call(self.redis.ping())

    async def close(self) -> None:
        await self.redis.aclose()

    # -- records -----------------------------------------------------------------------------

    async def get_record(self, name: str) -> dict[str, Any] | None:
        if not name.startswith(self.prefix):
            return None  # only sandbox names live at the top level
        raw = await self._call(self.redis.get(name))
        return json.loads(raw) if raw else None

    async def put_record(self, data: dict[str, Any]) -> None:
        await self._call(self.redis.set(data["container_name"], json.dumps(data)))

    async def delete_record(self, name: str) -> None:
        await self._call(self.redis.delete(name))

    async def scan_records(self) -> list[dict[str, Any]]:
        async def scan() -> list[dict[str, Any]]:
            names = [n async for n in self.redis.scan_iter(match=f"{self.prefix}*", count=500)]
            values = await self.redis.mget(names) if names else []
            out = []
            for value in values:
                try:
                    data = json.loads(value) if value else None
                except ValueError:
                    continue
                if isinstance(data, dict) and "container_name" in data:
                    out.append(data)
            return out

        return await self._call(scan())

    # -- sessions ----------------------------------------------------------------------------

    async def get_session(self, session: str) -> list[str]:
        raw = await self._call(self.redis.get(SESSION_PREFIX + session))
        return json.loads(raw) if raw else []

    async def set_session(self, session: str, names: list[str]) -> None:
        key = SESSION_PREFIX + session
        if names:
            await self._call(self.redis.set(key, json.dumps(names)))
        else:
            await self._call(self.redis.delete(key))

    async def session_keys(self) -> list[str]:
        async def scan() -> list[str]:
            return [
                k[len(SESSION_PREFIX) :]
                async for k in self.redis.scan_iter(match=f"{SESSION_PREFIX}*", count=500)
            ]

        return await self._call(scan())

    # -- pools -------------------------------------------------------------------------------

    async def pool_push(self, sandbox_type: str, data: dict[str, Any]) -> None:
        await self._call(self.redis.rpush(f"{self.pool_key}:{sandbox_type}", json.dumps(data)))

    async def pool_pop(self, sandbox_type: str) -> dict[str, Any] | None:
        raw = await self._call(self.redis.lpop(f"{self.pool_key}:{sandbox_type}"))
        return json.loads(raw) if raw else None

    async def pool_len(self, sandbox_type: str) -> int:
        return int(await self._call(self.redis.llen(f"{self.pool_key}:{sandbox_type}")))

    async def pool_take_owned(self, sandbox_type: str, server_id: str) -> list[dict[str, Any]]:
        """Remove and return the pool entries a server made (it is shutting down)."""
        key = f"{self.pool_key}:{sandbox_type}"
        entries = await self._call(self.redis.lrange(key, 0, -1))
        taken = []
        for raw in entries:
            data = json.loads(raw)
            if data.get("server_id") != server_id:
                continue
            if await self._call(self.redis.lrem(key, 1, raw)):
                taken.append(data)
        return taken

    # -- lease locks -------------------------------------------------------------------------

    async def acquire(self, name: str, owner: str, ttl: float) -> bool:
        """Take the lock, or renew it if `owner` already holds it."""
        key = LOCK_PREFIX + name
        seconds = max(1, int(ttl))
        if await self._call(self.redis.set(key, owner, nx=True, ex=seconds)):
            return True
        return bool(await self._call(self.redis.eval(_RENEW, 1, key, owner, seconds)))

    async def release(self, name: str, owner: str) -> None:
        await self._call(self.redis.eval(_RELEASE, 1, LOCK_PREFIX + name, owner))


class SharedPortSet:
    """The seed's set of published host ports (`<port_key>`), for the Docker backend's port
    allocator. Synchronous: the allocator runs on the backend's worker threads."""

    def __init__(self, url: str, port_key: str = DEFAULT_PORT_KEY):
        import redis

        self._errors = (redis.RedisError, OSError)
        self.redis = redis.Redis.from_url(url, socket_timeout=3, socket_connect_timeout=2)
        self.key = port_key

    def add(self, port: int) -> bool:
        try:
            return bool(self.redis.sadd(self.key, port))
        except self._errors as e:
            raise StateUnavailable(f"shared state is unreachable: {e}") from None

    def remove(self, port: int) -> None:
        try:
            self.redis.srem(self.key, port)
        except self._errors as e:
            raise StateUnavailable(f"shared state is unreachable: {e}") from None
