"""The `filesystem` type's tools, served by the box itself.

Names, arguments and result texts follow the MCP server the seed runs for this type
(`@modelcontextprotocol/server-filesystem` 2025.3.28, wire §2.2), without its Node runtime or
download at boot, and with full JSON schemas (upstream's unpinned server reports empty ones).
Every path is resolved against the workspace (relative paths too) and must stay inside it
after symlinks are resolved; the sandbox's read-only mounts may be read too. Results are MCP
`CallToolResult` dicts, failures `isError`.
"""

from __future__ import annotations

import asyncio
import difflib
import fnmatch
import json
import os
import shutil
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .toolgroups import function_schema

GROUP = "filesystem"


class ToolError(Exception):
    """A failure reported to the caller as `Error: <message>`."""


@dataclass(frozen=True)
class Tool:
    description: str
    properties: dict[str, Any]
    required: tuple[str, ...]
    run: Callable[[FsTools, dict[str, Any]], str]

    def schema(self, name: str) -> dict[str, Any]:
        return function_schema(name, self.description, self.properties, self.required)


def _text(text: str, error: bool = False) -> dict[str, Any]:
    return {"meta": None, "content": [{"type": "text", "text": text}], "isError": error}


def _js_date(timestamp: float) -> str:
    """A timestamp as JavaScript's Date.toString() writes it (the upstream server's format)."""
    t = time.localtime(timestamp)
    offset = -time.altzone if t.tm_isdst > 0 else -time.timezone
    sign = "+" if offset >= 0 else "-"
    hours, minutes = divmod(abs(offset) // 60, 60)
    return time.strftime("%a %b %d %Y %H:%M:%S", t) + f" GMT{sign}{hours:02d}{minutes:02d}"


class FsTools:
    """The tools, confined to one workspace root (plus read-only directories for reads)."""

    name = GROUP

    def __init__(self, root: str, read_only: tuple[str, ...] = ()):
        self.root = os.path.realpath(root)
        self.read_only = tuple(os.path.realpath(p) for p in read_only if os.path.isdir(p))

    # -- paths -------------------------------------------------------------------------------

    def resolve(self, path: Any, must_exist: bool = False, write: bool = False) -> str:
        if not isinstance(path, str) or not path:
            raise ToolError("path must be a non-empty string")
        absolute = os.path.normpath(os.path.join(self.root, os.path.expanduser(path)))
        # Resolve symlinks of what exists; a new file's parent must resolve inside too.
        real = os.path.realpath(absolute)
        roots = (self.root,) if write else (self.root, *self.read_only)
        if not any(real == r or real.startswith(r + os.sep) for r in roots):
            raise ToolError(
                f"Access denied - path outside allowed directories: {absolute} not in "
                + ", ".join(roots)
            )
        if must_exist and not os.path.lexists(real):
            raise ToolError(f"ENOENT: no such file or directory, stat '{absolute}'")
        return real

    # -- tools -------------------------------------------------------------------------------

    def read_file(self, args: dict[str, Any]) -> str:
        path = self.resolve(args.get("path"))
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            raise ToolError(f"ENOENT: no such file or directory, open '{path}'") from None
        except IsADirectoryError:
            raise ToolError(f"EISDIR: illegal operation on a directory, read '{path}'") from None

    def read_multiple_files(self, args: dict[str, Any]) -> str:
        paths = args.get("paths")
        if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
            raise ToolError("paths must be an array of strings")
        parts = []
        for path in paths:
            try:
                parts.append(f"{path}:\n{self.read_file({'path': path})}\n")
            except ToolError as e:
                parts.append(f"{path}: Error - {e}")
        return "\n---\n".join(parts)

    def write_file(self, args: dict[str, Any]) -> str:
        path = self.resolve(args.get("path"), write=True)
        content = args.get("content")
        if not isinstance(content, str):
            raise ToolError("content must be a string")
        try:
            with open(path, "w", encoding="utf-8") as f:
                f.write(content)
        except FileNotFoundError:
            raise ToolError(f"ENOENT: no such file or directory, open '{path}'") from None
        return f"Successfully wrote to {args['path']}"

    def edit_file(self, args: dict[str, Any]) -> str:
        path = self.resolve(args.get("path"), must_exist=True, write=True)
        edits = args.get("edits")
        if not isinstance(edits, list):
            raise ToolError("edits must be an array of {oldText, newText}")
        with open(path, encoding="utf-8") as f:
            original = f.read().replace("\r\n", "\n")
        modified = original
        for edit in edits:
            if not isinstance(edit, dict) or not all(
                isinstance(edit.get(k), str) for k in ("oldText", "newText")
            ):
                raise ToolError("each edit needs string oldText and newText")
            modified = _apply_edit(modified, edit["oldText"], edit["newText"])
        diff = _two_files_patch(path, original, modified)
        fence = "```"
        while fence in diff:
            fence += "`"
        if not args.get("dryRun"):
            with open(path, "w", encoding="utf-8") as f:
                f.write(modified)
        return f"{fence}diff\n{diff}{fence}\n\n"

    def create_directory(self, args: dict[str, Any]) -> str:
        path = self.resolve(args.get("path"), write=True)
        try:
            os.makedirs(path, exist_ok=True)
        except FileExistsError:
            raise ToolError(f"EEXIST: file already exists, mkdir '{path}'") from None
        return f"Successfully created directory {args['path']}"

    def list_directory(self, args: dict[str, Any]) -> str:
        path = self.resolve(args.get("path"), must_exist=True)
        try:
            entries = sorted(os.scandir(path), key=lambda e: e.name)
        except NotADirectoryError:
            raise ToolError(f"ENOTDIR: not a directory, scandir '{path}'") from None
        return "\n".join(f"{'[DIR]' if e.is_dir() else '[FILE]'} {e.name}" for e in entries)

    def directory_tree(self, args: dict[str, Any]) -> str:
        path = self.resolve(args.get("path"), must_exist=True)

        def build(directory: str) -> list[dict[str, Any]]:
            out: list[dict[str, Any]] = []
            for entry in sorted(os.scandir(directory), key=lambda e: e.name):
                node: dict[str, Any] = {
                    "name": entry.name,
                    "type": "directory" if entry.is_dir(follow_symlinks=False) else "file",
                }
                if node["type"] == "directory":
                    node["children"] = build(entry.path)
                out.append(node)
            return out

        return json.dumps(build(path), indent=2)

    def move_file(self, args: dict[str, Any]) -> str:
        source = self.resolve(args.get("source"), must_exist=True, write=True)
        destination = self.resolve(args.get("destination"), write=True)
        if os.path.lexists(destination):
            raise ToolError(f"EEXIST: destination already exists, rename '{destination}'")
        os.makedirs(os.path.dirname(destination), exist_ok=True)
        shutil.move(source, destination)
        return f"Successfully moved {args['source']} to {args['destination']}"

    def search_files(self, args: dict[str, Any]) -> str:
        root = self.resolve(args.get("path"), must_exist=True)
        pattern = args.get("pattern")
        if not isinstance(pattern, str):
            raise ToolError("pattern must be a string")
        excludes = args.get("excludePatterns") or []
        needle = pattern.lower()
        found = []
        for directory, dirs, files in os.walk(root):
            for name in sorted(dirs) + sorted(files):
                full = os.path.join(directory, name)
                relative = os.path.relpath(full, root)
                if any(fnmatch.fnmatch(relative, p) or fnmatch.fnmatch(name, p) for p in excludes):
                    if name in dirs:
                        dirs.remove(name)
                    continue
                if needle in name.lower():
                    found.append(full)
            dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(directory, d))]
        return "\n".join(found) if found else "No matches found"

    def get_file_info(self, args: dict[str, Any]) -> str:
        path = self.resolve(args.get("path"), must_exist=True)
        st = os.stat(path)
        info = {
            "size": st.st_size,
            "created": _js_date(st.st_ctime),
            "modified": _js_date(st.st_mtime),
            "accessed": _js_date(st.st_atime),
            "isDirectory": "true" if stat.S_ISDIR(st.st_mode) else "false",
            "isFile": "true" if stat.S_ISREG(st.st_mode) else "false",
            "permissions": oct(st.st_mode)[-3:],
        }
        return "\n".join(f"{k}: {v}" for k, v in info.items())

    def list_allowed_directories(self, args: dict[str, Any]) -> str:
        return "Allowed directories:\n" + "\n".join((self.root, *self.read_only))

    # -- dispatch ----------------------------------------------------------------------------

    async def start(self) -> None:
        return None  # nothing to start: the tools are plain file operations

    async def close(self) -> None:
        return None

    def list_group(self) -> dict[str, Any]:
        return {name: {"name": name, "json_schema": t.schema(name)} for name, t in TOOLS.items()}

    async def call(self, name: str, arguments: dict[str, Any]) -> dict[str, Any] | None:
        # File operations block; a thread keeps the box answering meanwhile.
        return await asyncio.get_running_loop().run_in_executor(
            None, self.call_sync, name, arguments
        )

    def call_sync(self, name: str, arguments: dict[str, Any]) -> dict[str, Any] | None:
        """The tool's CallToolResult, or None when there is no such tool."""
        tool = TOOLS.get(name)
        if tool is None:
            return None
        try:
            return _text(tool.run(self, arguments))
        except ToolError as e:
            return _text(f"Error: {e}", error=True)
        except OSError as e:
            return _text(f"Error: {e.strerror or e}", error=True)


def _apply_edit(content: str, old: str, new: str) -> str:
    """Replace `old` by `new`: exactly if it occurs, else line by line ignoring indentation
    (keeping the file's), as the upstream server does."""
    old = old.replace("\r\n", "\n")
    new = new.replace("\r\n", "\n")
    if old in content:
        return content.replace(old, new, 1)
    lines = content.split("\n")
    old_lines = old.split("\n")
    for i in range(len(lines) - len(old_lines) + 1):
        window = lines[i : i + len(old_lines)]
        if all(a.strip() == b.strip() for a, b in zip(window, old_lines, strict=True)):
            indent = window[0][: len(window[0]) - len(window[0].lstrip())]
            replaced = [indent + line.lstrip() if j == 0 else line for j, line in
                        enumerate(new.split("\n"))]  # fmt: skip
            return "\n".join(lines[:i] + replaced + lines[i + len(old_lines) :])
    raise ToolError(f"Could not find exact match for edit:\n{old}")


def _two_files_patch(path: str, before: str, after: str) -> str:
    """A unified diff laid out as jsdiff's createTwoFilesPatch (the upstream server's)."""
    body = difflib.unified_diff(
        before.splitlines(keepends=True),
        after.splitlines(keepends=True),
        fromfile=f"{path}\toriginal",
        tofile=f"{path}\tmodified",
        n=4,
    )
    text = "".join(line if line.endswith("\n") else line + "\n" for line in body)
    headers = f"--- {path}\toriginal\n+++ {path}\tmodified\n"
    return f"Index: {path}\n{'=' * 67}\n" + (text or headers)


def _p(description: str, kind: str = "string", **extra: Any) -> dict[str, Any]:
    return {"type": kind, "description": description, **extra}


_STRINGS = {"type": "array", "items": {"type": "string"}}

TOOLS: dict[str, Tool] = {
    "read_file": Tool(
        "Read the complete contents of a file from the file system. Relative paths are "
        "resolved against /workspace. Only works within allowed directories.",
        {"path": _p("File to read")},
        ("path",),
        FsTools.read_file,
    ),
    "read_multiple_files": Tool(
        "Read the contents of multiple files at once. Each file's content is returned with its "
        "path; a failed read does not stop the others.",
        {"paths": {**_STRINGS, "description": "Files to read"}},
        ("paths",),
        FsTools.read_multiple_files,
    ),
    "write_file": Tool(
        "Create a new file or completely overwrite an existing file with new content.",
        {"path": _p("File to write"), "content": _p("The whole new content")},
        ("path", "content"),
        FsTools.write_file,
    ),
    "edit_file": Tool(
        "Make line-based edits to a text file. Each edit replaces an exact text (or the same "
        "lines with other indentation) with new text. Returns a git-style diff of the changes.",
        {
            "path": _p("File to edit"),
            "edits": {
                "type": "array",
                "description": "Edits applied in order",
                "items": {
                    "type": "object",
                    "properties": {
                        "oldText": _p("Text to search for - must match exactly"),
                        "newText": _p("Text to replace with"),
                    },
                    "required": ["oldText", "newText"],
                },
            },
            "dryRun": _p("Preview changes using git-style diff format", "boolean", default=False),
        },
        ("path", "edits"),
        FsTools.edit_file,
    ),
    "create_directory": Tool(
        "Create a directory, with its parents; succeeds silently if it exists.",
        {"path": _p("Directory to create")},
        ("path",),
        FsTools.create_directory,
    ),
    "list_directory": Tool(
        "List a directory's entries, each prefixed with [DIR] or [FILE].",
        {"path": _p("Directory to list")},
        ("path",),
        FsTools.list_directory,
    ),
    "directory_tree": Tool(
        "A recursive tree of files and directories as JSON: each entry has 'name', 'type' "
        "(file/directory) and, for directories, 'children'.",
        {"path": _p("Directory at the root of the tree")},
        ("path",),
        FsTools.directory_tree,
    ),
    "move_file": Tool(
        "Move or rename a file or directory; fails if the destination exists.",
        {"source": _p("What to move"), "destination": _p("Where to move it")},
        ("source", "destination"),
        FsTools.move_file,
    ),
    "search_files": Tool(
        "Recursively search for files and directories whose name contains a pattern "
        "(case-insensitive). Returns full paths.",
        {
            "path": _p("Directory to search from"),
            "pattern": _p("Text the names must contain"),
            "excludePatterns": {**_STRINGS, "description": "Glob patterns to skip"},
        },
        ("path", "pattern"),
        FsTools.search_files,
    ),
    "get_file_info": Tool(
        "Metadata of a file or directory: size, times, type and permissions.",
        {"path": _p("File or directory")},
        ("path",),
        FsTools.get_file_info,
    ),
    "list_allowed_directories": Tool(
        "The directories this tool set may access.", {}, (), FsTools.list_allowed_directories
    ),
}
