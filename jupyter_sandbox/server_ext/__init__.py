"""The HTTP layer: tornado handlers for the wire API, mounted by SandboxApp."""

from .handlers import route_table

__all__ = ["route_table"]
