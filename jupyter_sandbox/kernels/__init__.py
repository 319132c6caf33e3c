"""Sandbox kernels: "Python 3 (sandbox: <type>)" kernelspecs whose kernels run in a sandbox.

A notebook on such a kernel runs its cells in a fresh sandbox of the type, claimed from the
sandbox server's pool when the kernel starts and released when it shuts down. People see
exactly what an agent's tools see: cwd ``/workspace``, the sandbox's files and network, none of
the host's files. The kernel *is* the sandbox's IPython kernel, the one ``run_ipython_cell``
runs in, so a notebook and an agent working on the same sandbox share variables.

How it works (any Jupyter frontend, no server-side changes):

* The kernelspec's argv starts a *kernel proxy* on the Jupyter host,
  ``python -m jupyter_sandbox.kernels -f {connection_file} --type <type>``
  (:mod:`jupyter_sandbox.kernels.proxy`). It binds the five ZMQ sockets of the connection file
  (answering heartbeats itself), finds the sandbox server (:func:`jupyter_sandbox.discovery.
  find_server`: ``JUPYTER_SANDBOX_URL``/``JUPYTER_SANDBOX_TOKEN``, else a running Jupyter server
  with the extension), claims a sandbox with the SDK, and relays messages between the frontend
  and the server's ``WS <base>/kernels/<sandbox id>/channels``, re-signing them with the
  connection file's key. The server relays that websocket to the box's ``/kernel/channels``
  (:mod:`jupyter_sandbox.box.kernel_channels`), which bridges to the kernel's channels.
* Interrupt: the kernelspec says ``interrupt_mode: signal``, so jupyter_client sends SIGINT to
  the proxy, which sends an ``interrupt_request`` on ``control``; the box interrupts its kernel.
* Shutdown: the proxy answers ``shutdown_request`` itself, releases the sandbox and exits; so
  does SIGTERM, and the proxy's parent dying. Restart is shutdown then start: a restarted
  kernel runs in a *fresh sandbox* (a fresh kernel, and a fresh, empty workspace).
* ``kernel_info_reply`` carries ``"jupyter_sandbox": {"sandbox_id", "sandbox_type",
  "server"}``, so frontends (and people) can find the sandbox, e.g. to hand it to an agent.
* When no sandbox can be had (no server, no capacity), the kernel still starts and every cell
  fails with the reason, rather than the kernel dying in a restart loop.

Install the kernelspecs with ``python -m jupyter_sandbox.kernels install`` (see
:func:`install`); the package also ships them for the built-in types under
``share/jupyter/kernels/sandbox-<type>``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import sys
import tempfile
from typing import Any

BUILTIN_TYPES = ("base", "filesystem", "browser", "gui")
NAME_PREFIX = "sandbox-"
_TYPE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def kernel_name(sandbox_type: str) -> str:
    return f"{NAME_PREFIX}{sandbox_type}"


def check_type(sandbox_type: str) -> str:
    if not _TYPE_RE.match(sandbox_type):
        raise ValueError(f"bad sandbox type {sandbox_type!r}: letters, digits, _ . - only")
    return sandbox_type


def kernel_spec(
    sandbox_type: str, python: str = "python", url: str | None = None
) -> dict[str, Any]:
    """The kernel.json of a type. ``python`` as argv[0] means jupyter_client's own interpreter
    (it substitutes ``sys.executable``), which is what a packaged kernelspec needs."""
    spec: dict[str, Any] = {
        "argv": [python, "-m", "jupyter_sandbox.kernels", "-f", "{connection_file}"]
        + ["--type", check_type(sandbox_type)],
        "display_name": f"Python 3 (sandbox: {sandbox_type})",
        "language": "python",
        "interrupt_mode": "signal",
        "metadata": {"debugger": False},
    }
    if url:
        spec["env"] = {"JUPYTER_SANDBOX_URL": url}
    return spec


def _logos() -> list[str]:
    """ipykernel's Python logos, for the launcher (none if ipykernel is missing)."""
    try:
        import ipykernel
    except ImportError:
        return []
    resources = os.path.join(os.path.dirname(ipykernel.__file__), "resources")
    names = ("logo-32x32.png", "logo-64x64.png", "logo-svg.svg")
    return [os.path.join(resources, n) for n in names if os.path.exists(os.path.join(resources, n))]


def write_spec_dir(
    path: str, sandbox_type: str, python: str = "python", url: str | None = None
) -> str:
    """Write a kernelspec directory (kernel.json and logos) at ``path``."""
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "kernel.json"), "w") as f:
        json.dump(kernel_spec(sandbox_type, python, url), f, indent=1)
        f.write("\n")
    for logo in _logos():
        shutil.copy(logo, os.path.join(path, os.path.basename(logo)))
    return path


def install(
    types: list[str] | tuple[str, ...] = BUILTIN_TYPES,
    user: bool = False,
    prefix: str | None = None,
    url: str | None = None,
    python: str | None = None,
) -> list[str]:
    """Install one kernelspec per type; returns their directories.

    Where: ``user`` (``~/.local/share/jupyter/kernels``), else ``prefix`` (``<prefix>/share/
    jupyter/kernels``), else system-wide. ``python`` defaults to this interpreter (a venv's
    kernels keep working when launched from another environment's Jupyter).
    """
    from jupyter_client.kernelspec import KernelSpecManager

    ksm = KernelSpecManager()
    installed = []
    with tempfile.TemporaryDirectory() as tmp:
        for sandbox_type in types:
            source = write_spec_dir(
                os.path.join(tmp, kernel_name(sandbox_type)),
                sandbox_type,
                python or sys.executable,
                url,
            )
            installed.append(
                ksm.install_kernel_spec(source, kernel_name(sandbox_type), user=user, prefix=prefix)
            )
    return installed


def remove(types: list[str] | tuple[str, ...] = BUILTIN_TYPES) -> list[str]:
    """Remove the kernelspecs of these types wherever Jupyter finds them; returns their dirs."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    ksm = KernelSpecManager()
    removed = []
    for sandbox_type in types:
        with contextlib.suppress(NoSuchKernel):
            removed.append(ksm.remove_kernel_spec(kernel_name(sandbox_type)))
    return removed
