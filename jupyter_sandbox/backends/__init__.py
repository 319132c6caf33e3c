"""Backends: where sandboxes run (`local` bubblewrap jails, `docker` containers,
`kubernetes` pods)."""

from .base import (
    Backend,
    BackendError,
    BackendUnavailable,
    Limits,
    SandboxSpec,
    Started,
    parse_size,
)

__all__ = [
    "Backend",
    "BackendError",
    "BackendUnavailable",
    "Limits",
    "SandboxSpec",
    "Started",
    "parse_size",
]
