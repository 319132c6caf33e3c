"""Sandboxes from a notebook: the ``%sandbox`` magics and ipywidgets views.

Load the magics with ``%load_ext jupyter_sandbox``; the server is found by
:func:`jupyter_sandbox.discovery.find_server` (``JUPYTER_SANDBOX_URL``/``TOKEN``, else the
running Jupyter server with the extension) or set with ``%sandbox connect URL --token T``.

- ``%sandbox open [TYPE] [--name NAME]``, ``list``, ``tools``, ``run NAME -- CMD``,
  ``close NAME|--all``, ``connect [URL]``; ``%%sandbox [NAME]`` runs a cell in a sandbox.
- :mod:`jupyter_sandbox.notebook.widgets` (needs ``ipywidgets>=8``): ``SandboxCard``,
  ``BrowserView``, ``DesktopView``, ``ShellWidget``.
- :func:`get_sandbox` returns an SDK object the magics opened, for use from Python.

Sandboxes a kernel opens are released when it shuts down.
"""

from __future__ import annotations

from .magics import (
    SandboxMagics,
    get_sandbox,
    load_ipython_extension,
    unload_ipython_extension,
)

__all__ = ["SandboxMagics", "get_sandbox", "load_ipython_extension", "unload_ipython_extension"]
