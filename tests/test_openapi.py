"""docs/openapi.yaml describes every route the server registers."""

from __future__ import annotations

from pathlib import Path

import yaml

from jupyter_sandbox.server_ext.handlers import RPC_METHODS

SPEC = Path(__file__).resolve().parent.parent / "docs" / "openapi.yaml"


def test_every_route_is_documented() -> None:
    spec = yaml.safe_load(SPEC.read_text())
    assert spec["openapi"].startswith("3.")
    paths = spec["paths"]
    for method in RPC_METHODS:
        assert "post" in paths[f"/{method}"], method
    assert "get" in paths["/health"] and paths["/health"]["get"]["security"] == []
    for route in ("file", "files:batch", "list", "exists", "entry", "move", "mkdir"):
        assert f"/proxy/{{identity}}/workspace/{route}" in paths, route
    assert "get" in paths["/desktop/{identity}/vnc/{file}"] and "get" in paths["/desktop/{identity}"]
    assert "get" in paths["/api/sandboxes"] and "get" in paths["/kernels/{identity}/channels"]
    assert spec["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
