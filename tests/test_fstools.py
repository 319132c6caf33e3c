"""The `filesystem` type's tools: upstream's names, arguments and result texts, full schemas,
confinement to /workspace; directly, and end to end through both SDKs."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import pytest

from jupyter_sandbox.box.fstools import TOOLS, FsTools

from .conftest import TOKEN, Server, run_official, start_server, stop_server

UPSTREAM_NAMES = {
    "read_file", "read_multiple_files", "write_file", "edit_file", "create_directory",
    "list_directory", "directory_tree", "move_file", "search_files", "get_file_info",
    "list_allowed_directories",
}  # fmt: skip


@pytest.fixture
def tools(tmp_path: Path) -> FsTools:
    root = tmp_path / "ws"
    root.mkdir()
    return FsTools(str(root))


def text(result: dict) -> str:
    return result["content"][0]["text"]


def test_catalogue_and_schemas(tools: FsTools) -> None:
    group = tools.list_group()
    assert set(group) == UPSTREAM_NAMES
    edit = group["edit_file"]["json_schema"]["function"]["parameters"]
    assert edit["required"] == ["path", "edits"]
    assert edit["properties"]["edits"]["items"]["required"] == ["oldText", "newText"]
    assert edit["properties"]["dryRun"]["type"] == "boolean"
    for name, tool in TOOLS.items():
        params = group[name]["json_schema"]["function"]["parameters"]
        assert params["type"] == "object" and set(params["required"]) <= set(params["properties"])
        assert all("type" in p for p in params["properties"].values()), name
        assert tool.description


def test_result_texts(tools: FsTools) -> None:
    root = tools.root
    assert text(tools.call_sync("write_file", {"path": "a.txt", "content": "one\ntwo\n"})) == (
        "Successfully wrote to a.txt"
    )
    assert text(tools.call_sync("create_directory", {"path": "d/e"})) == (
        "Successfully created directory d/e"
    )
    assert text(tools.call_sync("read_file", {"path": "a.txt"})) == "one\ntwo\n"
    assert text(tools.call_sync("read_file", {"path": f"{root}/a.txt"})) == "one\ntwo\n"
    assert text(tools.call_sync("list_directory", {"path": "."})) == "[FILE] a.txt\n[DIR] d"
    assert json.loads(text(tools.call_sync("directory_tree", {"path": "."}))) == [
        {"name": "a.txt", "type": "file"},
        {"name": "d", "type": "directory", "children": [
            {"name": "e", "type": "directory", "children": []}]},
    ]  # fmt: skip
    multiple = text(tools.call_sync("read_multiple_files", {"paths": ["a.txt", "nope.txt"]}))
    assert multiple.startswith("a.txt:\none\ntwo\n\n\n---\nnope.txt: Error - ENOENT")
    assert text(tools.call_sync("move_file", {"source": "a.txt", "destination": "d/b.txt"})) == (
        "Successfully moved a.txt to d/b.txt"
    )
    assert text(tools.call_sync("search_files", {"path": ".", "pattern": "B.T"})) == f"{root}/d/b.txt"
    assert text(tools.call_sync("search_files", {"path": ".", "pattern": "zzz"})) == "No matches found"
    info = dict(
        line.split(": ", 1) for line in text(tools.call_sync("get_file_info", {"path": "d/b.txt"})).split("\n")
    )
    assert info["size"] == "8" and info["isFile"] == "true" and info["isDirectory"] == "false"
    assert info["modified"].count(" GMT") == 1 and len(info["permissions"]) == 3
    assert text(tools.call_sync("list_allowed_directories", {})) == f"Allowed directories:\n{root}"


def test_edit_file_diff_and_dry_run(tools: FsTools) -> None:
    tools.call_sync("write_file", {"path": "f.py", "content": "def f():\n    return 1\n"})
    edits = [{"oldText": "return 1", "newText": "return 2"}]
    preview = text(tools.call_sync("edit_file", {"path": "f.py", "edits": edits, "dryRun": True}))
    assert preview.startswith("```diff\nIndex: ")
    assert "-    return 1\n+    return 2\n" in preview and preview.endswith("```\n\n")
    assert text(tools.call_sync("read_file", {"path": "f.py"})) == "def f():\n    return 1\n"
    tools.call_sync("edit_file", {"path": "f.py", "edits": edits})
    assert text(tools.call_sync("read_file", {"path": "f.py"})) == "def f():\n    return 2\n"
    # Whitespace-insensitive line match keeps the file's indentation.
    tools.call_sync("edit_file", {"path": "f.py", "edits": [
        {"oldText": "return 2", "newText": "return 3"}]})  # fmt: skip
    missing = tools.call_sync("edit_file", {"path": "f.py", "edits": [
        {"oldText": "nothing like this", "newText": "x"}]})  # fmt: skip
    assert missing["isError"] and "Could not find exact match" in text(missing)


def test_paths_are_confined(tools: FsTools, tmp_path: Path) -> None:
    (tmp_path / "secret.txt").write_text("host file")
    os.symlink(tmp_path / "secret.txt", Path(tools.root) / "link")
    for call in (
        ("read_file", {"path": "../secret.txt"}),
        ("read_file", {"path": "/etc/passwd"}),
        ("read_file", {"path": "link"}),  # a symlink pointing out
        ("write_file", {"path": "../evil.txt", "content": "x"}),
        ("move_file", {"source": "link", "destination": "/tmp/x"}),
        ("list_directory", {"path": "/"}),
        ("search_files", {"path": "..", "pattern": "secret"}),
    ):
        result = tools.call_sync(*call)
        assert result["isError"] and "Access denied" in text(result), call
    assert not (tmp_path / "evil.txt").exists()
    missing = tools.call_sync("read_file", {"path": "nope.txt"})
    assert missing["isError"] and text(missing).startswith("Error: ENOENT")
    assert tools.call_sync("no_such_tool", {}) is None


def test_read_only_mounts_can_be_read_not_written(tmp_path: Path) -> None:
    (tmp_path / "ws").mkdir()
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "x.csv").write_text("a,b\n")
    tools = FsTools(str(tmp_path / "ws"), (str(tmp_path / "data"),))
    assert text(tools.call_sync("read_file", {"path": f"{tmp_path}/data/x.csv"})) == "a,b\n"
    assert text(tools.call_sync("list_directory", {"path": f"{tmp_path}/data"})) == "[FILE] x.csv"
    for call in (
        ("write_file", {"path": f"{tmp_path}/data/y.csv", "content": "x"}),
        ("create_directory", {"path": f"{tmp_path}/data/sub"}),
        ("edit_file", {"path": f"{tmp_path}/data/x.csv", "edits": []}),
    ):
        result = tools.call_sync(*call)
        assert result["isError"] and "Access denied" in text(result), call
    assert text(tools.call_sync("list_allowed_directories", {})).endswith(f"\n{tmp_path}/data")


@pytest.fixture(scope="module")
def fs_server(tmp_path_factory: pytest.TempPathFactory) -> Server:
    tmp = tmp_path_factory.mktemp("fs")
    (tmp / "shared").mkdir()
    (tmp / "shared" / "ref.txt").write_text("reference data")
    srv = start_server(
        tmp,
        "--SandboxApp.sandbox_types=filesystem",
        "--SandboxApp.pool_size=1",
        f"--SandboxApp.readonly_mounts={{'{tmp / 'shared'}': '/data'}}",
    )
    yield srv
    stop_server(srv)


def test_official_sdk_filesystem_sandbox(fs_server: Server, agentscope_python: str) -> None:
    script = textwrap.dedent(f"""
        import json
        from agentscope_runtime.sandbox import FilesystemSandbox
        with FilesystemSandbox(base_url={fs_server.url!r}, bearer_token={TOKEN!r}) as sb:
            out = {{
                "tools": sorted(sb.list_tools()["filesystem"]),
                "orphan": sb.write_file("nodir/a.md", "x"),  # as upstream: ENOENT
                "mkdir": sb.create_directory("notes"),
                "write": sb.write_file("notes/a.md", "hello"),
                "list": sb.list_directory("notes"),
                "read": sb.read_file("notes/a.md"),
                "edit": sb.edit_file("notes/a.md", [{{"oldText": "hello", "newText": "bye"}}]),
                "shell": sb.run_shell_command("cat notes/a.md"),
                "allowed": sb.list_allowed_directories(),
                "missing": sb.read_file("nope.txt"),
                "mounted": sb.read_file("/data/ref.txt"),
                "mounted_write": sb.write_file("/data/new.txt", "x"),
            }}
        print("RESULT=" + json.dumps(out))
    """)
    out = run_official(agentscope_python, script)
    assert out["tools"] == sorted(UPSTREAM_NAMES)
    assert out["orphan"]["isError"] and "ENOENT" in text(out["orphan"])
    assert text(out["mkdir"]) == "Successfully created directory notes"
    assert text(out["write"]) == "Successfully wrote to notes/a.md"
    assert text(out["list"]) == "[FILE] a.md"
    assert text(out["read"]) == "hello"
    assert "-hello" in text(out["edit"]) and "+bye" in text(out["edit"])
    assert out["shell"]["content"][0]["text"] == "bye"  # the shell sees the tools' files
    assert text(out["allowed"]) == "Allowed directories:\n/workspace\n/data"
    assert out["missing"]["isError"] is True
    assert text(out["mounted"]) == "reference data"  # read-only mounts can be read
    assert out["mounted_write"]["isError"] and "Access denied" in text(out["mounted_write"])


def test_our_sdk_filesystem_sandbox(fs_server: Server) -> None:
    from jupyter_sandbox import FilesystemSandbox

    with FilesystemSandbox(base_url=fs_server.url, bearer_token=TOKEN) as sb:
        sb.create_directory("src")
        sb.write_file("src/m.py", "x = 1\n")
        tree = json.loads(text(sb.directory_tree(".")))
        assert {"name": "src", "type": "directory",
                "children": [{"name": "m.py", "type": "file"}]} in tree  # fmt: skip
        assert text(sb.search_files(".", "m.py")) == "/workspace/src/m.py"
        assert sb.fs.read("src/m.py") == "x = 1\n"  # the workspace API sees them too
