"""Custom sandbox types: `@SandboxRegistry.register` in an `--extension` module, on both
backends, from both SDKs; and `jupyter sandbox-builder` building a custom image."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import requests

from .conftest import DOCKER_IMAGE, ROOT, TOKEN, run_official, start_server, stop_server

# Written as the seed's documentation shows, with our package's name in the imports.
EXTENSION = '''
import os
from jupyter_sandbox import SandboxRegistry, Sandbox

@SandboxRegistry.register(
    "{image}",
    sandbox_type="my_box",
    security_level="medium",
    timeout=20,
    description="a custom box",
    environment={{"GREETING": "hello from my_box", "UNSET": os.getenv("NOT_SET_ANYWHERE")}},
    resource_limits={{"memory": "300m", "cpu": "0.5"}},
)
class MyBox(Sandbox):
    pass
'''

# The official runtime's own example module (agentscope_runtime/sandbox/custom/custom_sandbox.py),
# with `agentscope_runtime` replaced by `jupyter_sandbox` in its imports.
UPSTREAM_STYLE = '''
import os
from typing import Optional

from jupyter_sandbox.sandbox.utils import build_image_uri
from jupyter_sandbox.sandbox.registry import SandboxRegistry
from jupyter_sandbox.sandbox.enums import SandboxType
from jupyter_sandbox.sandbox.box.sandbox import Sandbox
from jupyter_sandbox.sandbox.constant import TIMEOUT

SANDBOX_TYPE = "custom_sandbox"


@SandboxRegistry.register(
    build_image_uri(f"runtime-sandbox-{SANDBOX_TYPE}"),
    sandbox_type=SANDBOX_TYPE,
    security_level="medium",
    timeout=TIMEOUT,
    description="my sandbox",
    environment={
        "TAVILY_API_KEY": os.getenv("TAVILY_API_KEY", "tavily-key"),
    },
)
class CustomSandbox(Sandbox):
    def __init__(
        self,
        sandbox_id: Optional[str] = None,
        base_url: Optional[str] = None,
        bearer_token: Optional[str] = None,
    ):
        super().__init__(
            sandbox_id,
            base_url,
            bearer_token,
            SandboxType(SANDBOX_TYPE),
        )
'''

# The same module as an official-SDK user has it, run by the official SDK's interpreter.
OFFICIAL_CLIENT = '''
import json, os
from agentscope_runtime.sandbox.custom.custom_sandbox import CustomSandbox
with CustomSandbox(base_url=os.environ["URL"], bearer_token=os.environ["TOKEN"]) as sb:
    out = sb.call_tool("run_shell_command", {"command": "echo $TAVILY_API_KEY $SANDBOX_TYPE"})
    info = sb.get_info()
print("RESULT=" + json.dumps({"out": out, "type": info["sandbox_type"]}))
'''


def run_python(code: str, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
        env={**os.environ, **(env or {})},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_extension_type_on_local_backend_from_both_sdks(
    tmp_path: Path, agentscope_python: str
) -> None:
    ext = tmp_path / "my_box.py"
    ext.write_text(EXTENSION.format(image="local/my-box:test"))
    upstream = tmp_path / "custom_sandbox.py"
    upstream.write_text(UPSTREAM_STYLE)
    server = start_server(
        tmp_path / "srv",
        f"--extension={ext}",
        f"--extension={upstream}",
        "--SandboxApp.sandbox_types=base,my_box",
    )
    try:
        pools = requests.get(f"{server.url}/health", timeout=5).json()["pools"]
        assert set(pools) == {"base", "my_box"}  # the custom type got a warm pool
        # Our SDK: the registered class asks for its own type.
        out = run_python(
            textwrap.dedent(f"""
            import sys; sys.path.insert(0, {str(tmp_path)!r})
            from my_box import MyBox
            with MyBox(base_url={server.url!r}, bearer_token={TOKEN!r}) as sb:
                r = sb.call_tool("run_shell_command", {{"command": "echo $GREETING; echo ${{UNSET-unset}}"}})
                print(sb.sandbox_type, sb.get_info()["timeout"])
                print(r["content"][0]["text"], end="")
            """)
        )
        assert out.splitlines() == ["my_box 20.0", "hello from my_box", "unset"]
        # The official SDK, unchanged, with the seed's own example module.
        result = run_official(
            agentscope_python, OFFICIAL_CLIENT, {"URL": server.url, "TOKEN": TOKEN}
        )
        assert result["type"] == "custom_sandbox"
        assert result["out"]["content"][0]["text"] == "tavily-key custom_sandbox\n"
    finally:
        stop_server(server)


def test_upstream_module_layout_and_dynamic_enum() -> None:
    out = run_python(
        textwrap.dedent("""
        from jupyter_sandbox.sandbox.registry import SandboxRegistry
        from jupyter_sandbox.sandbox.enums import SandboxType
        from jupyter_sandbox.sandbox.utils import build_image_uri
        from jupyter_sandbox.sandbox import BaseSandbox
        from jupyter_sandbox import Sandbox
        assert SandboxType.BASE == "base" and SandboxType("gui_async").name == "GUI_ASYNC"
        assert "zzz" not in SandboxType
        @SandboxRegistry.register(build_image_uri("runtime-sandbox-zzz", tag="t"), sandbox_type="zzz")
        class Z(Sandbox):
            pass
        assert SandboxType("zzz") is SandboxType.ZZZ and "zzz_async" in SandboxType
        assert SandboxRegistry.get_image_by_type("zzz") == "agentscope/runtime-sandbox-zzz:t"
        assert SandboxRegistry.get_classes_by_type(SandboxType.ZZZ) is Z
        from jupyter_sandbox.manager import registry
        assert registry.resolve("zzz_async", "base").name == "zzz"
        print("ok")
        """),
        env={"RUNTIME_SANDBOX_REGISTRY": ""},
    )
    assert out.strip() == "ok"


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("raise RuntimeError('boom')", "RuntimeError: boom"),
        ("import no_such_module_here", "No module named 'no_such_module_here'"),
        (
            "from jupyter_sandbox import SandboxRegistry, Sandbox\n"
            "@SandboxRegistry.register('x', sandbox_type='Bad-Name')\nclass B(Sandbox): pass\n",
            "invalid sandbox type name 'Bad-Name'",
        ),
    ],
)
def test_broken_extension_stops_startup(tmp_path: Path, source: str, message: str) -> None:
    ext = tmp_path / "broken.py"
    ext.write_text(source)
    server = start_server(tmp_path, f"--extension={ext}", wait=False)
    assert server.proc.wait(60) != 0
    log = server.log_text()
    assert f"--extension {ext}" in log and message in log, log


def test_missing_extension_file_is_named(tmp_path: Path) -> None:
    server = start_server(tmp_path, "--extension=./nope/missing.py", wait=False)
    assert server.proc.wait(60) != 0
    assert "no such file" in server.log_text()


# -- Docker: the builder makes the custom image, the server runs it ----------------------------

CUSTOM_DOCKERFILE = """
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
USER root
COPY marker.txt /opt/marker.txt
USER 65534:65534
"""


def builder(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "jupyter_sandbox.images.cli", *args],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
        env={**os.environ, **(env or {})},
    )  # fmt: skip


def test_builder_builds_a_custom_type_that_the_docker_backend_serves(
    tmp_path: Path, docker_client
) -> None:
    image = "local/jupyter-sandbox-test-my-box:latest"
    ext = tmp_path / "my_box.py"
    ext.write_text(EXTENSION.format(image=image))
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text(CUSTOM_DOCKERFILE)
    (context / "marker.txt").write_text("built by the test\n")
    with contextlib.suppress(Exception):
        docker_client.images.remove(image, force=True)
    built = builder("my_box", f"--extension={ext}", f"--dockerfile_path={context / 'Dockerfile'}")
    assert built.returncode == 0, built.stdout + built.stderr
    assert "health check passed" in built.stdout and "tagged" in built.stdout
    assert "Step 1/" in built.stdout  # progress is shown
    docker_client.images.get(image)

    server = start_server(
        tmp_path / "srv",
        "--SandboxApp.backend=docker",
        f"--extension={ext}",
        "--SandboxApp.sandbox_types=my_box",
        "--SandboxApp.pool_size=1",
    )
    try:
        sid = server.data("create_from_pool", sandbox_type="my_box")
        result = server.data(
            "call_tool", identity=sid, tool_name="run_shell_command",
            arguments={"command": "cat /opt/marker.txt; echo $GREETING"},
        )  # fmt: skip
        assert result["content"][0]["text"] == "built by the test\nhello from my_box\n"
        host = docker_client.containers.get(sid).attrs["HostConfig"]
        assert host["Memory"] == 300 << 20  # the type's resource_limits, not the server's
        assert host["NanoCpus"] == 500_000_000
        assert server.data("get_info", identity=sid)["version"] == image
    finally:
        stop_server(server)


def test_builder_refuses_an_image_that_fails_its_health_check(
    tmp_path: Path, docker_client
) -> None:
    ext = tmp_path / "bad_box.py"
    ext.write_text(
        "from jupyter_sandbox import register_sandbox_type\n"
        "register_sandbox_type('bad_box', image='local/jupyter-sandbox-test-bad:latest')\n"
    )
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(f"FROM {DOCKER_IMAGE}\nENTRYPOINT [\"sh\", \"-c\", \"echo broken >&2; exit 3\"]\n")
    before = {i.id for i in docker_client.images.list(all=True)}
    built = builder("bad_box", f"--extension={ext}", f"--dockerfile_path={dockerfile}")
    assert built.returncode == 1
    assert "health check failed" in built.stderr and "broken" in built.stderr, built.stderr
    with pytest.raises(Exception, match="No such image|not found"):
        docker_client.images.get("local/jupyter-sandbox-test-bad:latest")
    dangling = {i.id for i in docker_client.images.list(all=True)} - before
    assert not [i for i in dangling if not docker_client.images.get(i).tags], "leftover image"


def test_builder_without_an_engine_says_so(tmp_path: Path) -> None:
    built = builder("base", env={"DOCKER_HOST": "unix:///nonexistent/docker.sock"})
    assert built.returncode == 1
    assert "no Docker engine is reachable" in built.stderr


def test_builder_rejects_unknown_types_and_custom_types_without_a_dockerfile(tmp_path: Path) -> None:
    built = builder("nope")
    assert built.returncode == 1 and "unknown type 'nope'" in built.stderr
    built = builder("filesystem", "--tag=never-built")
    assert built.returncode == 1
    assert "built on agentscope/runtime-sandbox-base:never-built, which is not on this" in (
        built.stderr
    )
    ext = tmp_path / "x_box.py"
    ext.write_text("from jupyter_sandbox import register_sandbox_type\nregister_sandbox_type('x_box')\n")
    built = builder("x_box", f"--extension={ext}")
    assert built.returncode == 1 and "needs --dockerfile_path" in built.stderr
