"""Backends: where sandboxes run (`local` bubblewrap jails; Docker and Kubernetes later)."""

from .base import Backend, BackendError, BackendUnavailable, Limits, SandboxSpec, Started

__all__ = ["Backend", "BackendError", "BackendUnavailable", "Limits", "SandboxSpec", "Started"]
