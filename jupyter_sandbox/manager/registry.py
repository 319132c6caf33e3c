"""The sandbox type registry: which types exist, their image names and defaults.

A *type* is what a client asks for (`base`, `filesystem`, …). Each upstream type also has an
`_async` twin that the official async SDK sends (`base_async`); both resolve to one canonical
type here, so they share one warm pool. Custom types are registered by modules loaded with
`--extension` through :func:`register_sandbox_type`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any

from ..backends.base import parse_size
from ..box.toolgroups import BUILTIN as BUILTIN_GROUPS

_VALID_NAME = re.compile(r"^[a-z][a-z0-9_]{0,40}$")


class UnknownSandboxType(ValueError):
    """Raised for a type nobody registered."""

    def __init__(self, name: str, known: list[str]):
        self.name = name
        super().__init__(
            f"'{name}' is not a valid sandbox type; known types: {', '.join(sorted(known))}"
        )


@dataclass(frozen=True)
class TypeSpec:
    """What the manager needs to know to make a sandbox of one type."""

    name: str
    custom_image: str | None = None
    description: str = ""
    environment: dict[str, str] = field(default_factory=dict)
    timeout: float | None = None  # seconds a tool call may run; None: SandboxApp.call_timeout
    memory: str | None = None  # e.g. "2g"; None: SandboxApp.memory_limit
    cpus: float | None = None  # None: SandboxApp.cpu_limit
    pids: int | None = None  # None: SandboxApp.pids_limit
    security_level: str = "medium"  # informational, as upstream
    runtime_config: dict[str, Any] = field(default_factory=dict)  # backend extras (Docker)
    tools: tuple[str, ...] = ()  # built-in tool groups the box serves (box/toolgroups.py)
    mcp_servers: dict[str, Any] = field(default_factory=dict)  # started in every box of the type

    @property
    def image(self) -> str:
        # Resolved on use: an --env-file may set RUNTIME_SANDBOX_* after this was registered.
        return self.custom_image or image_name(f"runtime-sandbox-{self.name}")


_image_settings: dict[str, str] = {}


def configure_images(registry: str, namespace: str, tag: str) -> None:
    """Set the parts of built-in image names (SandboxApp.image_registry/_namespace/_tag)."""
    _image_settings.update(registry=registry, namespace=namespace, tag=tag)


def image_name(short: str) -> str:
    """`{registry/}{namespace}/{short}:{tag}`, from `configure_images`, else from the seed's
    RUNTIME_SANDBOX_REGISTRY / _IMAGE_NAMESPACE / _IMAGE_TAG variables.

    Clients (the official `SandboxService`) find a sandbox's class by looking for the type
    name inside this string, so it must keep the `runtime-sandbox-<type>` form.
    """
    registry = _image_settings.get("registry", os.environ.get("RUNTIME_SANDBOX_REGISTRY", ""))
    namespace = _image_settings.get(
        "namespace", os.environ.get("RUNTIME_SANDBOX_IMAGE_NAMESPACE", "agentscope")
    )
    tag = _image_settings.get("tag", os.environ.get("RUNTIME_SANDBOX_IMAGE_TAG", "latest"))
    prefix = f"{registry.strip()}/" if registry.strip() else ""
    return f"{prefix}{namespace}/{short}:{tag}"


_types: dict[str, TypeSpec] = {}


def register_sandbox_type(
    name: str,
    image: str | None = None,
    description: str = "",
    environment: dict[str, str | None] | None = None,
    *,
    timeout: float | None = None,
    resource_limits: dict[str, Any] | None = None,
    runtime_config: dict[str, Any] | None = None,
    security_level: str = "medium",
    tools: tuple[str, ...] | list[str] = (),
    mcp_servers: dict[str, Any] | None = None,
) -> TypeSpec:
    """Register (or replace) a sandbox type; `name_async` becomes an alias automatically.

    `resource_limits` takes upstream's keys, `memory` ("2g") and `cpu` (1.5), and our `pids`
    (1024); they replace the server-wide limits for this type on every backend. Environment
    values that are None (an unset `os.getenv`) are left out.

    `tools` names built-in tool groups (`filesystem`, `browser`, `desktop`) the type's boxes
    serve; `mcp_servers` (`{"mcpServers": {name: config}}`, as `add_mcp_servers` takes) are
    started in every box of the type while it warms up, so a custom type can ship MCP tools.
    """
    if not _VALID_NAME.match(name) or name.endswith("_async"):
        raise ValueError(
            f"invalid sandbox type name {name!r}: use lowercase letters, digits and '_', "
            "starting with a letter, without the '_async' suffix (it is added automatically)"
        )
    limits = dict(resource_limits or {})
    unknown = set(limits) - {"memory", "cpu", "pids"}
    if unknown:
        raise ValueError(f"resource_limits of {name!r}: unknown key(s) {sorted(unknown)}; "
                         "use 'memory' (e.g. '2g'), 'cpu' (e.g. 1.5) and 'pids' (e.g. 1024)")
    if "memory" in limits:
        parse_size(limits["memory"])  # raises ValueError for a bad size
    cpus = float(limits["cpu"]) if "cpu" in limits else None
    if cpus is not None and not cpus > 0:
        raise ValueError(f"resource_limits of {name!r}: cpu must be > 0")
    pids = int(limits["pids"]) if "pids" in limits else None
    if pids is not None and pids < 16:
        raise ValueError(f"resource_limits of {name!r}: pids must be at least 16")
    if timeout is not None and not float(timeout) > 0:
        raise ValueError(f"timeout of {name!r} must be > 0 seconds")
    unknown_groups = [t for t in tools if t not in BUILTIN_GROUPS]
    if unknown_groups:
        raise ValueError(f"tools of {name!r}: unknown group(s) {unknown_groups}; "
                         f"built-in groups: {', '.join(BUILTIN_GROUPS)}")
    if mcp_servers is not None and not isinstance(mcp_servers.get("mcpServers"), dict):
        raise ValueError(
            f"mcp_servers of {name!r} must look like {{'mcpServers': {{name: config}}}}"
        )
    spec = TypeSpec(
        name=name,
        custom_image=image,
        description=description,
        environment={k: str(v) for k, v in (environment or {}).items() if v is not None},
        timeout=float(timeout) if timeout is not None else None,
        memory=str(limits["memory"]) if "memory" in limits else None,
        cpus=cpus,
        pids=pids,
        security_level=security_level,
        runtime_config=dict(runtime_config or {}),
        tools=tuple(tools),
        mcp_servers=dict(mcp_servers or {}),
    )
    _types[name] = spec
    return spec


def resolve(name: str | None, default: str) -> TypeSpec:
    """The canonical type for a requested name (`None` → `default`, `x_async` → `x`)."""
    requested = name or default
    canonical = requested.removesuffix("_async")
    try:
        return _types[canonical]
    except KeyError:
        raise UnknownSandboxType(requested, known_names()) from None


def known_names() -> list[str]:
    """Every accepted type value, the `_async` aliases included."""
    return [n for t in _types for n in (t, f"{t}_async")]


def is_known(name: str) -> bool:
    return name.removesuffix("_async") in _types


register_sandbox_type("base", description="Shell commands and a Python (IPython) kernel.")
register_sandbox_type(
    "filesystem", description="Base tools plus file tools on /workspace.", tools=["filesystem"]
)
register_sandbox_type(
    "browser",
    description="Base tools plus a headless Chromium driven by Playwright.",
    tools=["browser"],
    resource_limits={"pids": 1024},  # Chromium runs a few processes of many threads each
)
register_sandbox_type(
    "gui",
    description="Base tools plus a virtual desktop (Xvfb, VNC) and the `computer` tool.",
    tools=["desktop"],
    resource_limits={"pids": 1024},  # room for a browser on the desktop
)
