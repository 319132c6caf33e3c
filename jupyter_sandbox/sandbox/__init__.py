"""Custom sandbox types, with the module layout of ``agentscope_runtime.sandbox``.

Code written for the official runtime works after replacing ``agentscope_runtime`` with
``jupyter_sandbox`` in its imports::

    from jupyter_sandbox.sandbox.registry import SandboxRegistry
    from jupyter_sandbox.sandbox.enums import SandboxType
    from jupyter_sandbox.sandbox.box.sandbox import Sandbox
    from jupyter_sandbox.sandbox.utils import build_image_uri
    from jupyter_sandbox.sandbox.constant import TIMEOUT

The SDK classes themselves live in :mod:`jupyter_sandbox.client`; they are re-exported here as
they are from ``agentscope_runtime.sandbox``.
"""

from ..client import (
    BaseSandbox,
    BaseSandboxAsync,
    BrowserSandbox,
    BrowserSandboxAsync,
    FilesystemSandbox,
    FilesystemSandboxAsync,
    GuiSandbox,
    GuiSandboxAsync,
    Sandbox,
    SandboxAsync,
)
from .registry import SandboxConfig, SandboxRegistry, SandboxType, build_image_uri

__all__ = [
    "BaseSandbox",
    "BaseSandboxAsync",
    "BrowserSandbox",
    "BrowserSandboxAsync",
    "FilesystemSandbox",
    "FilesystemSandboxAsync",
    "GuiSandbox",
    "GuiSandboxAsync",
    "Sandbox",
    "SandboxAsync",
    "SandboxConfig",
    "SandboxRegistry",
    "SandboxType",
    "build_image_uri",
]
