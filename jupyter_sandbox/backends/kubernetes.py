"""The `kubernetes` backend: each sandbox is a Pod, made through the official `kubernetes` client.

A pod runs the same box as a Docker sandbox (the image's entrypoint, listening on
`tcp:0.0.0.0:8080`), as uid/gid 65534 with `runAsNonRoot`, no privilege escalation, every
capability dropped, the runtime's default seccomp profile, a read-only root file system with an
emptyDir `/tmp`, the type's memory and CPU limits, no service-account token, and
`shareProcessNamespace` (the pause container is PID 1: it reaps zombies and a delete stops the
box at once). `runtime_class_name` selects gVisor or Kata where the cluster has them.

The box's configuration line (its bearer token among others) never appears in the pod spec, its
environment or anything else the API stores. The container is made with `stdin: true,
stdinOnce: true`; once it runs, the backend *attaches* to it (the `pods/attach` subresource,
the Kubernetes twin of Docker's attach that the docker backend uses), writes the line to its
stdin and reads the box's `{"ready": true}` from its stdout on the same stream. Verified on the
1.20 dockershim cluster of `../shared/k8s` (the attach goes apiserver → kubelet → dockershim →
`docker attach`; about 0.1 s with the box's own start) and it is plain API, so any cluster
whose RBAC grants `pods/attach` works. (The fallback considered, `exec` of a tiny writer into a
named pipe the box reads, would need a shell in every image and `pods/exec` for every create;
it was not needed.)

How the server reaches a box: `access = "pod-ip"` (the default, the fastest: the pod's own
address, for a server in the cluster or on a node) or `"service"` (a Service per sandbox, owned
by its pod so it goes with it; its ClusterIP, or a NodePort at `service_host`).

`/workspace` is an emptyDir by default. So that storage sync, session restore and
`stop`/`start` behave as on the other backends (which share the server's `mount_dir`), the
workspace is copied into a new pod when its `mount_dir` has files (and into a pooled pod that a
session restore claims), and out to `mount_dir` before its pod is deleted (`sync_workspace`, a
`tar` through `pods/exec`). Unlike a bind mount, `mount_dir` is not a live view of a running
sandbox's files. With `workspace_claim` the workspace is instead a sub-directory (the sandbox's
session id) of a PersistentVolumeClaim that the server also mounts at `SandboxApp.mount_dir`;
with `workspace_host_path` it is the server's own `mount_dir` directory as a hostPath (a server
on a single-node cluster, as the seed does). `readonly_mounts` are hostPath volumes.

State comes from one watch on the namespace's sandbox pods (re-listed when it breaks), which
keeps `status` current and wakes the creates waiting for their pods; nothing polls. A create is
handed out only when the pod runs and its box said ready (the manager then checks that it
answers). It fails fast on a pod that cannot start (ErrImageNeverPull, InvalidImageName, an
image that does not exist, OOMKilled, …) and otherwise after `ready_timeout`, naming the pod's
phase and reason (ImagePullBackOff, Unschedulable with the scheduler's message, …). Creation is
transactional: a failed or cancelled create deletes its pod (and Service). `destroy` deletes
with grace period 0: the pod leaves the API at once.

Pods are labelled `app=jupyter-sandbox` with the server's id, host and pid, the sandbox type
and session; `reap_orphans` deletes those whose server is gone: on this host, a server is
recognised by pid *and* start time (as the other backends do); a server that runs in a pod
(`POD_NAME`/`POD_NAMESPACE`/`POD_UID` from the downward API) is gone when that pod is. Pods of
live servers elsewhere are left alone. The Pod API has no per-pod process limit, so
`SandboxApp.pids_limit` does not apply: the kubelet's `--pod-max-pids` is the cluster's limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import os
import re
import shutil
import socket
import tarfile
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from traitlets import Bool, CaselessStrEnum, Dict, Float, Int, List, Unicode

from .base import Backend, BackendError, BackendUnavailable, SandboxSpec, Started

BOX_PORT = 8080
CONTAINER = "box"
LABEL = "jupyter-sandbox"  # label keys: jupyter-sandbox/<name>
APP = {"app": "jupyter-sandbox"}
SELECTOR = "app=jupyter-sandbox"
SANDBOX_ID = 65534  # nobody:nogroup, the same numeric ids in every Debian image
DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
DNS1035_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
# A container waiting for one of these will never start: fail at once, not at the timeout.
HOPELESS = {"ErrImageNeverPull", "InvalidImageName", "CreateContainerConfigError",
            "CreateContainerError"}  # fmt: skip
# An image pull that failed for one of these reasons will not succeed by waiting.
MISSING_IMAGE = re.compile(
    r"not found|manifest unknown|does not exist|pull access denied|unauthorized|"
    r"denied|no such image",
    re.IGNORECASE,
)
# Keys of a type's runtime_config this backend understands (the seed's k8s keys and ours).
RUNTIME_KEYS = {
    "image_pull_policy", "resources", "security_context", "node_selector", "tolerations",
    "image_pull_secrets", "runtime_class_name", "pod_overrides",
}  # fmt: skip


def _start_time(pid: int) -> str | None:
    with contextlib.suppress(OSError), open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[19]
    return None


def label_value(text: str) -> str:
    """`text` as a valid label value: at most 63 of [A-Za-z0-9-_.], alphanumeric at both ends."""
    value = re.sub(r"[^A-Za-z0-9_.-]", "-", text)[:63]
    return value.strip("-_.")


def quantity_memory(size: int) -> str:
    """Bytes as a Kubernetes quantity (`512Mi`, `1Gi`, or plain bytes)."""
    for unit, power in (("Gi", 30), ("Mi", 20), ("Ki", 10)):
        if size and size % (1 << power) == 0:
            return f"{size >> power}{unit}"
    return str(size)


def quantity_cpu(cpus: float) -> str:
    return f"{max(1, round(cpus * 1000))}m"


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge `extra` into a copy of `base`: dicts merge, anything else replaces; the
    `containers` list merges by container name."""
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        elif key == "containers" and isinstance(value, list) and isinstance(out.get(key), list):
            named = {c.get("name"): c for c in out[key]}
            for container in value:
                name = container.get("name", CONTAINER)
                named[name] = merge(named.get(name, {"name": name}), container)
            out[key] = list(named.values())
        else:
            out[key] = copy.deepcopy(value)
    return out


def validate_prefix(prefix: str, access: str = "pod-ip") -> None:
    """Raise ValueError unless `prefix` + a session id is a valid pod (and Service) name."""
    sample = prefix + "a" * 25  # session ids: 25 lowercase alphanumerics
    if len(sample) > 63 or not DNS1123_SUBDOMAIN.fullmatch(sample):
        raise ValueError(
            f"SandboxApp.container_prefix={prefix!r} makes pod names that are not valid "
            "Kubernetes (DNS-1123) names: use lowercase letters, digits, '-' and '.', starting "
            "with a letter or digit, at most 38 characters, e.g. 'runtime-sandbox-container-' "
            "(the seed's 'runtime_sandbox_container_' has underscores, which Kubernetes refuses)"
        )
    if access == "service" and not DNS1035_LABEL.fullmatch(sample):
        raise ValueError(
            f"SandboxApp.container_prefix={prefix!r}: with KubernetesBackend.access='service' "
            "the sandbox name is also a Service name (DNS-1035): lowercase letters, digits and "
            "'-', starting with a letter"
        )


class KubernetesBackend(Backend):
    """Sandboxes as pods on a Kubernetes cluster (the official `kubernetes` client)."""

    name = "kubernetes"

    namespace = Unicode(
        "default",
        config=True,
        help="Namespace of sandbox pods (seed K8S_NAMESPACE); it must exist.",
    )
    kubeconfig = Unicode(
        "",
        config=True,
        help="Path of a kubeconfig file (seed KUBECONFIG_PATH). Empty: the in-cluster "
        "configuration when the server runs in a pod, else $KUBECONFIG or ~/.kube/config.",
    )
    context = Unicode("", config=True, help="Context of the kubeconfig to use; empty: current.")
    access = CaselessStrEnum(
        ["pod-ip", "service"],
        default_value="pod-ip",
        config=True,
        help="How the server reaches a box: 'pod-ip' (the pod's address; needs a server that "
        "routes to pods, as one in the cluster or on a node does) or 'service' (a Service "
        "per sandbox, see service_type).",
    )
    service_type = CaselessStrEnum(
        ["ClusterIP", "NodePort"],
        default_value="ClusterIP",
        config=True,
        help="With access='service': 'ClusterIP' (reached at the Service's cluster IP) or "
        "'NodePort' (reached at service_host, else the pod's node address, and the node port).",
    )
    service_host = Unicode(
        "", config=True, help="With access='service', service_type='NodePort': the host name "
        "or address at which node ports are reached; empty: the address of the pod's node."
    )  # fmt: skip
    image_pull_policy = CaselessStrEnum(
        ["IfNotPresent", "Always", "Never"],
        default_value="IfNotPresent",
        config=True,
        help="imagePullPolicy of sandbox containers ('Never' for images built on the nodes).",
    )
    ready_timeout = Float(
        120.0,
        config=True,
        help="Seconds a new pod may take to be scheduled, pull its image, start and have its "
        "box ready; past it the create fails, naming the pod's phase and reason. Pods that "
        "cannot start (missing image, OOMKilled, …) fail at once.",
    )
    runtime_class_name = Unicode(
        "", config=True, help="runtimeClassName of sandbox pods, e.g. 'gvisor' or 'kata'."
    )
    workspace_claim = Unicode(
        "",
        config=True,
        help="A PersistentVolumeClaim (ReadWriteMany) holding workspaces: each sandbox mounts "
        "its sub-directory (its session id) at /workspace. The server must mount the same "
        "claim at SandboxApp.mount_dir. Empty: an emptyDir per sandbox (see sync_workspace).",
    )
    workspace_host_path = Bool(
        False,
        config=True,
        help="Mount the sandbox's directory under SandboxApp.mount_dir as a hostPath at "
        "/workspace (the seed's way): only for a server that runs on the node of its pods.",
    )
    sync_workspace = Bool(
        True,
        config=True,
        help="With the emptyDir workspace: copy /workspace out to the server's mount_dir "
        "before a pod is deleted, and in when a new pod's mount_dir has files (restores, "
        "storage loads), through pods/exec and tar, so storage sync and session restore work "
        "as on the other backends. Off: a workspace lives and dies with its pod.",
    )
    tmp_size = Unicode("512m", config=True, help="sizeLimit of each sandbox's emptyDir /tmp.")
    request_fraction = Float(
        0.1,
        config=True,
        help="CPU and memory requests as this fraction of the type's limits: idle warm "
        "sandboxes then do not reserve whole CPUs. 1.0: requests = limits (Guaranteed QoS).",
    )
    node_selector = Dict(config=True, help="nodeSelector of sandbox pods.")
    tolerations = List(config=True, help="Tolerations of sandbox pods (as in a pod spec).")
    image_pull_secrets = List(
        Unicode(), config=True, help="Names of Secrets used to pull sandbox images."
    )
    service_account_name = Unicode(
        "", config=True, help="serviceAccountName of sandbox pods (its token is not mounted)."
    )
    pod_overrides = Dict(
        config=True,
        help="Deep-merged into every sandbox pod manifest (camelCase, as in YAML), e.g. "
        "{'spec': {'priorityClassName': 'sandboxes'}}; the box container is named 'box'. A "
        "type's runtime_config may carry its own 'pod_overrides'.",
    )
    api_workers = Int(8, config=True, help="Threads that call the Kubernetes API.")

    def __init__(self, server_id: str = "", container_prefix: str = "", **kw: Any):
        super().__init__(**kw)
        self.server_id = server_id
        self.container_prefix = container_prefix
        self._api: Any = None  # CoreV1Api for plain calls
        self._stream_api: Any = None  # CoreV1Api whose client `stream()` patches, under a lock
        self._stream_lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=self.api_workers, thread_name_prefix="k8s")
        self._pods: dict[str, Any] = {}  # pod name → latest V1Pod, kept by the watch
        self._changed = threading.Condition()
        self._watch: Any = None
        self._watch_thread: threading.Thread | None = None
        self._closing = False
        self._workspaces: dict[str, str] = {}  # pod name → host workspace (emptyDir sync)
        self._warned_keys: set[str] = set()
        pid = os.getpid()
        server_pod = {
            k: os.environ.get(f"POD_{k.upper()}", "") for k in ("name", "namespace", "uid")
        }
        # Where the server's pid means something: its pod (set by the downward API; a pod
        # with hostNetwork shares the node's host name), else this host.
        self.host_id = server_pod["name"] if all(server_pod.values()) else socket.gethostname()
        self._labels = {
            **APP,
            f"{LABEL}/server-id": label_value(server_id),
            f"{LABEL}/server-host": label_value(self.host_id),
            f"{LABEL}/server-pid": str(pid),
        }
        self._annotations = {
            f"{LABEL}/server-host": self.host_id,
            f"{LABEL}/server-start": _start_time(pid) or "",
        }
        if all(server_pod.values()):
            for key, value in server_pod.items():
                self._annotations[f"{LABEL}/server-pod-{key}"] = value

    # -- cluster -----------------------------------------------------------------------------

    def check(self) -> None:
        try:
            from kubernetes import client, config
        except ImportError:
            raise BackendUnavailable(
                "the 'kubernetes' backend needs the Kubernetes client for Python: "
                "pip install 'jupyter-sandbox[kubernetes]'"
            ) from None
        if self.container_prefix:
            try:
                validate_prefix(self.container_prefix, self.access)
            except ValueError as e:
                raise BackendUnavailable(str(e)) from None
        configuration = client.Configuration()
        where = self.kubeconfig or "the default kubeconfig"
        try:
            if self.kubeconfig:
                config.load_kube_config(
                    config_file=self.kubeconfig,
                    context=self.context or None,
                    client_configuration=configuration,
                )
            elif os.environ.get("KUBERNETES_SERVICE_HOST"):
                where = "the in-cluster configuration"
                config.load_incluster_config(client_configuration=configuration)
            else:
                config.load_kube_config(
                    context=self.context or None, client_configuration=configuration
                )
        except Exception as e:
            raise BackendUnavailable(
                f"cannot load {where} ({e}). Point --KubernetesBackend.kubeconfig (seed "
                "KUBECONFIG_PATH) at a kubeconfig, or run the server in a pod."
            ) from None
        if not configuration.verify_ssl:
            import urllib3

            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
            self.log.warning("the kubeconfig skips TLS verification of %s", configuration.host)
        configuration.connection_pool_maxsize = max(16, self.api_workers * 2)
        self._api = client.CoreV1Api(client.ApiClient(configuration))
        self._stream_api = client.CoreV1Api(client.ApiClient(configuration))
        try:
            found = self._api.list_namespaced_pod(
                self.namespace, label_selector=SELECTOR, _request_timeout=15
            )
        except client.ApiException as e:
            raise BackendUnavailable(
                f"the Kubernetes API at {configuration.host} refused to list pods in namespace "
                f"{self.namespace!r}: {e.status} {e.reason}. The server's account needs a Role "
                "with pods (get, list, watch, create, delete), pods/attach and pods/exec "
                "(create, get) and services when access='service' (deploy/kubernetes/rbac.yaml)."
            ) from None
        except Exception as e:
            raise BackendUnavailable(
                f"no Kubernetes API answers at {configuration.host} ({where}): {e}. Start a "
                "cluster (on these machines: `bash ../shared/k8s/k8s-up.sh`) or point "
                "--KubernetesBackend.kubeconfig at one."
            ) from None
        with contextlib.suppress(client.ApiException):  # a namespaced Role may not read it
            try:
                self._api.read_namespace(self.namespace, _request_timeout=15)
            except client.ApiException as e:
                if e.status == 404:
                    raise BackendUnavailable(
                        f"namespace {self.namespace!r} does not exist: create it (kubectl "
                        "create namespace ...) or set --KubernetesBackend.namespace "
                        "(seed K8S_NAMESPACE)"
                    ) from None
                raise
        with self._changed:
            self._pods = {p.metadata.name: p for p in found.items}
        self._start_watch(found.metadata.resource_version)

    @property
    def api(self) -> Any:
        if self._api is None:
            self.check()
        return self._api

    async def _run(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, lambda: fn(*args, **kwargs))

    def _stream(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """Open a websocket (exec, attach). `stream()` swaps its client's transport while it
        connects, so connects take turns on a client of their own; the streams then run
        independently."""
        from kubernetes.stream import stream

        with self._stream_lock:
            return stream(getattr(self._stream_api, method), *args, **kwargs)

    # -- the watch ---------------------------------------------------------------------------

    def _start_watch(self, resource_version: str) -> None:
        if self._watch_thread is not None:
            return
        self._watch_thread = threading.Thread(
            target=self._follow, args=(resource_version,), name="k8s-watch", daemon=True
        )
        self._watch_thread.start()

    def _follow(self, resource_version: str) -> None:
        """Keep `_pods` current from a watch on the sandbox pods; when it breaks (410 Gone,
        an API restart), list them again and watch on from there."""
        from kubernetes import watch

        while not self._closing:
            try:
                if not resource_version:
                    found = self._api.list_namespaced_pod(
                        self.namespace, label_selector=SELECTOR, _request_timeout=30
                    )
                    resource_version = found.metadata.resource_version
                    fresh = {p.metadata.name: p for p in found.items}
                    with self._changed:
                        for name, pod in self._pods.items():
                            if name not in fresh and _rv(pod) > _rv(found):
                                fresh[name] = pod  # created after this list was taken
                        self._pods = fresh
                        self._changed.notify_all()
                self._watch = watch.Watch()
                for event in self._watch.stream(
                    self._api.list_namespaced_pod,
                    self.namespace,
                    label_selector=SELECTOR,
                    resource_version=resource_version,
                    timeout_seconds=60,
                    allow_watch_bookmarks=True,
                ):
                    if self._closing:
                        return
                    kind, pod = event["type"], event["object"]
                    if kind == "ERROR":
                        resource_version = ""
                        break
                    if kind == "BOOKMARK":
                        continue
                    with self._changed:
                        if kind == "DELETED":
                            self._pods.pop(pod.metadata.name, None)
                        else:
                            self._pods[pod.metadata.name] = pod
                        self._changed.notify_all()
                resource_version = self._watch.resource_version or resource_version
            except Exception as e:
                if self._closing:
                    return
                status = getattr(e, "status", None)
                if status != 410:
                    self.log.warning("the watch on sandbox pods broke (%s); listing again", e)
                    time.sleep(1)
                resource_version = ""

    def _pod(self, name: str) -> Any:
        with self._changed:
            return self._pods.get(name)

    # -- create ------------------------------------------------------------------------------

    async def create(self, spec: SandboxSpec) -> Started:
        return await self.create_in_thread(self._pool, self._create_sync, spec)

    def _create_sync(self, spec: SandboxSpec) -> Started:
        from kubernetes import client

        name = spec.name
        made = False
        deadline = time.monotonic() + self.ready_timeout
        try:
            manifest = self.pod_manifest(spec)
            self._prepare_workspace(spec.workspace)
            try:
                pod = self.api.create_namespaced_pod(self.namespace, manifest, _request_timeout=30)
            except client.ApiException as e:
                raise BackendError(f"the cluster refused pod {name}: {_api_reason(e)}") from None
            except BaseException:
                made = True  # no answer: the pod may exist all the same, so it is deleted
                raise
            made = True
            with self._changed:
                self._pods.setdefault(name, pod)
            if self._syncs():
                self._workspaces[name] = spec.workspace
            if self.access == "service":
                self._create_service(pod)
            self._wait_running(name, deadline)
            if self._syncs() and os.path.isdir(spec.workspace) and os.listdir(spec.workspace):
                self._copy_in(name, spec.workspace, deadline)
            self._configure(name, spec, deadline)
            url = self._url(name, deadline)
            return Started(container_id=name, url=url)
        except BaseException as e:
            if made:
                with contextlib.suppress(Exception):  # keep the original error
                    self._delete(name)
            self._workspaces.pop(name, None)
            if isinstance(e, BackendError) or not isinstance(e, Exception):
                raise
            raise BackendError(f"the Kubernetes API failed while creating {name}: {e}") from e

    def _syncs(self) -> bool:
        return self.sync_workspace and not self.workspace_claim and not self.workspace_host_path

    def _prepare_workspace(self, path: str) -> None:
        if not (self.workspace_claim or self.workspace_host_path):
            return  # an emptyDir: the host directory only holds copies
        if os.geteuid() == 0:
            os.chown(path, SANDBOX_ID, SANDBOX_ID)
        else:
            os.chmod(path, 0o777)  # noqa: S103 - the pod's user is not ours

    def pod_manifest(self, spec: SandboxSpec) -> dict[str, Any]:
        """The Pod for `spec`, as the API takes it (camelCase). Never holds the token."""
        extra = dict(spec.runtime_config)
        for key in set(extra) - RUNTIME_KEYS:
            if key not in self._warned_keys:
                self._warned_keys.add(key)
                self.log.warning(
                    "runtime_config key %r of type %s means nothing to the kubernetes backend; "
                    "ignored (it understands %s)", key, spec.sandbox_type,
                    ", ".join(sorted(RUNTIME_KEYS)),
                )  # fmt: skip
        labels = {
            **self._labels,
            **{f"{LABEL}/{k}": label_value(v) for k, v in spec.labels.items()},
            f"{LABEL}/sandbox-type": label_value(spec.sandbox_type),
            f"{LABEL}/name": spec.name,
            f"{LABEL}/network": "on" if spec.network else "off",
        }
        annotations = dict(self._annotations)
        if self._syncs():
            annotations[f"{LABEL}/workspace"] = os.path.abspath(spec.workspace)
        memory = spec.limits.memory_bytes
        fraction = min(1.0, max(0.01, self.request_fraction))
        resources = {
            "limits": {"memory": quantity_memory(memory), "cpu": quantity_cpu(spec.limits.cpus)},
            "requests": {
                "memory": quantity_memory(max(16 << 20, int(memory * fraction)) & ~0xFFFFF),
                "cpu": quantity_cpu(spec.limits.cpus * fraction),
            },
        }
        if "resources" in extra:
            resources = merge(resources, extra["resources"])
        security = {
            "allowPrivilegeEscalation": False,
            "privileged": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        }
        if "security_context" in extra:
            security = merge(security, extra["security_context"])
        mounts = [
            {"name": "workspace", "mountPath": "/workspace"},
            {"name": "tmp", "mountPath": "/tmp"},
        ]
        volumes: list[dict[str, Any]] = [
            {"name": "tmp", "emptyDir": {"sizeLimit": _size_quantity(self.tmp_size)}},
        ]
        if self.workspace_claim:
            mounts[0]["subPath"] = os.path.basename(os.path.normpath(spec.workspace))
            volumes.append(
                {"name": "workspace", "persistentVolumeClaim": {"claimName": self.workspace_claim}}
            )
        elif self.workspace_host_path:
            volumes.append(
                {
                    "name": "workspace",
                    "hostPath": {"path": os.path.abspath(spec.workspace), "type": "Directory"},
                }
            )
        else:
            volumes.append({"name": "workspace", "emptyDir": {}})
        for index, (host, inside) in enumerate(sorted(spec.readonly_mounts.items())):
            volumes.append({"name": f"ro-{index}", "hostPath": {"path": os.path.abspath(host)}})
            mounts.append({"name": f"ro-{index}", "mountPath": inside, "readOnly": True})
        environment = {"SANDBOX_TYPE": spec.sandbox_type, **spec.environment}
        container = {
            "name": CONTAINER,
            "image": spec.image,
            "imagePullPolicy": extra.get("image_pull_policy") or self.image_pull_policy,
            # An attached, once-only stdin: the box reads its configuration line there.
            "stdin": True,
            "stdinOnce": True,
            "tty": False,
            "workingDir": "/workspace",
            "env": [{"name": k, "value": str(v)} for k, v in environment.items()],
            "ports": [{"name": "box", "containerPort": BOX_PORT, "protocol": "TCP"}],
            "resources": resources,
            "securityContext": security,
            "volumeMounts": mounts,
        }
        pod_spec: dict[str, Any] = {
            "restartPolicy": "Never",
            "hostname": "sandbox",
            "shareProcessNamespace": True,
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "terminationGracePeriodSeconds": 1,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": SANDBOX_ID,
                "runAsGroup": SANDBOX_ID,
                "fsGroup": SANDBOX_ID,
                "fsGroupChangePolicy": "OnRootMismatch",
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [container],
            "volumes": volumes,
        }
        runtime_class = extra.get("runtime_class_name") or self.runtime_class_name
        if runtime_class:
            pod_spec["runtimeClassName"] = runtime_class
        node_selector = {**self.node_selector, **extra.get("node_selector", {})}
        if node_selector:
            pod_spec["nodeSelector"] = node_selector
        tolerations = [*self.tolerations, *extra.get("tolerations", [])]
        if tolerations:
            pod_spec["tolerations"] = tolerations
        secrets = [*self.image_pull_secrets, *extra.get("image_pull_secrets", [])]
        if secrets:
            pod_spec["imagePullSecrets"] = [
                s if isinstance(s, dict) else {"name": s} for s in secrets
            ]
        if self.service_account_name:
            pod_spec["serviceAccountName"] = self.service_account_name
        manifest = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": spec.name, "labels": labels, "annotations": annotations},
            "spec": pod_spec,
        }
        for overrides in (self.pod_overrides, extra.get("pod_overrides") or {}):
            manifest = merge(manifest, overrides)
        return manifest

    def _wait_running(self, name: str, deadline: float) -> None:
        """Wait (on the watch) until the box container runs; fail at once when it cannot."""
        while True:
            pod = self._pod(name)
            if pod is None:
                self._refresh(name)  # the cache may have missed it (a re-list)
                pod = self._pod(name)
            if pod is None:
                raise BackendError(f"pod {name} was deleted while it was starting")
            state = _box_state(pod)
            if state is not None and state.running is not None:
                return
            why = self._hopeless(pod)
            if why:
                raise BackendError(f"pod {name} cannot start: {why}{self._log_tail(name, pod)}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BackendError(
                    f"pod {name} was not ready within KubernetesBackend.ready_timeout="
                    f"{self.ready_timeout:g} s: {describe_pod(pod)}"
                )
            woken = True
            with self._changed:
                if self._pods.get(name) is pod:
                    woken = self._changed.wait(min(remaining, 5.0))
            if not woken:  # 5 s without any event: guard against a stalled watch
                self._refresh(name)

    def _refresh(self, name: str) -> None:
        from kubernetes import client

        try:
            pod = self.api.read_namespaced_pod(name, self.namespace, _request_timeout=10)
        except client.ApiException as e:
            if e.status == 404:
                with self._changed:
                    self._pods.pop(name, None)
            return
        with self._changed:
            current = self._pods.get(name)
            if current is None or _newer(pod, current):
                self._pods[name] = pod

    def _hopeless(self, pod: Any) -> str | None:
        """Why this pod will never run its box, or None while it might."""
        status = pod.status
        if pod.metadata.deletion_timestamp is not None:
            return "it is being deleted"
        if status is not None and status.phase in ("Failed", "Succeeded"):
            return describe_pod(pod)
        state = _box_state(pod)
        if state is None:
            return None
        if state.terminated is not None:
            return describe_pod(pod)
        waiting = state.waiting
        if waiting is not None and waiting.reason:
            if waiting.reason in HOPELESS:
                return describe_pod(pod) + _image_hint(waiting.reason)
            if waiting.reason in ("ErrImagePull", "ImagePullBackOff") and MISSING_IMAGE.search(
                waiting.message or ""
            ):
                return describe_pod(pod) + _image_hint(waiting.reason)
        return None

    def _configure(self, name: str, spec: SandboxSpec, deadline: float) -> None:
        """Hand the box its configuration line on the attached stdin; read its ready line."""
        try:
            ws = self._stream(
                "connect_get_namespaced_pod_attach",
                name,
                self.namespace,
                container=CONTAINER,
                stdin=True,
                stdout=True,
                stderr=False,
                tty=False,
                _preload_content=False,
                binary=True,
            )
        except Exception as e:
            raise BackendError(
                f"cannot attach to pod {name} to configure its box: {_api_reason(e)}"
            ) from None
        try:
            ws.write_stdin(json.dumps(spec.box_config("/workspace")).encode() + b"\n")
            line = b""
            while b"\n" not in line and ws.is_open():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                ws.update(timeout=min(remaining, 1.0))
                line += ws.read_channel(1, timeout=0) or b""
        finally:
            with contextlib.suppress(Exception):
                ws.close()
        text = line.split(b"\n", 1)[0]
        try:
            message = json.loads(text) if text else None
        except ValueError:
            message = {"ready": False, "error": f"unexpected output {text[:200]!r}"}
        if message is None:
            # The stream ended without a line: the box died. The kubelet reports why within
            # about a second; wait for that on the watch, so the error can name it.
            pod = self._wait_ended(name, min(10.0, max(2.0, deadline - time.monotonic())))
            why = describe_pod(pod) if pod is not None else "its pod is gone"
            if time.monotonic() >= deadline:
                raise BackendError(
                    f"pod {name}: its box was not ready within KubernetesBackend.ready_timeout="
                    f"{self.ready_timeout:g} s ({why}){self._log_tail(name, pod)}"
                )
            raise BackendError(
                f"pod {name}: its box exited before it was ready ({why}){self._log_tail(name, pod)}"
            )
        if not message.get("ready"):
            raise BackendError(
                f"sandbox {name} failed to start: {message.get('error')}"
                f"{self._log_tail(name, self._pod(name))}"
            )

    def _wait_ended(self, name: str, timeout: float) -> Any:
        """The pod once its box has terminated (or it is gone), or as it is after `timeout`."""
        end = time.monotonic() + timeout
        with self._changed:
            while True:
                pod = self._pods.get(name)
                state = _box_state(pod) if pod is not None else None
                remaining = end - time.monotonic()
                if pod is None or (state is not None and state.terminated) or remaining <= 0:
                    break
                self._changed.wait(remaining)
        if pod is not None and not (state is not None and state.terminated):
            self._refresh(name)
            pod = self._pod(name)
        return pod

    def _url(self, name: str, deadline: float) -> str:
        if self.access == "service":
            return self._service_url(name, deadline)
        pod = self._pod(name)
        if pod is None or not (pod.status and pod.status.pod_ip):
            self._refresh(name)
            pod = self._pod(name)
        address = pod.status.pod_ip if pod is not None and pod.status else None
        if not address:
            raise BackendError(f"pod {name} runs but has no IP address")
        host = f"[{address}]" if ":" in address else address
        return f"http://{host}:{BOX_PORT}"

    def _log_tail(self, name: str, pod: Any) -> str:
        try:
            logs = self.api.read_namespaced_pod_log(
                name, self.namespace, container=CONTAINER, tail_lines=30, _request_timeout=5
            )
        except Exception:
            return ""
        tail = (logs or "").strip()[-1500:]
        return f"; its log ends with:\n{tail}" if tail else ""

    # -- services (access = "service") -------------------------------------------------------

    def _create_service(self, pod: Any) -> None:
        from kubernetes import client

        name = pod.metadata.name
        service = {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {
                "name": name,
                "labels": dict(pod.metadata.labels or {}),
                # Owned by its pod: the garbage collector removes it with the pod, even when
                # the server that made both is gone.
                "ownerReferences": [
                    {"apiVersion": "v1", "kind": "Pod", "name": name, "uid": pod.metadata.uid}
                ],
            },
            "spec": {
                "type": self.service_type,
                "selector": {f"{LABEL}/name": name},
                "ports": [{"name": "box", "port": BOX_PORT, "targetPort": BOX_PORT}],
            },
        }
        try:
            self.api.create_namespaced_service(self.namespace, service, _request_timeout=30)
        except client.ApiException as e:
            raise BackendError(
                f"the cluster refused the Service of {name}: {_api_reason(e)}"
            ) from None

    def _service_url(self, name: str, deadline: float) -> str:
        service = self.api.read_namespaced_service(name, self.namespace, _request_timeout=10)
        if self.service_type == "NodePort":
            port = next((p.node_port for p in service.spec.ports or [] if p.node_port), None)
            pod = self._pod(name)
            host = self.service_host or (pod.status.host_ip if pod and pod.status else None)
            if not port or not host:
                raise BackendError(f"the Service of {name} has no node port or node address")
            return f"http://{host}:{port}"
        address = service.spec.cluster_ip
        if not address or address == "None":
            raise BackendError(f"the Service of {name} has no cluster IP")
        return f"http://{address}:{BOX_PORT}"

    # -- workspace copies (emptyDir) ---------------------------------------------------------

    def _exec(self, name: str, command: list[str], stdin: bool) -> Any:
        ws = self._stream(
            "connect_get_namespaced_pod_exec",
            name,
            self.namespace,
            container=CONTAINER,
            command=command,
            stdin=stdin,
            stdout=True,
            stderr=True,
            tty=False,
            _preload_content=False,
            binary=True,
        )
        with contextlib.suppress(AttributeError):  # do not keep a second copy of stdout
            ws._all = _Discard()
        return ws

    def _copy_in(self, name: str, host_dir: str, deadline: float) -> None:
        """Copy a host workspace into the pod's emptyDir (before its box starts)."""
        with tempfile.TemporaryFile() as archive:
            with tarfile.open(fileobj=archive, mode="w") as tar:
                for entry in sorted(os.listdir(host_dir)):
                    tar.add(os.path.join(host_dir, entry), arcname=entry)
            size = archive.tell()
            archive.seek(0)
            # `head -c` ends tar's input after the archive (the v4 stream protocol of older
            # clusters cannot close stdin on its own).
            ws = self._exec(name, ["sh", "-c", f"head -c {size} | tar -C /workspace -xf -"], True)
            errors = b""
            try:
                while chunk := archive.read(256 << 10):
                    ws.write_stdin(chunk)
                while ws.is_open() and time.monotonic() < deadline:
                    ws.update(timeout=1)
                    errors += ws.read_channel(2, timeout=0) or b""
                code = ws.returncode
            finally:
                with contextlib.suppress(Exception):
                    ws.close()
        if code != 0:
            raise BackendError(
                f"copying the workspace into pod {name} failed (exit status {code}): "
                f"{errors.decode(errors='replace').strip()[-500:]}"
            )

    def _copy_out(self, name: str, host_dir: str) -> None:
        """Replace the host copy of a workspace with the pod's /workspace."""
        os.makedirs(host_dir, exist_ok=True)
        ws = self._exec(name, ["tar", "-C", "/workspace", "-cf", "-", "."], False)
        errors = b""
        with tempfile.TemporaryFile() as archive:
            try:
                deadline = time.monotonic() + 300
                while ws.is_open() and time.monotonic() < deadline:
                    ws.update(timeout=1)
                    archive.write(ws.read_channel(1, timeout=0) or b"")
                    errors += ws.read_channel(2, timeout=0) or b""
                archive.write(ws.read_channel(1, timeout=0) or b"")
                code = ws.returncode
            finally:
                with contextlib.suppress(Exception):
                    ws.close()
            if code != 0:
                raise BackendError(
                    f"exit status {code}: {errors.decode(errors='replace').strip()[-500:]}"
                )
            archive.seek(0)
            staging = tempfile.mkdtemp(prefix=".k8s-copy-", dir=os.path.dirname(host_dir))
            try:
                with tarfile.open(fileobj=archive) as tar:
                    if hasattr(tarfile, "data_filter"):
                        tar.extractall(staging, filter="data")
                    else:  # Python < 3.11.4: refuse what the data filter would
                        _check_members(tar)
                        tar.extractall(staging)
                for entry in os.listdir(host_dir):
                    path = os.path.join(host_dir, entry)
                    if os.path.isdir(path) and not os.path.islink(path):
                        shutil.rmtree(path)
                    else:
                        os.unlink(path)
                for entry in os.listdir(staging):
                    os.replace(os.path.join(staging, entry), os.path.join(host_dir, entry))
            finally:
                shutil.rmtree(staging, ignore_errors=True)

    async def workspace_updated(self, container_id: str, path: str) -> None:
        if self._syncs() and os.path.isdir(path) and os.listdir(path):
            try:
                await self._run(self._copy_in, container_id, path, time.monotonic() + 300)
            except BackendError:
                raise
            except Exception as e:
                raise BackendError(f"copying the workspace into {container_id} failed: {e}") from e

    # -- inspect / destroy -------------------------------------------------------------------

    def status(self, container_id: str) -> str | None:
        pod = self._pod(container_id)
        return pod_state(pod) if pod is not None else None

    def describe(self, container_id: str) -> str | None:
        pod = self._pod(container_id)
        return describe_pod(pod) if pod is not None else None

    async def destroy(self, container_id: str) -> None:
        await self._run(self._destroy_sync, container_id)

    def _destroy_sync(self, name: str) -> None:
        host_dir = self._workspaces.pop(name, None)
        pod = self._pod(name)
        if host_dir is None and pod is not None and self._syncs():
            # Made by another server sharing this fleet: its annotation says where.
            host_dir = (pod.metadata.annotations or {}).get(f"{LABEL}/workspace")
        if host_dir and pod is not None and pod_state(pod) == "running":
            try:
                self._copy_out(name, host_dir)
            except Exception as e:
                self.log.warning("the workspace of %s could not be copied out: %s", name, e)
        self._delete(name)

    def _delete(self, name: str) -> None:
        from kubernetes import client

        body = {"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0}
        try:
            # Not deserialized: what a delete answers (the object or a Status) differs
            # between API versions, and nothing here needs it.
            _drain(
                self.api.delete_namespaced_pod(
                    name, self.namespace, grace_period_seconds=0, body=body,
                    _request_timeout=30, _preload_content=False,
                )
            )  # fmt: skip
        except client.ApiException as e:
            if e.status != 404:
                raise BackendError(f"cannot delete pod {name}: {_api_reason(e)}") from None
        if self.access == "service":
            self._delete_service(name)
        with self._changed:
            self._pods.pop(name, None)

    def _delete_service(self, name: str) -> None:
        from kubernetes import client

        with contextlib.suppress(client.ApiException):
            _drain(
                self.api.delete_namespaced_service(
                    name, self.namespace, _request_timeout=30, _preload_content=False
                )
            )

    async def reap_orphans(self, keep: set[str] | None = None) -> int:
        return await self._run(self._reap_sync, keep or set())

    def _reap_sync(self, keep: set[str]) -> int:
        """Delete sandbox pods whose server is gone, except those in `keep` (adopted)."""
        from kubernetes import client

        found = self.api.list_namespaced_pod(
            self.namespace, label_selector=SELECTOR, _request_timeout=30
        )
        host = label_value(self.host_id)
        pods_alive: dict[tuple[str, str, str], bool] = {}
        reaped = 0
        for pod in found.items:
            name = pod.metadata.name
            if name in keep:
                with self._changed:
                    self._pods.setdefault(name, pod)
                continue  # a shared record still serves it: adopted
            labels = pod.metadata.labels or {}
            notes = pod.metadata.annotations or {}
            if labels.get(f"{LABEL}/server-host") == host:
                # This host (or this server's pod, restarted): its pid and start time tell.
                if self._process_alive(labels, notes):
                    continue
            else:
                server_pod = tuple(
                    notes.get(f"{LABEL}/server-pod-{key}", "")
                    for key in ("namespace", "name", "uid")
                )
                if not all(server_pod):
                    continue  # a server on another host: not ours to judge
                if server_pod not in pods_alive:
                    pods_alive[server_pod] = self._pod_alive(*server_pod)
                if pods_alive[server_pod]:
                    continue  # another replica, alive
            with contextlib.suppress(client.ApiException, BackendError):
                self._delete(name)
                reaped += 1
        if self.access == "service":
            self._reap_services({p.metadata.name for p in found.items})
        return reaped

    def _process_alive(self, labels: dict[str, str], notes: dict[str, str]) -> bool:
        try:
            pid = int(labels.get(f"{LABEL}/server-pid", ""))
        except ValueError:
            return True  # cannot tell: leave it
        started = notes.get(f"{LABEL}/server-start", "")
        return bool(started) and _start_time(pid) == started

    def _pod_alive(self, namespace: str, name: str, uid: str) -> bool:
        from kubernetes import client

        try:
            pod = self.api.read_namespaced_pod(name, namespace, _request_timeout=10)
        except client.ApiException as e:
            return e.status != 404  # forbidden or failing: cannot tell, so alive
        return pod.metadata.uid == uid and pod.metadata.deletion_timestamp is None

    def _reap_services(self, pods: set[str]) -> None:
        from kubernetes import client

        with contextlib.suppress(client.ApiException):
            services = self.api.list_namespaced_service(
                self.namespace, label_selector=SELECTOR, _request_timeout=30
            )
            for service in services.items:
                if service.metadata.name not in pods:
                    self._delete_service(service.metadata.name)

    async def close(self) -> None:
        self._closing = True
        if self._watch is not None:
            with contextlib.suppress(Exception):
                self._watch.stop()
        with self._changed:
            self._changed.notify_all()
        self._pool.shutdown(wait=True)
        # The watch thread ends by itself within its watch timeout (a daemon thread).
        for api in (self._api, self._stream_api):
            if api is not None:
                with contextlib.suppress(Exception):
                    api.api_client.close()


class _Discard:
    def write(self, _data: Any) -> None:
        pass


def _drain(response: Any) -> None:
    """Read an undecoded response to its end, so its connection can serve the next request."""
    try:
        response.read()
    finally:
        response.release_conn()


def _box_state(pod: Any) -> Any:
    statuses = (pod.status.container_statuses if pod.status else None) or []
    for status in statuses:
        if status.name == CONTAINER:
            return status.state
    return None


def _box_status(pod: Any) -> Any:
    statuses = (pod.status.container_statuses if pod.status else None) or []
    return next((s for s in statuses if s.name == CONTAINER), None)


def pod_state(pod: Any) -> str:
    """`running`, `created` (pending), `exited`, `removing` or `unknown`."""
    if pod.metadata.deletion_timestamp is not None:
        return "removing"
    phase = pod.status.phase if pod.status else None
    state = _box_state(pod)
    if state is not None:
        if state.terminated is not None:
            return "exited"
        if state.running is not None:
            return "running"
    if phase in ("Succeeded", "Failed"):
        return "exited"
    if phase == "Unknown":
        return "unknown"
    return "created"


def describe_pod(pod: Any) -> str:
    """The pod's phase and why, in the words of the kubelet and scheduler: `phase Pending,
    ErrImageNeverPull: Container image ... is not present`, `phase Failed, OOMKilled (exit
    code 137)`, `phase Pending, Unschedulable: 0/1 nodes are available: ...`."""
    status = pod.status
    phase = (status.phase if status else None) or "Pending"
    parts = [f"phase {phase}"]
    box = _box_status(pod)
    state = box.state if box is not None else None
    if state is not None and state.terminated is not None:
        t = state.terminated
        detail = f"{t.reason or 'terminated'} (exit code {t.exit_code})"
        if t.message:
            detail += f": {t.message.strip()}"
        parts.append(detail)
    elif state is not None and state.waiting is not None and state.waiting.reason:
        w = state.waiting
        parts.append(f"{w.reason}: {w.message.strip()}" if w.message else w.reason)
    elif status is not None:
        for condition in status.conditions or []:
            if condition.status == "False" and condition.reason:
                text = condition.reason
                if condition.message:
                    text += f": {condition.message.strip()}"
                parts.append(text)
                break
        if status.reason:
            parts.append(
                f"{status.reason}: {status.message.strip()}" if status.message else status.reason
            )
    if box is not None and box.last_state is not None and box.last_state.terminated:
        last = box.last_state.terminated
        parts.append(f"last run {last.reason or 'terminated'} (exit code {last.exit_code})")
    return ", ".join(parts)


def _image_hint(reason: str) -> str:
    if reason == "ErrImageNeverPull":
        return (
            ". With KubernetesBackend.image_pull_policy='Never' the image must be on the "
            "node: build it there with `jupyter sandbox-builder <type>`"
        )
    if reason in ("ErrImagePull", "ImagePullBackOff"):
        return (
            ". Push the image to a registry the cluster pulls from (SandboxApp.image_registry)"
            " or build it on the nodes and use KubernetesBackend.image_pull_policy='Never'"
        )
    return ""


def _rv(obj: Any) -> int:
    """An object's (or a list's) resource version as a number; 0 when it is not one."""
    try:
        return int(obj.metadata.resource_version)
    except (AttributeError, TypeError, ValueError):
        return 0


def _newer(a: Any, b: Any) -> bool:
    return _rv(a) > _rv(b) or not _rv(b)


def _api_reason(e: Exception) -> str:
    body = getattr(e, "body", None)
    if body:
        try:
            message = json.loads(body).get("message")
        except (ValueError, AttributeError):
            message = None
        if message:
            return f"{getattr(e, 'status', '')} {message}".strip()
    status, reason = getattr(e, "status", None), getattr(e, "reason", None)
    return f"{status} {reason}" if status else str(e)


def _size_quantity(size: str) -> str:
    from .base import parse_size

    return quantity_memory(parse_size(size))


def _check_members(tar: tarfile.TarFile) -> None:
    for member in tar.getmembers():
        path = os.path.normpath(member.name)
        if (
            path.startswith(("/", ".."))
            or member.isdev()
            or (
                (member.issym() or member.islnk())
                and os.path.normpath(
                    os.path.join(os.path.dirname(path), member.linkname)
                ).startswith(("/", ".."))
            )
        ):
            raise BackendError(f"refusing unsafe workspace entry {member.name!r}")
