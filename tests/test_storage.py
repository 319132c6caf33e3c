"""Workspace storage: the stores on their own (local directory, a real S3 server, OSS's code
path), then end to end through a server: release and cull save, restore and `storage_path`
load, deletions propagate, a failed save keeps everything and is retried.

The S3 server is `moto_server` (moto[server] from PyPI), started here on loopback. No Aliyun
OSS server can be installed on these machines; OSS runs through oss2 against the same moto
server, whose object calls oss2 shares with S3. oss2 cannot parse moto's *listing* (it has the
S3 XML namespace; OSS answers without one), so listings reach oss2 through `OssListingProxy`,
which serves them in the layout of a recorded real OSS ListObjects response
(`RECORDED_OSS_LISTING`, Aliyun's documented example) filled with moto's keys.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import http.server
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from jupyter_sandbox.storage import MANIFEST, LocalStorage, OSSStorage, S3Storage, StorageError

from .conftest import Server, free_port, start_server, stop_server

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "test",
    "AWS_SECRET_ACCESS_KEY": "test",
    "AWS_DEFAULT_REGION": "us-east-1",
}

# A real OSS ListObjects (GetBucket) response, as Aliyun documents it; the proxy below keeps
# its layout and fills in moto's objects.
RECORDED_OSS_LISTING = """<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult>
  <Name>{bucket}</Name>
  <Prefix>{prefix}</Prefix>
  <Marker></Marker>
  <MaxKeys>100</MaxKeys>
  <Delimiter></Delimiter>
  <IsTruncated>false</IsTruncated>
{contents}</ListBucketResult>
"""
RECORDED_OSS_CONTENTS = """  <Contents>
    <Key>{key}</Key>
    <LastModified>2012-02-24T08:42:32.000Z</LastModified>
    <ETag>{etag}</ETag>
    <Type>Normal</Type>
    <Size>{size}</Size>
    <StorageClass>Standard</StorageClass>
    <Owner>
      <ID>0022012****</ID>
      <DisplayName>user-example</DisplayName>
    </Owner>
  </Contents>
"""


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    port = free_port()
    moto = Path(sys.executable).parent / "moto_server"
    proc = subprocess.Popen(
        [str(moto), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while True:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            break
        assert proc.poll() is None and time.monotonic() < deadline, "moto_server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def bucket(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch, request) -> str:
    import boto3

    for key, value in CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    name = "ws-" + hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:20]  # one per test
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=name)
    return name


class OssListingProxy:
    """Forwards oss2's requests to moto; listings are answered in OSS's own XML layout."""

    def __init__(self, upstream: str):
        self.upstream = urlsplit(upstream)
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                proxy.forward(self)

            do_PUT = do_POST = do_DELETE = do_HEAD = do_GET  # noqa: N815

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def forward(self, handler: http.server.BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else None
        conn = http.client.HTTPConnection(self.upstream.hostname, self.upstream.port, timeout=60)
        headers = {k: v for k, v in handler.headers.items() if k.lower() != "host"}
        conn.request(handler.command, handler.path, body=body, headers=headers)
        response = conn.getresponse()
        data = response.read()
        query = parse_qs(urlsplit(handler.path).query, keep_blank_values=True)
        if handler.command == "GET" and "prefix" in query and response.status == 200:
            data = self.as_oss_listing(handler.path, query, data)
        handler.send_response(response.status)
        for key, value in response.getheaders():
            if key.lower() not in ("content-length", "transfer-encoding", "connection"):
                handler.send_header(key, value)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        if handler.command != "HEAD":
            handler.wfile.write(data)

    @staticmethod
    def as_oss_listing(path: str, query: dict, data: bytes) -> bytes:
        text = data.decode()
        items = re.findall(
            r"<Contents>.*?<Key>(.*?)</Key>.*?<ETag>(.*?)</ETag>.*?<Size>(\d+)</Size>.*?</Contents>",
            text,
            re.S,
        )
        contents = "".join(
            RECORDED_OSS_CONTENTS.format(key=k, etag=e.upper(), size=s) for k, e, s in items
        )
        bucket = urlsplit(path).path.strip("/").split("/")[0]
        return RECORDED_OSS_LISTING.format(
            bucket=bucket, prefix=query["prefix"][0], contents=contents
        ).encode()

    def close(self) -> None:
        self.server.shutdown()


def make_store(kind: str, tmp_path: Path, s3_endpoint: str, bucket: str):
    if kind == "local":
        return LocalStorage(str(tmp_path / "store"))
    if kind == "s3":
        return S3Storage(endpoint_url=s3_endpoint, bucket=bucket)
    proxy = OssListingProxy(s3_endpoint)
    store = OSSStorage(
        endpoint=proxy.url, access_key_id="test", access_key_secret="test", bucket_name=bucket
    )
    store._proxy = proxy  # type: ignore[attr-defined]
    return store


def tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }


@pytest.mark.parametrize("kind", ["local", "s3", "oss"])
def test_round_trip_incremental_and_deletions(
    kind: str, tmp_path: Path, s3_endpoint: str, bucket: str
) -> None:
    store = make_store(kind, tmp_path, s3_endpoint, bucket)
    ws = tmp_path / "ws"
    (ws / "sub" / "deep").mkdir(parents=True)
    (ws / "a.txt").write_text("alpha")
    (ws / "sub" / "b.bin").write_bytes(bytes(range(256)) * 10)
    (ws / "sub" / "deep" / "c.txt").write_text("gamma")
    (ws / "link").symlink_to("/etc/passwd")  # a sandbox's symlink never leaks host files
    assert store.save(str(ws), "ws/s1") == 3
    assert store.save(str(ws), "ws/s1") == 0  # unchanged files are not sent again
    (ws / "a.txt").write_text("alpha, changed")
    (ws / "sub" / "deep" / "c.txt").unlink()  # deletions propagate (upstream never deletes)
    assert store.save(str(ws), "ws/s1") == 1
    back = tmp_path / "back"
    back.mkdir()
    assert store.load("ws/s1", str(back)) == 2
    assert tree(back) == {"a.txt": b"alpha, changed", "sub/b.bin": bytes(range(256)) * 10}
    with pytest.raises(ValueError, match="without '..'"):
        store.save(str(ws), "../escape")
    with pytest.raises(StorageError, match="does not exist"):
        store.save(str(tmp_path / "missing"), "ws/s1")  # would otherwise delete everything
    if kind == "oss":
        store._proxy.close()


@pytest.mark.parametrize("kind", ["local", "s3"])
def test_large_file(kind: str, tmp_path: Path, s3_endpoint: str, bucket: str) -> None:
    store = make_store(kind, tmp_path, s3_endpoint, bucket)
    ws = tmp_path / "ws"
    ws.mkdir()
    big = ws / "big.bin"
    with open(big, "wb") as f:
        for i in range(100):  # 100 MB, not all zeros
            f.write(hashlib.sha256(str(i).encode()).digest() * 32768)
    assert store.save(str(ws), "ws/big") == 1
    back = tmp_path / "back"
    back.mkdir()
    store.load("ws/big", str(back))
    assert os.path.getsize(back / "big.bin") == 100 << 20
    assert _sha(back / "big.bin") == _sha(big)


def _sha(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


# -- end to end through a server -------------------------------------------------------------


def shell(server: Server, sid: str, command: str) -> str:
    result = server.data(
        "call_tool", identity=sid, tool_name="run_shell_command", arguments={"command": command}
    )
    return result["content"][0]["text"]


def wait_until(predicate, timeout: float = 20, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def test_local_storage_cull_saves_and_restore_loads(tmp_path: Path) -> None:
    folder = tmp_path / "saved"
    srv = start_server(
        tmp_path / "srv",
        f"--SandboxApp.storage_folder={folder}",
        "--SandboxApp.heartbeat_timeout=1",
        "--SandboxApp.watcher_interval=0.2",
    )
    try:
        sid = srv.data("create_from_pool", meta={"session_ctx_id": "st-1"})
        info = srv.data("get_info", identity=sid)
        shell(srv, sid, "echo one > one.txt && mkdir d && echo two > d/two.txt")
        wait_until(lambda: srv.data("get_info", identity=sid)["state"] == "recycled")
        saved = folder / info["session_id"]
        wait_until(lambda: (saved / "d" / "two.txt").exists(), what="saved to the folder")
        wait_until(lambda: not Path(info["mount_dir"]).exists(), what="local copy removed")
        assert info["storage_path"] == info["session_id"]
        # Restore loads the saved workspace into the new sandbox.
        assert shell(srv, sid, "cat one.txt d/two.txt; rm one.txt") == "one\ntwo\n"
        srv.data("release", identity=sid)
        wait_until(lambda: not (saved / "one.txt").exists(), what="deletion propagated")
        assert (saved / "d" / "two.txt").read_text() == "two\n"
    finally:
        stop_server(srv)


def s3_server(tmp_path: Path, s3_endpoint: str, bucket: str, *args: str) -> Server:
    os.environ.update(CREDENTIALS)  # the server inherits them (the AWS credential chain)
    return start_server(
        tmp_path,
        "--SandboxApp.storage=s3",
        "--SandboxApp.storage_folder=workspaces",
        f"--S3Storage.endpoint_url={s3_endpoint}",
        f"--S3Storage.bucket={bucket}",
        "--SandboxApp.watcher_interval=0.2",
        *args,
    )


def test_s3_release_saves_and_storage_path_loads(
    tmp_path: Path, s3_endpoint: str, bucket: str
) -> None:
    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    srv = s3_server(tmp_path / "srv", s3_endpoint, bucket)
    try:
        sid = srv.data("create_from_pool", meta={"session_ctx_id": "st-2"})
        info = srv.data("get_info", identity=sid)
        shell(srv, sid, "echo kept > notes.txt")
        srv.data("release", identity=sid)
        key = f"workspaces/{info['session_id']}/notes.txt"
        wait_until(lambda: s3.list_objects_v2(Bucket=bucket, Prefix=key).get("KeyCount"))
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == b"kept\n"
        wait_until(lambda: not Path(info["mount_dir"]).exists(), what="local copy removed")
        # A new sandbox starts from that stored workspace; storage_path is confined to it.
        again = srv.data("create", sandbox_type="base", storage_path=info["session_id"])
        assert shell(srv, again, "cat notes.txt") == "kept\n"
        bad = srv.rpc("create", sandbox_type="base", storage_path="../../etc")
        assert bad.status_code == 400 and "without '..'" in bad.json()["detail"]
        srv.data("release", identity=again)
    finally:
        stop_server(srv)


def test_s3_failed_save_keeps_the_workspace_and_is_retried(
    tmp_path: Path, s3_endpoint: str, bucket: str
) -> None:
    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    srv = s3_server(tmp_path / "srv", s3_endpoint, bucket)
    try:
        sid = srv.data("create_from_pool", meta={"session_ctx_id": "st-3"})
        info = srv.data("get_info", identity=sid)
        shell(srv, sid, "echo precious > p.txt")
        s3.delete_bucket(Bucket=bucket)  # the store goes away
        srv.data("release", identity=sid)
        wait_until(lambda: "the save is retried" in srv.log_text(), what="save failure logged")
        assert (Path(info["mount_dir"]) / "p.txt").read_text() == "precious\n"  # nothing lost
        s3.create_bucket(Bucket=bucket)  # it comes back
        key = f"workspaces/{info['session_id']}/p.txt"
        wait_until(lambda: s3.list_objects_v2(Bucket=bucket, Prefix=key).get("KeyCount"))
        wait_until(lambda: not Path(info["mount_dir"]).exists(), what="removed once saved")
    finally:
        stop_server(srv)


def test_client_mount_dir_needs_allow_mount_dir(tmp_path: Path) -> None:
    own = tmp_path / "own-dir"
    own.mkdir()
    (own / "mine.txt").write_text("client file\n")
    srv = start_server(tmp_path / "srv")
    try:
        refused = srv.rpc("create", sandbox_type="base", mount_dir=str(own))
        assert refused.status_code == 400 and "allow_mount_dir" in refused.json()["detail"]
    finally:
        stop_server(srv)
    srv = start_server(tmp_path / "srv2", "--SandboxApp.allow_mount_dir=True")
    try:
        sid = srv.data("create", sandbox_type="base", mount_dir=str(own))
        assert shell(srv, sid, "cat mine.txt") == "client file\n"
        srv.data("release", identity=sid)
        time.sleep(0.5)
        assert (own / "mine.txt").exists()  # a client's own directory is never removed
    finally:
        stop_server(srv)
