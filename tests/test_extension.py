"""The handlers inside a Jupyter server (pytest-jupyter), under a non-trivial base_url.

Inside Jupyter the routes live under `{base_url}sandbox/`; both the Jupyter token and the
sandbox bearer token authenticate, and `/health` alone is open.
"""

from __future__ import annotations

import json

import pytest
from tornado.httpclient import AsyncHTTPClient, HTTPClientError

BEARER = "ext-bearer-token"


@pytest.fixture
def jp_base_url() -> str:
    return "/jupyter/user-a/"


@pytest.fixture
def jp_server_config(tmp_path):
    return {
        "ServerApp": {"jpserver_extensions": {"jupyter_sandbox": True}},
        "SandboxApp": {
            "pool_size": 1,
            "bearer_token": BEARER,
            "mount_dir": str(tmp_path / "mounts"),
            "call_timeout": 10,
        },
        "LocalBackend": {"state_dir": str(tmp_path / "state")},
    }


async def rpc(jp_fetch, route: str, headers: dict | None = None, **body):
    response = await jp_fetch(
        "sandbox", route, method="POST", body=json.dumps(body), headers=headers or {}
    )
    return json.loads(response.body)


async def test_extension_is_listed(jp_serverapp) -> None:
    assert "jupyter_sandbox" in jp_serverapp.extension_manager.extensions
    assert jp_serverapp.extension_manager.extensions["jupyter_sandbox"].enabled


async def raw(jp_http_port: int, jp_base_url: str, route: str, **kwargs):
    """A request without jp_fetch's automatic Jupyter token."""
    url = f"http://localhost:{jp_http_port}{jp_base_url}sandbox/{route}"
    return await AsyncHTTPClient().fetch(url, raise_error=False, **kwargs)


async def test_health_is_open(http_server_client, jp_http_port, jp_base_url) -> None:
    response = await raw(jp_http_port, jp_base_url, "health")
    assert response.code == 200
    assert json.loads(response.body)["status"] == "healthy"


async def test_round_trip_with_jupyter_token(jp_fetch) -> None:
    sid = (
        await rpc(jp_fetch, "create_from_pool", sandbox_type="base", meta={"session_ctx_id": "s1"})
    )["data"]
    try:
        result = (await rpc(jp_fetch, "call_tool", identity=sid, tool_name="run_shell_command",
                            arguments={"command": "echo inside-jupyter"}))["data"]  # fmt: skip
        assert result["content"][0]["text"] == "inside-jupyter\n"
        mapping = (await rpc(jp_fetch, "get_session_mapping", session_ctx_id="s1"))["data"]
        assert mapping == [sid]
    finally:
        assert (await rpc(jp_fetch, "release", identity=sid))["data"] is True


async def test_bearer_token_works_too(jp_fetch) -> None:
    headers = {"Authorization": f"Bearer {BEARER}"}
    keys = await rpc(jp_fetch, "list_session_keys", headers=headers)
    assert keys == {"data": []}


@pytest.mark.parametrize("auth", [None, "Bearer wrong", "token wrong", "Basic Zm9vOmJhcg=="])
async def test_bad_credentials_get_401(http_server_client, jp_http_port, jp_base_url, auth) -> None:
    headers = {"Authorization": auth} if auth else {}
    for route in ("list_session_keys", "create_from_pool", "cleanup"):
        response = await raw(
            jp_http_port, jp_base_url, route, method="POST", body="{}", headers=headers
        )
        assert response.code == 401, route
        assert "detail" in json.loads(response.body)
    response = await raw(jp_http_port, jp_base_url, "proxy/x/workspace/list", headers=headers)
    assert response.code == 401


async def test_proxy_under_base_url(jp_fetch) -> None:
    sid = (await rpc(jp_fetch, "create_from_pool"))["data"]
    try:
        await jp_fetch("sandbox", "proxy", sid, "workspace", "file", method="PUT",
                       params={"path": "x/y.txt"}, body=b"data")  # fmt: skip
        response = await jp_fetch("sandbox", "proxy", sid, "workspace", "file",
                                  params={"path": "x/y.txt", "format": "text"})  # fmt: skip
        assert response.body == b"data"
        with pytest.raises(HTTPClientError) as info:
            await jp_fetch("sandbox", "proxy", sid, "workspace", "file",
                           params={"path": "../../etc/passwd"})  # fmt: skip
        assert info.value.code == 403
    finally:
        await rpc(jp_fetch, "release", identity=sid)


async def test_unknown_sandbox_is_404(jp_fetch) -> None:
    with pytest.raises(HTTPClientError) as info:
        await rpc(jp_fetch, "get_info", identity="no-such-sandbox")
    assert info.value.code == 404
    assert "no-such-sandbox" in json.loads(info.value.response.body)["detail"]
