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

_VALID_NAME = re.compile(r"^[a-z][a-z0-9_]{0,40}$")


class UnknownSandboxType(ValueError):
    """Raised for a type nobody registered."""

    def __init__(self, name: str, known: list[str]):
        self.name = name
        super().__init__(
            f"'{name}' is not a valid sandbox type; known types: {', '.join(sorted(known))}"
        )


@dataclass(frozen=True)
class SandboxType:
    """What the manager needs to know to make a sandbox of one type."""

    name: str
    custom_image: str | None = None
    description: str = ""
    environment: dict[str, str] = field(default_factory=dict)

    @property
    def image(self) -> str:
        # Resolved on use: an --env-file may set RUNTIME_SANDBOX_* after this was registered.
        return self.custom_image or image_name(f"runtime-sandbox-{self.name}")


def image_name(short: str) -> str:
    """`{registry/}{namespace}/{short}:{tag}`, from the seed's RUNTIME_SANDBOX_* variables.

    Clients (the official `SandboxService`) find a sandbox's class by looking for the type
    name inside this string, so it must keep the `runtime-sandbox-<type>` form.
    """
    registry = os.environ.get("RUNTIME_SANDBOX_REGISTRY", "")
    namespace = os.environ.get("RUNTIME_SANDBOX_IMAGE_NAMESPACE", "agentscope")
    tag = os.environ.get("RUNTIME_SANDBOX_IMAGE_TAG", "latest")
    prefix = f"{registry}/" if registry else ""
    return f"{prefix}{namespace}/{short}:{tag}"


_types: dict[str, SandboxType] = {}


def register_sandbox_type(
    name: str,
    image: str | None = None,
    description: str = "",
    environment: dict[str, str] | None = None,
) -> SandboxType:
    """Register (or replace) a sandbox type; `name_async` becomes an alias automatically."""
    if not _VALID_NAME.match(name) or name.endswith("_async"):
        raise ValueError(
            f"invalid sandbox type name {name!r}: use lowercase letters, digits and '_', "
            "starting with a letter, without the '_async' suffix (it is added automatically)"
        )
    spec = SandboxType(
        name=name,
        custom_image=image,
        description=description,
        environment=dict(environment or {}),
    )
    _types[name] = spec
    return spec


def resolve(name: str | None, default: str) -> SandboxType:
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
register_sandbox_type("filesystem", description="Base tools plus file tools on /workspace.")
register_sandbox_type("browser", description="Base tools plus a headless Chromium.")
register_sandbox_type("gui", description="Base tools plus a virtual desktop.")
