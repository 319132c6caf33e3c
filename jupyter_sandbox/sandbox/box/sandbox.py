"""``Sandbox``, as in ``agentscope_runtime.sandbox.box.sandbox``."""

from ...client import Sandbox, SandboxAsync

__all__ = ["Sandbox", "SandboxAsync"]
