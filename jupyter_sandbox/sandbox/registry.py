"""`@SandboxRegistry.register(...)`: custom sandbox types, as the official runtime declares them.

The decorator registers the type with the server's registry (so `--extension my_box.py`
gives it a pool and makes it a valid `sandbox_type`) and remembers the class for the SDK
(so `MyBox()` asks for its own type). `SandboxType` is an open set of type names: registering
a new type adds a member, as upstream's `DynamicEnum` does.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..manager import registry as _server_registry
from .constant import TIMEOUT


class _SandboxTypeMeta(type):
    _members: dict[str, SandboxType]

    def __iter__(cls) -> Iterator[SandboxType]:
        return iter(list(cls._members.values()))

    def __len__(cls) -> int:
        return len(cls._members)

    def __contains__(cls, value: object) -> bool:
        return str(getattr(value, "value", value)) in {m.value for m in cls._members.values()}

    def __getattr__(cls, name: str) -> SandboxType:
        try:
            return cls.__dict__["_members"][name]
        except KeyError:
            raise AttributeError(name) from None


class SandboxType(str, metaclass=_SandboxTypeMeta):
    """A sandbox type name: `SandboxType.BASE`, `SandboxType("base")`, and a plain `str`."""

    _members: ClassVar[dict[str, SandboxType]] = {}

    def __new__(cls, value: Any) -> SandboxType:
        if isinstance(value, SandboxType):
            return value
        for member in cls._members.values():
            if member.value == value:
                return member
        raise ValueError(f"{value!r} is not a valid SandboxType")

    @classmethod
    def add_member(cls, name: str, value: str | None = None) -> SandboxType:
        value = value if value is not None else name.lower()
        member = str.__new__(cls, value)
        member._name = name  # type: ignore[attr-defined]
        cls._members[name] = member
        return member

    @property
    def value(self) -> str:
        return str.__str__(self)

    @property
    def name(self) -> str:
        return self._name  # type: ignore[attr-defined]

    def __repr__(self) -> str:
        return f"<SandboxType.{self.name}: {self.value!r}>"

    def __str__(self) -> str:
        return self.value


for _name in ("base", "filesystem", "browser", "gui"):
    SandboxType.add_member(_name.upper())
    SandboxType.add_member(f"{_name.upper()}_ASYNC")


def build_image_uri(
    image_name: str,
    tag: str | None = None,
    registry: str | None = None,
    namespace: str | None = None,
) -> str:
    """`{registry/}{namespace}/{image_name}:{tag}`; unset parts come from the seed's
    RUNTIME_SANDBOX_REGISTRY / _IMAGE_NAMESPACE / _IMAGE_TAG variables."""
    registry = os.environ.get("RUNTIME_SANDBOX_REGISTRY", "") if registry is None else registry
    namespace = namespace or os.environ.get("RUNTIME_SANDBOX_IMAGE_NAMESPACE", "agentscope")
    tag = tag or os.environ.get("RUNTIME_SANDBOX_IMAGE_TAG", "latest")
    prefix = f"{registry.strip()}/" if registry and registry.strip() else ""
    return f"{prefix}{namespace}/{image_name}:{tag}"


@dataclass
class SandboxConfig:
    """What one registration said."""

    image_name: str
    sandbox_type: SandboxType
    resource_limits: dict[str, Any] = field(default_factory=dict)
    security_level: str = "medium"
    timeout: float = TIMEOUT
    description: str = ""
    environment: dict[str, Any] = field(default_factory=dict)
    runtime_config: dict[str, Any] = field(default_factory=dict)


class SandboxRegistry:
    """Registered sandbox classes and their configuration."""

    _registry: ClassVar[dict[type, SandboxConfig]] = {}
    _type_registry: ClassVar[dict[SandboxType, type]] = {}

    @classmethod
    def register(
        cls,
        image_name: str,
        sandbox_type: SandboxType | str,
        resource_limits: dict[str, Any] | None = None,
        security_level: str = "medium",
        timeout: float = TIMEOUT,
        description: str = "",
        environment: dict[str, Any] | None = None,
        runtime_config: dict[str, Any] | None = None,
        tools: tuple[str, ...] | list[str] = (),
        mcp_servers: dict[str, Any] | None = None,
    ) -> Callable[[type], type]:
        """Class decorator: register `sandbox_type` (a lowercase name) served from
        `image_name` (Docker), with its own limits (`{"memory": "2g", "cpu": 1.5}`), tool-call
        timeout in seconds, environment, and extra container settings (`runtime_config`).
        Ours only: built-in tool groups (`tools`) and `mcp_servers` its boxes start."""

        def decorator(target: type) -> type:
            value = getattr(sandbox_type, "value", sandbox_type)
            if not isinstance(value, str):
                raise TypeError(f"sandbox_type must be a string, not {sandbox_type!r}")
            canonical = value.removesuffix("_async")
            config = SandboxConfig(
                image_name=image_name,
                sandbox_type=value,  # type: ignore[arg-type] - made a member below
                resource_limits=dict(resource_limits or {}),
                security_level=security_level,
                timeout=timeout,
                description=description,
                environment=dict(environment or {}),
                runtime_config=dict(runtime_config or {}),
            )
            _server_registry.register_sandbox_type(
                canonical,
                image=image_name,
                description=description,
                environment=config.environment,
                timeout=timeout,
                resource_limits=config.resource_limits,
                runtime_config=config.runtime_config,
                security_level=security_level,
                tools=tools,
                mcp_servers=mcp_servers,
            )
            for name in (canonical, f"{canonical}_async"):
                if name not in SandboxType:
                    SandboxType.add_member(name.upper(), name)
            member = SandboxType(value)
            config.sandbox_type = member
            cls._registry[target] = config
            cls._type_registry[member] = target
            target._registered_sandbox_type = member.value  # type: ignore[attr-defined]
            return target

        return decorator

    @classmethod
    def get_config(cls, target: type) -> SandboxConfig | None:
        return cls._registry.get(target)

    @classmethod
    def get_image(cls, target: type) -> str | None:
        config = cls.get_config(target)
        return config.image_name if config else None

    @classmethod
    def get_classes_by_type(cls, sandbox_type: SandboxType | str) -> type | None:
        return cls._type_registry.get(SandboxType(sandbox_type))

    @classmethod
    def get_config_by_type(cls, sandbox_type: SandboxType | str) -> SandboxConfig | None:
        target = cls.get_classes_by_type(sandbox_type)
        return cls.get_config(target) if target else None

    @classmethod
    def get_image_by_type(cls, sandbox_type: SandboxType | str) -> str | None:
        target = cls.get_classes_by_type(sandbox_type)
        return cls.get_image(target) if target else None

    @classmethod
    def list_all_sandboxes(cls) -> dict[type, SandboxConfig]:
        return dict(cls._registry)
