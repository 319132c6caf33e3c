"""SandboxApp: the Jupyter Server extension and the `jupyter sandbox-server` command.

Every setting of the AgentScope `.env` is a trait here (`--SandboxApp.pool_size=10`, or
`c.SandboxApp.pool_size = 10` in `jupyter_server_config.py`, or standalone also
`jupyter_jupyter_sandbox_config.py`),
and `--config custom.env` imports a seed `.env` file. Standalone, the wire routes are served at
the root on 127.0.0.1:8000; inside `jupyter server`/`jupyter lab` under `{base_url}sandbox/`.
"""

from __future__ import annotations

import asyncio
import ctypes
import ipaddress
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
import uuid
from typing import Any

from jupyter_server.extension.application import ExtensionApp
from jupyter_server.serverapp import ServerApp
from jupyter_server.utils import url_path_join
from traitlets import (
    Bool,
    CaselessStrEnum,
    Dict,
    Float,
    Int,
    List,
    TraitError,
    Unicode,
    Union,
    default,
    validate,
)

from . import __version__, envfile
from .backends import Backend, BackendUnavailable, Limits, parse_size
from .backends.docker import DockerBackend
from .backends.kubernetes import KubernetesBackend
from .backends.local import LocalBackend
from .extensions import ExtensionError, load_extension
from .manager import ManagerSettings, SandboxManager, registry
from .manager.state import SharedPortSet, SharedState
from .server_ext import route_table
from .storage import LocalStorage, OSSStorage, S3Storage, StorageError, WorkspaceStorage


def split_types(values: list[str] | str) -> list[str]:
    """`["base,gui"]`, `'["base", "gui"]'` or `["base", "gui"]` → `["base", "gui"]`."""
    out: list[str] = []
    for value in [values] if isinstance(values, str) else values:
        value = value.strip()
        if value.startswith("["):
            out.extend(json.loads(value))
        else:
            out.extend(part.strip() for part in value.split(",") if part.strip())
    return out


# Not "": Jupyter turns --ip='*' into "", which means every interface.
LOOPBACK_NAMES = {"localhost", "localhost.localdomain"}


WORKER_ENV = "JUPYTER_SANDBOX_WORKER"  # set in the worker processes the first one starts


def spawn_workers(count: int, log: Any) -> list[subprocess.Popen]:
    """Start `count` more server processes with this one's command line. They listen on the
    same port (SO_REUSEPORT: the kernel spreads connections), share state through Redis, and
    get SIGTERM if this process dies, even by `kill -9`."""

    def die_with_parent() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG

    workers = []
    for index in range(1, count + 1):
        env = {**os.environ, WORKER_ENV: str(index)}
        workers.append(
            subprocess.Popen(
                [sys.executable, "-m", "jupyter_sandbox", *sys.argv[1:]],
                env=env,
                preexec_fn=die_with_parent,  # noqa: PLW1509 - a prctl, no threads involved
            )
        )
    log.info("started %d more worker process(es): %s", count, [w.pid for w in workers])
    return workers


async def stop_workers(workers: list[subprocess.Popen], log: Any) -> None:
    for worker in workers:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 60  # each cleans up its own sandboxes first
    for worker in workers:
        while worker.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        if worker.poll() is None:
            log.warning("worker %d did not stop in time; killing it", worker.pid)
            worker.kill()


def is_loopback(ip: str) -> bool:
    if ip in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(ip).is_loopback
    except ValueError:
        return False


class SandboxServerApp(ServerApp):
    """The Jupyter server under `jupyter sandbox-server`: no notebook services.

    Standalone, the process runs sandboxes, not notebooks, so Jupyter's kernels, contents,
    files and terminals routes are not mounted at all.
    """

    default_services = ("api", "auth", "security")
    # Set by SandboxApp when it runs several worker processes on one port (SO_REUSEPORT).
    reuse_port = False

    def _find_http_port(self) -> None:
        if not self.reuse_port:
            super()._find_http_port()  # a plain bind test would fail beside the other workers

    def _bind_http_server_tcp(self) -> bool:
        if not self.reuse_port:
            return super()._bind_http_server_tcp()
        try:
            self.http_server.listen(self.port, self.ip, reuse_port=True)
        except OSError as e:
            self.log.critical("cannot listen on %s:%s: %s", self.ip, self.port, e)
            return False
        return True

    def init_signal(self) -> None:
        super().init_signal()
        # Jupyter asks "Shutdown this Jupyter server (y/[n])?" on Ctrl-C at a terminal, and
        # otherwise lets SIGINT raise KeyboardInterrupt past its cleanup. A sandbox server has
        # nothing to confirm: SIGINT stops it and cleans up, like SIGTERM (unless the parent
        # process chose to ignore SIGINT, as shells do for background jobs).
        if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
            signal.signal(signal.SIGINT, self._signal_stop)


class SandboxApp(ExtensionApp):
    """Warm pools of isolated sandboxes for AI-agent tools, behind the AgentScope wire API."""

    name = "jupyter_sandbox"
    app_name = "jupyter sandbox-server"
    description = __doc__
    version = __version__
    load_other_extensions = False
    serverapp_class = SandboxServerApp
    # Their traits show in --help-all and take --LocalBackend.x, --S3Storage.x, ….
    classes = [LocalBackend, DockerBackend, KubernetesBackend, S3Storage, OSSStorage]
    extension_url = "/health"
    default_url = "/health"

    aliases = {
        "extension": "SandboxApp.extensions",
        "config": "SandboxApp.env_file",
        "env-file": "SandboxApp.env_file",
        "pool-size": "SandboxApp.pool_size",
        "token": "SandboxApp.bearer_token",
    }

    # -- service ---------------------------------------------------------------------------
    workers = Int(
        1,
        config=True,
        help="Server processes sharing one port (seed WORKERS). Values above 1 need shared "
        "state (redis_url).",
    )
    redis_url = Unicode(
        "",
        config=True,
        help="Shared state in Redis, e.g. redis://user:pass@host:6379/0: sandbox records, "
        "sessions, warm pools and locks live there, so several server processes (one host or "
        "many) serve one fleet. Empty: in this process only. The env-file import builds it "
        "from the seed's REDIS_ENABLED/SERVER/PORT/DB/USER/PASSWORD.",
    )
    redis_pool_key = Unicode(
        "_runtime_sandbox_container_container_pool",
        config=True,
        help="Prefix of the warm-pool lists in Redis (seed REDIS_CONTAINER_POOL_KEY).",
    )
    redis_port_key = Unicode(
        "_runtime_sandbox_container_occupied_ports",
        config=True,
        help="The set of published host ports in Redis (seed REDIS_PORT_KEY).",
    )
    bearer_token = Unicode(
        "",
        config=True,
        help="The token clients send as `Authorization: Bearer <token>` (seed BEARER_TOKEN). "
        "Empty: no authentication, allowed only on a loopback address.",
    )
    env_file = Unicode(
        "",
        config=True,
        help="An AgentScope `.env` file whose variables (HOST, PORT, POOL_SIZE, …) set the "
        "matching traits; `--config custom.env` is an alias. Command-line flags win.",
    )
    extensions = List(
        Unicode(),
        config=True,
        help="Modules (file paths or importable names) loaded at startup to register custom "
        "sandbox types; repeat `--extension X`.",
    )

    # -- pools and types -------------------------------------------------------------------
    sandbox_types = List(
        Unicode(),
        default_value=["base"],
        config=True,
        help="Sandbox types that get a warm pool; the first is the default type "
        "(seed DEFAULT_SANDBOX_TYPE). Accepts `base,gui` or a JSON list.",
    )
    pool_size = Int(1, config=True, help="Warm sandboxes kept ready per type (seed POOL_SIZE).")
    max_sandboxes = Int(
        0,
        config=True,
        help="Most sandboxes alive at once, pooled ones included; 0 = unlimited "
        '(seed MAX_SANDBOX_INSTANCES). Over it, create calls answer {"data": null}.',
    )
    auto_cleanup = Bool(
        True,
        config=True,
        help="Destroy every sandbox this server made when it shuts down (seed AUTO_CLEANUP).",
    )
    container_prefix = Unicode(
        "runtime-sandbox-container-",
        config=True,
        help="Prefix of sandbox ids and container names (seed CONTAINER_PREFIX_KEY).",
    )
    heartbeat_timeout = Float(
        300.0,
        config=True,
        help="Seconds a session may stay idle before it is culled (seed HEARTBEAT_TIMEOUT): "
        "its sandboxes are destroyed, their workspaces kept, and the next call with any of "
        "its ids restores it transparently. 0: never cull.",
    )
    watcher_interval = Float(
        1.0,
        config=True,
        help="Seconds between scans for idle sessions and expired records (seed "
        "WATCHER_SCAN_INTERVAL). 0: no scans (nothing is culled or forgotten).",
    )
    released_ttl = Float(
        3600.0,
        config=True,
        help="Seconds released, replaced and culled-but-never-restored records stay readable "
        "with get_info before they are forgotten (seed RELEASED_KEY_TTL). 0: keep forever.",
    )

    # -- backend and sandboxes -------------------------------------------------------------
    backend = CaselessStrEnum(
        ["local", "docker", "kubernetes", "k8s"],
        default_value="local",
        config=True,
        help="Where sandboxes run (seed CONTAINER_DEPLOYMENT): 'local' (bubblewrap jails on "
        "this machine, no image), 'docker' (containers from the runtime-sandbox-<type> "
        "images; see DockerBackend) or 'kubernetes', alias 'k8s' (pods from the same images; "
        "see KubernetesBackend).",
    )
    image_registry = Unicode(
        config=True,
        help="Registry part of image names, `{registry/}{namespace}/runtime-sandbox-<type>:"
        "{tag}`. Default: $RUNTIME_SANDBOX_REGISTRY, else none (Docker Hub).",
    )
    image_namespace = Unicode(
        config=True,
        help="Namespace part of image names. Default: $RUNTIME_SANDBOX_IMAGE_NAMESPACE, else "
        "'agentscope'.",
    )
    image_tag = Unicode(
        config=True,
        help="Tag of image names. Default: $RUNTIME_SANDBOX_IMAGE_TAG, else 'latest'.",
    )

    @default("image_registry")
    def _default_registry(self) -> str:
        return os.environ.get("RUNTIME_SANDBOX_REGISTRY", "")

    @default("image_namespace")
    def _default_namespace(self) -> str:
        return os.environ.get("RUNTIME_SANDBOX_IMAGE_NAMESPACE", "agentscope")

    @default("image_tag")
    def _default_tag(self) -> str:
        return os.environ.get("RUNTIME_SANDBOX_IMAGE_TAG", "latest")

    mount_dir = Unicode(
        "sessions_mount_dir",
        config=True,
        help="Host directory holding each sandbox's /workspace, one subdirectory per sandbox, "
        "relative to the server's working directory (seed DEFAULT_MOUNT_DIR).",
    )
    storage = CaselessStrEnum(
        ["local", "s3", "oss"],
        default_value="local",
        config=True,
        help="Where workspaces are saved when a sandbox is released or culled, and loaded "
        "from when its session is restored (seed FILE_SYSTEM): 'local' (a directory, "
        "storage_folder), 's3' (see S3Storage) or 'oss' (see OSSStorage).",
    )
    storage_folder = Unicode(
        "",
        config=True,
        help="For storage='local': the directory workspaces are saved to; empty: none are "
        "saved, they stay in mount_dir. For 's3'/'oss': the key prefix (seed STORAGE_FOLDER).",
    )
    allow_mount_dir = Bool(
        False,
        config=True,
        help="Honour a client's `mount_dir` on create: that host directory becomes the "
        "sandbox's /workspace (seed ALLOW_MOUNT_DIR). Off: such a create is refused.",
    )
    readonly_mounts = Dict(
        key_trait=Unicode(),
        value_trait=Unicode(),
        config=True,
        help="Host paths mounted read-only into every sandbox, {host path: sandbox path} "
        "(seed READONLY_MOUNTS).",
    )
    port_range = List(
        Union([Int(), Unicode()]),
        default_value=[49152, 59152],
        config=True,
        help="Host ports [first, last) that container backends may publish (seed PORT_RANGE); "
        "`[49152, 59152]` or `49152-59152` on the command line.",
    )
    call_timeout = Float(
        60.0,
        config=True,
        help="Seconds one tool call may run before it is killed (shell) or interrupted "
        "(IPython) and reported as an error.",
    )
    network = Bool(
        True,
        config=True,
        help="Give sandboxes network access (user-mode networking; never the host's "
        "loopback). False: only the sandbox's own loopback.",
    )
    memory_limit = Union(
        [Int(), Unicode()],
        default_value="1g",
        config=True,
        help="Memory limit per sandbox, e.g. 512m or 2g.",
    )
    cpu_limit = Float(1.0, config=True, help="CPUs per sandbox (e.g. 0.5).")
    pids_limit = Int(256, config=True, help="Most processes and threads per sandbox.")

    @validate("sandbox_types")
    def _split_types(self, proposal: Any) -> list[str]:
        try:
            return split_types(proposal.value)
        except ValueError as e:
            raise TraitError(f"sandbox_types: {e}") from None

    @validate("port_range")
    def _parse_port_range(self, proposal: Any) -> list[int]:
        value = proposal.value
        if len(value) == 1 and isinstance(value[0], str):  # one command-line word
            text = value[0].strip()
            value = json.loads(text) if text.startswith("[") else text.replace("-", ",").split(",")
        try:
            first, last = (int(v) for v in value)
        except (TypeError, ValueError):
            raise TraitError(
                f"port_range: expected [first, last], e.g. [49152, 59152]; got {proposal.value!r}"
            ) from None
        if not 0 < first < last <= 65536:
            raise TraitError(f"port_range [{first}, {last}): need 0 < first < last <= 65536")
        return [first, last]

    @validate("memory_limit")
    def _check_memory(self, proposal: Any) -> Any:
        try:
            parse_size(proposal.value)
        except ValueError as e:
            raise TraitError(str(e)) from None
        return proposal.value

    @validate("container_prefix")
    def _check_prefix(self, proposal: Any) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,37}", proposal.value):
            raise TraitError(
                "container_prefix must be 1-38 letters, digits, '-', '_' or '.', starting "
                "with a letter or digit"
            )
        return proposal.value

    # -- wiring ----------------------------------------------------------------------------

    manager: SandboxManager

    @default("open_browser")
    def _no_browser(self) -> bool:
        return False  # a sandbox server has no page to open

    @classmethod
    def make_serverapp(cls, **kwargs: Any) -> Any:
        # Standalone defaults, as the seed: 127.0.0.1:8000. Constructor values rank below
        # config files and flags, so --port/--ip still win.
        kwargs.setdefault("port", 8000)
        kwargs.setdefault("ip", "127.0.0.1")
        kwargs.setdefault("open_browser", False)
        kwargs.setdefault("port_retries", 0)  # clients are told one port; never drift
        # Root is how the local backend gets cgroups and an unprivileged sandbox user.
        kwargs.setdefault("allow_root", True)
        return super().make_serverapp(**kwargs)

    @property
    def standalone(self) -> bool:
        return getattr(self.serverapp, "starter_app", None) is self

    def _link_jupyter_server_extension(self, serverapp: Any) -> None:
        try:
            super()._link_jupyter_server_extension(serverapp)
        except TraitError as e:
            # Jupyter would log this and carry on without the extension's settings.
            self._fail(f"bad setting: {e}")
        if self.env_file:
            self._apply_env_file(serverapp)
        for extension in self.extensions:
            self._load_extension_module(extension)
        if self.workers > 1:
            serverapp.reuse_port = True

    def _apply_env_file(self, serverapp: Any) -> None:
        try:
            config, environment, notes = envfile.load(self.env_file)
        except envfile.EnvFileError as e:
            self._fail(str(e))
        for note in notes:
            self.log.warning(note)
        os.environ.update(environment)
        for section, target in (("SandboxApp", self), ("ServerApp", serverapp)):
            explicit = target.config.get(section, {})
            for trait, value in config.get(section, {}).items():
                if trait in explicit:
                    continue  # a flag or config file said otherwise; it wins
                try:
                    setattr(target, trait, value)
                except TraitError as e:
                    self._fail(f"{self.env_file}: {trait}: {e}")
        # Other classes (OSSStorage, …) are made later from this app's config.
        for section, traits in config.items():
            if section in ("SandboxApp", "ServerApp"):
                continue
            explicit = self.config.get(section, {})
            for trait, value in traits.items():
                if trait not in explicit:
                    self.config[section][trait] = value

    def _load_extension_module(self, extension: str) -> None:
        try:
            load_extension(extension)
        except ExtensionError as e:
            self._fail(str(e))

    def _fail(self, message: str) -> None:
        """Refuse to start: exit when standalone, disable the extension inside Jupyter."""
        if self.standalone or getattr(self.serverapp, "starter_app", None) is None:
            self.log.critical(message)
            raise SystemExit(1)
        raise RuntimeError(message)

    def _check_settings(self) -> None:
        if self.workers < 1:
            self._fail(f"SandboxApp.workers={self.workers}: need at least 1")
        if self.workers > 1:
            if not self.redis_url:
                self._fail(
                    f"SandboxApp.workers={self.workers}: several worker processes need shared "
                    "state in Redis: set SandboxApp.redis_url (or use workers=1)."
                )
            if not self.standalone:
                self._fail("SandboxApp.workers > 1 works with `jupyter sandbox-server` only")
            if not self.serverapp.port:
                self._fail("SandboxApp.workers > 1 needs a fixed --port (not 0)")
        unknown = [t for t in self.sandbox_types if not registry.is_known(t)]
        if unknown or not self.sandbox_types:
            named = ", ".join(unknown) or "(none given)"
            self._fail(
                f"SandboxApp.sandbox_types: unknown type(s) {named}; "
                f"known: {', '.join(registry.known_names())}"
            )
        ip = self.serverapp.ip
        auth = bool(self.bearer_token) or (
            not self.standalone and self.serverapp.identity_provider.auth_enabled
        )
        if not is_loopback(ip) and not auth:
            self._fail(
                f"refusing to listen on {ip!r} without a token: anyone who can reach it could "
                "run code. Set --SandboxApp.bearer_token=<secret> (or listen on 127.0.0.1)."
            )
        if self.pool_size < 0 or self.max_sandboxes < 0:
            self._fail("pool_size and max_sandboxes must be >= 0")

    def _make_backend(self) -> Backend:
        backend: Backend
        try:
            if self.backend == "docker":
                backend = DockerBackend(
                    parent=self,
                    server_id=self.server_id,
                    port_range=tuple(self.port_range),
                    log=self.log,
                )
            elif self.backend in ("kubernetes", "k8s"):
                backend = KubernetesBackend(
                    parent=self,
                    server_id=self.server_id,
                    container_prefix=self.container_prefix,
                    log=self.log,
                )
            else:
                backend = LocalBackend(parent=self, server_id=self.server_id, log=self.log)
        except (TraitError, ValueError) as e:  # e.g. a backend trait given two values
            self._fail(f"bad setting: {e}")
            raise
        if isinstance(backend, DockerBackend) and backend.access == "port" and not self.network:
            self._fail(
                "DockerBackend.access='port' needs SandboxApp.network: the engine publishes "
                "no ports from the internal network that sandboxes without network join. Use "
                "access='network' (the default) with network off."
            )
        try:
            backend.check()
        except BackendUnavailable as e:
            self._fail(str(e))
        if (
            isinstance(backend, LocalBackend)
            and self.network
            and backend.isolation == "bwrap"
            and not backend.needs_slirp()
        ):
            self._fail(
                "SandboxApp.network is on but slirp4netns is not installed, so sandboxes would "
                "have no network. Install it (`apt-get install slirp4netns`) or start with "
                "--SandboxApp.network=False."
            )
        return backend

    def _make_storage(self) -> tuple[WorkspaceStorage | None, str]:
        """The workspace store and the key prefix of its sandboxes."""
        if self.storage == "local":
            if not self.storage_folder:
                return None, ""
            return LocalStorage(self.storage_folder, parent=self, log=self.log), ""
        try:
            store = (S3Storage if self.storage == "s3" else OSSStorage)(parent=self, log=self.log)
        except StorageError as e:
            self._fail(str(e))
        return store, self.storage_folder

    def initialize_settings(self) -> None:
        self.server_id = uuid.uuid4().hex[:12]
        self._check_settings()
        registry.configure_images(self.image_registry, self.image_namespace, self.image_tag)
        canonical = list(dict.fromkeys(registry.resolve(t, t).name for t in self.sandbox_types))
        storage, storage_prefix = self._make_storage()
        state = None
        if self.redis_url:
            try:
                state = SharedState(
                    self.redis_url, self.container_prefix, self.redis_pool_key, self.redis_port_key
                )
            except ImportError:
                self._fail("SandboxApp.redis_url needs redis-py: pip install redis")
        settings = ManagerSettings(
            server_id=self.server_id,
            sandbox_types=canonical,
            pool_size=self.pool_size,
            container_prefix=self.container_prefix,
            mount_dir=self.mount_dir,
            readonly_mounts={os.path.abspath(k): v for k, v in self.readonly_mounts.items()},
            call_timeout=self.call_timeout,
            network=self.network,
            limits=Limits(parse_size(self.memory_limit), self.cpu_limit, self.pids_limit),
            max_sandboxes=self.max_sandboxes,
            auto_cleanup=self.auto_cleanup,
            heartbeat_timeout=self.heartbeat_timeout,
            watcher_interval=self.watcher_interval,
            released_ttl=self.released_ttl,
            storage=storage,
            storage_prefix=storage_prefix,
            allow_mount_dir=self.allow_mount_dir,
            state=state,
        )
        backend = self._make_backend()
        if state is not None and isinstance(backend, DockerBackend):
            backend.ports.shared = SharedPortSet(self.redis_url, self.redis_port_key)
        self.manager = SandboxManager(backend, settings, self.log)
        if self.standalone:
            self._share_token_with_jupyter()
        if not self.bearer_token:
            self.log.warning(
                "SandboxApp.bearer_token is empty: %s",
                "anyone who can reach this loopback port can use sandboxes"
                if self.standalone
                else "only Jupyter's own authentication protects the sandbox routes",
            )

    def _share_token_with_jupyter(self) -> None:
        # Standalone, Jupyter's own routes take the same single credential; an explicit token
        # is also masked ("?token=...") in Jupyter's startup banner instead of printed.
        provider = self.serverapp.identity_provider
        provider.token = self.bearer_token or secrets.token_hex(24)
        provider.token_generated = False

    @property
    def route_prefix(self) -> str:
        return "" if self.standalone else "sandbox"

    @property
    def desktop_base(self) -> str:
        """The URL path under which `/desktop/<id>` routes live (for the desktop's cookie)."""
        return url_path_join(self.serverapp.base_url, self.route_prefix, "desktop")

    def initialize_handlers(self) -> None:
        self.handlers.extend(route_table(self.route_prefix))

    async def _start_jupyter_server_extension(self, serverapp: Any) -> None:
        if self.workers > 1 and WORKER_ENV not in os.environ:
            self._workers = spawn_workers(self.workers - 1, self.log)
        await self.manager.startup()
        self.log.info(
            "jupyter-sandbox %s: backend %s, pools %s x %d, serving at %s",
            __version__,
            self.backend,
            ",".join(self.manager.pools),
            self.pool_size,
            serverapp.connection_url.split("?")[0].rstrip("/")
            + ("" if self.standalone else "/sandbox"),
        )

    async def stop_extension(self) -> None:
        await self.manager.shutdown()
        await stop_workers(getattr(self, "_workers", []), self.log)


main = launch_new_instance = SandboxApp.launch_instance
