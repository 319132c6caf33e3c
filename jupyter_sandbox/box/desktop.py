"""The `desktop` group: a private X display, its `computer` tool, and its VNC view over HTTP.

`start()` brings up Xvfb (which picks a free display number itself, so boxes never race for
one), openbox as the window manager and x11vnc on a loopback port, each in its own process
group, and exports ``DISPLAY`` so that the kernel, shell commands and anything they launch
draw on it. `close()` stops all three and whatever they started.

The tool is the ``computer`` tool of the ``computer-use-mcp`` 1.2.0 server the upstream gui
type runs (same actions, arguments and result texts), driven with xdotool; failures are
``isError`` results. The box also serves the desktop to browsers (`Desktop.routes`): noVNC's
files and our relay page under ``/vnc/``, and ``/websockify``, a websocket bridged to the VNC
port, so no websockify process is needed. Both require the box's bearer token.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import logging
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import tornado.web
import tornado.websocket
from tornado.iostream import IOStream, StreamClosedError
from tornado.tcpclient import TCPClient

from .auth import BoxTokenMixin

log = logging.getLogger(__name__)

GROUP = "computer"
WIDTH, HEIGHT = 1280, 800
NOVNC_DIR = "/usr/share/novnc"  # Debian's novnc package (1.3: ES modules under core/)
STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")

START_TIMEOUT = 15.0  # per process; Xvfb's first start compiles its keymap
STOP_GRACE = 3.0  # SIGTERM to SIGKILL
XDOTOOL_TIMEOUT = 10.0
TYPE_DELAY_MS = 10  # between typed characters, as upstream's keyboard delay
_LOG_TAIL = 2000  # characters of a failed process's stderr quoted in the error


class DesktopError(RuntimeError):
    """The desktop could not start; the message names the process and why."""


class ToolError(Exception):
    """A failure reported to the caller as `Error: <message>`."""


# -- the computer tool -----------------------------------------------------------------------

ACTIONS = (
    "key",
    "type",
    "mouse_move",
    "left_click",
    "left_click_drag",
    "right_click",
    "middle_click",
    "double_click",
    "get_screenshot",
    "get_cursor_position",
)

DESCRIPTION = f"""\
Control the sandbox's desktop ({WIDTH}x{HEIGHT} pixels) with the mouse and keyboard, and \
take screenshots of it.
* Take a screenshot before acting to learn where things are; click the centre of an element.
* Prefer keyboard shortcuts to clicking where they exist.
* Applications can be slow to start or respond: if nothing seems to happen, wait and take \
another screenshot before trying again."""

ACTION_DESCRIPTION = """\
The action to perform:
* key: press a key or key combination given in `text`, xdotool syntax (e.g. `Return`, \
`ctrl+c`, `alt+Tab`); several combinations separated by spaces are pressed in turn.
* type: type the string in `text`.
* get_cursor_position: the cursor's current (x, y) pixel coordinate.
* mouse_move: move the cursor to `coordinate`.
* left_click, right_click, middle_click, double_click: click (the left button twice for \
double_click), after moving to `coordinate` if given.
* left_click_drag: press the left button at the current position, move to `coordinate`, \
release.
* get_screenshot: a PNG screenshot of the whole screen."""

SCHEMA: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "computer",
        "description": DESCRIPTION,
        "parameters": {
            "type": "object",
            "properties": {
                "action": {
                    "type": "string",
                    "enum": list(ACTIONS),
                    "description": ACTION_DESCRIPTION,
                },
                "coordinate": {
                    "type": "array",
                    "items": {"type": "integer"},
                    "minItems": 2,
                    "maxItems": 2,
                    "description": "[x, y]: pixels from the left and from the top edge of the "
                    "screen.",
                },
                "text": {
                    "type": "string",
                    "description": "The text to type (`type`) or the keys to press (`key`).",
                },
            },
            "required": ["action"],
        },
    },
}


# Upstream reads key names case-insensitively through its own table (`return`, `esc`, `cmd`,
# `page_up`...); xdotool wants X keysym names. Names missing here go to xdotool unchanged, so
# any keysym (`KP_Enter`, `XF86Back`) works too.
def _key_aliases() -> dict[str, str]:
    aliases = {
        **{f"f{i}": f"F{i}" for i in range(1, 25)},
        **{chr(c): chr(c) for c in range(ord("a"), ord("z") + 1)},  # ctrl+C is ctrl+c
        **{f"kp_{i}": f"KP_{i}" for i in range(10)},
        "home": "Home", "left": "Left", "up": "Up", "right": "Right", "down": "Down",
        "end": "End", "page_up": "Prior", "pageup": "Prior", "prior": "Prior",
        "page_down": "Next", "pagedown": "Next", "next": "Next",
        "return": "Return", "enter": "Return", "tab": "Tab", "space": "space",
        "backspace": "BackSpace", "delete": "Delete", "del": "Delete",
        "escape": "Escape", "esc": "Escape", "insert": "Insert", "ins": "Insert",
        "caps_lock": "Caps_Lock", "capslock": "Caps_Lock", "caps": "Caps_Lock",
        "num_lock": "Num_Lock", "numlock": "Num_Lock",
        "kp_divide": "KP_Divide", "kp_multiply": "KP_Multiply", "kp_subtract": "KP_Subtract",
        "kp_add": "KP_Add", "kp_decimal": "KP_Decimal", "kp_equal": "KP_Equal",
        "minus": "minus", "equal": "equal", "backslash": "backslash", "grave": "grave",
        "bracketleft": "bracketleft", "bracket_l": "bracketleft", "l_bracket": "bracketleft",
        "bracketright": "bracketright", "bracket_r": "bracketright",
        "r_bracket": "bracketright", "semicolon": "semicolon", "semi": "semicolon",
        "quote": "apostrophe", "comma": "comma", "period": "period", "slash": "slash",
        "audio_mute": "XF86AudioMute", "mute": "XF86AudioMute",
        "audio_vol_down": "XF86AudioLowerVolume", "voldown": "XF86AudioLowerVolume",
        "vol_down": "XF86AudioLowerVolume", "audio_vol_up": "XF86AudioRaiseVolume",
        "volup": "XF86AudioRaiseVolume", "vol_up": "XF86AudioRaiseVolume",
        "audio_play": "XF86AudioPlay", "play": "XF86AudioPlay",
        "audio_stop": "XF86AudioStop", "stop": "XF86AudioStop",
        "audio_pause": "XF86AudioPause", "pause": "XF86AudioPause",
        "audio_prev": "XF86AudioPrev", "audio_next": "XF86AudioNext",
    }  # fmt: skip
    modifiers = {
        "Shift": ("shift",),
        "Control": ("ctrl", "control"),
        "Alt": ("alt",),
        "Super": ("super", "win", "meta", "cmd", "command"),  # upstream: meta is super
    }
    for keysym, names in modifiers.items():
        for name in names:
            aliases[name] = f"{keysym}_L"
            for side in ("l", "r"):
                aliases[f"{name}_{side}"] = aliases[f"{side}_{name}"] = f"{keysym}_{side.upper()}"
    return aliases


_KEY_ALIASES = _key_aliases()


def _xdotool_keys(text: str) -> list[str]:
    """`text` (`ctrl+c`, `Return`, `ctrl + a Delete`) as xdotool `key` arguments."""
    combos = re.sub(r"\s*\+\s*", "+", text.strip()).split()
    return [
        "+".join(_KEY_ALIASES.get(part.lower(), part) for part in combo.split("+"))
        for combo in combos
    ]


def _text(text: str, error: bool = False) -> dict[str, Any]:
    return {"meta": None, "content": [{"type": "text", "text": text}], "isError": error}


def _coordinate(args: dict[str, Any]) -> tuple[int, int] | None:
    value = args.get("coordinate")
    if value is None:
        return None
    if (
        not isinstance(value, (list, tuple))
        or len(value) != 2
        or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            for v in value
        )
    ):
        raise ToolError("coordinate must be an array of two numbers [x, y]")
    # Upstream takes any number; a fractional pixel is rounded rather than refused.
    x, y = (round(v) for v in value)
    if not (0 <= x < WIDTH and 0 <= y < HEIGHT):
        raise ToolError(f"Coordinates ({x}, {y}) are outside display bounds of {WIDTH}x{HEIGHT}")
    return x, y


# -- screenshots -----------------------------------------------------------------------------


def _grab_png_pillow(display: str) -> bytes:
    from PIL import ImageGrab

    image = ImageGrab.grab(xdisplay=display)
    out = io.BytesIO()
    # zlib's default level: on a screen of text ~20 ms and as small as ImageMagick's PNG;
    # level 1 saves ~7 ms but makes it ~70% bigger, and every byte goes to the model.
    image.save(out, "PNG", compress_level=6)
    return out.getvalue()


def _pillow_can_grab() -> bool:
    try:
        from PIL import features

        return bool(features.check("xcb"))
    except ImportError:
        return False


# -- processes -------------------------------------------------------------------------------


@dataclass
class _Process:
    name: str
    popen: subprocess.Popen
    log_fd: int  # a memfd holding the process's stderr

    def status(self) -> int | None:
        """The exit status once the process ended (-N: killed by signal N), or None.

        The process is not reaped, so its pid, which is also its process group's id, stays
        ours: signalling the group later cannot hit a stranger that got the pid."""
        if self.popen.returncode is not None:
            return self.popen.returncode
        try:
            info = os.waitid(os.P_PID, self.popen.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:  # reaped by someone else
            return self.popen.poll()
        if info is None:
            return None
        return info.si_status if info.si_code == os.CLD_EXITED else -info.si_status

    def exited(self) -> bool:
        return self.status() is not None

    def stderr_tail(self) -> str:
        try:
            size = os.fstat(self.log_fd).st_size
            data = os.pread(self.log_fd, _LOG_TAIL, max(0, size - _LOG_TAIL))
        except OSError:
            return ""
        return data.decode("utf-8", "replace").strip()

    def failure(self, what: str) -> DesktopError:
        status = self.status()
        if status is not None:
            what += f" ({self.name} exited with status {status})"
        tail = self.stderr_tail()
        return DesktopError(what + (f"; its output:\n{tail}" if tail else ""))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _private_dir(workspace: str) -> str | None:
    """A 0700 temporary directory outside the workspace, or None when there is none to make."""
    ws = os.path.realpath(workspace)
    for base in (os.environ.get("TMPDIR"), "/tmp", "/dev/shm", "/var/tmp"):
        if not base or not os.path.isdir(base):
            continue
        real = os.path.realpath(base)
        if real == ws or real.startswith(ws.rstrip(os.sep) + os.sep):
            continue
        with contextlib.suppress(OSError):
            return tempfile.mkdtemp(prefix="jupyter-sandbox-desktop-", dir=real)
    return None


async def _run(argv: list[str], env: dict[str, str], timeout: float) -> tuple[int, bytes, bytes]:
    """Run a short command: (status, stdout, stderr). OSError if it cannot be run; TimeoutError
    (asyncio's) once it overran, killed."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except BaseException:  # the deadline, or the call cancelled: leave nothing running
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await asyncio.shield(proc.wait())
        raise
    return proc.returncode or 0, out, err


async def _until(check: Callable[[], bool], timeout: float, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(interval)
    return True


class Desktop:
    """One box's virtual desktop and its `computer` tool."""

    name = GROUP
    sets_environment = True  # the box starts this group before the kernel, which inherits DISPLAY

    def __init__(self, workspace: str) -> None:
        self.workspace = workspace
        self.display: str | None = None  # ":N" once Xvfb is up
        self.vnc_port: int | None = None  # set when the whole desktop is up
        self._procs: list[_Process] = []
        self._tmp: str | None = None
        self._saved_display: str | None = None
        self._failed: str | None = None
        self._closed = False
        self._use_pillow = _pillow_can_grab()

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        try:
            await self._start()
        except BaseException as e:
            self._failed = str(e) or type(e).__name__
            await self._stop()
            raise

    async def _start(self) -> None:
        for program in ("Xvfb", "openbox", "x11vnc", "xdotool", "xprop"):
            if shutil.which(program) is None:
                raise DesktopError(
                    f"the desktop needs {program}, which is not installed "
                    "(packages xvfb, openbox, x11vnc, xdotool, x11-utils)"
                )
        self._tmp = _private_dir(self.workspace)
        base_env = dict(os.environ)

        # Xvfb writes the display number it chose to the pipe once it accepts connections.
        read_fd, write_fd = os.pipe()
        try:
            xvfb = self._spawn(
                "Xvfb",
                ["Xvfb", "-displayfd", str(write_fd), "-screen", "0",
                 f"{WIDTH}x{HEIGHT}x24", "-nolisten", "tcp",
                 # A server resets when its last client leaves: not between our start-up probes.
                 "-noreset"],
                base_env,
                pass_fds=(write_fd,),
            )  # fmt: skip
        finally:
            os.close(write_fd)
        try:
            number = await self._read_display_number(xvfb, read_fd)
        finally:
            os.close(read_fd)
        self.display = f":{number}"
        env = {**base_env, "DISPLAY": self.display}

        # openbox writes its log under $XDG_CACHE_HOME, which is the workspace's .cache when
        # HOME is the workspace; a private directory keeps it out.
        wm_env = {**env, "XDG_CACHE_HOME": self._tmp} if self._tmp else env
        wm = self._spawn("openbox", ["openbox", "--sm-disable"], wm_env)
        await self._wait_for_wm(wm, env)

        await self._start_vnc(env)
        self._saved_display = os.environ.get("DISPLAY")
        os.environ["DISPLAY"] = self.display
        log.info("desktop up on display %s, VNC on 127.0.0.1:%d", self.display, self.vnc_port)

    def _spawn(
        self, name: str, argv: list[str], env: dict[str, str], pass_fds: tuple[int, ...] = ()
    ) -> _Process:
        log_fd = os.memfd_create(f"{name}-stderr", os.MFD_CLOEXEC)
        try:
            popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log_fd,
                env=env,
                cwd=self.workspace,
                pass_fds=pass_fds,
                start_new_session=True,  # its own process group, killed whole by close()
            )
        except OSError as e:
            os.close(log_fd)
            raise DesktopError(f"could not run {name}: {e}") from None
        proc = _Process(name, popen, log_fd)
        self._procs.append(proc)
        return proc

    async def _read_display_number(self, xvfb: _Process, fd: int) -> int:
        os.set_blocking(fd, False)
        data = b""

        def got_line() -> bool:
            nonlocal data
            with contextlib.suppress(BlockingIOError):
                chunk = os.read(fd, 64)
                if not chunk:
                    return True  # EOF: Xvfb exited (or closed the pipe without a number)
                data += chunk
            return b"\n" in data or xvfb.exited()

        if not await _until(got_line, START_TIMEOUT):
            raise xvfb.failure(f"Xvfb did not report a display within {START_TIMEOUT:g} s")
        number = data.strip()
        if not number.isdigit():
            raise xvfb.failure("Xvfb did not start")
        return int(number)

    async def _wait_for_wm(self, wm: _Process, env: dict[str, str]) -> None:
        # A window manager announces itself with _NET_SUPPORTING_WM_CHECK on the root window;
        # windows opened before that would go unmanaged (no focus, no decorations).
        deadline = time.monotonic() + START_TIMEOUT
        answered = False
        while True:
            try:
                status, out, _ = await _run(
                    ["xprop", "-root", "-notype", "_NET_SUPPORTING_WM_CHECK"], env, 5
                )
            except (OSError, asyncio.TimeoutError) as e:
                raise DesktopError(
                    f"could not query the X server {self.display} with xprop: {e!r}"
                ) from None
            answered = answered or status == 0
            if b"window id" in out:
                return
            if wm.exited() or time.monotonic() > deadline:
                if not answered:
                    xvfb = self._procs[0]
                    raise xvfb.failure(f"the X server {self.display} does not answer")
                raise wm.failure(f"openbox did not start on {self.display}")
            await asyncio.sleep(0.05)

    async def _start_vnc(self, env: dict[str, str]) -> None:
        # A port found free can be taken before x11vnc binds it: then x11vnc exits, and a
        # fresh port is tried.
        for attempt in range(3):
            port = _free_port()
            vnc = self._spawn(
                "x11vnc",
                ["x11vnc", "-display", self.display or "", "-rfbport", str(port), "-localhost",
                 "-noipv6", "-forever", "-shared", "-nopw", "-quiet", "-norc"],
                env,
            )  # fmt: skip
            deadline = time.monotonic() + START_TIMEOUT
            while not vnc.exited() and time.monotonic() < deadline:
                if await self._rfb_answers(port):
                    self.vnc_port = port
                    return
                await asyncio.sleep(0.05)
            if not vnc.exited() or attempt == 2:
                raise vnc.failure(f"x11vnc did not accept connections on 127.0.0.1:{port}")
            self._procs.remove(vnc)
            vnc.popen.wait()
            os.close(vnc.log_fd)

    @staticmethod
    async def _rfb_answers(port: int) -> bool:
        """Whether an RFB server greets on the port (not merely something listening)."""
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 2)
        except (OSError, asyncio.TimeoutError):
            return False
        try:
            greeting = await asyncio.wait_for(reader.readexactly(12), 2)
            return greeting.startswith(b"RFB ")
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError):
            return False
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def close(self) -> None:
        self._closed = True
        await self._stop()

    async def _stop(self) -> None:
        procs, self._procs = self._procs[::-1], []  # x11vnc first, the X server last
        for proc in procs:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.popen.pid, signal.SIGTERM)
        await _until(lambda: all(p.exited() for p in procs), STOP_GRACE)
        for proc in procs:
            # The leader is not reaped yet, so its pid (= the group id) cannot be reused:
            # SIGKILL reaches only what is left of this group.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.popen.pid, signal.SIGKILL)
            proc.popen.wait()
            os.close(proc.log_fd)
        if self.display is not None and os.environ.get("DISPLAY") == self.display:
            if self._saved_display is None:
                os.environ.pop("DISPLAY", None)
            else:
                os.environ["DISPLAY"] = self._saved_display
        self.vnc_port = None
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    async def wait_vnc(self, timeout: float = 60.0) -> int | None:
        """The VNC port once the desktop is up; None if it failed, stopped or took too long."""
        await _until(
            lambda: self.vnc_port is not None or self._failed is not None or self._closed,
            timeout,
            interval=0.05,
        )
        return self.vnc_port

    # -- the tool ----------------------------------------------------------------------------

    def list_group(self) -> dict[str, Any]:
        return {"computer": {"name": "computer", "json_schema": SCHEMA}}

    async def call(self, name: str, arguments: dict[str, Any]) -> dict[str, Any] | None:
        if name != "computer":
            return None
        try:
            return await self._computer(arguments if isinstance(arguments, dict) else {})
        except ToolError as e:
            return _text(f"Error: {e}", error=True)

    async def _computer(self, args: dict[str, Any]) -> dict[str, Any]:
        action = args.get("action")
        if action not in ACTIONS:
            raise ToolError(f"Unknown action: {action!r}; expected one of {', '.join(ACTIONS)}")
        text = args.get("text")
        if text is not None and not isinstance(text, str):
            raise ToolError("text must be a string")
        point = _coordinate(args)
        if self.vnc_port is None or self.display is None:
            raise ToolError(self._failed or "the desktop is not running")
        xvfb = self._procs[0]
        if xvfb.exited():
            raise ToolError(f"the desktop's X server {self.display} is no longer running")
        move = ["mousemove", "--sync", str(point[0]), str(point[1])] if point else []

        if action == "key":
            if not text:
                raise ToolError("Text required for key")
            await self._xdotool("key", "--", *_xdotool_keys(text))
            return _text(f"Pressed key: {text}")
        if action == "type":
            if not text:
                raise ToolError("Text required for type")
            await self._xdotool(
                "type", "--delay", str(TYPE_DELAY_MS), "--", text,
                timeout=XDOTOOL_TIMEOUT + len(text) * TYPE_DELAY_MS * 3 / 1000,
            )  # fmt: skip
            return _text(f"Typed text: {text}")
        if action == "get_cursor_position":
            out = await self._xdotool("getmouselocation", "--shell")
            fields = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
            try:
                x, y = int(fields["X"]), int(fields["Y"])
            except (KeyError, ValueError):
                raise ToolError(f"unexpected answer from xdotool: {out!r}") from None
            return _text(json.dumps({"x": x, "y": y}, separators=(",", ":")))
        if action == "get_screenshot":
            return await self._screenshot()
        if action in ("mouse_move", "left_click_drag") and point is None:
            raise ToolError(f"Coordinate required for {action}")
        if action == "mouse_move":
            await self._xdotool(*move)
            return _text(f"Moved cursor to: ({point[0]}, {point[1]})")  # type: ignore[index]
        if action == "left_click_drag":
            await self._xdotool("mousedown", "1", *move, "mouseup", "1")
            return _text(f"Dragged to: ({point[0]}, {point[1]})")  # type: ignore[index]
        clicks = {
            "left_click": (["click", "1"], "Left clicked"),
            "right_click": (["click", "3"], "Right clicked"),
            "middle_click": (["click", "2"], "Middle clicked"),
            "double_click": (["click", "--repeat", "2", "--delay", "80", "1"], "Double clicked"),
        }
        click, done = clicks[action]
        await self._xdotool(*move, *click)
        return _text(done)

    async def _xdotool(self, *args: str, timeout: float = XDOTOOL_TIMEOUT) -> str:
        env = {**os.environ, "DISPLAY": self.display or ""}
        try:
            status, out, err = await _run(["xdotool", *args], env, timeout)
        except OSError as e:
            raise ToolError(f"could not run xdotool: {e}") from None
        except asyncio.TimeoutError:
            raise ToolError(f"xdotool {args[0]} did not finish within {timeout:g} s") from None
        stderr = err.decode("utf-8", "replace")
        # xdotool skips an unknown key name with a warning and still exits 0.
        for line in stderr.splitlines():
            if "No such key name" in line:
                name = line.split("'")[1] if line.count("'") >= 2 else line
                raise ToolError(f"Invalid key: {name}")
        if status != 0:
            raise ToolError(stderr.strip() or f"xdotool exited with status {status}")
        return out.decode("utf-8", "replace")

    async def _screenshot(self) -> dict[str, Any]:
        display = self.display or ""
        png: bytes | None = None
        if self._use_pillow:
            try:
                png = await asyncio.to_thread(_grab_png_pillow, display)
            except OSError as e:  # no XCB in this Pillow build, or the display refused
                log.warning("Pillow could not grab %s (%s); using ImageMagick", display, e)
                self._use_pillow = False
        if png is None:
            png = await self._grab_png_imagemagick(display)
        return {
            "meta": None,
            "content": [
                {
                    "type": "text",
                    "text": json.dumps(
                        {"display_width_px": WIDTH, "display_height_px": HEIGHT},
                        separators=(",", ":"),
                    ),
                },
                {
                    "type": "image",
                    "data": base64.b64encode(png).decode("ascii"),
                    "mimeType": "image/png",
                },
            ],
            "isError": False,
        }

    async def _grab_png_imagemagick(self, display: str) -> bytes:
        argv = ["import", "-display", display, "-window", "root", "png:-"]
        try:
            status, out, err = await _run(argv, dict(os.environ), XDOTOOL_TIMEOUT)
        except OSError as e:
            raise ToolError(f"cannot take a screenshot: {e}") from None
        except asyncio.TimeoutError:
            raise ToolError("the screenshot took too long") from None
        if status != 0 or not out:
            raise ToolError(f"cannot take a screenshot: {err.decode('utf-8', 'replace').strip()}")
        return out

    # -- HTTP --------------------------------------------------------------------------------

    def routes(self, token: str) -> list[tuple[str, type, dict[str, Any]]]:
        """The box's desktop routes: noVNC and our relay page, and the VNC websocket."""
        return [
            (r"/vnc/(vnc_relay\.html)", _Files, {"path": STATIC_DIR, "token": token}),
            (r"/vnc/(.*)", _Files, {"path": NOVNC_DIR, "token": token}),
            (r"/websockify", _VncBridge, {"desktop": self, "token": token}),
        ]


class _Files(BoxTokenMixin, tornado.web.StaticFileHandler):
    """Static files, confined to one directory (tornado refuses paths that leave it)."""

    def initialize(self, path: str, token: str) -> None:  # type: ignore[override]
        super().initialize(path)
        self.box_token = token


class _VncBridge(BoxTokenMixin, tornado.websocket.WebSocketHandler):
    """Binary websocket frames to and from the desktop's x11vnc (what websockify would do)."""

    def initialize(self, desktop: Desktop, token: str) -> None:
        self._desktop = desktop
        self.box_token = token
        self._vnc: IOStream | None = None
        self._pumping: asyncio.Future | None = None

    def select_subprotocol(self, subprotocols: list[str]) -> str | None:
        return "binary" if "binary" in subprotocols else None

    async def open(self) -> None:  # type: ignore[override]
        port = await self._desktop.wait_vnc()
        if port is None:
            self.close(1011, "the desktop is not running")
            return
        try:
            vnc = await TCPClient().connect("127.0.0.1", port)
        except (OSError, StreamClosedError):
            self.close(1011, "the desktop's VNC server does not answer")
            return
        if self.ws_connection is None or self.ws_connection.is_closing():
            vnc.close()  # the browser left while we connected
            return
        vnc.set_nodelay(True)
        self.set_nodelay(True)
        self._vnc = vnc
        self._pumping = asyncio.ensure_future(self._pump(vnc))

    async def _pump(self, vnc: IOStream) -> None:
        try:
            while True:
                data = await vnc.read_bytes(64 * 1024, partial=True)
                # Awaiting the write holds VNC reads back while the browser is slow.
                await self.write_message(data, binary=True)
        except (StreamClosedError, tornado.websocket.WebSocketClosedError):
            pass
        finally:
            vnc.close()
            self.close()

    async def on_message(self, message: str | bytes) -> None:
        if isinstance(message, str):
            self.close(1003, "VNC data must come in binary frames")
            return
        if self._vnc is None:
            return
        try:
            await self._vnc.write(message)
        except StreamClosedError:
            self.close()

    def on_close(self) -> None:
        if self._vnc is not None:
            self._vnc.close()
