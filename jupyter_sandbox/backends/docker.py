"""The `docker` backend: each sandbox is a container, made through the Docker engine's API.

A container runs the same box as a local sandbox (the image's entrypoint), as an unprivileged
user, with every capability dropped, `no-new-privileges`, a read-only root file system, a
private tmpfs `/tmp`, the sandbox's workspace bound at `/workspace`, and the type's memory,
CPU and process limits. The backend attaches to the new container to hand the box its
configuration on stdin and to read its `{"ready": true}` line, as the local backend does
through a pipe: the token never appears in the container's environment or `docker inspect`.

Networks: sandboxes join a bridge network of their own with inter-container traffic disabled,
so one sandbox cannot reach another; with `SandboxApp.network` off they join an *internal*
network of the same kind (no route out, still reachable from this host). The server reaches a
box at its address on that network (`access = "network"`, the fastest), or at a host port
published from `SandboxApp.port_range` (`access = "port"`, for a server that cannot route to
container addresses, e.g. one that itself runs in a container: see `access_host`).

Containers are named after their sandbox and labelled with the server's host, pid and start
time; `reap_orphans` removes those whose server is gone. The engine's event stream keeps
`status` current without polling.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import struct
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from traitlets import Bool, CaselessStrEnum, Dict, Float, Unicode

from .base import Backend, BackendError, BackendUnavailable, SandboxSpec, Started

BOX_PORT = 8080
LABEL = "jupyter-sandbox"  # every label key starts with this
SANDBOX_USER = "65534:65534"  # nobody:nogroup, the same numeric ids in every Debian image
ICC_OFF = {"com.docker.network.bridge.enable_icc": "false"}
# `status` follows every sandbox container of the engine: with shared state, this server may
# serve (and must know the state of) sandboxes another server made.
EVENTS_LABEL = f"{LABEL}.server-pid"


def _start_time(pid: int) -> str | None:
    with contextlib.suppress(OSError), open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[19]
    return None


class PortSet(Protocol):
    """Ports taken fleet-wide (the state store's set, when servers share one)."""

    def add(self, port: int) -> bool:  # True when it was free
        ...

    def remove(self, port: int) -> None:
        ...


class PortAllocator:
    """Host ports handed to published sandboxes, from [first, last), each checked free here
    and, when `shared` is set, claimed in the fleet-wide set (as the seed does in Redis)."""

    def __init__(self, first: int, last: int, address: str = ""):
        self.first, self.last, self.address = first, last, address
        self.shared: PortSet | None = None
        self._taken: set[int] = set()
        self._lock = threading.Lock()

    def allocate(self) -> int:
        with self._lock:
            for port in range(self.first, self.last):
                if port in self._taken:
                    continue
                if self.shared is not None and not self.shared.add(port):
                    continue  # another server published it
                with socket.socket() as s:
                    try:
                        s.bind((self.address, port))
                    except OSError:
                        if self.shared is not None:
                            self.shared.remove(port)
                        continue
                self._taken.add(port)
                return port
        raise BackendError(
            f"no free host port left in SandboxApp.port_range [{self.first}, {self.last})"
        )

    def release(self, port: int) -> None:
        with self._lock:
            self._taken.discard(port)
            if self.shared is not None:
                self.shared.remove(port)


class DockerBackend(Backend):
    """Sandboxes as containers on a Docker engine (docker-py; no CLI)."""

    name = "docker"

    docker_host = Unicode(
        "",
        config=True,
        help="The engine's address, e.g. unix:///var/run/docker.sock or tcp://host:2376. "
        "Empty: DOCKER_HOST and the other DOCKER_* variables, else the local socket.",
    )
    access = CaselessStrEnum(
        ["network", "port"],
        default_value="network",
        config=True,
        help="How the server reaches a box: 'network' (the container's address on its bridge "
        "network; needs a server that can route to it, as one on the Docker host can) or "
        "'port' (a host port published from SandboxApp.port_range, reached at access_host).",
    )
    access_host = Unicode(
        "127.0.0.1",
        config=True,
        help="With access='port': the host name or address at which published ports are "
        "reached, e.g. host.docker.internal for a server that runs in a container.",
    )
    publish_address = Unicode(
        "127.0.0.1",
        config=True,
        help="With access='port': the host address published ports listen on. 127.0.0.1 keeps "
        "boxes off the network; a server in a container needs one it can reach, e.g. the "
        "docker0 gateway 172.17.0.1.",
    )
    network_name = Unicode(
        "jupyter-sandbox",
        config=True,
        help="Bridge network for sandboxes with network access; created (with traffic "
        "between containers disabled) if missing.",
    )
    internal_network_name = Unicode(
        "jupyter-sandbox-internal",
        config=True,
        help="Internal network (no route out) for sandboxes when SandboxApp.network is off; "
        "created if missing.",
    )
    runtime = Unicode(
        "",
        config=True,
        help="OCI runtime for sandbox containers, e.g. 'runsc' (gVisor). Empty: the engine's "
        "default.",
    )
    pause_pool = Bool(
        False,
        config=True,
        help="Pause warm containers while they wait in the pool and unpause on claim (about "
        "10 ms more per claim; no CPU at all while pooled).",
    )
    pull = Bool(
        False,
        config=True,
        help="Pull an image that is missing from the engine before making its first sandbox. "
        "Off: a missing image is an error that says how to build it.",
    )
    block_host = Bool(
        True,
        config=True,
        help="Stop sandboxes from opening connections to this host's own addresses (its "
        "services on 0.0.0.0), with an iptables INPUT rule on the sandbox networks' bridges; "
        "the server's connections to boxes are unaffected. Needs root and iptables.",
    )
    tmp_size = Unicode("512m", config=True, help="Size of each sandbox's tmpfs /tmp.")
    ready_timeout = Float(60.0, config=True, help="Seconds a new container may take to be ready.")
    extra_create_args = Dict(
        config=True,
        help="Extra keyword arguments for docker-py's containers.create(), for every sandbox "
        "(a type's runtime_config adds its own), e.g. {'shm_size': '1g'}.",
    )

    def __init__(self, server_id: str = "", port_range: tuple[int, int] = (49152, 59152), **kw):
        super().__init__(**kw)
        self.server_id = server_id
        self.ports = PortAllocator(*port_range, address=self.publish_address)
        self._client: Any = None
        # docker-py is synchronous: its calls run on these threads, never on the event loop.
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="docker")
        self._states: dict[str, str] = {}  # container id → engine state, kept by events
        self._published: dict[str, int] = {}  # container id → host port
        self._networks_ready: set[str] = set()
        self._network_lock = threading.Lock()
        self._events: Any = None
        self._closing = False
        self._events_thread: threading.Thread | None = None
        self._labels = {
            f"{LABEL}.host": socket.gethostname(),
            f"{LABEL}.server-pid": str(os.getpid()),
            f"{LABEL}.server-start": _start_time(os.getpid()) or "",
            f"{LABEL}.server-id": server_id,
        }

    # -- engine ------------------------------------------------------------------------------

    def check(self) -> None:
        try:
            import docker
        except ImportError:
            raise BackendUnavailable(
                "the 'docker' backend needs the Docker SDK for Python: "
                "pip install 'jupyter-sandbox[docker]'"
            ) from None
        try:
            if self.docker_host:
                self._client = docker.DockerClient(base_url=self.docker_host, timeout=120)
            else:
                self._client = docker.from_env(timeout=120)
            self._client.ping()
        except Exception as e:
            raise BackendUnavailable(
                f"no Docker engine answers at {self.docker_host or 'the default address'} "
                f"({e}). Start dockerd (Debian: `apt-get install docker.io && dockerd &`) or "
                "point --DockerBackend.docker_host at one."
            ) from None
        self._resync(EVENTS_LABEL)  # `status` knows every sandbox container from the start
        self._start_events()

    @property
    def client(self) -> Any:
        if self._client is None:
            self.check()
        return self._client

    async def _run(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, lambda: fn(*args, **kwargs))

    def _start_events(self) -> None:
        if self._events_thread is not None:
            return
        self._events_thread = threading.Thread(
            target=self._follow_events, name="docker-events", daemon=True
        )
        self._events_thread.start()

    def _follow_events(self) -> None:
        """Keep `_states` current from the engine's events; if the stream breaks (the engine
        restarted), reconnect and re-read the state of every container we know."""
        transitions = {"start": "running", "unpause": "running", "pause": "paused", "die": "exited"}
        label = EVENTS_LABEL
        while not self._closing:
            try:
                self._events = self._client.api.events(
                    decode=True, filters={"type": "container", "label": label}
                )
                self._resync(label)
                for event in self._events:
                    cid, action = event.get("id", ""), event.get("Action", "")
                    if action == "destroy":
                        self._states.pop(cid, None)
                    elif action in transitions:
                        self._states[cid] = transitions[action]
            except Exception as e:
                if not self._closing:
                    self.log.warning("Docker event stream broke (%s); reconnecting", e)
            if not self._closing:
                time.sleep(1)

    def _resync(self, label: str) -> None:
        current = {
            c["Id"]: c["State"]
            for c in self._client.api.containers(all=True, filters={"label": label})
        }
        for cid, state in list(self._states.items()):
            if state != "created" and cid not in current:  # gone while we did not listen
                self._states.pop(cid, None)
        for cid, state in current.items():
            if self._states.get(cid) != "created":  # still being started by _create_sync
                self._states[cid] = state

    # -- create ------------------------------------------------------------------------------

    async def create(self, spec: SandboxSpec) -> Started:
        return await self.create_in_thread(self._pool, self._create_sync, spec)

    def _create_sync(self, spec: SandboxSpec) -> Started:
        import docker.errors

        container = None
        port = None
        try:
            self._ensure_image(spec.image, spec.sandbox_type)
            network = self._network(spec.network)
            port = self.ports.allocate() if self.access == "port" else None
            self._prepare_workspace(spec.workspace)
            try:
                container = self.client.containers.create(**self._create_args(spec, network, port))
            except docker.errors.APIError as e:
                raise BackendError(
                    f"the engine refused to create {spec.name}: {e.explanation or e}"
                ) from None
            self._states[container.id] = "created"
            if port is not None:
                self._published[container.id] = port
            self._start_and_configure(container, spec)
            url = self._url(container, network, port)
            return Started(container_id=container.id, url=url, ports=(port,) if port else ())
        except BaseException as e:
            if container is not None:
                with contextlib.suppress(Exception):  # keep the original error
                    self._remove_sync(container.id)
            elif port is not None:
                self.ports.release(port)
            if isinstance(e, BackendError) or not isinstance(e, Exception):
                raise
            raise BackendError(f"the Docker engine failed while creating {spec.name}: {e}") from e

    def _ensure_image(self, image: str, sandbox_type: str) -> None:
        import docker.errors

        try:
            self.client.images.get(image)
            return
        except docker.errors.ImageNotFound:
            pass
        if self.pull:
            try:
                self.client.images.pull(image)
                return
            except docker.errors.APIError as e:
                raise BackendError(f"cannot pull image {image}: {e.explanation or e}") from None
        raise BackendError(
            f"image {image} is not on the Docker engine. Build it with `jupyter sandbox-builder "
            f"{sandbox_type}` (add --base-image IMG where no registry is reachable), or pull it "
            "and restart, or set --DockerBackend.pull=True."
        )

    def _network(self, outbound: bool) -> str:
        name = self.network_name if outbound else self.internal_network_name
        if name in self._networks_ready:
            return name
        import docker.errors

        with self._network_lock:  # the engine allows two networks of one name: never race
            try:
                network = self.client.networks.get(name)
            except docker.errors.NotFound:
                with contextlib.suppress(docker.errors.APIError):  # another server made it
                    self.client.networks.create(
                        name,
                        driver="bridge",
                        internal=not outbound,
                        options=ICC_OFF,
                        labels={LABEL: "network"},
                        check_duplicate=True,
                    )
                network = self.client.networks.get(name)
            if self.block_host:
                self._block_host(network)
            self._networks_ready.add(name)
        return name

    def _block_host(self, network: Any) -> None:
        """Reject new connections from a sandbox network's bridge to this host.

        Traffic from containers to the host's own addresses goes through INPUT, never
        FORWARD, so Docker's isolation rules do not cover it. Only NEW connections are refused:
        the replies of the server's own connections to boxes are ESTABLISHED and pass.
        """
        bridge = (network.attrs.get("Options") or {}).get(
            "com.docker.network.bridge.name", f"br-{network.id[:12]}"
        )
        rule = [
            "INPUT", "-i", bridge, "-m", "conntrack", "--ctstate", "NEW,INVALID",
            "-m", "comment", "--comment", "jupyter-sandbox: no host access", "-j", "REJECT",
        ]  # fmt: skip
        iptables = shutil.which("iptables")
        try:
            if iptables is None:
                raise OSError("iptables is not installed")
            check = subprocess.run([iptables, "-w", "-C", *rule], capture_output=True)
            if check.returncode != 0:
                subprocess.run([iptables, "-w", "-I", *rule], capture_output=True, check=True)
        except (OSError, subprocess.CalledProcessError) as e:
            detail = getattr(e, "stderr", b"") or str(e).encode()
            self.log.warning(
                "sandboxes on %s can reach this host's services on its non-loopback addresses: "
                "the iptables rule that blocks them could not be added (%s)",
                network.name,
                detail.decode(errors="replace").strip(),
            )

    def _prepare_workspace(self, path: str) -> None:
        uid, gid = (int(x) for x in SANDBOX_USER.split(":"))
        if os.geteuid() == 0:
            os.chown(path, uid, gid)
        else:
            os.chmod(path, 0o777)  # noqa: S103 - the container's user is not ours

    def _create_args(self, spec: SandboxSpec, network: str, port: int | None) -> dict[str, Any]:
        from docker.types import Mount

        mounts = [Mount("/workspace", os.path.abspath(spec.workspace), type="bind")]
        mounts += [
            Mount(inside, os.path.abspath(host), type="bind", read_only=True)
            for host, inside in spec.readonly_mounts.items()
        ]
        labels = {
            **self._labels,
            **{f"{LABEL}.{k}": v for k, v in spec.labels.items()},
            f"{LABEL}.sandbox-type": spec.sandbox_type,
        }
        memory = spec.limits.memory_bytes
        args: dict[str, Any] = {
            "image": spec.image,
            "name": spec.name,
            "hostname": "sandbox",
            "labels": labels,
            "environment": {"SANDBOX_TYPE": spec.sandbox_type, **spec.environment},
            "user": SANDBOX_USER,
            "working_dir": "/workspace",
            # An attached, once-only stdin (as `docker run -i`): it closes after the config.
            "stdin_open": True,
            "detach": False,
            "init": True,  # tini reaps zombies and forwards signals to the box
            "network": network,
            "mounts": mounts,
            "read_only": True,
            "tmpfs": {"/tmp": f"rw,nosuid,nodev,size={self.tmp_size},mode=1777"},
            "mem_limit": memory,
            "memswap_limit": memory,  # no swap: a memory bomb is OOM-killed, not slowed
            "nano_cpus": int(spec.limits.cpus * 1e9),
            "pids_limit": spec.limits.pids,
            "cap_drop": ["ALL"],
            "security_opt": ["no-new-privileges"],
        }
        if port is not None:
            args["ports"] = {f"{BOX_PORT}/tcp": (self.publish_address, port)}
        if self.runtime:
            args["runtime"] = self.runtime
        args.update(self.extra_create_args)
        args.update(spec.runtime_config)
        return args

    def _start_and_configure(self, container: Any, spec: SandboxSpec) -> None:
        """Start the container and hand its box the configuration, through an attach stream
        opened before start (as `docker run -i` does), then read the box's ready line."""
        import docker.errors

        api = self.client.api
        stream = api.attach_socket(
            container.id, params={"stdin": 1, "stdout": 1, "stderr": 0, "stream": 1}
        )
        raw = getattr(stream, "_sock", stream)
        try:
            try:
                api.start(container.id)
            except docker.errors.APIError as e:
                raise BackendError(
                    f"the engine could not start {spec.name}: {e.explanation or e}"
                ) from None
            config = spec.box_config("/workspace")
            try:
                raw.sendall(json.dumps(config).encode() + b"\n")
                line = _read_stdout_line(raw, time.monotonic() + self.ready_timeout)
            except (OSError, TimeoutError) as e:
                raise BackendError(
                    f"sandbox {spec.name} did not become ready: {e}{self._log_tail(container.id)}"
                ) from None
        finally:
            with contextlib.suppress(OSError):
                stream.close()
        try:
            message = json.loads(line)
        except ValueError:
            message = {"ready": False, "error": "the box exited before it was ready"}
        if not message.get("ready"):
            raise BackendError(
                f"sandbox {spec.name} failed to start: {message.get('error')}"
                f"{self._log_tail(container.id)}"
            )
        self._states[container.id] = "running"

    def _url(self, container: Any, network: str, port: int | None) -> str:
        if port is not None:
            return f"http://{self.access_host}:{port}"
        container.reload()
        address = container.attrs["NetworkSettings"]["Networks"][network]["IPAddress"]
        if not address:
            raise BackendError(f"container {container.name} has no address on {network}")
        return f"http://{address}:{BOX_PORT}"

    def _log_tail(self, container_id: str) -> str:
        try:
            inspect = self.client.api.inspect_container(container_id)
            state = inspect["State"]
            status = " (OOM-killed)" if state.get("OOMKilled") else ""
            if state.get("Status") == "exited":
                status += f" (exit status {state.get('ExitCode')})"
            logs = self.client.api.logs(container_id, stdout=False, stderr=True, tail=30)
            tail = logs.decode(errors="replace").strip()[-1500:]
        except Exception:
            return ""
        return f"{status}; its log ends with:\n{tail}" if tail else status

    # -- pool hooks --------------------------------------------------------------------------

    async def park(self, container_id: str) -> None:
        if self.pause_pool:
            await self._run(self.client.api.pause, container_id)
            self._states[container_id] = "paused"

    async def unpark(self, container_id: str) -> None:
        if self.pause_pool and self._states.get(container_id) == "paused":
            await self._run(self.client.api.unpause, container_id)
            self._states[container_id] = "running"

    # -- inspect / destroy -------------------------------------------------------------------

    def status(self, container_id: str) -> str | None:
        return self._states.get(container_id)

    async def destroy(self, container_id: str) -> None:
        await self._run(self._remove_sync, container_id)

    def _remove_sync(self, container_id: str) -> None:
        import docker.errors

        with contextlib.suppress(docker.errors.NotFound):
            try:
                self.client.api.remove_container(container_id, force=True, v=True)
            except docker.errors.APIError as e:
                if "removal of container" not in str(e) or "in progress" not in str(e):
                    raise BackendError(f"cannot remove container {container_id[:12]}: {e}") from e
        self._states.pop(container_id, None)
        port = self._published.pop(container_id, None)
        if port is not None:
            self.ports.release(port)

    async def reap_orphans(self, keep: set[str] | None = None) -> int:
        return await self._run(self._reap_sync, keep or set())

    def _reap_sync(self, keep: set[str]) -> int:
        """Remove containers made on this host by server processes that no longer exist.

        Like the local backend, a server is recognised by pid *and* start time, so a reused
        pid never protects a dead server's containers; other hosts' containers are left alone.
        """
        host = socket.gethostname()
        found = self.client.api.containers(all=True, filters={"label": f"{LABEL}.host={host}"})
        reaped = 0
        for summary in found:
            labels = summary.get("Labels") or {}
            try:
                pid = int(labels.get(f"{LABEL}.server-pid", ""))
            except ValueError:
                continue
            started = labels.get(f"{LABEL}.server-start", "")
            if started and _start_time(pid) == started:
                continue  # its server is alive (maybe this very process)
            if summary["Id"] in keep:
                self._states[summary["Id"]] = summary.get("State", "running")
                continue  # a shared record still serves it: adopted
            self._remove_sync(summary["Id"])
            reaped += 1
        return reaped

    async def close(self) -> None:
        self._closing = True
        if self._events is not None:
            with contextlib.suppress(Exception):
                self._events.close()
        if self._events_thread is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._events_thread.join, 5)
        self._pool.shutdown(wait=True)
        if self._client is not None:
            self._client.close()


def _read_stdout_line(sock: socket.socket, deadline: float) -> bytes:
    """Read one line of the container's stdout from a multiplexed attach stream: frames of
    an 8-byte header (stream number, 3 zero bytes, big-endian length) and their payload."""
    buffer = b""
    while b"\n" not in buffer:
        header = _read_exactly(sock, 8, deadline)
        if not header:
            break
        stream_type, size = header[0], struct.unpack(">I", header[4:])[0]
        payload = _read_exactly(sock, size, deadline)
        if stream_type == 1:
            buffer += payload
    return buffer.split(b"\n", 1)[0]


def _read_exactly(sock: socket.socket, n: int, deadline: float) -> bytes:
    data = b""
    while len(data) < n:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no ready line in time")
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(n - len(data))
        except TimeoutError:
            raise TimeoutError("no ready line in time") from None
        if not chunk:
            return data if data else b""
        data += chunk
    return data
