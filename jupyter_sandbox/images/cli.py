"""`jupyter sandbox-builder`: build sandbox images on the local Docker engine.

    jupyter sandbox-builder base|filesystem|browser|gui|all|<custom type>
        [--dockerfile_path P] [--extension X] [--base-image IMG] [--platform linux/amd64]
        [--ca-bundle FILE] [--no-health-check]

Each image is named `{registry/}{namespace}/runtime-sandbox-<type>:{tag}` (the seed's
RUNTIME_SANDBOX_* variables, or the --registry/--namespace/--tag options), or the image a
custom type registered. `all` builds the four built-in types in dependency order.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from traitlets import Bool, List, Unicode
from traitlets.config import Application

from .. import __version__
from ..manager import registry
from . import BUILTIN, BuildError, BuildRequest, build_image


class SandboxBuilderApp(Application):
    """Build sandbox images for the Docker backend."""

    name = "jupyter sandbox-builder"
    description = __doc__
    version = __version__
    examples = """
    jupyter sandbox-builder base --base-image local/bookworm:base
    jupyter sandbox-builder all
    jupyter sandbox-builder my_box --extension my_box.py --dockerfile_path ./Dockerfile
    """

    dockerfile_path = Unicode(
        "", config=True, help="Dockerfile to build (required for custom types); its directory "
        "is the build context."
    )
    extensions = List(
        Unicode(), config=True, help="Modules (file paths or names) that register custom types."
    )
    base_image = Unicode(
        "",
        config=True,
        help="Image the build starts from: for `base`, a Debian image (default "
        "debian:bookworm-slim; a local one made with mmdebstrap + docker import works where no "
        "registry is reachable); for other types, the BASE_IMAGE build argument.",
    )
    platform = Unicode(
        "", config=True, help="Target platform, e.g. linux/arm64 (cross builds skip the health "
        "check)."
    )
    ca_bundle = Unicode(
        "",
        config=True,
        help="A CA certificate bundle trusted for HTTPS during the build only (pip through an "
        "intercepting proxy), e.g. /etc/ssl/certs/ca-certificates.crt.",
    )
    registry = Unicode(None, allow_none=True, config=True, help="Image registry (seed "
                       "RUNTIME_SANDBOX_REGISTRY).")
    namespace = Unicode(None, allow_none=True, config=True, help="Image namespace (seed "
                        "RUNTIME_SANDBOX_IMAGE_NAMESPACE).")
    tag = Unicode(None, allow_none=True, config=True, help="Image tag (seed "
                  "RUNTIME_SANDBOX_IMAGE_TAG).")
    health_check = Bool(True, config=True, help="Start a sandbox from each new image and "
                        "check its box and kernel before tagging it.")

    aliases = {
        "dockerfile_path": "SandboxBuilderApp.dockerfile_path",
        "dockerfile-path": "SandboxBuilderApp.dockerfile_path",
        "extension": "SandboxBuilderApp.extensions",
        "base-image": "SandboxBuilderApp.base_image",
        "base_image": "SandboxBuilderApp.base_image",
        "platform": "SandboxBuilderApp.platform",
        "ca-bundle": "SandboxBuilderApp.ca_bundle",
        "registry": "SandboxBuilderApp.registry",
        "namespace": "SandboxBuilderApp.namespace",
        "tag": "SandboxBuilderApp.tag",
    }
    flags = {
        "no-health-check": (
            {"SandboxBuilderApp": {"health_check": False}},
            "Tag without starting a sandbox from the image first.",
        )
    }

    def start(self) -> None:
        targets = self.extra_args or ["base"]
        if len(targets) != 1:
            self.exit_with(f"give one build type, not {' '.join(targets)}")
        for name, variable in (
            ("registry", "RUNTIME_SANDBOX_REGISTRY"),
            ("namespace", "RUNTIME_SANDBOX_IMAGE_NAMESPACE"),
            ("tag", "RUNTIME_SANDBOX_IMAGE_TAG"),
        ):
            value = getattr(self, name)
            if value is not None:
                os.environ[variable] = value
        from ..extensions import ExtensionError, load_extension

        for extension in self.extensions:
            try:
                load_extension(extension)
            except ExtensionError as e:
                self.exit_with(str(e))
        target = targets[0]
        types = list(BUILTIN) if target == "all" else [target]
        if not registry.is_known(target) and target != "all":
            self.exit_with(
                f"unknown type {target!r}: build base, filesystem, browser, gui, all, or a "
                "custom type registered by an --extension module"
            )
        if target not in BUILTIN and target != "all" and not self.dockerfile_path:
            self.exit_with(f"custom type {target!r} needs --dockerfile_path")
        client = self._client()
        try:
            for sandbox_type in types:
                spec = registry.resolve(sandbox_type, sandbox_type)
                request = BuildRequest(
                    sandbox_type=spec.name,
                    dockerfile=Path(self.dockerfile_path) if self.dockerfile_path else None,
                    base_image=self.base_image if (spec.name == "base" or len(types) == 1) else "",
                    platform=self.platform,
                    ca_bundle=self.ca_bundle,
                    health_check=self.health_check,
                )
                build_image(client, request, spec.image, progress=self._progress)
        except BuildError as e:
            self.exit_with(str(e))
        finally:
            client.close()

    def _client(self) -> Any:
        try:
            import docker

            client = docker.from_env(timeout=600)
            client.ping()
            return client
        except ImportError:
            self.exit_with(
                "the builder needs the Docker SDK: pip install 'jupyter-sandbox[docker]'"
            )
        except Exception as e:
            self.exit_with(
                f"no Docker engine is reachable ({e}). Start dockerd, or set DOCKER_HOST to one."
            )

    def _progress(self, line: str) -> None:
        print(line, flush=True)

    def exit_with(self, message: str) -> Any:
        print(f"jupyter sandbox-builder: error: {message}", file=sys.stderr, flush=True)
        self.exit(1)


main = SandboxBuilderApp.launch_instance

if __name__ == "__main__":
    main()
