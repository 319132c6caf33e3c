"""The kubernetes backend on a real cluster: pods named, labelled and hardened, the token kept
out of the API, the official SDK's suite, pool claims, pods that cannot start (missing image,
unpullable image, unschedulable, OOM) failing with their reason and leaving nothing behind,
workspaces that survive stop/start and cull/restore, orphan reaping after `kill -9`, Services,
and two servers sharing Redis and one pool.

Any cluster works: the kubeconfig is $KUBECONFIG (default: the one `../shared/k8s/k8s-up.sh`
writes), the namespace $JUPYTER_SANDBOX_TEST_NAMESPACE (default `jupyter-sandbox-test`, made
if missing), and images are used with pull policy $JUPYTER_SANDBOX_TEST_PULL_POLICY (default
`Never`: the sandbox images built by `jupyter sandbox-builder` on the node's Docker engine).
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from jupyter_sandbox import envfile
from jupyter_sandbox.backends import Limits, SandboxSpec
from jupyter_sandbox.backends.kubernetes import KubernetesBackend, validate_prefix

from . import test_compat_official_sdk as compat
from .conftest import (
    SHARED_SERVER_ARGS,
    TOKEN,
    Server,
    free_port,
    run_official,
    start_server,
    stop_server,
    wait_healthy,
)
from .test_redis import RedisServer

KUBECONFIG = os.environ.get("KUBECONFIG") or "/tmp/ci-k8s/run/admin.kubeconfig"
NAMESPACE = os.environ.get("JUPYTER_SANDBOX_TEST_NAMESPACE", "jupyter-sandbox-test")
PULL_POLICY = os.environ.get("JUPYTER_SANDBOX_TEST_PULL_POLICY", "Never")
SETUP_HINT = (
    "the Kubernetes tests need a cluster: on these machines `bash ../shared/k8s/k8s-up.sh` "
    "(a real single-node Kubernetes; `bash .ci/run` does it), elsewhere KUBECONFIG=<your "
    "kubeconfig>; the sandbox images must be pullable by its nodes (here: built with "
    "`jupyter sandbox-builder all` on the node's Docker engine)"
)
LABEL = "jupyter-sandbox"
# The test cluster's kubeconfig skips TLS verification (its API certificate is self-signed).
pytestmark = pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")


def k8s_args(*extra: str, pull_policy: str = PULL_POLICY) -> list[str]:
    return [
        "--SandboxApp.backend=kubernetes",
        f"--KubernetesBackend.kubeconfig={KUBECONFIG}",
        f"--KubernetesBackend.namespace={NAMESPACE}",
        f"--KubernetesBackend.image_pull_policy={pull_policy}",
        *extra,
    ]


@pytest.fixture(scope="session")
def core() -> Iterator:
    """A CoreV1Api for a cluster that answers, with the test namespace in place."""
    try:
        from kubernetes import client, config
    except ImportError:
        pytest.fail("pip install 'jupyter-sandbox[kubernetes]'", pytrace=False)
    configuration = client.Configuration()
    try:
        config.load_kube_config(config_file=KUBECONFIG, client_configuration=configuration)
        import urllib3

        urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        api = client.CoreV1Api(client.ApiClient(configuration))
        api.list_namespaced_pod("default", limit=1, _request_timeout=10)
    except Exception as e:
        pytest.fail(f"{SETUP_HINT}. ({KUBECONFIG}: {e})", pytrace=False)
    try:
        api.create_namespace({"metadata": {"name": NAMESPACE}})
    except client.ApiException as e:
        assert e.status == 409, e
    # Pods need the namespace's default service account, which the cluster makes shortly after.
    wait_until(
        lambda: any(
            a.metadata.name == "default"
            for a in api.list_namespaced_service_account(NAMESPACE).items
        ),
        what=f"the default service account of {NAMESPACE}",
    )
    yield api
    api.api_client.close()


def pods_of(core, server: Server | int) -> list:
    pid = server if isinstance(server, int) else server.proc.pid
    found = core.list_namespaced_pod(NAMESPACE, label_selector=f"{LABEL}/server-pid={pid}")
    return found.items


def wait_until(predicate, timeout: float = 30, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def shell(server: Server, sid: str, command: str) -> tuple[str, str, int | None]:
    result = server.data(
        "call_tool", identity=sid, tool_name="run_shell_command", arguments={"command": command}
    )
    texts = {item.get("description"): item["text"] for item in result["content"]}
    code = texts.get("returncode")
    return texts.get("stdout", ""), texts.get("stderr", ""), int(code) if code else None


@pytest.fixture(scope="module")
def k8s_server(tmp_path_factory: pytest.TempPathFactory, core) -> Iterator[Server]:
    """The shared servers' twin on the kubernetes backend."""
    srv = start_server(tmp_path_factory.mktemp("k8s-server"), *k8s_args(), *SHARED_SERVER_ARGS)
    yield srv
    stop_server(srv)
    assert pods_of(core, srv) == []  # auto_cleanup leaves no pod


# -- the official SDK's compatibility suite, on this backend --------------------------------


@pytest.fixture(scope="module")
def server(k8s_server: Server) -> Server:
    return k8s_server


sync_run = compat.sync_run
test_health = compat.test_health
test_list_tools_generic_group = compat.test_list_tools_generic_group
test_shell_result_shape = compat.test_shell_result_shape
test_ipython_state_and_traceback = compat.test_ipython_state_and_traceback
test_unknown_tool_is_error_dict = compat.test_unknown_tool_is_error_dict
test_get_info_fields = compat.test_get_info_fields
test_fs_with_bearer_token = compat.test_fs_with_bearer_token
test_release_then_info_shows_released = compat.test_release_then_info_shows_released
test_async_sdk = compat.test_async_sdk
test_wrong_token_gives_error_string = compat.test_wrong_token_gives_error_string
test_unknown_type_is_rejected = compat.test_unknown_type_is_rejected


def test_max_sandboxes_makes_enter_raise(agentscope_python: str, tmp_path: Path, core) -> None:
    limited = start_server(
        tmp_path, *k8s_args(), "--SandboxApp.pool_size=1", "--SandboxApp.max_sandboxes=1"
    )
    try:
        out = compat.run_sdk(
            agentscope_python,
            limited,
            """
            with BaseSandbox(base_url=URL, bearer_token=TOKEN) as first:
                out["first"] = first.run_shell_command(command="echo one")["content"][0]["text"]
                try:
                    with BaseSandbox(base_url=URL, bearer_token=TOKEN):
                        out["second"] = "entered"
                except RuntimeError as e:
                    out["second"] = "RuntimeError: " + str(e)[:40]
            """,
        )
    finally:
        stop_server(limited)
    assert out["first"] == "one\n"
    assert out["second"].startswith("RuntimeError: No sandbox available")


# -- pods ------------------------------------------------------------------------------------


def test_pod_is_named_labelled_and_hardened(k8s_server: Server, core) -> None:
    sid = k8s_server.data("create_from_pool", sandbox_type="base")
    try:
        pod = core.read_namespaced_pod(sid, NAMESPACE)  # named exactly as the sandbox id
        labels = pod.metadata.labels
        assert labels["app"] == "jupyter-sandbox"
        assert labels[f"{LABEL}/sandbox-type"] == "base"
        assert sid.endswith(labels[f"{LABEL}/session-id"])
        assert labels[f"{LABEL}/server-pid"] == str(k8s_server.proc.pid)
        assert labels[f"{LABEL}/server-id"]
        spec = pod.spec
        assert spec.share_process_namespace is True
        assert spec.automount_service_account_token is False
        assert spec.security_context.run_as_non_root is True
        assert spec.security_context.run_as_user == 65534
        (box,) = spec.containers
        assert box.security_context.allow_privilege_escalation is False
        assert box.security_context.read_only_root_filesystem is True
        assert box.security_context.capabilities.drop == ["ALL"]
        assert box.resources.limits == {"cpu": "1", "memory": "512Mi"}
        assert box.image == "agentscope/runtime-sandbox-base:latest"
        # The token reached the box over the attached stdin: nothing the API stores has it.
        info = k8s_server.data("get_info", identity=sid)
        raw = json.dumps(core.api_client.sanitize_for_serialization(pod))
        assert info["runtime_token"] not in raw
        assert info["url"] == f"http://{pod.status.pod_ip}:8080"

        out, _, code = shell(
            k8s_server,
            sid,
            "id -u; grep -E '^(CapEff|NoNewPrivs)' /proc/self/status; "
            "touch /usr/x 2>&1; touch /tmp/ok && echo tmp-writable; "
            "echo data > /workspace/f && echo ws-writable; hostname; "
            "ls /var/run/secrets/kubernetes.io 2>&1 | head -1",
        )
        assert code == 0
        lines = out.splitlines()
        assert lines[0] == "65534"
        assert "CapEff:\t0000000000000000" in lines
        assert "NoNewPrivs:\t1" in lines
        assert "Read-only file system" in out
        assert "tmp-writable" in lines and "ws-writable" in lines
        assert "sandbox" in lines
        assert "No such file or directory" in lines[-1]  # no service-account token
    finally:
        k8s_server.data("release", identity=sid)
    wait_until(lambda: sid not in [p.metadata.name for p in pods_of(core, k8s_server)])


def test_pool_claims_are_warm_pods(k8s_server: Server, core) -> None:
    wait_healthy(k8s_server)
    pooled = {p.metadata.name for p in pods_of(core, k8s_server)}
    assert len(pooled) == 2  # pool_size=2, all running before anyone asks
    assert all(p.status.phase == "Running" for p in pods_of(core, k8s_server))
    times = []
    claimed = []
    try:
        for _ in range(2):
            start = time.perf_counter()
            sid = k8s_server.data("create_from_pool", sandbox_type="base")
            out, _, _ = shell(k8s_server, sid, "echo claimed")
            times.append(time.perf_counter() - start)
            claimed.append(sid)
            assert out == "claimed\n"
        assert set(claimed) <= pooled  # handed out from the pool, not made on demand
        assert max(times) < 2.0, times
        wait_healthy(k8s_server)  # the pool refills with new pods
        assert len(pods_of(core, k8s_server)) == 4
    finally:
        for sid in claimed:
            k8s_server.data("release", identity=sid)


def test_memory_bomb_is_oom_killed_and_the_sandbox_survives(k8s_server: Server) -> None:
    sid = k8s_server.data("create_from_pool", sandbox_type="base")
    try:
        _, _, code = shell(k8s_server, sid, "python3 -c 'b = bytearray(900 << 20)'")
        assert code in (-9, 137)  # SIGKILL from the OOM killer, under the 512Mi limit
        out, _, code = shell(k8s_server, sid, "echo still-here")
        assert (out, code) == ("still-here\n", 0)
    finally:
        k8s_server.data("release", identity=sid)


def test_a_dead_box_is_reported_exited_with_the_reason(k8s_server: Server, core) -> None:
    sid = k8s_server.data("create_from_pool", sandbox_type="base")
    try:
        shell(
            k8s_server,
            sid,
            "(sleep 0.3; kill -9 $(pgrep -f '^python -m jupyter_sandbox.box')) >/dev/null 2>&1 &",
        )
        wait_until(
            lambda: k8s_server.data("get_status", identity=sid) == "exited",
            what="the watch reports the pod's end",
        )
        response = k8s_server.rpc(
            "call_tool", identity=sid, tool_name="run_shell_command", arguments={"command": "true"}
        )
        body = json.dumps(response.json())
        assert "not running (status: exited; phase Failed" in body, body
        assert "exit code 137" in body
    finally:
        k8s_server.data("release", identity=sid)


def test_workspace_survives_stop_and_start(k8s_server: Server) -> None:
    """/workspace is an emptyDir: it is copied out when the pod goes, and into the next."""
    sid = k8s_server.data("create_from_pool", sandbox_type="base")
    try:
        info = k8s_server.data("get_info", identity=sid)
        shell(k8s_server, sid, "mkdir -p d && echo kept > d/f.txt && printf '\\x00\\x01' > b.bin")
        assert k8s_server.data("stop", identity=sid) is True
        assert k8s_server.data("get_status", identity=sid) == "exited"
        host = Path(info["mount_dir"])
        assert (host / "d" / "f.txt").read_text() == "kept\n"  # copied out before the delete
        assert (host / "b.bin").read_bytes() == b"\x00\x01"
        assert k8s_server.data("start", identity=sid) is True
        out, _, code = shell(k8s_server, sid, "cat d/f.txt; od -An -tx1 b.bin; id -u")
        assert (out.split(), code) == (["kept", "00", "01", "65534"], 0)
    finally:
        k8s_server.data("release", identity=sid)


def test_cull_saves_and_restore_loads(tmp_path: Path, core) -> None:
    folder = tmp_path / "saved"
    srv = start_server(
        tmp_path / "srv",
        *k8s_args(),
        f"--SandboxApp.storage_folder={folder}",
        "--SandboxApp.heartbeat_timeout=2",
        "--SandboxApp.watcher_interval=0.2",
    )
    try:
        sid = srv.data("create_from_pool", meta={"session_ctx_id": "k8s-st-1"})
        info = srv.data("get_info", identity=sid)
        shell(srv, sid, "echo one > one.txt && mkdir d && echo two > d/two.txt")
        wait_until(lambda: srv.data("get_info", identity=sid)["state"] == "recycled")
        saved = folder / info["session_id"]
        wait_until(lambda: (saved / "d" / "two.txt").exists(), what="saved to the folder")
        assert sid not in [p.metadata.name for p in pods_of(core, srv)]
        out, _, _ = shell(srv, sid, "cat one.txt d/two.txt")  # restored into a new pod
        assert out == "one\ntwo\n"
    finally:
        stop_server(srv)


def test_host_path_workspace_is_the_servers_directory(tmp_path: Path, core) -> None:
    """workspace_host_path: the seed's way, for a server on the node of its pods."""
    srv = start_server(
        tmp_path,
        *k8s_args("--KubernetesBackend.workspace_host_path=True"),
        "--SandboxApp.pool_size=1",
    )
    try:
        sid = srv.data("create_from_pool")
        info = srv.data("get_info", identity=sid)
        shell(srv, sid, "echo live > f.txt")
        assert (
            Path(info["mount_dir"]) / "f.txt"
        ).read_text() == "live\n"  # no copy: the same files
        (volume,) = [
            v
            for v in core.read_namespaced_pod(sid, NAMESPACE).spec.volumes
            if v.name == "workspace"
        ]
        assert volume.host_path.path == info["mount_dir"]
    finally:
        stop_server(srv)


def test_claim_workspace_is_a_sub_directory_of_the_claim(tmp_path: Path, core) -> None:
    """workspace_claim: each sandbox mounts its session's sub-directory of one claim, which the
    server mounts at mount_dir (here a hostPath volume of that very directory stands in)."""
    mount_dir = tmp_path / "claim"
    mount_dir.mkdir()
    name = f"ws-{os.getpid()}-{int(time.time())}"
    core.create_persistent_volume(
        {
            "metadata": {"name": name},
            "spec": {
                "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadWriteMany"],
                "storageClassName": "",
                "hostPath": {"path": str(mount_dir)},
            },
        }
    )
    core.create_namespaced_persistent_volume_claim(
        NAMESPACE,
        {
            "metadata": {"name": name},
            "spec": {
                "accessModes": ["ReadWriteMany"],
                "storageClassName": "",
                "volumeName": name,
                "resources": {"requests": {"storage": "1Gi"}},
            },
        },
    )
    srv = start_server(
        tmp_path / "srv",
        *k8s_args(f"--KubernetesBackend.workspace_claim={name}"),
        f"--SandboxApp.mount_dir={mount_dir}",
        "--SandboxApp.pool_size=1",
    )
    try:
        sid = srv.data("create_from_pool")
        info = srv.data("get_info", identity=sid)
        out, _, code = shell(srv, sid, "echo on-the-claim > f.txt && pwd")
        assert (out, code) == ("/workspace\n", 0)
        assert (mount_dir / info["session_id"] / "f.txt").read_text() == "on-the-claim\n"
        pod = core.read_namespaced_pod(sid, NAMESPACE)
        (mount,) = [m for m in pod.spec.containers[0].volume_mounts if m.name == "workspace"]
        assert mount.sub_path == info["session_id"]
    finally:
        stop_server(srv)
        core.delete_namespaced_persistent_volume_claim(name, NAMESPACE)
        core.delete_persistent_volume(name)


# -- pods that cannot start ------------------------------------------------------------------


def create_fails(server: Server) -> float:
    start = time.monotonic()
    response = server.rpc("create", sandbox_type="base")
    assert response.status_code == 200 and response.json()["data"] is None, response.text
    return time.monotonic() - start


def test_missing_image_fails_at_once_and_leaves_no_pod(tmp_path: Path, core) -> None:
    server = start_server(
        tmp_path,
        *k8s_args(pull_policy="Never"),
        "--KubernetesBackend.ready_timeout=60",
        "--SandboxApp.image_tag=no-such-tag",
        "--SandboxApp.pool_size=0",
    )
    try:
        assert create_fails(server) < 20  # not the 60 s timeout: this pod can never start
        log = server.log_text()
        assert "ErrImageNeverPull" in log and "no-such-tag" in log, log
        assert "jupyter sandbox-builder" in log
        assert pods_of(core, server) == []
    finally:
        stop_server(server)


def test_unpullable_image_names_the_reason_at_the_timeout(tmp_path: Path, core) -> None:
    server = start_server(
        tmp_path,
        *k8s_args(pull_policy="IfNotPresent"),
        "--KubernetesBackend.ready_timeout=8",
        "--SandboxApp.image_namespace=no-such-registry.invalid/agentscope",
        "--SandboxApp.pool_size=0",
    )
    try:
        elapsed = create_fails(server)
        assert elapsed < 8 + 15, elapsed
        log = server.log_text()
        assert "ErrImagePull" in log or "ImagePullBackOff" in log, log
        assert "phase Pending" in log
        assert pods_of(core, server) == []
    finally:
        stop_server(server)


def test_unschedulable_pod_names_the_scheduler(tmp_path: Path, core) -> None:
    server = start_server(
        tmp_path,
        *k8s_args(),
        "--KubernetesBackend.ready_timeout=5",
        "--KubernetesBackend.request_fraction=1",
        "--SandboxApp.memory_limit=4096g",
        "--SandboxApp.pool_size=0",
    )
    try:
        assert 5 <= create_fails(server) < 5 + 15
        log = server.log_text()
        assert "ready_timeout=5 s: phase Pending, Unschedulable" in log, log
        assert "Insufficient memory" in log
        assert pods_of(core, server) == []
    finally:
        stop_server(server)


def test_a_box_killed_by_oom_is_reported(tmp_path: Path, core) -> None:
    """A memory limit too small for the box itself: the error says OOMKilled."""
    server = start_server(
        tmp_path, *k8s_args(), "--SandboxApp.memory_limit=24m", "--SandboxApp.pool_size=0"
    )
    try:
        assert create_fails(server) < 60
        log = server.log_text()
        assert "OOMKilled (exit code 137)" in log, log
        assert pods_of(core, server) == []
    finally:
        stop_server(server)


# -- startup ---------------------------------------------------------------------------------


def test_invalid_prefix_is_refused_at_startup(tmp_path: Path, core) -> None:
    server = start_server(
        tmp_path,
        *k8s_args(),
        "--SandboxApp.container_prefix=runtime_sandbox_container_",
        wait=False,
    )
    assert server.proc.wait(60) != 0
    assert "not valid Kubernetes (DNS-1123) names" in server.log_text()
    with pytest.raises(ValueError):
        validate_prefix("Upper-")
    validate_prefix("runtime-sandbox-container-")


def test_env_file_maps_the_seed_k8s_settings(tmp_path: Path) -> None:
    env = tmp_path / "custom.env"
    env.write_text(
        "CONTAINER_DEPLOYMENT=k8s\nK8S_NAMESPACE=sandboxes\nKUBECONFIG_PATH=/etc/kube/config\n"
    )
    config, _, notes = envfile.load(str(env))
    assert config["SandboxApp"]["backend"] == "k8s"
    assert config["KubernetesBackend"] == {
        "namespace": "sandboxes",
        "kubeconfig": "/etc/kube/config",
    }
    assert notes == []


def test_orphans_are_reaped_after_kill_9(tmp_path: Path, core) -> None:
    first = start_server(tmp_path, *k8s_args(), "--SandboxApp.pool_size=2")
    pid = first.proc.pid
    stop_server(first, signal.SIGKILL)
    assert len(pods_of(core, pid)) == 2  # a killed server cannot clean up after itself...
    second = start_server(tmp_path, *k8s_args(), "--SandboxApp.pool_size=1")
    try:
        assert "reaped 2 sandbox(es) left behind by a previous server" in second.log_text()
        assert pods_of(core, pid) == []  # ...its successor does
    finally:
        stop_server(second)
    assert pods_of(core, second) == []


def test_another_live_servers_pods_are_not_reaped(k8s_server: Server, tmp_path: Path, core) -> None:
    before = {p.metadata.name for p in pods_of(core, k8s_server)}
    other = start_server(tmp_path, *k8s_args(), "--SandboxApp.pool_size=1")
    stop_server(other)
    after = {p.metadata.name for p in pods_of(core, k8s_server)}
    assert before and before <= after


def test_stopping_while_the_pool_warms_leaves_no_pod(tmp_path: Path, core) -> None:
    server = start_server(tmp_path, *k8s_args(), "--SandboxApp.pool_size=3", wait=False)
    wait_until(lambda: pods_of(core, server), what=server.log_text())  # creation under way
    assert stop_server(server) == 0
    assert pods_of(core, server) == []


# -- Services --------------------------------------------------------------------------------


def test_service_access_makes_an_owned_service(tmp_path: Path, core) -> None:
    """access='service': a Service per sandbox, owned by its pod, gone with it. (This test
    cluster has no kube-proxy, so the backend is driven directly: nothing can reach the
    Service's cluster IP here.)"""
    import asyncio

    from traitlets.config import Config

    config = Config()
    config.KubernetesBackend.kubeconfig = KUBECONFIG
    config.KubernetesBackend.namespace = NAMESPACE
    config.KubernetesBackend.image_pull_policy = PULL_POLICY
    config.KubernetesBackend.access = "service"
    backend = KubernetesBackend(config=config, server_id="svc-test", container_prefix="svc-")
    backend.check()
    workspace = tmp_path / "ws"
    workspace.mkdir()
    spec = SandboxSpec(
        name="svc-" + "x" * 25,
        sandbox_type="base",
        image="agentscope/runtime-sandbox-base:latest",
        workspace=str(workspace),
        token="t" * 32,
        call_timeout=10,
        limits=Limits(256 << 20, 0.5, 64),
        network=True,
        labels={"session-id": "x" * 25},
    )

    async def run() -> None:
        try:
            started = await backend.create(spec)
            service = core.read_namespaced_service(spec.name, NAMESPACE)
            assert started.url == f"http://{service.spec.cluster_ip}:8080"
            assert service.spec.selector == {f"{LABEL}/name": spec.name}
            (owner,) = service.metadata.owner_references
            pod = core.read_namespaced_pod(spec.name, NAMESPACE)
            assert (owner.kind, owner.uid) == ("Pod", pod.metadata.uid)
            assert backend.status(spec.name) == "running"
        finally:
            await backend.destroy(spec.name)
            await backend.close()

    asyncio.run(run())
    names = [s.metadata.name for s in core.list_namespaced_service(NAMESPACE).items]
    assert spec.name not in names
    pods = [p.metadata.name for p in core.list_namespaced_pod(NAMESPACE).items]
    assert spec.name not in pods


# -- several servers -------------------------------------------------------------------------


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


def test_two_servers_share_redis_and_one_pool(
    tmp_path: Path, redis_server: RedisServer, core
) -> None:
    def serve(name: str) -> Server:
        return start_server(
            tmp_path / name,
            *k8s_args(),
            f"--SandboxApp.redis_url={redis_server.url}",
            "--SandboxApp.watcher_interval=0.2",
            "--SandboxApp.pool_size=2",
            wait=False,
        )

    a, b = serve("a"), serve("b")
    key = "_runtime_sandbox_container_container_pool:base"
    try:
        wait_healthy(a)
        wait_healthy(b)
        time.sleep(1.5)

        def total() -> int:
            return len(pods_of(core, a)) + len(pods_of(core, b))

        assert int(redis_server.cli("llen", key)) == 2
        assert total() == 2  # one pool of 2 between them, never 2 each
        sid = a.data("create_from_pool", sandbox_type="base", meta={"session_ctx_id": "k8s-fleet"})
        out, _, _ = shell(b, sid, "echo served-by-b")  # made by one, used through the other
        assert out == "served-by-b\n"
        assert b.data("get_status", identity=sid) == "running"  # b's watch knows a's pods
        wait_until(lambda: int(redis_server.cli("llen", key)) == 2, what="pool refilled")
        time.sleep(1.5)
        assert total() == 3 and int(redis_server.cli("llen", key)) == 2
        b.data("release", identity=sid)
        assert a.data("get_info", identity=sid)["state"] == "released"
        wait_until(lambda: total() == 2, what="the released pod is deleted")
    finally:
        stop_server(a)
        stop_server(b)
    wait_until(lambda: total() == 0, what="both servers cleaned up")


def test_official_sdk_round_trip(agentscope_python: str, k8s_server: Server) -> None:
    """create_from_pool, a shell command, an IPython cell and release, as an agent does."""
    out = run_official(
        agentscope_python,
        """
import json, os
from agentscope_runtime.sandbox import BaseSandbox
out = {}
with BaseSandbox(base_url=os.environ["URL"], bearer_token=os.environ["TOKEN"]) as sb:
    out["id"] = sb.sandbox_id
    out["shell"] = sb.run_shell_command(command="echo from-a-pod; hostname")["content"][0]["text"]
    out["ipy"] = sb.run_ipython_cell(code="import os; print(os.getuid())")["content"][0]["text"]
print("RESULT=" + json.dumps(out))
""",
        {"URL": k8s_server.url, "TOKEN": TOKEN},
    )
    assert out["shell"] == "from-a-pod\nsandbox\n"
    assert out["ipy"] == "65534\n"
    status = requests.post(
        f"{k8s_server.url}/get_status",
        json={"identity": out["id"]},
        headers=k8s_server.headers,
        timeout=10,
    ).json()["data"]
    assert status == "removed"


def test_deploy_manifests_pass_the_apis_validation(core) -> None:
    """deploy/kubernetes/: every object is accepted by a server-side dry run (schema, RBAC
    rules, probes). Its namespace is made for real, since namespaced dry runs need it."""
    import yaml
    from kubernetes import client, utils

    folder = Path(__file__).resolve().parent.parent / "deploy" / "kubernetes"
    documents = []
    for path in sorted(folder.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            documents += [d for d in yaml.safe_load_all(path.read_text()) if d]
    kinds = {d["kind"] for d in documents}
    assert {"Deployment", "Role", "RoleBinding", "ServiceAccount", "ConfigMap", "Service"} <= kinds
    (namespace,) = [d for d in documents if d["kind"] == "Namespace"]
    try:
        core.create_namespace(namespace)
    except client.ApiException as e:
        assert e.status == 409, e
    for document in documents:
        if document["kind"] != "Namespace":
            utils.create_from_dict(core.api_client, document, dry_run="All")
    config = next(d for d in documents if d["kind"] == "ConfigMap")
    source = config["data"]["jupyter_sandbox_server_config.py"]
    compile(source, "jupyter_sandbox_server_config.py", "exec")  # valid Python


def test_the_deployment_runs_and_reaps_a_vanished_replicas_pods(core) -> None:
    """deploy/kubernetes/ on this cluster, as written (service account, Role, ConfigMap,
    Secret, Deployment with probes and the downward API) but for what the test cluster lacks:
    no pod reaches the API server or a Service here, so the replica uses the host's network
    (the API at 127.0.0.1), runs this checkout's code from a hostPath on a sandbox image
    instead of the server image, and has no Redis (one replica). Then the replica is frozen
    and its pod force-deleted, like a node that vanished: its successor reaps the sandboxes
    of the pod that is gone."""
    import subprocess
    import sysconfig

    import yaml
    from kubernetes import client

    root = Path(__file__).resolve().parent.parent
    folder = root / "deploy" / "kubernetes"
    docs = {}
    for name in ("namespace", "rbac", "configmap", "server"):
        for doc in yaml.safe_load_all((folder / f"{name}.yaml").read_text()):
            docs[doc["kind"]] = doc
    namespace = docs["Namespace"]["metadata"]["name"]
    port = free_port()
    config = docs["ConfigMap"]
    config["data"]["jupyter_sandbox_server_config.py"] += (
        f"c.ServerApp.port = {port}\n"
        'c.SandboxApp.redis_url = ""\n'
        "c.SandboxApp.pool_size = 2\n"
        f'c.KubernetesBackend.image_pull_policy = "{PULL_POLICY}"\n'
    )
    deployment = docs["Deployment"]
    deployment["spec"]["replicas"] = 1
    pod_spec = deployment["spec"]["template"]["spec"]
    pod_spec["hostNetwork"] = True
    pod_spec["dnsPolicy"] = "ClusterFirstWithHostNet"
    (container,) = pod_spec["containers"]
    site = sysconfig.get_paths()["purelib"]
    container.update(
        image="agentscope/runtime-sandbox-base:latest",
        imagePullPolicy=PULL_POLICY,
        command=["/usr/bin/python3", "-m", "jupyter_sandbox"],
        ports=[{"containerPort": port, "name": "http"}],
    )
    container["env"] += [
        {"name": "PYTHONPATH", "value": f"{root}:{site}"},
        {"name": "KUBERNETES_SERVICE_HOST", "value": "127.0.0.1"},
        {"name": "KUBERNETES_SERVICE_PORT", "value": "26443"},
        {"name": "USER", "value": "sandbox-server"},
    ]
    container["volumeMounts"].append({"name": "code", "mountPath": str(root), "readOnly": True})
    pod_spec["volumes"].append({"name": "code", "hostPath": {"path": str(root)}})
    if not site.startswith(str(root)):  # a venv outside the checkout
        container["volumeMounts"].append({"name": "site", "mountPath": site, "readOnly": True})
        pod_spec["volumes"].append({"name": "site", "hostPath": {"path": site}})
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "jupyter-sandbox-token", "namespace": namespace},
        "stringData": {"token": TOKEN},
    }
    apps = client.AppsV1Api(core.api_client)
    rbac = client.RbacAuthorizationV1Api(core.api_client)
    made = [
        (core.create_namespaced_service_account, core.delete_namespaced_service_account,
         docs["ServiceAccount"]),
        (rbac.create_namespaced_role, rbac.delete_namespaced_role, docs["Role"]),
        (rbac.create_namespaced_role_binding, rbac.delete_namespaced_role_binding,
         docs["RoleBinding"]),
        (core.create_namespaced_config_map, core.delete_namespaced_config_map, config),
        (core.create_namespaced_secret, core.delete_namespaced_secret, secret),
    ]  # fmt: skip
    try:
        core.create_namespace(docs["Namespace"])
    except client.ApiException as e:
        assert e.status == 409, e
    url = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {TOKEN}"}

    def server_pods() -> list:
        selector = "app=jupyter-sandbox-server"
        found = core.list_namespaced_pod(namespace, label_selector=selector).items
        return [p for p in found if p.metadata.deletion_timestamp is None]

    def sandbox_pods(host: str | None = None) -> list:
        selector = "app=jupyter-sandbox" + (f",{LABEL}/server-host={host}" if host else "")
        return core.list_namespaced_pod(namespace, label_selector=selector).items

    def healthy() -> bool:
        try:
            pools = requests.get(f"{url}/health", timeout=2).json()["pools"]
        except (requests.RequestException, ValueError, KeyError):
            return False
        return all(p["warm"] >= p["target"] for p in pools.values())

    def server_log(pod) -> str:
        return core.read_namespaced_pod_log(pod.metadata.name, namespace, container="server")

    try:
        for create, _, body in made:
            create(namespace, body)
        apps.create_namespaced_deployment(namespace, deployment)
        wait_until(healthy, 120, what="the replica serves with a full pool")
        (first,) = server_pods()
        sid = requests.post(f"{url}/create_from_pool", json={}, headers=headers).json()["data"]
        result = requests.post(
            f"{url}/call_tool",
            json={"identity": sid, "tool_name": "run_shell_command",
                  "arguments": {"command": "echo made-in-cluster"}},
            headers=headers, timeout=60,
        ).json()["data"]  # fmt: skip
        assert result["content"][0]["text"] == "made-in-cluster\n"
        # 2 pooled + 1 claimed, made through the pod's own service account and Role.
        wait_until(lambda: len(sandbox_pods(first.metadata.name)) == 3, what="pool refilled")
        notes = sandbox_pods(first.metadata.name)[0].metadata.annotations
        assert notes[f"{LABEL}/server-pod-uid"] == first.metadata.uid

        # The replica vanishes without cleaning up: frozen, then its pod force-deleted.
        docker_id = subprocess.run(
            ["docker", "ps", "-q", "--filter", f"name=^k8s_server_{first.metadata.name}_"],
            capture_output=True, text=True, check=True,
        ).stdout.split()[0]  # fmt: skip
        pid = subprocess.run(
            ["docker", "inspect", "-f", "{{.State.Pid}}", docker_id],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        os.kill(int(pid), signal.SIGSTOP)
        core.delete_namespaced_pod(first.metadata.name, namespace, grace_period_seconds=0)
        wait_until(
            lambda: not sandbox_pods(first.metadata.name), 120, what="the orphans are reaped"
        )
        (second,) = server_pods()
        assert second.metadata.name != first.metadata.name
        wait_until(lambda: "reaped 3 sandbox(es)" in server_log(second), 30)
    finally:
        try:
            apps.delete_namespaced_deployment(deployment["metadata"]["name"], namespace)
        except client.ApiException as e:
            assert e.status == 404
        wait_until(lambda: not server_pods(), 90, what="the replica stops")
        wait_until(lambda: not sandbox_pods(), 30, what="its sandboxes go with it")
        for _, delete, body in made:
            try:
                delete(body["metadata"]["name"], namespace)
            except client.ApiException as e:
                assert e.status == 404
