"""jupyter-sandbox: warm pools of isolated sandboxes for AI-agent tools, inside Jupyter."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

# Names served lazily by __getattr__, with the module that defines them. Nothing is imported
# eagerly: the box (inside a sandbox image) imports this package and has none of the server's
# dependencies.
_LAZY = {
    "register_sandbox_type": ".manager.registry",
    "SandboxRegistry": ".sandbox.registry",
    "SandboxType": ".sandbox.registry",
    "build_image_uri": ".sandbox.registry",
}


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    from .app import SandboxApp

    return [{"module": "jupyter_sandbox.app", "app": SandboxApp}]


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    """The JupyterLab panel's built assets (for `jupyter labextension develop`)."""
    return [{"src": "labextension", "dest": "jupyter-sandbox"}]


def load_ipython_extension(ipython: Any) -> None:
    """`%load_ext jupyter_sandbox`: the `%sandbox` / `%%sandbox` magics (see `.notebook`)."""
    from .notebook.magics import load_ipython_extension as load

    load(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    """`%unload_ext jupyter_sandbox`: release the kernel's sandboxes, remove the magics."""
    from .notebook.magics import unload_ipython_extension as unload

    unload(ipython)


def __getattr__(name: str) -> Any:
    # The SDK is imported lazily so that the server and the box do not pay for it.
    if name.startswith("_") or name == "client":
        raise AttributeError(f"module 'jupyter_sandbox' has no attribute {name!r}")
    import importlib

    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    client = importlib.import_module(".client", __name__)
    if name in client.__all__:
        return getattr(client, name)
    raise AttributeError(f"module 'jupyter_sandbox' has no attribute {name!r}")


__all__ = [  # resolved lazily through __getattr__
    "__version__",
    "register_sandbox_type",
    "SandboxRegistry",
    "SandboxType",
    "build_image_uri",
    "Sandbox",
    "BaseSandbox",
    "FilesystemSandbox",
    "BrowserSandbox",
    "GuiSandbox",
    "SandboxAsync",
    "BaseSandboxAsync",
    "FilesystemSandboxAsync",
    "BrowserSandboxAsync",
    "GuiSandboxAsync",
    "SandboxError",
    "AuthenticationError",
    "SandboxNotFoundError",
    "NoSandboxAvailableError",
    "SandboxServerError",
]
