"""``build_image_uri``, as in ``agentscope_runtime.sandbox.utils``."""

from .registry import build_image_uri

__all__ = ["build_image_uri"]
