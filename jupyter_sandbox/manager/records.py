"""The sandbox record: everything the manager knows about one sandbox.

Its public fields are exactly upstream's `ContainerModel` (wire §1.3.4 / §4.1), which
`get_info` returns and clients rely on (`runtime_token`, `url`, `version`, `state`,
`session_ctx_id`).
"""

from __future__ import annotations

import secrets
import string
import time
from dataclasses import asdict, dataclass, field, fields
from enum import Enum
from typing import Any

_ID_ALPHABET = string.digits + string.ascii_lowercase


class State(str, Enum):
    WARM = "warm"  # in a pool, or made without a session
    RUNNING = "running"  # bound to a session
    RECYCLED = "recycled"
    REPLACED = "replaced"
    RELEASED = "released"
    ERROR = "error"


LIVE_STATES = (State.WARM, State.RUNNING)


def new_session_id() -> str:
    """25 lowercase alphanumerics, like upstream's shortuuid ids."""
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(25))


@dataclass
class SandboxRecord:
    session_id: str
    container_name: str
    sandbox_type: str
    version: str
    runtime_token: str
    mount_dir: str
    timeout: float
    container_id: str | None = None
    url: str | None = None
    ports: list[int] = field(default_factory=list)
    storage_path: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    state: State = State.WARM
    session_ctx_id: str | None = None
    last_active_at: float | None = None
    recycled_at: float | None = None
    released_at: float | None = None
    updated_at: float = field(default_factory=time.time)
    recycle_reason: str | None = None
    redirect_to: str | None = None
    created_at: float = field(default_factory=time.time)
    server_id: str | None = None  # the server process that made it (and tears it down)
    host: str | None = None  # the host of that process (shared state spans hosts)

    def bind(self, meta: dict[str, Any] | None) -> None:
        """Attach the caller's meta; a `session_ctx_id` makes the sandbox RUNNING."""
        self.meta = dict(meta or {})
        self.session_ctx_id = self.meta.get("session_ctx_id") or None
        now = time.time()
        if self.session_ctx_id:
            self.state = State.RUNNING
            self.last_active_at = now
        self.updated_at = now

    def touch(self) -> None:
        self.last_active_at = self.updated_at = time.time()

    def to_wire(self) -> dict[str, Any]:
        """The ContainerModel dict of `get_info`."""
        data = self.to_store()
        for private in ("created_at", "server_id", "host"):
            data.pop(private)
        return data

    def to_store(self) -> dict[str, Any]:
        """Everything, as JSON-ready data (the shared state keeps records this way)."""
        data = asdict(self)
        data["state"] = self.state.value
        return data

    @classmethod
    def from_store(cls, data: dict[str, Any]) -> SandboxRecord:
        known = {f.name for f in fields(cls)}
        record = cls(**{k: v for k, v in data.items() if k in known})
        record.state = State(record.state)
        return record
