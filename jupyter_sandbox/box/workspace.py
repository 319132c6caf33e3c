"""The workspace file API's filesystem side: path containment and the file operations.

Everything here is plain filesystem code with no HTTP in it; the handlers in ``app.py`` turn a
:class:`WorkspaceError` into a status code and a ``{"detail": ...}`` body.

Containment is checked on the fully resolved path (``os.path.realpath``, symlinks followed), which
must be the workspace itself or lie under ``workspace + os.sep``. Upstream used a string prefix test
on an unresolved path, so ``/workspace2`` and symlinks pointing out of the workspace got through.

A check-then-use race (swapping a symlink between the check and the open) is possible, but only a
process inside the same sandbox could exploit it, and such a process can already do anything the
box can, so closing it (openat2 with RESOLVE_BENEATH) would buy nothing.
"""

from __future__ import annotations

import os
import shutil
import stat
from typing import Any

# Upstream streams downloads in 1 MiB chunks.
CHUNK_SIZE = 1024 * 1024


class WorkspaceError(Exception):
    """An expected failure of a workspace operation, with the HTTP status it maps to."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class Workspace:
    """The workspace directory: resolves caller paths and performs the file operations."""

    def __init__(self, root: str) -> None:
        # The configured path is what callers see (inside the sandbox); the real path is only
        # used for containment checks, in case the configured path crosses a symlink.
        self.public_root = os.path.normpath(os.path.abspath(root))
        self.real_root = os.path.realpath(self.public_root)
        self._real_prefix = (
            self.real_root if self.real_root.endswith(os.sep) else self.real_root + os.sep
        )
        self._public_prefix = (
            self.public_root if self.public_root.endswith(os.sep) else self.public_root + os.sep
        )
        self.forbidden_detail = (
            f"Permission error. Access restricted to {self.public_root} directory."
        )

    # -- paths -----------------------------------------------------------------------------

    def is_inside(self, real: str) -> bool:
        return real == self.real_root or real.startswith(self._real_prefix)

    def public_path(self, real: str) -> str:
        """The path of a resolved entry as callers see it."""
        if real == self.real_root:
            return self.public_root
        return self._public_prefix + real[len(self._real_prefix) :]

    def _joined(self, path: str | None) -> str:
        if path is None:
            raise WorkspaceError(400, "path is required")
        if "\x00" in path:
            raise WorkspaceError(400, "path must not contain NUL characters")
        return path if os.path.isabs(path) else os.path.join(self.public_root, path)

    def resolve(self, path: str | None) -> str:
        """Resolve ``path`` following every symlink; 403 unless it stays in the workspace."""
        real = os.path.realpath(self._joined(path))
        if not self.is_inside(real):
            raise WorkspaceError(403, self.forbidden_detail)
        return real

    def resolve_entry(self, path: str | None) -> str:
        """Resolve ``path`` for operations on the entry itself (remove, move).

        The last component is not followed, so removing a symlink removes the link and not its
        target. The fully resolved path must still be inside, so a link pointing out of the
        workspace is refused like the path it points to.
        """
        # A trailing slash must not turn "remove the link" into "remove what it points to".
        joined = self._joined(path).rstrip(os.sep) or os.sep
        self.resolve(joined)
        head, tail = os.path.split(joined)
        if tail in ("", ".", ".."):
            return self.resolve(joined)
        real = os.path.join(os.path.realpath(head), tail)
        if not self.is_inside(real):
            raise WorkspaceError(403, self.forbidden_detail)
        return real

    # -- entry info --------------------------------------------------------------------------

    def entry_info(self, real: str) -> dict[str, Any]:
        """Entry-info of an entry at a resolved path inside the workspace.

        A symlink is described by what it points to, as upstream does, except when it points out
        of the workspace or nowhere: then it is reported as a ``symlink`` from its own lstat, so
        nothing about a file outside the workspace is disclosed.
        """
        lst = os.lstat(real)
        st: os.stat_result | None = lst
        if stat.S_ISLNK(lst.st_mode):
            st = None
            if self.is_inside(os.path.realpath(real)):
                try:
                    st = os.stat(real)
                except OSError:
                    st = None
        if st is None:
            kind, size, mtime_ns = "symlink", None, lst.st_mtime_ns
        else:
            mtime_ns = st.st_mtime_ns
            if stat.S_ISDIR(st.st_mode):
                kind, size = "dir", None
            elif stat.S_ISREG(st.st_mode):
                kind, size = "file", st.st_size
            else:
                kind, size = "other", None
        public = self.public_path(real)
        return {
            "path": public,
            "name": os.path.basename(public) or public,
            "type": kind,
            "size": size,
            "mtime_ms": mtime_ns // 1_000_000,
        }

    # -- operations --------------------------------------------------------------------------

    def file_for_reading(self, path: str | None) -> str:
        real = self.resolve(path)
        if not os.path.isfile(real):
            raise WorkspaceError(404, "not found")
        return real

    def read_text(self, path: str | None) -> str:
        # Undecodable bytes become U+FFFD instead of failing the request (upstream gave a 500).
        with open(self.file_for_reading(path), encoding="utf-8", errors="replace") as f:
            return f.read()

    def check_writable(self, path: str | None) -> str:
        """Resolve a file to be written; 409 if something other than a file is in the way."""
        real = self.resolve(path)
        self._check_target(real)
        return real

    @staticmethod
    def _check_target(real: str) -> None:
        if os.path.isdir(real):
            raise WorkspaceError(409, "path exists and is a directory")
        # Opening a FIFO or a device for writing could block the box forever.
        if os.path.exists(real) and not os.path.isfile(real):
            raise WorkspaceError(409, "path exists and is not a regular file")

    def open_for_writing(self, path: str | None) -> tuple[str, Any]:
        """Create the parent directories and open the file; returns (real path, binary file)."""
        real = self.check_writable(path)
        self._make_parent(real)
        # Written in place, as upstream does, so the file keeps its mode and hard links.
        return real, open(real, "wb")  # noqa: SIM115 - the caller closes it after streaming

    def write_bytes(self, real: str, data: bytes) -> dict[str, Any]:
        self._check_target(real)
        self._make_parent(real)
        with open(real, "wb") as f:
            f.write(data)
        return self.entry_info(real)

    def _make_parent(self, real: str) -> None:
        try:
            os.makedirs(os.path.dirname(real), exist_ok=True)
        except (FileExistsError, NotADirectoryError) as e:
            raise WorkspaceError(409, "a parent of the path exists and is not a directory") from e

    def list(self, path: str | None, depth: int) -> list[dict[str, Any]]:
        """Flat entry-info list of everything below ``path`` up to ``depth`` levels."""
        if depth < 1:
            raise WorkspaceError(422, "depth must be at least 1")
        real = self.resolve(path)
        if not os.path.isdir(real):
            raise WorkspaceError(404, "not found")
        out: list[dict[str, Any]] = []
        self._walk(real, depth, out)
        return out

    def _walk(self, real_dir: str, depth: int, out: list[dict[str, Any]]) -> None:
        try:
            with os.scandir(real_dir) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError:
            return  # unreadable directory: list what we can, as a recursive walk would
        for entry in entries:
            try:
                out.append(self.entry_info(entry.path))
            except OSError:
                continue  # vanished while listing
            # Symlinked directories are not followed, so the walk cannot leave the workspace.
            if depth > 1 and entry.is_dir(follow_symlinks=False):
                self._walk(entry.path, depth - 1, out)

    def exists(self, path: str | None) -> bool:
        return os.path.exists(self.resolve(path))

    def remove(self, path: str | None) -> None:
        real = self.resolve_entry(path)
        if real == self.real_root:
            raise WorkspaceError(400, "refusing to remove the workspace root")
        try:
            if os.path.isdir(real) and not os.path.islink(real):
                shutil.rmtree(real)
            else:
                os.unlink(real)
        except FileNotFoundError:
            pass  # 204 whether or not it existed, as upstream

    def move(self, source: str | None, destination: str | None) -> dict[str, Any]:
        if not source or not destination:
            raise WorkspaceError(400, "source and destination are required")
        src = self.resolve_entry(source)
        dst = self.resolve_entry(destination)
        if self.real_root in (src, dst):
            raise WorkspaceError(400, "cannot move the workspace root")
        if not os.path.lexists(src):
            raise WorkspaceError(404, "source not found")
        self._make_parent(dst)
        try:
            os.replace(src, dst)
        except OSError as e:
            detail = f"cannot move {source!r} to {destination!r}: {e.strerror}"
            raise WorkspaceError(409, detail) from None
        return self.entry_info(dst)

    def mkdir(self, path: str | None) -> bool:
        """Create the directory and its parents; False if it already existed."""
        if not path:
            raise WorkspaceError(400, "path is required")
        real = self.resolve(path)
        if os.path.isdir(real):
            return False
        if os.path.lexists(real):
            raise WorkspaceError(409, "path exists and is a file")
        try:
            os.makedirs(real)
        except FileExistsError:
            if os.path.isdir(real):
                return False
            raise WorkspaceError(409, "path exists and is a file") from None
        except NotADirectoryError as e:
            raise WorkspaceError(409, "a parent of the path exists and is not a directory") from e
        return True
