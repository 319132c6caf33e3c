"""Durable workspace storage: a sandbox's `/workspace` saved when it is released or culled, and
loaded back when its session is restored (wire §4.9).

A store maps a *key* (`storage_folder/<session id>`) to a tree of files. `save` is incremental
and never partial: it sends only files whose content changed since the last save, then deletes
what the workspace no longer has (upstream never deletes), and writes the manifest of what it
holds last, so a save that fails half-way is simply done again, in full, by the next attempt.
`load` writes every file under the key into an empty directory.

Three stores: `LocalStorage` (a host directory), `S3Storage` (boto3; any S3 server) and
`OSSStorage` (Aliyun OSS through oss2). Their calls are blocking: the manager runs them on a
thread.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from typing import Any

from traitlets import Unicode
from traitlets.config import LoggingConfigurable

MANIFEST = ".jupyter-sandbox-manifest.json"  # {relative path: md5 hex}; never a user file
CHUNK = 1 << 20


class StorageError(RuntimeError):
    """A save or load failed; the workspace on disk is untouched."""


def _md5(path: str) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def local_files(root: str) -> Iterator[tuple[str, str]]:
    """(relative POSIX path, absolute path) of every regular file under `root`; symlinks are
    skipped (a sandbox could point them anywhere on the host)."""
    for directory, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(directory, d))]
        for name in files:
            path = os.path.join(directory, name)
            if os.path.islink(path) or not os.path.isfile(path):
                continue
            relative = os.path.relpath(path, root).replace(os.sep, "/")
            if relative != MANIFEST:
                yield relative, path


def check_key(key: str) -> str:
    """A storage key must be a relative path without `..` (it may come from a client)."""
    parts = [p for p in key.replace("\\", "/").split("/") if p not in ("", ".")]
    if not parts or ".." in parts or key.startswith("/"):
        raise ValueError(f"invalid storage path {key!r}: a relative path without '..' is needed")
    return "/".join(parts)


class WorkspaceStorage(LoggingConfigurable):
    """Base of the stores: subclasses move single files and list keys."""

    name = "abstract"

    # -- what a store implements -----------------------------------------------------------

    def _read(self, key: str) -> bytes | None:
        raise NotImplementedError

    def _write(self, key: str, data: bytes) -> None:
        raise NotImplementedError

    def _upload(self, path: str, key: str) -> None:
        raise NotImplementedError

    def _download(self, key: str, path: str) -> None:
        raise NotImplementedError

    def _list(self, prefix: str) -> list[str]:
        """Every key under `prefix/` (recursively)."""
        raise NotImplementedError

    def _delete(self, keys: list[str]) -> None:
        raise NotImplementedError

    # -- the interface the manager uses ----------------------------------------------------

    def save(self, local_dir: str, key: str) -> int:
        """Make `key` hold exactly the files of `local_dir`; returns how many were sent."""
        key = check_key(key)
        if not os.path.isdir(local_dir):  # saving nothing would delete everything stored
            raise StorageError(f"workspace {local_dir} does not exist")
        current: dict[str, str] = {}
        sent = 0
        try:
            try:
                previous = json.loads(self._read(f"{key}/{MANIFEST}") or b"{}")
            except ValueError:
                previous = {}
            for relative, path in local_files(local_dir):
                current[relative] = digest = _md5(path)
                if previous.get(relative) != digest:
                    self._upload(path, f"{key}/{relative}")
                    sent += 1
            stale = [
                k for k in self._list(key) if k[len(key) + 1 :] not in current and
                not k.endswith(f"/{MANIFEST}")
            ]  # fmt: skip
            if stale:
                self._delete(stale)
            self._write(f"{key}/{MANIFEST}", json.dumps(current, sort_keys=True).encode())
        except StorageError:
            raise
        except Exception as e:
            raise StorageError(f"saving the workspace to {self.describe(key)} failed: {e}") from e
        return sent

    def load(self, key: str, local_dir: str) -> int:
        """Write every file under `key` into `local_dir`; returns how many."""
        key = check_key(key)
        count = 0
        try:
            for item in self._list(key):
                relative = item[len(key) + 1 :]
                if not relative or relative == MANIFEST or relative.endswith("/"):
                    continue
                target = os.path.join(local_dir, *check_key(relative).split("/"))
                os.makedirs(os.path.dirname(target), exist_ok=True)
                self._download(item, target)
                count += 1
        except Exception as e:
            raise StorageError(
                f"loading the workspace from {self.describe(key)} failed: {e}"
            ) from e
        return count

    def describe(self, key: str) -> str:
        return f"{self.name}:{key}"


class LocalStorage(WorkspaceStorage):
    """Workspaces copied to a directory of this host (`SandboxApp.storage_folder`)."""

    name = "local"

    def __init__(self, root: str, **kwargs: Any):
        super().__init__(**kwargs)
        self.root = os.path.abspath(root)

    def _path(self, key: str) -> str:
        return os.path.join(self.root, *key.split("/"))

    def _read(self, key: str) -> bytes | None:
        try:
            with open(self._path(key), "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None

    def _write(self, key: str, data: bytes) -> None:
        path = self._path(key)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(f"{path}.tmp", "wb") as f:
            f.write(data)
        os.replace(f"{path}.tmp", path)

    def _upload(self, path: str, key: str) -> None:
        target = self._path(key)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copyfile(path, f"{target}.tmp")
        os.replace(f"{target}.tmp", target)

    def _download(self, key: str, path: str) -> None:
        shutil.copyfile(self._path(key), path)

    def _list(self, prefix: str) -> list[str]:
        root = self._path(prefix)
        out = []
        for directory, _, files in os.walk(root):
            for name in files:
                relative = os.path.relpath(os.path.join(directory, name), root)
                out.append(f"{prefix}/{relative.replace(os.sep, '/')}")
        return out

    def _delete(self, keys: list[str]) -> None:
        for key in keys:
            os.unlink(self._path(key))
        # Directories left empty by the deletions go too.
        for key in keys:
            parent = os.path.dirname(self._path(key))
            while parent.startswith(self.root + os.sep):
                try:
                    os.rmdir(parent)
                except OSError:
                    break
                parent = os.path.dirname(parent)

    def describe(self, key: str) -> str:
        return self._path(key)


class S3Storage(WorkspaceStorage):
    """Workspaces in an S3 bucket (boto3; credentials from the usual AWS chain)."""

    name = "s3"

    endpoint_url = Unicode(
        "", config=True, help="S3 endpoint, e.g. http://127.0.0.1:9000; empty: AWS itself."
    )
    bucket = Unicode("", config=True, help="The bucket that holds workspaces.")
    region_name = Unicode("", config=True, help="The bucket's region; empty: the AWS default.")

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        try:
            import boto3
        except ImportError:
            raise StorageError("S3 storage needs boto3: pip install boto3") from None
        if not self.bucket:
            raise StorageError("S3 storage needs --S3Storage.bucket")
        self.client = boto3.client(
            "s3",
            endpoint_url=self.endpoint_url or None,
            region_name=self.region_name or None,
        )

    def _read(self, key: str) -> bytes | None:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except self.client.exceptions.NoSuchKey:
            return None

    def _write(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=key, Body=data)

    def _upload(self, path: str, key: str) -> None:
        self.client.upload_file(path, self.bucket, key)

    def _download(self, key: str, path: str) -> None:
        self.client.download_file(self.bucket, key, path)

    def _list(self, prefix: str) -> list[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=f"{prefix}/"
        )
        return [item["Key"] for page in pages for item in page.get("Contents", [])]

    def _delete(self, keys: list[str]) -> None:
        for start in range(0, len(keys), 1000):  # the API's batch limit
            batch = [{"Key": k} for k in keys[start : start + 1000]]
            self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch})

    def describe(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"


class OSSStorage(WorkspaceStorage):
    """Workspaces in an Aliyun OSS bucket (oss2; seed OSS_* settings)."""

    name = "oss"

    endpoint = Unicode("", config=True, help="OSS endpoint (seed OSS_ENDPOINT).")
    access_key_id = Unicode("", config=True, help="Access key id (seed OSS_ACCESS_KEY_ID).")
    access_key_secret = Unicode(
        "", config=True, help="Access key secret (seed OSS_ACCESS_KEY_SECRET); never logged."
    )
    bucket_name = Unicode("", config=True, help="Bucket (seed OSS_BUCKET_NAME).")

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        try:
            import oss2
        except ImportError:
            raise StorageError("OSS storage needs oss2: pip install oss2") from None
        if not (self.endpoint and self.bucket_name):
            raise StorageError("OSS storage needs --OSSStorage.endpoint and bucket_name")
        self._oss2 = oss2
        auth = oss2.Auth(self.access_key_id, self.access_key_secret)
        self.bucket = oss2.Bucket(auth, self.endpoint, self.bucket_name)

    def _read(self, key: str) -> bytes | None:
        try:
            return self.bucket.get_object(key).read()
        except self._oss2.exceptions.NoSuchKey:
            return None

    def _write(self, key: str, data: bytes) -> None:
        self.bucket.put_object(key, data)

    def _upload(self, path: str, key: str) -> None:
        self.bucket.put_object_from_file(key, path)

    def _download(self, key: str, path: str) -> None:
        self.bucket.get_object_to_file(key, path)

    def _list(self, prefix: str) -> list[str]:
        iterator = self._oss2.ObjectIterator(self.bucket, prefix=f"{prefix}/")
        return [item.key for item in iterator]

    def _delete(self, keys: list[str]) -> None:
        for start in range(0, len(keys), 1000):
            self.bucket.batch_delete_objects(keys[start : start + 1000])

    def describe(self, key: str) -> str:
        return f"oss://{self.bucket_name}/{key}"
