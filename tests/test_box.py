"""Tests of the box server (jupyter_sandbox.box).

The real box runs as a subprocess, unjailed, with a temporary workspace, exactly as a backend
starts it (config line on stdin, ready line on stdout), and is spoken to with httpx over its
unix socket. One box is shared by the module; tests use distinct file names so they do not
depend on each other.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import select
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

TOKEN = "0123456789abcdef0123456789abcdef"
REPO = Path(__file__).resolve().parents[1]
SECRET = "top secret, must never be read"
# A 1x1 PNG.
PNG_B64 = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk"
    "+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)
DIED = "The IPython kernel died and was restarted; its state was lost."


def box_env(home: Path) -> dict[str, str]:
    # The box is started with a clean environment, as the backends do.
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "PYTHONPATH": str(REPO),
    }


def read_line(proc: subprocess.Popen, timeout: float = 60) -> bytes:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, "the box wrote nothing to stdout in time"
    return proc.stdout.readline()


def launch(
    base: Path, config_line: bytes, listen: str, env: dict[str, str] | None = None
) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyter_sandbox.box", "--listen", listen],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=open(base / "box.log", "ab"),  # noqa: SIM115 - owned by the child
        env={**box_env(base), **(env or {})},
        cwd=base,
    )
    assert proc.stdin is not None
    proc.stdin.write(config_line)
    proc.stdin.close()
    return proc


@dataclass
class BoxInfo:
    proc: subprocess.Popen
    sock: Path
    base: Path
    ws: Path
    outside: Path
    sibling: Path


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory):
    base = tmp_path_factory.mktemp("box")
    ws = base / "ws"
    ws.mkdir()
    # Outside the workspace: a directory and a sibling whose name starts like the workspace's.
    outside = base / "outside"
    (outside / "dir").mkdir(parents=True)
    (outside / "secret.txt").write_text(SECRET)
    (outside / "dir" / "secret.txt").write_text(SECRET)
    sibling = base / "ws2"
    sibling.mkdir()
    (sibling / "secret.txt").write_text(SECRET)
    sock = base / "box.sock"
    config = {"token": TOKEN, "workspace": str(ws), "call_timeout": 30}
    proc = launch(base, json.dumps(config).encode() + b"\n", f"unix:{sock}")
    try:
        assert json.loads(read_line(proc)) == {"ready": True}
        # stdout is closed after the ready line, and no child (the kernel) holds it open.
        assert read_line(proc, 10) == b""
        # Kernel files and IPython's profile never land in the workspace.
        assert list(ws.iterdir()) == []
        yield BoxInfo(proc, sock, base, ws, outside, sibling)
    finally:
        proc.terminate()
        rc = proc.wait(15)
    assert rc == 0
    assert not sock.exists()


@pytest.fixture
def client(box: BoxInfo, jp_asyncio_loop):
    # Coroutine tests run on pytest-jupyter's loop; the client is closed on it too.
    transport = httpx.AsyncHTTPTransport(uds=str(box.sock))
    c = httpx.AsyncClient(
        transport=transport,
        base_url="http://box",
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=60,
    )
    yield c
    jp_asyncio_loop.run_until_complete(c.aclose())


async def shell(client: httpx.AsyncClient, command: str, **extra) -> dict:
    r = await client.post("/tools/run_shell_command", json={"command": command, **extra})
    assert r.status_code == 200, r.text
    return r.json()


async def ipy(client: httpx.AsyncClient, code: str, **extra) -> dict:
    r = await client.post("/tools/run_ipython_cell", json={"code": code, **extra})
    assert r.status_code == 200, r.text
    return r.json()


def texts(result: dict) -> dict[str, str]:
    return {i["description"]: i["text"] for i in result["content"] if i["type"] == "text"}


def text_item(text: str, description: str) -> dict:
    return {"type": "text", "text": text, "annotations": None, "description": description}


def process_gone(pid: int, wait: float = 5.0) -> bool:
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        try:  # a zombie waiting for its reaper is gone as far as we care
            if Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z":
                return True
        except OSError:
            return True
        time.sleep(0.05)
    return False


# -- startup ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "listen", "error"),
    [
        (b"\n", "unix:{sock}", "no configuration"),
        (b"not json\n", "unix:{sock}", "not valid JSON"),
        (b'{"workspace": "/"}\n', "unix:{sock}", "token"),
        (b'{"token": "t", "workspace": "{base}/missing"}\n', "unix:{sock}", "not a directory"),
        (b'{"token": "t", "workspace": "relative"}\n', "unix:{sock}", "absolute"),
        (b'{"token": "t", "workspace": "{base}", "call_timeout": 0}\n', "unix:{sock}", "timeout"),
        (b'{"token": "t", "workspace": "{base}"}\n', "tcp:nohost", "--listen"),
    ],
)
def test_start_failure_reports_not_ready(tmp_path: Path, line: bytes, listen: str, error: str):
    line = line.replace(b"{base}", str(tmp_path).encode())
    proc = launch(tmp_path, line, listen.format(sock=tmp_path / "b.sock"))
    reply = json.loads(read_line(proc))
    assert proc.wait(30) == 1
    assert reply["ready"] is False
    assert error in reply["error"]


def test_listen_tcp_and_temp_dir_outside_workspace(tmp_path: Path):
    ws = tmp_path / "ws"
    (ws / "tmp").mkdir(parents=True)
    config = {"token": TOKEN, "workspace": str(ws)}
    # Even when TMPDIR points into the workspace, kernel files must not land there.
    env = {"TMPDIR": str(ws / "tmp")}
    proc = launch(tmp_path, json.dumps(config).encode() + b"\n", "tcp:127.0.0.1:0", env)
    try:
        assert json.loads(read_line(proc)) == {"ready": True}
        assert [p.name for p in ws.rglob("*")] == ["tmp"]
    finally:
        proc.terminate()
        assert proc.wait(15) == 0


def test_make_undumpable():
    code = (
        "import ctypes; from jupyter_sandbox.box.__main__ import make_undumpable;"
        "make_undumpable(); print(ctypes.CDLL(None).prctl(3, 0, 0, 0, 0))"  # PR_GET_DUMPABLE
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "0"


# -- auth and plain routes -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("GET", "/healthz"),
        ("POST", "/tools/run_shell_command"),
        ("POST", "/tools/run_ipython_cell"),
        ("GET", "/mcp/list_tools"),
        ("GET", "/workspace/file?path=a"),
        ("PUT", "/workspace/file?path=auth-put.txt"),
        ("GET", "/workspace/list?path=."),
        ("DELETE", "/workspace/entry?path=a"),
    ],
)
async def test_auth(box: BoxInfo, client: httpx.AsyncClient, method: str, url: str):
    body = b'{"command": "touch pwned", "code": "1"}' if method in ("POST", "PUT") else None
    cases = [
        ({}, "Missing or invalid authorization header"),
        ({"Authorization": f"Basic {TOKEN}"}, "Missing or invalid authorization header"),
        ({"Authorization": f"bearer {TOKEN}"}, "Missing or invalid authorization header"),
        ({"Authorization": "Bearer wrong"}, "Invalid secret token"),
        ({"Authorization": f"Bearer {TOKEN}x"}, "Invalid secret token"),
        ({"Authorization": "Bearer é".encode()}, "Invalid secret token"),
    ]
    for headers, detail in cases:
        client.headers.pop("Authorization", None)
        r = await client.request(method, url, content=body, headers=headers)
        assert r.status_code == 403, (headers, r.text)
        assert r.json() == {"detail": detail}
    assert not (box.ws / "pwned").exists()
    assert not (box.ws / "auth-put.txt").exists()


async def test_healthz(client: httpx.AsyncClient):
    r = await client.get("/healthz")
    assert r.status_code == 200
    assert r.text == "OK"


async def test_unknown_route_and_method(client: httpx.AsyncClient):
    r = await client.get("/nope")
    assert r.status_code == 404
    assert r.json() == {"detail": "Not Found"}
    r = await client.get("/tools/run_shell_command")
    assert r.status_code == 405
    assert "detail" in r.json()


async def test_mcp_routes(client: httpx.AsyncClient):
    r = await client.get("/mcp/list_tools")
    assert (r.status_code, r.json()) == (200, {})
    r = await client.post("/mcp/call_tool", json={"tool_name": "zz", "arguments": {}})
    assert (r.status_code, r.json()) == (404, {"detail": "Tool 'zz' not found."})
    r = await client.post("/mcp/add_servers", json={"server_configs": {"mcpServers": {}}})
    assert r.status_code == 500  # as upstream: an empty config is refused with 500
    assert "server_configs is required" in r.json()["detail"]


# -- shell -----------------------------------------------------------------------------------


async def test_shell_upstream_shape(box: BoxInfo, client: httpx.AsyncClient):
    result = await shell(client, "echo hi; pwd; echo err >&2; exit 3")
    assert result == {
        "meta": None,
        "content": [
            text_item(f"hi\n{box.ws}\n", "stdout"),
            text_item("err\n", "stderr"),
            text_item("3", "returncode"),
        ],
        "isError": True,
    }


async def test_shell_is_error_follows_stderr_not_returncode(client: httpx.AsyncClient):
    result = await shell(client, "echo out; exit 4")
    assert result["content"] == [text_item("out\n", "stdout"), text_item("4", "returncode")]
    assert result["isError"] is False
    result = await shell(client, "echo warn >&2")
    assert texts(result) == {"stdout": "", "stderr": "warn\n", "returncode": "0"}
    assert result["isError"] is True


async def test_shell_is_bash_with_null_stdin_and_no_token(client: httpx.AsyncClient):
    result = await shell(client, '[[ -n "$BASH_VERSION" ]] && echo bash; cat; echo "[$(cat)]"')
    assert texts(result)["stdout"] == "bash\n[]\n"
    result = await shell(client, "env; cat /proc/$PPID/cmdline 2>/dev/null; true")
    assert TOKEN not in texts(result)["stdout"]
    assert "JUPYTER_RUNTIME_DIR" in texts(result)["stdout"]


async def test_shell_invalid_utf8_is_replaced(client: httpx.AsyncClient):
    result = await shell(client, r"printf 'a\xffb'")
    assert texts(result)["stdout"] == "a\ufffdb"


async def test_shell_bad_requests(client: httpx.AsyncClient):
    for body in ({}, {"command": ""}, {"command": 3}):
        r = await client.post("/tools/run_shell_command", json=body)
        assert (r.status_code, r.json()) == (400, {"detail": "Command is required."})
    r = await client.post("/tools/run_shell_command", content=b"{not json")
    assert r.status_code == 400
    assert "not valid JSON" in r.json()["detail"]
    r = await client.post("/tools/run_shell_command", content=b"[1]")
    assert r.status_code == 400
    r = await client.post("/tools/run_shell_command", json={"command": "true", "timeout": -1})
    assert r.status_code == 400


async def test_shell_timeout_kills_process_group(box: BoxInfo, client: httpx.AsyncClient):
    pid_file = box.ws / "bg.pid"
    t0 = time.monotonic()
    result = await shell(
        client, "sleep 1000 & echo $! > bg.pid; echo started; sleep 1000", timeout=1
    )
    assert time.monotonic() - t0 < 10
    t = texts(result)
    assert t["stdout"] == "started\n"
    assert t["stderr"] == "Command timed out after 1 s and was killed"
    assert t["returncode"] == "-9"
    assert result["isError"] is True
    assert process_gone(int(pid_file.read_text()))
    pid_file.unlink()


async def test_shell_background_child_does_not_block(box: BoxInfo, client: httpx.AsyncClient):
    t0 = time.monotonic()
    result = await shell(client, "sleep 30 & echo $!")
    assert time.monotonic() - t0 < 5
    pid = int(texts(result)["stdout"])
    os.kill(pid, 9)
    assert process_gone(pid)


async def test_shell_output_is_capped(client: httpx.AsyncClient):
    result = await shell(client, "head -c 11534336 /dev/zero | tr '\\0' a; echo done >&2")
    out = texts(result)["stdout"]
    kept, _, note = out.partition("\n[")
    assert kept == "a" * (10 * 1024 * 1024)
    assert note.startswith("stdout truncated")
    assert "1048576 bytes" in note
    assert texts(result)["stderr"] == "done\n"


# -- IPython ---------------------------------------------------------------------------------


async def test_ipython_state_and_upstream_shapes(box: BoxInfo, client: httpx.AsyncClient):
    assert await ipy(client, "x = 41\nprint(x + 1)") == {
        "meta": None,
        "content": [text_item("42\n", "stdout")],
        "isError": False,
    }
    result = await ipy(client, "x")
    assert result["content"] == [text_item("Out[1]: 41\n", "stdout")]
    result = await ipy(client, "print('a'); 'multi\\nline'.split('\\n')")
    assert texts(result)["stdout"] == "a\nOut[1]: ['multi', 'line']\n"
    result = await ipy(client, "import os; os.getcwd()")
    assert texts(result)["stdout"] == f"Out[1]: {str(box.ws)!r}\n"
    code = f"'leaked' if any({TOKEN!r} in v for v in os.environ.values()) else 'clean'"
    result = await ipy(client, code)
    assert texts(result)["stdout"] == "Out[1]: 'clean'\n"


async def test_ipython_traceback_goes_to_stdout(client: httpx.AsyncClient):
    result = await ipy(client, "print('before')\n1/0")
    assert result["isError"] is False
    assert [i["description"] for i in result["content"]] == ["stdout"]
    out = texts(result)["stdout"]
    assert out.startswith("before\n")
    assert "ZeroDivisionError" in out
    assert "\x1b[" in out  # ANSI colours kept, like upstream


async def test_ipython_stderr_is_error(client: httpx.AsyncClient):
    result = await ipy(client, "import sys; print('out'); print('bad', file=sys.stderr)")
    assert result["content"] == [text_item("out\n", "stdout"), text_item("bad\n", "stderr")]
    assert result["isError"] is True


async def test_ipython_display(client: httpx.AsyncClient):
    code = (
        "import base64\nfrom IPython.display import Image, display\n"
        f"img = Image(data=base64.b64decode('{PNG_B64}'))\n"
        "display('shown')\ndisplay(img)\nimg"
    )
    result = await ipy(client, code)
    image = {"type": "image", "data": PNG_B64, "mimeType": "image/png", "annotations": None}
    assert result == {
        "meta": None,
        "content": [text_item("'shown'\n", "stdout"), image, image],
        "isError": False,
    }
    assert base64.b64decode(result["content"][1]["data"]).startswith(b"\x89PNG")


async def test_ipython_bad_requests(client: httpx.AsyncClient):
    for body in ({}, {"code": ""}, {"code": None}):
        r = await client.post("/tools/run_ipython_cell", json=body)
        assert (r.status_code, r.json()) == (400, {"detail": "Code is required."})
    r = await client.post("/tools/run_ipython_cell", content=b"{")
    assert r.status_code == 400


async def test_ipython_cells_are_serialised(client: httpx.AsyncClient):
    slow = ipy(client, "import time; time.sleep(0.3); print('slow')")
    fast = ipy(client, "print('fast')")
    a, b = await asyncio.gather(slow, fast)
    assert texts(a)["stdout"] == "slow\n"
    assert texts(b)["stdout"] == "fast\n"


async def test_ipython_timeout_interrupts_and_keeps_state(client: httpx.AsyncClient):
    await ipy(client, "kept = 'still here'")
    t0 = time.monotonic()
    result = await ipy(client, "print('looping')\nwhile True: pass", timeout=1)
    assert time.monotonic() - t0 < 10
    t = texts(result)
    assert t["stdout"].startswith("looping\n")
    assert "KeyboardInterrupt" in t["stdout"]
    assert t["stderr"] == "Execution timed out after 1 s; the kernel was interrupted"
    assert result["isError"] is True
    result = await ipy(client, "print(kept)")
    assert result["content"] == [text_item("still here\n", "stdout")]


async def test_ipython_kernel_death_during_call(client: httpx.AsyncClient):
    await ipy(client, "lost = 1")
    result = await ipy(client, "print('bye', flush=True)\nimport os; os._exit(1)")
    assert result["isError"] is True
    assert texts(result)["stderr"] == DIED
    result = await ipy(client, "print('alive')")
    assert result["content"] == [text_item("alive\n", "stdout")]
    result = await ipy(client, "lost")
    assert "NameError" in texts(result)["stdout"]


async def test_ipython_kernel_death_between_calls(client: httpx.AsyncClient):
    pid = int(texts(await ipy(client, "import os; os.getpid()"))["stdout"].split(": ")[1])
    os.kill(pid, 9)
    assert process_gone(pid)
    result = await ipy(client, "print('first call after the death')")
    assert result["content"] == [text_item("", "stdout"), text_item(DIED, "stderr")]
    assert result["isError"] is True
    result = await ipy(client, "import os; print(os.getpid())")
    assert int(texts(result)["stdout"]) != pid


# -- workspace: happy paths and error codes -------------------------------------------------


async def test_file_put_get(box: BoxInfo, client: httpx.AsyncClient):
    r = await client.put("/workspace/file", params={"path": "d1/a.txt"}, content="héllo")
    assert r.status_code == 200
    info = r.json()
    assert info["path"] == f"{box.ws}/d1/a.txt"
    assert (info["name"], info["type"], info["size"]) == ("a.txt", "file", 6)
    assert isinstance(info["mtime_ms"], int)
    assert abs(info["mtime_ms"] - time.time() * 1000) < 60_000

    r = await client.get("/workspace/file", params={"path": "d1/a.txt"})
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/plain; charset=utf-8"
    assert r.text == "héllo"
    # Absolute paths inside the workspace work too.
    r = await client.get("/workspace/file", params={"path": f"{box.ws}/d1/a.txt", "format": "text"})
    assert r.text == "héllo"

    data = bytes(range(256)) * 10
    r = await client.put("/workspace/file", params={"path": "bin.dat"}, content=data)
    assert r.json()["size"] == len(data)
    r = await client.get("/workspace/file", params={"path": "bin.dat", "format": "bytes"})
    assert r.headers["content-type"] == "application/octet-stream"
    assert r.content == data


async def test_file_streamed_upload_and_download(box: BoxInfo, client: httpx.AsyncClient):
    chunk = os.urandom(1 << 20)

    async def body():
        for _ in range(5):
            yield chunk

    r = await client.put("/workspace/file", params={"path": "big/big.bin"}, content=body())
    assert r.status_code == 200, r.text
    assert r.json()["size"] == 5 << 20
    r = await client.get("/workspace/file", params={"path": "big/big.bin", "format": "bytes"})
    assert r.content == chunk * 5


async def test_file_errors(box: BoxInfo, client: httpx.AsyncClient):
    (box.ws / "adir").mkdir()
    r = await client.put("/workspace/file", params={"path": "adir"}, content=b"x")
    assert (r.status_code, r.json()) == (409, {"detail": "path exists and is a directory"})
    r = await client.get("/workspace/file", params={"path": "nope.txt"})
    assert (r.status_code, r.json()) == (404, {"detail": "not found"})
    r = await client.get("/workspace/file", params={"path": "adir"})
    assert r.status_code == 404
    (box.ws / "f.txt").write_text("f")
    r = await client.get("/workspace/file", params={"path": "f.txt", "format": "xml"})
    assert r.status_code == 422
    for method in ("GET", "PUT"):
        r = await client.request(method, "/workspace/file", content=b"x")
        assert r.status_code == 400
        assert r.json() == {"detail": "path is required"}
    r = await client.put("/workspace/file", params={"path": "f.txt/below"}, content=b"x")
    assert r.status_code == 409
    # A FIFO would block the box if it were opened; it is neither read nor written.
    os.mkfifo(box.ws / "fifo")
    r = await client.put("/workspace/file", params={"path": "fifo"}, content=b"x")
    assert (r.status_code, r.json()) == (409, {"detail": "path exists and is not a regular file"})
    r = await client.get("/workspace/file", params={"path": "fifo"})
    assert r.status_code == 404


async def test_files_batch(box: BoxInfo, client: httpx.AsyncClient):
    files = [("files", ("one.txt", b"1")), ("files", ("two.txt", b"22"))]
    r = await client.post(
        "/workspace/files:batch", files=files, data={"paths": ["batch/x/1.txt", "batch/2.txt"]}
    )
    assert r.status_code == 200, r.text
    assert [(i["path"], i["size"]) for i in r.json()] == [
        (f"{box.ws}/batch/x/1.txt", 1),
        (f"{box.ws}/batch/2.txt", 2),
    ]
    assert (box.ws / "batch/x/1.txt").read_bytes() == b"1"
    # Without paths the part's filename is the target.
    r = await client.post("/workspace/files:batch", files=[("files", ("byname.txt", b"n"))])
    assert r.status_code == 200
    assert (box.ws / "byname.txt").read_bytes() == b"n"
    r = await client.post("/workspace/files:batch", files=files, data={"paths": ["only-one"]})
    assert r.status_code == 400
    assert r.json() == {"detail": "`paths` length must match `files` length"}
    assert not (box.ws / "only-one").exists()
    r = await client.post(
        "/workspace/files:batch", files=files, data={"paths": ["batch/ok.txt", "batch/x"]}
    )
    assert r.status_code == 409
    assert not (box.ws / "batch/ok.txt").exists()  # nothing written when one target is refused
    r = await client.post("/workspace/files:batch", json={"paths": []})
    assert r.status_code == 400


async def test_list(box: BoxInfo, client: httpx.AsyncClient):
    root = box.ws / "tree"
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "a.txt").write_text("aa")
    (root / "sub" / "b.txt").write_text("b")
    (root / "sub" / "deeper" / "c.txt").write_text("c")
    os.symlink("sub", root / "link-in")
    os.symlink(box.outside / "dir", root / "link-out")

    r = await client.get("/workspace/list", params={"path": "tree"})
    assert r.status_code == 200
    by_name = {i["name"]: i for i in r.json()}
    assert set(by_name) == {"a.txt", "sub", "link-in", "link-out"}
    assert by_name["a.txt"] == {**by_name["a.txt"], "type": "file", "size": 2}
    assert by_name["sub"]["type"] == "dir"
    assert by_name["sub"]["size"] is None
    assert by_name["link-in"]["type"] == "dir"  # described by its target, like upstream
    # A link out of the workspace reveals nothing about its target.
    assert by_name["link-out"]["type"] == "symlink"
    assert by_name["link-out"]["size"] is None

    r = await client.get("/workspace/list", params={"path": "tree", "depth": 5})
    paths = sorted(i["path"] for i in r.json())
    rel = [p.removeprefix(f"{root}/") for p in paths]
    # Symlinked directories are not followed; the root is not listed.
    assert rel == [
        "a.txt",
        "link-in",
        "link-out",
        "sub",
        "sub/b.txt",
        "sub/deeper",
        "sub/deeper/c.txt",
    ]
    r = await client.get("/workspace/list", params={"path": "tree", "depth": 2})
    assert "sub/deeper/c.txt" not in [i["path"].removeprefix(f"{root}/") for i in r.json()]

    r = await client.get("/workspace/list", params={"path": "tree", "depth": 0})
    assert r.status_code == 422
    r = await client.get("/workspace/list", params={"path": "tree", "depth": "x"})
    assert r.status_code == 422
    r = await client.get("/workspace/list", params={"path": "tree/a.txt"})
    assert (r.status_code, r.json()) == (404, {"detail": "not found"})
    r = await client.get("/workspace/list", params={"path": "missing"})
    assert r.status_code == 404
    r = await client.get("/workspace/list")
    assert r.status_code == 400
    r = await client.get("/workspace/list", params={"path": ""})
    assert r.status_code == 200  # the workspace root


async def test_exists(box: BoxInfo, client: httpx.AsyncClient):
    (box.ws / "here.txt").write_text("x")
    for path, expected in (("here.txt", True), ("not-here.txt", False), (str(box.ws), True)):
        r = await client.get("/workspace/exists", params={"path": path})
        assert (r.status_code, r.json()) == (200, {"exists": expected})
    r = await client.get("/workspace/exists")
    assert r.status_code == 400


async def test_delete(box: BoxInfo, client: httpx.AsyncClient):
    (box.ws / "del" / "d" / "e").mkdir(parents=True)
    (box.ws / "del" / "f.txt").write_text("x")
    (box.ws / "del" / "d" / "e" / "g.txt").write_text("x")
    (box.ws / "del" / "target.txt").write_text("keep")
    os.symlink("target.txt", box.ws / "del" / "link")
    for path in ("del/f.txt", "del/d", "del/never-existed", "del/link"):
        r = await client.delete("/workspace/entry", params={"path": path})
        assert r.status_code == 204, (path, r.text)
        assert r.content == b""
    assert sorted(p.name for p in (box.ws / "del").iterdir()) == ["target.txt"]
    r = await client.delete("/workspace/entry")
    assert r.status_code == 400
    for root in ("", ".", str(box.ws), f"{box.ws}/"):
        r = await client.delete("/workspace/entry", params={"path": root})
        assert r.status_code == 400
    assert (box.ws / "del" / "target.txt").exists()


async def test_move(box: BoxInfo, client: httpx.AsyncClient):
    (box.ws / "mv-src.txt").write_text("moving")
    r = await client.post(
        "/workspace/move", json={"source": "mv-src.txt", "destination": "mv/new/dst.txt"}
    )
    assert r.status_code == 200
    info = r.json()
    assert (info["path"], info["name"], info["type"]) == (
        f"{box.ws}/mv/new/dst.txt",
        "dst.txt",
        "file",
    )
    assert (box.ws / "mv/new/dst.txt").read_text() == "moving"
    assert not (box.ws / "mv-src.txt").exists()
    r = await client.post("/workspace/move", json={"source": "gone", "destination": "x"})
    assert (r.status_code, r.json()) == (404, {"detail": "source not found"})
    for body in ({}, {"source": "mv"}, {"destination": "mv"}, {"source": 1, "destination": "x"}):
        r = await client.post("/workspace/move", json=body)
        assert r.status_code == 400
    r = await client.post("/workspace/move", content=b"{oops")
    assert r.status_code == 400
    assert "not valid JSON" in r.json()["detail"]


async def test_mkdir(box: BoxInfo, client: httpx.AsyncClient):
    r = await client.post("/workspace/mkdir", json={"path": "mk/a/b"})
    assert (r.status_code, r.json()) == (200, {"created": True})
    assert (box.ws / "mk/a/b").is_dir()
    r = await client.post("/workspace/mkdir", json={"path": "mk/a/b"})
    assert r.json() == {"created": False}
    (box.ws / "mk/file").write_text("x")
    r = await client.post("/workspace/mkdir", json={"path": "mk/file"})
    assert r.status_code == 409
    r = await client.post("/workspace/mkdir", json={"path": "mk/file/sub"})
    assert r.status_code == 409
    for body in ({}, {"path": ""}, {"path": 3}):
        r = await client.post("/workspace/mkdir", json=body)
        assert r.status_code == 400


# -- workspace: containment ------------------------------------------------------------------


def snapshot(*roots: Path) -> dict[str, tuple]:
    out = {}
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            for name in dirnames + filenames:
                p = Path(dirpath) / name
                st = p.lstat()
                out[str(p)] = (
                    st.st_mode,
                    st.st_size,
                    st.st_mtime_ns,
                    p.is_file() and p.read_bytes(),
                )
    return out


async def test_path_traversal_is_refused_everywhere(box: BoxInfo, client: httpx.AsyncClient):
    os.symlink(box.outside / "secret.txt", box.ws / "link-file")
    os.symlink(box.outside / "dir", box.ws / "link-dir")
    os.symlink(box.outside / "new-file", box.ws / "link-dangling")
    (box.ws / "jail").mkdir()
    before = snapshot(box.outside, box.sibling)
    etc_passwd = Path("/etc/passwd").read_bytes()

    rel_out = os.path.relpath(box.outside / "secret.txt", box.ws)
    bad_read = [
        "../x",
        rel_out,
        "jail/../../outside/secret.txt",
        "/etc/passwd",
        str(box.outside / "secret.txt"),
        "link-file",
        "link-dir/secret.txt",
        f"{box.ws}2/secret.txt",
        "../ws2/secret.txt",
    ]
    # Write-like routes never get /etc/passwd: if containment were broken, the test would be
    # running as whoever runs it.
    bad_write = [p for p in bad_read if p != "/etc/passwd"] + [
        "link-dangling",
        "link-dir/new.txt",
        str(box.outside / "new.txt"),
        f"{box.ws}2/new.txt",
    ]
    bad_dirs = ["..", "link-dir", str(box.outside), f"{box.ws}2", "/etc", "/"]
    refused = (403, 404)

    async def check(r: httpx.Response, what: str) -> None:
        assert r.status_code in refused, (what, r.status_code, r.text)
        assert SECRET not in r.text
        if r.status_code == 403:
            assert r.json() == {
                "detail": f"Permission error. Access restricted to {box.ws} directory."
            }

    for path in bad_read:
        for fmt in ("text", "bytes"):
            r = await client.get("/workspace/file", params={"path": path, "format": fmt})
            await check(r, f"GET file {path} {fmt}")
        await check(await client.get("/workspace/exists", params={"path": path}), "exists")
    for path in bad_read + bad_dirs:
        await check(await client.get("/workspace/list", params={"path": path}), f"list {path}")
    for path in bad_write + bad_dirs:
        r = await client.put("/workspace/file", params={"path": path}, content=b"pwned")
        await check(r, f"PUT {path}")
        r = await client.post(
            "/workspace/files:batch", files=[("files", ("x", b"pwned"))], data={"paths": [path]}
        )
        await check(r, f"batch {path}")
        await check(await client.delete("/workspace/entry", params={"path": path}), "delete")
        r = await client.post("/workspace/mkdir", json={"path": path + "/newdir"})
        await check(r, f"mkdir {path}")
        (box.ws / "mv-probe.txt").write_text("probe")
        r = await client.post(
            "/workspace/move", json={"source": "mv-probe.txt", "destination": path}
        )
        await check(r, f"move to {path}")
        r = await client.post("/workspace/move", json={"source": path, "destination": "stolen"})
        await check(r, f"move from {path}")
        assert not (box.ws / "stolen").exists()
    # The batch filename fallback is checked too.
    r = await client.post("/workspace/files:batch", files=[("files", ("../escape.txt", b"x"))])
    await check(r, "batch by filename")

    assert snapshot(box.outside, box.sibling) == before
    assert Path("/etc/passwd").read_bytes() == etc_passwd
    assert not (box.base / "x").exists()
    assert not (box.base / "escape.txt").exists()
    # The links themselves are still there: nothing was followed to delete them either.
    assert (box.ws / "link-file").is_symlink() and (box.ws / "link-dir").is_symlink()
