"""The docker backend on a real engine: naming and labels, hardening, limits, networks, both
ways of reaching a box, paused pools, orphan reaping after `kill -9`, and failures that must
name their cause. (The official-SDK suite also runs on this backend: test_compat_official_sdk.)"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest

from .conftest import Server, start_server, stop_server, wait_healthy


def shell(server: Server, sid: str, command: str) -> tuple[str, str, int | None]:
    result = server.data(
        "call_tool", identity=sid, tool_name="run_shell_command", arguments={"command": command}
    )
    texts = {item.get("description"): item["text"] for item in result["content"]}
    code = texts.get("returncode")
    return texts.get("stdout", ""), texts.get("stderr", ""), int(code) if code else None


def labels_of(docker_client, sid: str) -> dict:
    return docker_client.containers.get(sid).labels


def test_container_is_named_labelled_and_hardened(docker_server: Server, docker_client) -> None:
    sid = docker_server.data("create_from_pool", sandbox_type="base")
    try:
        container = docker_client.containers.get(sid)  # named exactly as the sandbox id
        labels = container.labels
        assert labels["jupyter-sandbox.sandbox-type"] == "base"
        assert sid.endswith(labels["jupyter-sandbox.session-id"])
        assert labels["jupyter-sandbox.server-pid"] == str(docker_server.proc.pid)
        host = container.attrs["HostConfig"]
        assert host["ReadonlyRootfs"] is True
        assert host["CapDrop"] == ["ALL"]
        assert "no-new-privileges" in host["SecurityOpt"]
        assert host["Memory"] == 512 << 20 and host["MemorySwap"] == 512 << 20
        assert host["PidsLimit"] == 128
        assert host["Privileged"] is False
        # The token reaches the box on stdin, never through the environment.
        info = docker_server.data("get_info", identity=sid)
        assert not any(info["runtime_token"] in e for e in container.attrs["Config"]["Env"])

        out, _, code = shell(
            docker_server,
            sid,
            "id -u; grep -E '^(CapEff|NoNewPrivs)' /proc/self/status; "
            "touch /usr/x 2>&1; touch /tmp/ok && echo tmp-writable; "
            "echo data > /workspace/f && echo ws-writable",
        )
        assert code == 0
        lines = out.splitlines()
        assert lines[0] == "65534"
        assert "CapEff:\t0000000000000000" in lines
        assert "NoNewPrivs:\t1" in lines
        assert "Read-only file system" in out
        assert "tmp-writable" in lines and "ws-writable" in lines
        # /workspace is the host directory the manager made for this sandbox.
        assert Path(info["mount_dir"], "f").read_text() == "data\n"
    finally:
        docker_server.data("release", identity=sid)


def test_memory_bomb_is_oom_killed_and_the_sandbox_survives(docker_server: Server) -> None:
    sid = docker_server.data("create_from_pool", sandbox_type="base")
    try:
        _, _, code = shell(docker_server, sid, "python3 -c 'b = bytearray(900 << 20)'")
        assert code in (-9, 137)  # SIGKILL from the OOM killer, under the 512m limit
        out, _, code = shell(docker_server, sid, "echo still-here")
        assert (out, code) == ("still-here\n", 0)
    finally:
        docker_server.data("release", identity=sid)


FORK_BOMB = """
import os, signal, time
children = []
while True:
    try:
        pid = os.fork()
    except OSError as e:
        print("fork failed after", len(children), e.strerror)
        break
    if pid == 0:
        time.sleep(30)
        os._exit(0)
    children.append(pid)
for pid in children:
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
"""


def test_pids_limit_stops_a_fork_bomb(docker_server: Server) -> None:
    sid = docker_server.data("create_from_pool", sandbox_type="base")
    try:
        out, _, code = shell(docker_server, sid, f"python3 -c '{FORK_BOMB}'")
        assert code == 0 and "Resource temporarily unavailable" in out, out
        assert int(out.split()[3]) < 128  # the pids limit, box and kernel included
        out, _, code = shell(docker_server, sid, "echo alive")
        assert (out, code) == ("alive\n", 0)
    finally:
        docker_server.data("release", identity=sid)


def test_sandboxes_cannot_reach_each_other(docker_server: Server) -> None:
    first = docker_server.data("create_from_pool", sandbox_type="base")
    second = docker_server.data("create_from_pool", sandbox_type="base")
    try:
        target = docker_server.data("get_info", identity=second)["url"]  # http://ip:8080
        probe = (
            "python3 -c \"import urllib.request as u\n"
            f"try: u.urlopen('{target}/healthz', timeout=3); print('reached')\n"
            "except Exception as e: print('blocked', type(e).__name__)\""
        )
        out, _, _ = shell(docker_server, first, probe)
        assert out.startswith("blocked"), out
    finally:
        docker_server.data("release", identity=first)
        docker_server.data("release", identity=second)


def test_network_on_reaches_out(docker_server: Server) -> None:
    sid = docker_server.data("create_from_pool", sandbox_type="base")
    try:
        out, _, _ = shell(
            docker_server,
            sid,
            "python3 -c \"import urllib.request as u; "
            "print(u.urlopen('http://deb.debian.org/debian/', timeout=20).status)\"",
        )
        assert out.strip() == "200"
    finally:
        docker_server.data("release", identity=sid)


@pytest.fixture(scope="module")
def offline_server(tmp_path_factory: pytest.TempPathFactory, docker_client):
    """Network off; pool containers paused while they wait; a read-only mount at /data."""
    tmp = tmp_path_factory.mktemp("docker-offline")
    (tmp / "shared").mkdir()
    (tmp / "shared" / "data.csv").write_text("a,b\n")
    srv = start_server(
        tmp,
        f"--SandboxApp.readonly_mounts={{'{tmp / 'shared'}': '/data'}}",
        "--SandboxApp.backend=docker",
        "--SandboxApp.network=False",
        "--DockerBackend.pause_pool=True",
        "--SandboxApp.pool_size=1",
    )
    yield srv
    stop_server(srv)


def test_network_off_has_no_route_out(offline_server: Server, docker_client) -> None:
    pooled = docker_client.containers.list(
        filters={"label": f"jupyter-sandbox.server-pid={offline_server.proc.pid}"}
    )
    assert [c.status for c in pooled] == ["paused"]  # waiting in the pool, using no CPU
    sid = offline_server.data("create_from_pool", sandbox_type="base")
    try:
        assert docker_client.containers.get(sid).status == "running"
        out, _, _ = shell(
            offline_server,
            sid,
            "python3 -c \"import socket\n"
            "try: socket.create_connection(('1.1.1.1', 80), timeout=3); print('connected')\n"
            "except OSError as e: print('unreachable', e.errno)\"",
        )
        assert out.startswith("unreachable"), out
        out, err, _ = shell(offline_server, sid, "cat /data/data.csv; echo x > /data/new.csv")
        assert out == "a,b\n" and "Read-only file system" in err
        assert not (offline_server.cwd / "shared" / "new.csv").exists()
    finally:
        offline_server.data("release", identity=sid)


def test_published_port_access(tmp_path: Path, docker_client) -> None:
    server = start_server(
        tmp_path,
        "--SandboxApp.backend=docker",
        "--DockerBackend.access=port",
        "--SandboxApp.port_range=[55100, 55110]",
        "--SandboxApp.pool_size=1",
    )
    try:
        sid = server.data("create_from_pool", sandbox_type="base")
        info = server.data("get_info", identity=sid)
        (port,) = info["ports"]
        assert 55100 <= port < 55110
        assert info["url"] == f"http://127.0.0.1:{port}"
        bindings = docker_client.containers.get(sid).attrs["HostConfig"]["PortBindings"]
        assert bindings["8080/tcp"] == [{"HostIp": "127.0.0.1", "HostPort": str(port)}]
        out, _, code = shell(server, sid, "echo via-port")
        assert (out, code) == ("via-port\n", 0)
    finally:
        stop_server(server)


def test_port_access_without_network_is_refused(tmp_path: Path, docker_client) -> None:
    server = start_server(
        tmp_path,
        "--SandboxApp.backend=docker",
        "--DockerBackend.access=port",
        "--SandboxApp.network=False",
        wait=False,
    )
    assert server.proc.wait(60) != 0
    assert "access='port' needs SandboxApp.network" in server.log_text()


def test_orphans_are_reaped_after_kill_9(tmp_path: Path, docker_client) -> None:
    first = start_server(tmp_path, "--SandboxApp.backend=docker", "--SandboxApp.pool_size=2")
    pid = first.proc.pid
    stop_server(first, signal.SIGKILL)
    label = {"label": f"jupyter-sandbox.server-pid={pid}"}
    left = docker_client.containers.list(all=True, filters=label)
    assert len(left) == 2  # a killed server cannot clean up after itself...
    second = start_server(tmp_path, "--SandboxApp.backend=docker", "--SandboxApp.pool_size=1")
    try:
        assert "reaped 2 sandbox(es) left behind by a previous server" in second.log_text()
        assert docker_client.containers.list(all=True, filters=label) == []  # ...its successor does
    finally:
        stop_server(second)
    # A clean stop leaves nothing either (auto_cleanup).
    mine = {"label": f"jupyter-sandbox.server-pid={second.proc.pid}"}
    assert docker_client.containers.list(all=True, filters=mine) == []


def test_another_live_servers_containers_are_not_reaped(
    docker_server: Server, tmp_path: Path, docker_client
) -> None:
    label = {"label": f"jupyter-sandbox.server-pid={docker_server.proc.pid}"}
    before = {c.id for c in docker_client.containers.list(all=True, filters=label)}
    other = start_server(tmp_path, "--SandboxApp.backend=docker", "--SandboxApp.pool_size=1")
    stop_server(other)
    after = {c.id for c in docker_client.containers.list(all=True, filters=label)}
    assert before and before <= after


def test_missing_image_names_the_builder(tmp_path: Path, docker_client) -> None:
    server = start_server(
        tmp_path,
        "--SandboxApp.backend=docker",
        "--SandboxApp.image_tag=no-such-tag",
        "--SandboxApp.pool_size=1",
        wait=False,
    )
    try:
        deadline = time.monotonic() + 30
        while "jupyter sandbox-builder base" not in server.log_text():
            assert time.monotonic() < deadline, server.log_text()
            time.sleep(0.1)
        wait_healthy(server, pools=False)
        response = server.rpc("create", sandbox_type="base")
        assert response.status_code == 200 and response.json()["data"] is None
        assert "agentscope/runtime-sandbox-base:no-such-tag is not on the Docker engine" in (
            server.log_text()
        )
    finally:
        stop_server(server)


def test_unknown_runtime_is_a_clear_error_and_the_server_keeps_serving(
    tmp_path: Path, docker_client
) -> None:
    server = start_server(
        tmp_path,
        "--SandboxApp.backend=docker",
        "--DockerBackend.runtime=no-such-runtime",
        "--SandboxApp.pool_size=0",
    )
    try:
        response = server.rpc("create", sandbox_type="base")
        assert response.status_code == 200 and response.json()["data"] is None
        assert "no-such-runtime" in server.log_text()
        assert server.rpc("list_session_keys").status_code == 200  # still serving
        mine = {"label": f"jupyter-sandbox.server-pid={server.proc.pid}"}
        assert docker_client.containers.list(all=True, filters=mine) == []  # nothing half-made
    finally:
        stop_server(server)


def test_a_killed_container_is_reported_exited(
    docker_server: Server, docker_client
) -> None:
    sid = docker_server.data("create_from_pool", sandbox_type="base")
    try:
        docker_client.containers.get(sid).kill()
        deadline = time.monotonic() + 10
        while docker_server.data("get_status", identity=sid) != "exited":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        response = docker_server.rpc(
            "call_tool", identity=sid, tool_name="run_shell_command", arguments={"command": "true"}
        )
        body = json.dumps(response.json())
        assert "exited" in body
    finally:
        docker_server.data("release", identity=sid)


@pytest.mark.parametrize(
    ("sandbox_type", "command", "expected"),
    [
        ("filesystem", "echo $SANDBOX_TYPE", "filesystem\n"),
        (
            "browser",
            "chromium --headless=new --no-sandbox --disable-gpu --dump-dom "
            "'data:text/html,<p>rendered</p>' 2>/dev/null | grep -o rendered",
            "rendered\n",
        ),
        (
            "gui",
            # The sandbox's own desktop (1280x800) is up, and DISPLAY points at it.
            "xdotool getmouselocation --shell | head -2 | tr '\\n' ' '; "
            "command -v x11vnc xdotool openbox | wc -l",
            "X=640 Y=400 3\n",
        ),
    ],
)
def test_builtin_type_images(
    typed_docker_server: Server, sandbox_type: str, command: str, expected: str
) -> None:
    """The images of the other built-in types start as sandboxes and carry their programs."""
    sid = typed_docker_server.data("create_from_pool", sandbox_type=sandbox_type)
    try:
        assert typed_docker_server.data("get_info", identity=sid)["version"] == (
            f"agentscope/runtime-sandbox-{sandbox_type}:latest"
        )
        out, err, code = shell(typed_docker_server, sid, command)
        assert (out, code) == (expected, 0), err
    finally:
        typed_docker_server.data("release", identity=sid)


@pytest.fixture(scope="module")
def typed_docker_server(tmp_path_factory: pytest.TempPathFactory, docker_client):
    srv = start_server(
        tmp_path_factory.mktemp("docker-types"),
        "--SandboxApp.backend=docker",
        "--SandboxApp.sandbox_types=filesystem,browser,gui",
        "--SandboxApp.pool_size=1",
    )
    yield srv
    stop_server(srv)


def test_sandboxes_cannot_reach_the_hosts_own_services(
    docker_server: Server, docker_client
) -> None:
    """A service on the host's 0.0.0.0 is out of reach (loopback-only ones always were)."""
    import http.server
    import socket
    import threading

    httpd = http.server.HTTPServer(("0.0.0.0", 0), http.server.SimpleHTTPRequestHandler)
    port = httpd.server_address[1]
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    sid = docker_server.data("create_from_pool", sandbox_type="base")
    try:
        network = docker_client.networks.get("jupyter-sandbox")
        gateway = network.attrs["IPAM"]["Config"][0]["Gateway"]  # this host, on the bridge
        with socket.create_connection((gateway, port), timeout=3):
            pass  # the host itself reaches the service there
        probe = (
            "python3 -c \"import socket\n"
            f"try: socket.create_connection(('{gateway}', {port}), timeout=3); print('reached')\n"
            "except OSError as e: print('refused', e.errno)\""
        )
        out, _, _ = shell(docker_server, sid, probe)
        assert out.startswith("refused"), out
    finally:
        docker_server.data("release", identity=sid)
        httpd.shutdown()


def test_stopping_while_the_pool_warms_leaves_no_container(tmp_path: Path, docker_client) -> None:
    server = start_server(
        tmp_path, "--SandboxApp.backend=docker", "--SandboxApp.pool_size=4", wait=False
    )
    label = {"label": f"jupyter-sandbox.server-pid={server.proc.pid}"}
    deadline = time.monotonic() + 30
    while not docker_client.containers.list(all=True, filters=label):  # creation under way
        assert time.monotonic() < deadline, server.log_text()
        time.sleep(0.02)
    assert stop_server(server) == 0
    assert docker_client.containers.list(all=True, filters=label) == []
