"""The manager layer: sandbox types, records, warm pools and the wire RPCs."""

from .manager import InvalidRequest, ManagerSettings, SandboxManager, SandboxNotFound
from .registry import UnknownSandboxType, register_sandbox_type

__all__ = [
    "InvalidRequest",
    "ManagerSettings",
    "SandboxManager",
    "SandboxNotFound",
    "UnknownSandboxType",
    "register_sandbox_type",
]
