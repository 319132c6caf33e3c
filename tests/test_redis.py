"""Shared state in a real `redis-server` (started here): several server processes serve one
fleet, never overfill a pool, leave each other's sandboxes alone, survive `kill -9` (docker)
and Redis going away."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from jupyter_sandbox import envfile

from .conftest import Server, free_port, start_server, stop_server, wait_healthy


class RedisServer:
    def __init__(self, workdir: Path):
        self.port = free_port()
        self.workdir = workdir
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        # Append-only persistence: a restarted Redis has its data back, as in production.
        self.proc = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
             "--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while self.cli("ping") != "PONG":
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)

    def cli(self, *args: str) -> str:
        done = subprocess.run(
            ["redis-cli", "-p", str(self.port), *args], capture_output=True, text=True
        )
        return done.stdout.strip()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


def serve(tmp_path: Path, name: str, redis: RedisServer, *args: str, wait: bool = True) -> Server:
    return start_server(
        tmp_path / name,
        f"--SandboxApp.redis_url={redis.url}",
        "--SandboxApp.watcher_interval=0.2",
        *args,
        wait=wait,
    )


def shell(server: Server, sid: str, command: str) -> str:
    result = server.data(
        "call_tool", identity=sid, tool_name="run_shell_command", arguments={"command": command}
    )
    return result["content"][0]["text"]


def test_two_servers_serve_one_fleet(tmp_path: Path, redis_server: RedisServer) -> None:
    a = serve(tmp_path, "a", redis_server, "--SandboxApp.pool_size=1")
    b = serve(tmp_path, "b", redis_server, "--SandboxApp.pool_size=1")
    try:
        sid = a.data("create_from_pool", sandbox_type="base", meta={"session_ctx_id": "fleet"})
        assert shell(b, sid, "echo served-by-b") == "served-by-b\n"  # made by a, used via b
        assert b.data("get_info", identity=sid)["state"] == "running"
        assert b.data("get_session_mapping", session_ctx_id="fleet") == [sid]
        assert "fleet" in a.data("list_session_keys")
        record = json.loads(redis_server.cli("get", sid))  # the seed's key layout
        assert record["container_name"] == sid and record["session_ctx_id"] == "fleet"
        assert json.loads(redis_server.cli("get", "session_mapping:fleet")) == [sid]
        b.data("release", identity=sid)
        assert a.data("get_info", identity=sid)["state"] == "released"
    finally:
        stop_server(a)
        stop_server(b)


def test_three_servers_never_overfill_a_pool(tmp_path: Path, redis_server: RedisServer) -> None:
    servers = [
        serve(tmp_path, f"s{i}", redis_server, "--SandboxApp.pool_size=2", wait=False)
        for i in range(3)
    ]
    try:
        for server in servers:
            wait_healthy(server)
        key = "_runtime_sandbox_container_container_pool:base"
        for _ in range(3):  # claims drain the pool; it settles back at exactly 2
            time.sleep(1.5)
            assert int(redis_server.cli("llen", key)) == 2
            sid = servers[0].data("create_from_pool", sandbox_type="base")
            servers[1].data("release", identity=sid)
        time.sleep(1.5)
        assert int(redis_server.cli("llen", key)) == 2
        for server in servers:
            health = requests.get(f"{server.url}/health", timeout=5).json()
            assert health["pools"]["base"]["warm"] == 2
    finally:
        for server in servers:
            stop_server(server)


def test_one_servers_shutdown_leaves_the_others_sandboxes(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    a = serve(tmp_path, "a", redis_server, "--SandboxApp.pool_size=1")
    b = serve(tmp_path, "b", redis_server, "--SandboxApp.pool_size=1")
    try:
        on_a = a.data("create", sandbox_type="base")
        on_b = b.data("create", sandbox_type="base")
        stop_server(a)  # auto_cleanup: a destroys what a made, nothing else
        assert shell(b, on_b, "echo alive") == "alive\n"
        assert b.data("get_info", identity=on_a)["state"] == "released"
        # The pool lease moves to b: the pool is refilled by b alone.
        time.sleep(6)
        assert int(redis_server.cli("llen", "_runtime_sandbox_container_container_pool:base")) == 1
        assert b.data("create_from_pool", sandbox_type="base")
    finally:
        stop_server(a)
        stop_server(b)


def test_redis_away_gives_503_and_service_resumes(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    server = serve(tmp_path, "a", redis_server, "--SandboxApp.pool_size=1")
    try:
        sid = server.data("create_from_pool", sandbox_type="base")
        redis_server.stop()
        response = server.rpc(
            "call_tool", identity=sid, tool_name="run_shell_command", arguments={"command": "true"}
        )
        assert response.status_code == 503
        assert "shared state (redis://127.0.0.1" in response.json()["detail"]
        assert "unreachable" in response.json()["detail"]
        assert requests.get(f"{server.url}/health", timeout=10).status_code == 503
        created = server.rpc("create", sandbox_type="base")
        assert created.status_code == 503  # made, then destroyed: it could not be recorded
        redis_server.start()  # same port, its data back from the append-only file
        deadline = time.monotonic() + 20
        while server.rpc("get_info", identity=sid).status_code != 200:
            assert time.monotonic() < deadline, server.log_text()[-2000:]
            time.sleep(0.2)
        assert shell(server, sid, "echo back") == "back\n"
        wait_healthy(server)
    finally:
        stop_server(server)
    # Nothing the outage touched is left running: every jail of this server is gone.
    state_dir = server.cwd / "state"
    assert not any(state_dir.iterdir()) if state_dir.exists() else True


def test_restart_after_kill_9_keeps_serving_docker_sandboxes(
    tmp_path: Path, redis_server: RedisServer, docker_client
) -> None:
    args = ("--SandboxApp.backend=docker", "--SandboxApp.pool_size=1")
    first = serve(tmp_path, "a", redis_server, *args)
    sid = first.data("create_from_pool", sandbox_type="base", meta={"session_ctx_id": "k9"})
    shell(first, sid, "echo before > f.txt")
    stop_server(first, signal.SIGKILL)
    second = serve(tmp_path, "a", redis_server, *args)  # same place, same Redis
    try:
        assert shell(second, sid, "cat f.txt") == "before\n"  # adopted, not reaped
        # Nothing leaked: every sandbox container on the engine has a live record.
        live = {
            r["container_id"]
            for r in map(json.loads, _records(redis_server))
            if r["state"] in ("warm", "running")
        }
        containers = {
            c["Id"]
            for pid in (first.proc.pid, second.proc.pid)  # other tests' servers may be running
            for c in docker_client.api.containers(
                all=True, filters={"label": f"jupyter-sandbox.server-pid={pid}"}
            )
        }
        assert containers and containers <= live, (containers, live)
    finally:
        stop_server(second)


def _records(redis: RedisServer) -> list[str]:
    names = redis.cli("--scan", "--pattern", "runtime-sandbox-container-*").split()
    return [redis.cli("get", n) for n in names]


def test_env_file_builds_redis_url_from_the_seeds_settings(tmp_path: Path) -> None:
    env = tmp_path / "seed.env"
    env.write_text(
        "REDIS_ENABLED=True\nREDIS_SERVER=cache.internal\nREDIS_PORT=6380\nREDIS_DB=2\n"
        "REDIS_USER=svc\nREDIS_PASSWORD=p@ss/word\nREDIS_PORT_KEY=_ports\n"
        "REDIS_CONTAINER_POOL_KEY=_pool\n"
    )
    config, _, notes = envfile.load(str(env))
    assert config["SandboxApp"] == {
        "redis_url": "redis://svc:p%40ss%2Fword@cache.internal:6380/2",
        "redis_port_key": "_ports",
        "redis_pool_key": "_pool",
    }
    assert notes == []
    env.write_text("REDIS_ENABLED=false\nREDIS_SERVER=unused\n")
    assert envfile.load(str(env))[0] == {}


def test_workers_share_one_port_and_one_pool(tmp_path: Path, redis_server: RedisServer) -> None:
    server = serve(
        tmp_path, "w", redis_server, "--SandboxApp.workers=3", "--SandboxApp.pool_size=2"
    )
    try:
        deadline = time.monotonic() + 30
        while len(_worker_pids(server)) < 2:  # the first process started two more
            assert time.monotonic() < deadline, server.log_text()[-2000:]
            time.sleep(0.1)
        made = []
        for _ in range(12):  # a new connection each time: the kernel spreads them
            response = requests.post(
                f"{server.url}/create", json={"sandbox_type": "base"}, headers=server.headers
            )
            made.append(response.json()["data"])
        owners = {json.loads(redis_server.cli("get", sid))["server_id"] for sid in made}
        assert len(owners) >= 2, owners  # served by more than one process
        for sid in made:
            assert shell(server, sid, "echo ok") == "ok\n"  # whichever worker answers
            server.data("release", identity=sid)
        time.sleep(1.5)
        assert int(redis_server.cli("llen", "_runtime_sandbox_container_container_pool:base")) == 2
    finally:
        workers = _worker_pids(server)
        stop_server(server)
    deadline = time.monotonic() + 30
    while any(Path(f"/proc/{pid}").exists() for pid in workers):
        assert time.monotonic() < deadline, "workers outlived their first process"
        time.sleep(0.1)
    state_dir = server.cwd / "state"
    assert not any(state_dir.iterdir())  # every worker cleaned up its own sandboxes


def _worker_pids(server: Server) -> list[int]:
    out = subprocess.run(
        ["pgrep", "-P", str(server.proc.pid), "-f", "jupyter_sandbox"],
        capture_output=True, text=True,
    ).stdout  # fmt: skip
    return [int(p) for p in out.split()]


def test_workers_without_redis_is_refused(tmp_path: Path) -> None:
    server = start_server(tmp_path, "--SandboxApp.workers=2", wait=False)
    assert server.proc.wait(60) != 0
    assert "need shared state in Redis" in server.log_text()


def test_restart_after_kill_9_releases_records_of_lost_local_jails(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    first = serve(tmp_path, "a", redis_server, "--SandboxApp.pool_size=1")
    sid = first.data("create_from_pool", sandbox_type="base", meta={"session_ctx_id": "lost"})
    stop_server(first, signal.SIGKILL)  # its jails die with it (by design)
    second = serve(tmp_path, "a", redis_server, "--SandboxApp.pool_size=1")
    try:
        assert second.data("get_info", identity=sid)["state"] == "released"
        assert second.data("get_session_mapping", session_ctx_id="lost") == []
        live = [
            r for r in map(json.loads, _records(redis_server)) if r["state"] in ("warm", "running")
        ]
        assert len(live) == 1 and live[0]["server_id"] != json.loads(
            redis_server.cli("get", sid)
        )["server_id"]  # only the new server's pooled sandbox
    finally:
        stop_server(second)


def test_published_ports_are_tracked_in_redis(
    tmp_path: Path, redis_server: RedisServer, docker_client
) -> None:
    args = (
        "--SandboxApp.backend=docker",
        "--DockerBackend.access=port",
        "--SandboxApp.port_range=[55200, 55210]",
        "--SandboxApp.pool_size=1",
    )
    a = serve(tmp_path, "a", redis_server, *args)
    b = serve(tmp_path, "b", redis_server, *args)
    try:
        made = [server.data("create", sandbox_type="base") for server in (a, b, a)]
        ports = [a.data("get_info", identity=sid)["ports"][0] for sid in made]
        assert len(set(ports)) == 3 and all(55200 <= p < 55210 for p in ports)
        key = "_runtime_sandbox_container_occupied_ports"  # the seed's set
        occupied = {int(p) for p in redis_server.cli("smembers", key).split()}
        assert set(ports) <= occupied
        a.data("release", identity=made[0])
        deadline = time.monotonic() + 15
        while str(ports[0]) in redis_server.cli("smembers", key).split():
            assert time.monotonic() < deadline, "a released sandbox's port stays taken"
            time.sleep(0.1)
    finally:
        stop_server(a)
        stop_server(b)
    assert redis_server.cli("smembers", "_runtime_sandbox_container_occupied_ports") == ""


def test_redirect_chains_are_followed_and_loops_refused(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    server = serve(
        tmp_path, "a", redis_server, "--SandboxApp.pool_size=1",
        "--SandboxApp.heartbeat_timeout=1",
    )  # fmt: skip
    try:
        first = server.data("create_from_pool", sandbox_type="base", meta={"session_ctx_id": "c"})
        names = [first]
        for _ in range(2):  # culled and restored twice: first → second → third
            deadline = time.monotonic() + 15
            while server.data("get_info", identity=names[-1])["state"] != "recycled":
                assert time.monotonic() < deadline
                time.sleep(0.1)
            assert shell(server, first, "echo again") == "again\n"  # always the oldest id
            names.append(server.data("get_session_mapping", session_ctx_id="c")[0])
        assert len(set(names)) == 3
        assert server.data("get_info", identity=first)["container_name"] == names[-1]
        # Two records that redirect to each other (written straight into Redis).
        record = json.loads(redis_server.cli("get", first))
        for this, other in (("loop-a", "loop-b"), ("loop-b", "loop-a")):
            name = f"runtime-sandbox-container-{this}"
            data = {**record, "container_name": name, "state": "replaced",
                    "redirect_to": f"runtime-sandbox-container-{other}"}  # fmt: skip
            redis_server.cli("set", name, json.dumps(data))
        looped = server.rpc("get_info", identity="runtime-sandbox-container-loop-a")
        assert looped.status_code == 400 and "Redirect loop detected" in looped.json()["detail"]
    finally:
        stop_server(server)


def test_server_started_before_redis_waits_for_it(tmp_path: Path) -> None:
    redis = RedisServer(tmp_path)  # not started yet
    server = serve(tmp_path, "a", redis, "--SandboxApp.pool_size=1", wait=False)
    try:
        deadline = time.monotonic() + 30
        while True:  # the server is up, answering 503 while Redis is away
            try:
                response = requests.get(f"{server.url}/health", timeout=2)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, server.log_text()
                time.sleep(0.1)
        assert response.status_code == 503
        assert server.rpc("create_from_pool", sandbox_type="base").status_code == 503
        redis.start()
        wait_healthy(server)  # pools warm once Redis answers
        sid = server.data("create_from_pool", sandbox_type="base")
        assert shell(server, sid, "echo ok") == "ok\n"
    finally:
        stop_server(server)
        redis.stop()
    assert server.proc.returncode == 0
