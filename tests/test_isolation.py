"""The local backend's jail, checked from inside real sandboxes on a real server.

Host files, the host's loopback, other sandboxes and the system directories must be out of
reach; fork bombs, memory bombs and endless loops must stay inside their own sandbox.
"""

from __future__ import annotations

import socket
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import Server, start_server, stop_server


def shell(server: Server, sid: str, command: str) -> dict:
    return server.data("call_tool", identity=sid, tool_name="run_shell_command",
                       arguments={"command": command})  # fmt: skip


def stdout(result: dict) -> str:
    return result["content"][0]["text"]


def returncode(result: dict) -> str:
    return result["content"][-1]["text"]


@pytest.fixture
def sandbox(server: Server) -> Iterator[str]:
    sid = server.data("create_from_pool", sandbox_type="base", meta={"session_ctx_id": "iso"})
    assert sid
    yield sid
    server.data("release", identity=sid)


@pytest.fixture
def two_sandboxes(server: Server) -> Iterator[tuple[str, str]]:
    a = server.data("create_from_pool", sandbox_type="base", meta=None)
    b = server.data("create_from_pool", sandbox_type="base", meta=None)
    yield a, b
    server.data("release", identity=a)
    server.data("release", identity=b)


def test_host_files_are_invisible(server: Server, sandbox: str) -> None:
    secret = server.cwd / f"secret-{uuid.uuid4().hex}.txt"
    secret.write_text("host secret")
    result = shell(server, sandbox, f"cat {secret}; ls /root; ls {server.cwd}; cat /etc/shadow")
    assert "host secret" not in stdout(result)
    assert returncode(result) != "0"
    # The server's cwd holds every sandbox's mount dir: none of it is visible.
    listing = shell(server, sandbox, f"ls {server.cwd / 'sessions_mount_dir'} 2>&1; echo rc=$?")
    assert "rc=0" not in stdout(listing)


def test_runs_unprivileged_and_system_is_read_only(server: Server, sandbox: str) -> None:
    result = shell(
        server,
        sandbox,
        "id -u; touch /usr/x 2>&1; touch /etc/x 2>&1; grep CapEff /proc/self/status",
    )
    out = stdout(result)
    assert out.splitlines()[0] != "0"
    assert out.count("Read-only file system") == 2
    assert "CapEff:\t0000000000000000" in out


def test_host_loopback_unreachable(server: Server, sandbox: str) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    accepted: list[bool] = []

    def accept() -> None:
        listener.settimeout(6)
        try:
            conn, _ = listener.accept()
            accepted.append(True)
            conn.close()
        except OSError:
            pass

    thread = threading.Thread(target=accept)
    thread.start()
    server_port = server.url.rsplit(":", 1)[1]
    probe = (
        "import socket\n"
        f"for host, port in [('127.0.0.1', {port}), ('10.0.2.2', {port}), ('127.0.0.1', {server_port}), ('10.0.2.2', {server_port})]:\n"
        "    s = socket.socket(); s.settimeout(2)\n"
        "    try:\n"
        "        s.connect((host, port)); print('CONNECTED', host, port)\n"
        "    except OSError as e:\n"
        "        print('refused', host, port, type(e).__name__)\n"
    )
    result = server.data("call_tool", identity=sandbox, tool_name="run_ipython_cell",
                         arguments={"code": probe})  # fmt: skip
    thread.join()
    listener.close()
    assert "CONNECTED" not in stdout(result), stdout(result)
    assert stdout(result).count("refused") == 4
    assert not accepted


def test_sandbox_has_its_own_network(server: Server, sandbox: str) -> None:
    out = stdout(shell(server, sandbox, "cat /proc/net/dev | cut -d: -f1 | tr -d ' '; hostname"))
    interfaces = set(out.split())
    assert "lo" in interfaces
    assert "tap0" in interfaces  # slirp4netns user-mode networking (network=True)
    assert "eth0" not in interfaces
    assert "sandbox" in out


def test_sandboxes_cannot_see_each_other(server: Server, two_sandboxes: tuple[str, str]) -> None:
    a, b = two_sandboxes
    shell(server, a, "echo mine > /workspace/a.txt; echo tmp > /tmp/a.txt; sleep 30 & echo started")
    out = stdout(
        shell(
            server,
            b,
            "ls /workspace /tmp; cat /tmp/a.txt 2>&1; ps -e -o comm= 2>/dev/null | grep -c sleep",
        )
    )
    assert "a.txt" not in out.replace("cat: /tmp/a.txt", "")
    assert out.strip().splitlines()[-1] == "0"


def test_endless_loop_is_killed_at_call_timeout(server: Server, sandbox: str) -> None:
    result = shell(server, sandbox, "while true; do :; done")
    assert result["isError"] is True
    assert "timed out" in str(result["content"]).lower()
    assert stdout(shell(server, sandbox, "echo alive")) == "alive\n"


def test_fork_bomb_is_contained(server: Server, two_sandboxes: tuple[str, str]) -> None:
    bomb, bystander = two_sandboxes
    results: dict[str, dict] = {}

    def detonate() -> None:
        results["bomb"] = shell(server, bomb, "bomb() { bomb | bomb & }; bomb; sleep 5")

    thread = threading.Thread(target=detonate)
    thread.start()
    for _ in range(3):
        assert stdout(shell(server, bystander, "echo fine")) == "fine\n"
    thread.join()
    assert "bomb" in results
    procs = stdout(shell(server, bystander, "ls /proc | grep -c '^[0-9]'"))
    assert int(procs) < 20


def test_memory_bomb_is_contained(server: Server, two_sandboxes: tuple[str, str]) -> None:
    bomb, bystander = two_sandboxes
    result = shell(server, bomb, "python3 -c 'x = bytearray(2 << 30); print(len(x))'; echo rc=$?")
    assert "rc=0" not in stdout(result)
    assert stdout(shell(server, bystander, "echo fine")) == "fine\n"
    assert stdout(shell(server, bomb, "echo survived")) == "survived\n"


def test_startup_reaps_jails_whose_state_dir_is_gone(tmp_path: Path) -> None:
    """A jail lost by a server stopped mid-start keeps its cgroup but loses its state dir; the
    next server kills it. A jail whose state dir exists (another live server's) stays."""
    from jupyter_sandbox.backends.cgroups import Cgroups

    cgroups = Cgroups()
    alive_dir = tmp_path / "other-server-state" / "jail"
    alive_dir.mkdir(parents=True)
    procs = {}
    for label, state in (("lost", tmp_path / "gone" / "jail"), ("alive", alive_dir)):
        name = f"test-{label}-{uuid.uuid4().hex[:8]}"
        for base in cgroups.bases:
            (base / name).mkdir(parents=True, exist_ok=True)
        # Its command line names its state dir the way a jail's does (the sock/ bind).
        proc = subprocess.Popen(
            ["sh", "-c", "sleep 300", "sh", "--bind", f"{state}/sock", "/run/sandbox"]
        )
        for base in cgroups.bases:
            (base / name / "cgroup.procs").write_text(str(proc.pid))
        procs[label] = (name, proc)
    try:
        server = start_server(tmp_path / "srv", "--SandboxApp.pool_size=0")
        stop_server(server)
        assert procs["lost"][1].wait(10) == -9  # killed by the startup reaper
        assert procs["alive"][1].poll() is None  # left alone
    finally:
        for name, proc in procs.values():
            proc.kill()
            proc.wait()
            cgroups.existing(name).kill_all()
