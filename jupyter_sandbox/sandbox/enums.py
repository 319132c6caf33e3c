"""``SandboxType``, as in ``agentscope_runtime.sandbox.enums``."""

from .registry import SandboxType

__all__ = ["SandboxType"]
