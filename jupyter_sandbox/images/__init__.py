"""Sandbox images: their Dockerfiles (one folder per type) and how they are built.

`build_image` assembles a build context, builds through the Docker engine's API, starts a
sandbox from the result exactly as the Docker backend would and checks that its box and
kernel answer, and only then tags it. `jupyter sandbox-builder` (`cli.py`) is the command.

Image layering: `base` comes from a Debian image (`--base-image`, default
`debian:bookworm-slim`); `filesystem` and `browser` are built on `base`, and `gui` on
`browser`. A custom type's Dockerfile receives the base sandbox image as the build argument
`BASE_IMAGE`, so `ARG BASE_IMAGE` / `FROM ${BASE_IMAGE}` extends it.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import os
import platform as host_platform
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import jupyter_sandbox

from ..manager import registry

IMAGES_DIR = Path(__file__).parent
BUILTIN = ("base", "filesystem", "browser", "gui")
PARENT = {"filesystem": "base", "browser": "base", "gui": "browser"}
DEFAULT_BASE_IMAGE = "debian:bookworm-slim"
# The box's Python packages, pinned to the versions this server runs, so a sandbox behaves
# like a local one.
BOX_REQUIREMENTS = (
    "tornado", "ipykernel", "ipython", "jupyter_client", "jupyter_core", "pyzmq", "traitlets",
    "mcp",
)  # fmt: skip
# What a built-in type's tools add to its parent image's venv (browser: Playwright's driver,
# which drives Debian's Chromium; it never downloads a browser).
TYPE_REQUIREMENTS = {"browser": ("playwright",), "gui": ("pillow",)}


class BuildError(RuntimeError):
    """The image could not be built or failed its health check; the message says why."""


@dataclass
class BuildRequest:
    sandbox_type: str
    dockerfile: Path | None = None  # default: the package's Dockerfile for built-in types
    base_image: str = ""  # FROM for `base`; BASE_IMAGE build argument for the others
    platform: str = ""
    ca_bundle: str = ""
    health_check: bool = True


def dockerfile_for(sandbox_type: str) -> Path:
    path = IMAGES_DIR / sandbox_type / "Dockerfile"
    if not path.is_file():
        raise BuildError(
            f"there is no built-in Dockerfile for type {sandbox_type!r}; "
            "give one with --dockerfile_path"
        )
    return path


def requirements(names: tuple[str, ...] = BOX_REQUIREMENTS) -> str:
    """Pinned to the versions this server runs, so box and server agree."""
    lines = []
    for name in names:
        try:
            lines.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            lines.append(name)
    return "\n".join(lines) + "\n"


def _prepare_context(request: BuildRequest, workdir: Path) -> tuple[Path, str]:
    """The build context directory and the Dockerfile's path inside it."""
    if request.dockerfile is not None:
        dockerfile = request.dockerfile.resolve()
        if not dockerfile.is_file():
            raise BuildError(f"Dockerfile {dockerfile} does not exist")
        if request.sandbox_type != "base":
            # A custom Dockerfile's neighbours are its context, as with `docker build -f`.
            return dockerfile.parent, dockerfile.name
    else:
        dockerfile = dockerfile_for(request.sandbox_type)
    context = workdir / "context"
    context.mkdir()
    shutil.copy(dockerfile, context / "Dockerfile")
    ca = Path(request.ca_bundle).read_bytes() if request.ca_bundle else b""
    (context / "extra-ca.crt").write_bytes(ca)
    if request.sandbox_type in TYPE_REQUIREMENTS:
        names = TYPE_REQUIREMENTS[request.sandbox_type]
        (context / "requirements.txt").write_text(requirements(names))
    if request.sandbox_type == "base":
        (context / "requirements.txt").write_text(requirements())
        package = Path(jupyter_sandbox.__file__).parent
        shutil.copytree(
            package,
            context / "jupyter_sandbox",
            ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "images"),
        )
    return context, "Dockerfile"


def _host_platform() -> str:
    machine = host_platform.machine().lower()
    arch = {"x86_64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(machine, machine)
    return f"linux/{arch}"


def build_args(request: BuildRequest) -> dict[str, str]:
    if request.sandbox_type == "base":
        return {"BASE_IMAGE": request.base_image or DEFAULT_BASE_IMAGE}
    parent = PARENT.get(request.sandbox_type, "base")
    return {"BASE_IMAGE": request.base_image or registry.image_name(f"runtime-sandbox-{parent}")}


def build_image(
    client: object, request: BuildRequest, tag: str, progress: Callable[[str], None] = print
) -> str:
    """Build, health-check and tag one image; returns its id. `client` is a docker.DockerClient."""
    import docker.errors

    api = client.api  # type: ignore[attr-defined]
    parent = PARENT.get(request.sandbox_type)
    if parent and not request.base_image and request.dockerfile is None:
        base = build_args(request)["BASE_IMAGE"]
        try:
            api.inspect_image(base)
        except docker.errors.ImageNotFound:
            raise BuildError(
                f"{tag} is built on {base}, which is not on this engine: build it first "
                f"(`jupyter sandbox-builder {parent}`, or `all`), or give --base-image"
            ) from None
    with tempfile.TemporaryDirectory(prefix="jupyter-sandbox-build-") as tmp:
        context, dockerfile = _prepare_context(request, Path(tmp))
        progress(f"building {tag} from {context / dockerfile}")
        image_id = ""
        try:
            stream = api.build(
                path=str(context),
                dockerfile=dockerfile,
                buildargs=build_args(request),
                platform=request.platform or None,
                rm=True,
                forcerm=True,
                decode=True,
            )
            for chunk in stream:
                if "error" in chunk:
                    raise BuildError(f"building {tag} failed: {chunk['error'].strip()}")
                if "stream" in chunk and chunk["stream"].strip():
                    progress(chunk["stream"].rstrip())
                elif "status" in chunk:
                    progress(" ".join(str(chunk[k]) for k in ("status", "progress") if k in chunk))
                if "aux" in chunk and "ID" in chunk["aux"]:
                    image_id = chunk["aux"]["ID"]
        except docker.errors.APIError as e:
            raise BuildError(f"building {tag} failed: {e.explanation or e}") from None
    if not image_id:
        raise BuildError(f"building {tag} failed: the engine reported no image id")
    cross = request.platform and request.platform != _host_platform()
    if request.health_check and not cross:
        progress(f"health check: starting a sandbox from {image_id[:19]}")
        try:
            asyncio.run(health_check(image_id, request.sandbox_type))
        except BaseException:
            with contextlib.suppress(docker.errors.APIError):
                api.remove_image(image_id)  # no untagged leftovers from a failed build
            raise
        progress("health check passed: the box and its IPython kernel answer")
    repository, _, version = tag.rpartition(":")
    if not repository or "/" in version:
        repository, version = tag, "latest"
    api.tag(image_id, repository, version)
    progress(f"tagged {image_id[:19]} as {repository}:{version}")
    return image_id


async def health_check(image: str, sandbox_type: str) -> None:
    """Start a sandbox from `image` as the Docker backend does, and run a shell command and a
    Python cell in it; raise BuildError if anything fails. The sandbox is always removed."""
    from ..backends import BackendError, Limits, SandboxSpec
    from ..backends.docker import DockerBackend
    from ..manager.boxclient import BoxClient

    backend = DockerBackend(server_id="builder")
    workspace = tempfile.mkdtemp(prefix="jupyter-sandbox-health-")
    token = os.urandom(16).hex()
    spec = SandboxSpec(
        name=f"jupyter-sandbox-health-{os.urandom(6).hex()}",
        sandbox_type=sandbox_type,
        image=image,
        workspace=workspace,
        token=token,
        call_timeout=60,
        limits=Limits(memory_bytes=1 << 30, cpus=1.0, pids=256),
        network=False,
    )
    started = None
    try:
        backend.check()
        started = await backend.create(spec)
        client = BoxClient(started.url, token, 60)
        try:
            if not await client.healthy(wait_kernel=True, timeout=120):
                raise BuildError("the box answers, but its IPython kernel did not start")
            for path, body in (
                ("/tools/run_shell_command", {"command": "true"}),
                ("/tools/run_ipython_cell", {"code": "1+1"}),
            ):
                response = await client.request("POST", path, json=body)
                if response.status_code != 200 or response.json().get("isError"):
                    raise BuildError(f"{path} failed in the new image: {response.text[:500]}")
        finally:
            await client.aclose()
    except BackendError as e:
        raise BuildError(f"health check failed: {e}") from None
    finally:
        if started is not None:
            await backend.destroy(started.container_id)
        await backend.close()
        with contextlib.suppress(OSError):
            shutil.rmtree(workspace)
