"""The `local` backend: each sandbox is a bubblewrap jail on this machine.

A sandbox gets its own pid, ipc, uts, mount, cgroup and network namespaces, a read-only view
of the system (`/usr`, `/etc` without its secrets), the Python runtime the box needs
(read-only, at its own path, without its parent directories), a writable `/workspace`, a
private `/tmp`, and nothing else. When the server runs as root, the sandbox's processes run as
`sandbox_user` with no capabilities and `no_new_privs`. With `network` on, user-mode networking
(slirp4netns, host loopback disabled) is started in the sandbox's own namespace while it warms.

Each sandbox has a state directory, `<state_dir>/<id>/`, owned by the server: `owner.json`
(how a restarted server finds what a dead one left behind), the box's log, and `sock/`, the
only part the sandbox sees (at `/run/sandbox`), where its box listens on a Unix socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pwd
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from jupyter_core.paths import jupyter_runtime_dir
from traitlets import CaselessStrEnum, Float, Unicode, default

import jupyter_sandbox

from .base import Backend, BackendError, BackendUnavailable, SandboxSpec, Started
from .cgroups import Cgroups, CgroupSet, rlimit_shell

# Files under /etc that a sandbox must not read even though /etc is visible.
ETC_SECRETS = (
    "shadow", "shadow-", "gshadow", "gshadow-", "ssh", "ssl/private", "sudoers.d",
    "jupyter",  # Jupyter config files may hold tokens (this server's among them)
)  # fmt: skip
SANDBOX_SOCKET_DIR = "/run/sandbox"
SANDBOX_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SLIRP_DNS = "10.0.2.3"
STARTUP_ATTEMPTS = 6
# bubblewrap occasionally fails to configure a new network namespace's loopback when many
# namespaces come and go at once ("loopback: Failed RTM_NEWADDR"); a retry succeeds.
TRANSIENT_BWRAP_ERRORS = ("bwrap: loopback:",)


class _TransientStartError(BackendError):
    """A start failure that a retry is expected to fix."""


def _python_roots() -> list[str]:
    """The directories the box's interpreter and packages live in, without nesting.

    An editable install lives in a source checkout: only the package directory of it is
    exposed, never the checkout (which may be the server's working directory).
    """
    candidates = {
        sys.prefix,
        sys.base_prefix,
        sys.exec_prefix,
        os.path.dirname(os.path.dirname(os.path.realpath(sys.executable))),
    }
    roots: list[str] = []
    for path in sorted(os.path.realpath(p) for p in candidates):
        if path == "/usr" or path.startswith(("/usr/", "/etc/")):
            continue
        if not any(path == r or path.startswith(r + os.sep) for r in roots):
            roots.append(path)
    package_dir = os.path.dirname(os.path.realpath(jupyter_sandbox.__file__))
    if not any(package_dir.startswith(r + os.sep) for r in [*roots, "/usr"]):
        roots.append(package_dir)
    return roots


def _alive(pid: int, start_time: str) -> bool:
    """Is `pid` the very process we recorded (not a reused pid)?"""
    return _start_time(pid) == start_time


async def _readable(fd: int) -> None:
    """Wait until `fd` can be read (or has hit end of file), without a thread."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future = loop.create_future()
    loop.add_reader(fd, lambda: ready.done() or ready.set_result(None))
    try:
        await ready
    finally:
        loop.remove_reader(fd)


def _state_dirs_of(pids: set[int]) -> set[str]:
    """The state directories the jail processes were started with (their `sock/` binds)."""
    found = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            for i, arg in enumerate(args[:-1]):
                if arg == b"--bind" and args[i + 2 : i + 3] == [SANDBOX_SOCKET_DIR.encode()]:
                    found.add(os.path.dirname(args[i + 1].decode(errors="replace")))
    if not found:
        found.add("/")  # cannot tell whose it is: treat as alive
    return found


def _start_time(pid: int) -> str | None:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    return None


@dataclass
class _Jail:
    proc: asyncio.subprocess.Process
    state_dir: Path
    cgroup: CgroupSet | None
    slirp: asyncio.subprocess.Process | None = None
    dir_fd: int | None = None
    slirp_exit_fd: int | None = None
    none_socket: str | None = None  # isolation=none: where the unjailed box listens
    extra_dir: Path | None = None  # a short socket directory outside the state dir


class LocalBackend(Backend):
    """Sandboxes as bubblewrap jails on the server's own machine (no image needed)."""

    name = "local"

    isolation = CaselessStrEnum(
        ["bwrap", "none"],
        default_value="bwrap",
        config=True,
        help="""How sandboxes are isolated: 'bwrap' (bubblewrap namespaces, the default) or
        'none' (plain processes, NOT isolated from the host or each other; only for hosts that
        forbid namespaces, such as Binder).""",
    )
    bwrap_path = Unicode("bwrap", config=True, help="The bubblewrap executable.")
    slirp4netns_path = Unicode(
        "slirp4netns",
        config=True,
        help="The slirp4netns executable that gives a sandbox user-mode networking when "
        "SandboxApp.network is on.",
    )
    sandbox_user = Unicode(
        "nobody",
        config=True,
        help="When the server runs as root, sandbox processes run as this unprivileged user "
        "(by name or numeric uid).",
    )
    state_dir = Unicode(
        config=True,
        help="Directory for per-sandbox runtime state (the box's socket, owner files). "
        "Default: <jupyter runtime dir>/sandbox.",
    )
    ready_timeout = Float(30.0, config=True, help="Seconds a new sandbox may take to become ready.")

    @default("state_dir")
    def _default_state_dir(self) -> str:
        return os.path.join(jupyter_runtime_dir(), "sandbox")

    def __init__(self, server_id: str = "", **kwargs):
        super().__init__(**kwargs)
        self.server_id = server_id
        self._jails: dict[str, _Jail] = {}
        self._cgroups = Cgroups()
        self._python_roots = _python_roots()
        self._uid, self._gid = self._sandbox_ids()
        self._warned_rlimits = False

    # -- checks ----------------------------------------------------------------------------

    def check(self) -> None:
        if self.isolation == "none":
            self.log.warning(
                "LocalBackend.isolation=none: sandboxes are plain processes, NOT isolated "
                "from this host or from each other. Use it only where namespaces are forbidden."
            )
            return
        if not shutil.which(self.bwrap_path):
            raise BackendUnavailable(
                f"bubblewrap ({self.bwrap_path!r}) is not installed, and the 'local' backend "
                "needs it to isolate sandboxes. Install it (Debian/Ubuntu: "
                "`apt-get install bubblewrap`; Fedora: `dnf install bubblewrap`), or opt out of "
                "isolation explicitly with --LocalBackend.isolation=none."
            )
        if not self._cgroups.available:
            self.log.warning(
                "cgroups are not writable here: sandbox memory/pids limits fall back to rlimits, "
                "which are per-user, not per-sandbox, and CPU is not limited."
            )

    def needs_slirp(self) -> str | None:
        return shutil.which(self.slirp4netns_path)

    def _sandbox_ids(self) -> tuple[int | None, int | None]:
        if os.geteuid() != 0:
            return None, None  # unprivileged bwrap keeps our own uid inside a user namespace
        user = self.sandbox_user
        entry = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
        return entry.pw_uid, entry.pw_gid

    # -- create ----------------------------------------------------------------------------

    async def create(self, spec: SandboxSpec) -> Started:
        for attempt in range(1, STARTUP_ATTEMPTS + 1):
            try:
                return await self._create_once(spec)
            except _TransientStartError as e:
                if attempt == STARTUP_ATTEMPTS:
                    raise BackendError(str(e)) from None
                self.log.info("retrying sandbox %s: %s", spec.name, e)
                await asyncio.sleep(0.1 * attempt)  # 1.5 s in all, at most
        raise AssertionError("unreachable")

    async def _create_once(self, spec: SandboxSpec) -> Started:
        state = Path(self.state_dir) / spec.name
        state.mkdir(parents=True, exist_ok=False, mode=0o700)
        (state / "sock").mkdir()
        for path in (state / "sock", Path(spec.workspace)):
            if self._uid is not None:
                os.chown(path, self._uid, self._gid)
        jail = _Jail(proc=None, state_dir=state, cgroup=None)  # type: ignore[arg-type]
        try:
            if self.isolation == "bwrap" and self._cgroups.available:
                jail.cgroup = self._cgroups.create(spec.name, spec.limits)
            await self._spawn(spec, jail)
            self._jails[spec.name] = jail
            self._write_owner(spec, jail)
            await self._wait_ready(spec, jail)
            if jail.cgroup is not None:
                jail.cgroup.set_cpu_weight(background=False)
        except BaseException as e:
            self._jails.pop(spec.name, None)
            transient = isinstance(e, BackendError) and any(
                marker in str(e) for marker in TRANSIENT_BWRAP_ERRORS
            )
            await self._teardown(jail)
            if transient:
                raise _TransientStartError(str(e)) from None
            raise
        socket = jail.none_socket or self._socket_path(jail)
        return Started(container_id=spec.name, url=f"unix:{socket}")

    def _socket_path(self, jail: _Jail) -> str:
        path = str(jail.state_dir / "sock" / "box.sock")
        if len(path.encode()) < 100:
            return path
        # AF_UNIX paths are limited to 108 bytes; reach a deep state dir through an fd.
        jail.dir_fd = os.open(jail.state_dir / "sock", os.O_PATH | os.O_DIRECTORY)
        return f"/proc/{os.getpid()}/fd/{jail.dir_fd}/box.sock"

    def _environment(self, spec: SandboxSpec) -> dict[str, str]:
        bin_dir = os.path.dirname(sys.executable)
        env = {
            "PATH": f"{bin_dir}:{SANDBOX_PATH}",
            "HOME": "/workspace",
            "LANG": "C.UTF-8",
            "TERM": "xterm-256color",
            "SANDBOX_TYPE": spec.sandbox_type,
        }
        env.update(spec.environment)
        return env

    def _bwrap_args(
        self, spec: SandboxSpec, state: Path, info_fd: int, resolv_fd: int | None
    ) -> list[str]:
        """The whole bubblewrap command line, ending with the box command."""
        a = [
            self.bwrap_path,
            "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-net",
            "--unshare-cgroup-try",
            "--die-with-parent", "--new-session", "--clearenv",
            "--hostname", "sandbox",
            "--ro-bind", "/usr", "/usr",
            "--ro-bind", "/etc", "/etc",
        ]  # fmt: skip
        for link in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
            target = f"/{link}"
            if os.path.islink(target):
                a += ["--symlink", os.readlink(target), target]
        for secret in ETC_SECRETS:
            path = f"/etc/{secret}"
            if os.path.isdir(path):
                a += ["--tmpfs", path]
            elif os.path.exists(path):
                a += ["--ro-bind", "/dev/null", path]
        if resolv_fd is not None:
            a += ["--perms", "0644", "--ro-bind-data", str(resolv_fd), "/etc/resolv.conf"]
        # Private /tmp and /dev/shm first: a runtime that lives under the host's /tmp is
        # bound on top of them below, not hidden by them.
        a += [
            "--proc", "/proc",
            "--dev", "/dev",
            "--perms", "1777", "--tmpfs", "/tmp",
            "--perms", "1777", "--tmpfs", "/dev/shm",
        ]  # fmt: skip
        binds = [(root, root) for root in self._python_roots]
        binds += list(spec.readonly_mounts.items())
        # bwrap makes missing parent directories 0700 root, which the unprivileged sandbox
        # user could not traverse; create them 0755 first.
        parents = {str(p) for _, inside in binds for p in Path(inside).parents} - {"/"}
        parents |= {"/run"}
        for parent in sorted(parents, key=lambda p: p.count("/")):
            mounted = parent in ("/tmp", "/dev", "/proc") or parent.split("/")[1] in ("usr", "etc")
            if not mounted:
                a += ["--perms", "0755", "--dir", parent]
        for host, inside in binds:
            a += ["--ro-bind", host, inside]
        a += [
            "--bind", spec.workspace, "/workspace",
            "--bind", str(state / "sock"), SANDBOX_SOCKET_DIR,
            "--chdir", "/workspace",
        ]  # fmt: skip
        for key, value in self._environment(spec).items():
            a += ["--setenv", key, value]
        a += ["--info-fd", str(info_fd)]
        if self._uid is not None:
            a += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
            a += [
                "setpriv",
                f"--reuid={self._uid}",
                f"--regid={self._gid}",
                "--clear-groups",
                "--inh-caps=-all",
                "--no-new-privs",
                "--",
            ]
        return [*a, *self._box_command(), f"unix:{SANDBOX_SOCKET_DIR}/box.sock"]

    def _box_command(self) -> list[str]:
        return [sys.executable, "-m", "jupyter_sandbox.box", "--listen"]

    async def _spawn(self, spec: SandboxSpec, jail: _Jail) -> None:
        state = jail.state_dir
        log = open(state / "box.log", "wb")  # noqa: SIM115 - handed to the child
        if self.isolation == "none":
            # Unjailed, the box binds the host path itself; keep it under AF_UNIX's limit.
            sock = state / "sock" / "box.sock"
            if len(str(sock).encode()) >= 100:
                sock = Path(tempfile.mkdtemp(prefix="jsbx-")) / "box.sock"
                jail.extra_dir = sock.parent
            jail.none_socket = str(sock)
            cmd = [*self._box_command(), f"unix:{sock}"]
            env = {**os.environ, **self._environment(spec), "HOME": spec.workspace}
            env.pop("JUPYTER_SANDBOX_TOKEN", None)
            jail.proc = await asyncio.create_subprocess_exec(
                *cmd, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=log, cwd=spec.workspace, env=env, start_new_session=True,
            )  # fmt: skip
            log.close()
            await self._send_config(spec, jail, spec.workspace)
            return

        info_r, info_w = os.pipe()
        resolv_r = None
        pass_fds = [info_w]
        if spec.network:
            resolv_r, resolv_w = os.pipe()
            os.write(resolv_w, f"nameserver {SLIRP_DNS}\n".encode())
            os.close(resolv_w)
            pass_fds.append(resolv_r)
        args = self._bwrap_args(spec, state, info_w, resolv_r)
        join = ""
        if jail.cgroup is not None:
            join = 'for f in $SANDBOX_CGROUPS; do echo $$ > "$f" || exit 125; done; '
        else:
            join = rlimit_shell(spec.limits)
            if not self._warned_rlimits:
                self._warned_rlimits = True
                self.log.warning("sandbox limits use rlimits (cgroups not writable)")
        # bwrap's --die-with-parent guards the jail's processes, not bwrap itself: the
        # parent-death signal makes bwrap die with this server too, even mid-start.
        launcher = ["/bin/sh", "-c", join + 'exec setpriv --pdeathsig KILL -- "$@"', "sh", *args]
        env = {"PATH": os.environ.get("PATH", SANDBOX_PATH)}
        if jail.cgroup is not None:
            env["SANDBOX_CGROUPS"] = " ".join(jail.cgroup.procs_files)
        try:
            try:
                jail.proc = await asyncio.create_subprocess_exec(
                    *launcher, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                    stderr=log, env=env, pass_fds=pass_fds, start_new_session=True,
                )  # fmt: skip
            except (OSError, ValueError) as e:
                raise BackendError(f"cannot start bubblewrap: {e}") from e
            finally:
                log.close()
                os.close(info_w)
                if resolv_r is not None:
                    os.close(resolv_r)
            info = await asyncio.wait_for(self._read_info(info_r), self.ready_timeout)
        except BackendError as e:
            raise BackendError(f"{e}{self._log_tail(jail)}") from None
        except asyncio.TimeoutError:
            raise BackendError(f"bubblewrap did not start in time{self._log_tail(jail)}") from None
        finally:
            os.close(info_r)
        if spec.network:
            try:
                await self._start_slirp(info["child-pid"], jail)
            except BackendError as e:
                raise BackendError(f"{e}{self._log_tail(jail)}") from None
        await self._send_config(spec, jail, "/workspace")

    async def _read_info(self, fd: int) -> dict:
        """bwrap's --info-fd JSON (the jail's pid), read without blocking the loop."""
        os.set_blocking(fd, False)
        data = b""
        while True:
            await _readable(fd)
            try:
                chunk = os.read(fd, 4096)
            except BlockingIOError:
                continue
            if not chunk:
                raise BackendError("bubblewrap exited before the sandbox started")
            data += chunk
            with contextlib.suppress(ValueError):
                return json.loads(data)

    async def _start_slirp(self, child_pid: int, jail: _Jail) -> None:
        state = jail.state_dir
        ready_r, ready_w = os.pipe()
        exit_r, exit_w = os.pipe()
        try:
            jail.slirp = await asyncio.create_subprocess_exec(
                self.slirp4netns_path, "--configure", "--mtu=65520", "--disable-host-loopback",
                f"--ready-fd={ready_w}", f"--exit-fd={exit_r}", str(child_pid), "tap0",
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                stderr=open(state / "slirp.log", "wb"),  # noqa: SIM115
                pass_fds=[ready_w, exit_r], start_new_session=True,
            )  # fmt: skip
        except OSError as e:
            os.close(exit_w)
            raise BackendError(f"cannot start slirp4netns: {e}") from e
        finally:
            os.close(ready_w)
            os.close(exit_r)
        # slirp4netns exits when exit_w closes: it stays open for the sandbox's life, so a
        # server killed with -9 takes its slirp4netns processes with it.
        jail.slirp_exit_fd = exit_w
        try:
            await asyncio.wait_for(_readable(ready_r), 10)
            ok = os.read(ready_r, 1)
        except asyncio.TimeoutError:
            ok = b""
        finally:
            os.close(ready_r)
        if ok != b"1":
            log = (state / "slirp.log").read_text(errors="replace").strip()
            raise BackendError(f"slirp4netns failed to start: {log or 'no output'}")

    async def _send_config(self, spec: SandboxSpec, jail: _Jail, workspace: str) -> None:
        config = spec.box_config(workspace)
        assert jail.proc.stdin is not None
        try:
            jail.proc.stdin.write(json.dumps(config).encode() + b"\n")
            await jail.proc.stdin.drain()
            jail.proc.stdin.close()
        except (ConnectionError, BrokenPipeError):
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(jail.proc.wait(), 1)
            raise BackendError(
                f"sandbox {spec.name} exited before it read its configuration{self._log_tail(jail)}"
            ) from None

    async def _wait_ready(self, spec: SandboxSpec, jail: _Jail) -> None:
        assert jail.proc.stdout is not None
        try:
            line = await asyncio.wait_for(jail.proc.stdout.readline(), self.ready_timeout)
        except asyncio.TimeoutError:
            raise BackendError(
                f"sandbox {spec.name} did not become ready within {self.ready_timeout:g} s"
                f"{self._log_tail(jail)}"
            ) from None
        try:
            message = json.loads(line)
        except ValueError:
            message = {"ready": False, "error": "the box exited before it was ready"}
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(jail.proc.wait(), 1)  # for its exit status
        if not message.get("ready"):
            raise BackendError(
                f"sandbox {spec.name} failed to start: {message.get('error')}{self._log_tail(jail)}"
            )

    def _log_tail(self, jail: _Jail) -> str:
        if jail.proc is not None and jail.proc.returncode is not None:
            code = jail.proc.returncode
            status = f"killed by signal {-code}" if code < 0 else f"exit status {code}"
            prefix = f" ({status})"
        else:
            prefix = ""
        with contextlib.suppress(OSError):
            tail = (jail.state_dir / "box.log").read_text(errors="replace")[-1500:].strip()
            if tail:
                return f"{prefix}; its log ends with:\n{tail}"
        return prefix

    def _write_owner(self, spec: SandboxSpec, jail: _Jail) -> None:
        pids = [jail.proc.pid] + ([jail.slirp.pid] if jail.slirp else [])
        owner = {
            "server_id": self.server_id,
            "server_pid": os.getpid(),
            "server_start": _start_time(os.getpid()),
            "pids": {str(p): _start_time(p) for p in pids},
            "labels": spec.labels,
        }
        (jail.state_dir / "owner.json").write_text(json.dumps(owner))

    # -- inspect / destroy -------------------------------------------------------------------

    def status(self, container_id: str) -> str | None:
        jail = self._jails.get(container_id)
        if jail is None:
            return self._foreign_status(container_id)
        return "running" if jail.proc.returncode is None else "exited"

    def _foreign_status(self, name: str) -> str | None:
        """A jail another server process on this host made (shared state): alive while the
        box process recorded in its owner file is."""
        try:
            owner = json.loads((Path(self.state_dir) / name / "owner.json").read_text())
            pids = {int(p): str(t) for p, t in dict(owner.get("pids", {})).items() if t}
        except (OSError, ValueError, TypeError):
            return None
        return "running" if pids and all(_alive(p, t) for p, t in pids.items()) else "exited"

    async def destroy(self, container_id: str) -> None:
        jail = self._jails.pop(container_id, None)
        if jail is not None:
            await self._teardown(jail)
        elif (Path(self.state_dir) / container_id / "owner.json").exists():
            self._kill_state_dir(Path(self.state_dir) / container_id)  # another server's

    async def _teardown(self, jail: _Jail) -> None:
        if jail.cgroup is not None:
            # Every process of the jail, its launcher included, is in the cgroup.
            await asyncio.get_running_loop().run_in_executor(None, jail.cgroup.kill_all)
        elif jail.proc is not None and jail.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(jail.proc.pid, signal.SIGKILL)
        if jail.slirp_exit_fd is not None:
            os.close(jail.slirp_exit_fd)
            jail.slirp_exit_fd = None
        if jail.slirp is not None:
            with contextlib.suppress(ProcessLookupError):
                jail.slirp.kill()
            await jail.slirp.wait()
        if jail.proc is not None:
            await jail.proc.wait()
        if jail.dir_fd is not None:
            os.close(jail.dir_fd)
        if jail.extra_dir is not None:
            shutil.rmtree(jail.extra_dir, ignore_errors=True)
        shutil.rmtree(jail.state_dir, ignore_errors=True)

    async def reap_orphans(self, keep: set[str] | None = None) -> int:
        """Destroy jails whose owning server process is gone (e.g. killed with -9).

        `owner.json` is written by the server into a directory the sandbox cannot see; still,
        only pids whose recorded start time matches are killed, so a stale file can never
        make the reaper signal an unrelated process.
        """
        root = Path(self.state_dir)
        if not root.is_dir():
            return self._reap_lost_cgroups()
        reaped = 0
        for state in root.iterdir():
            try:
                owner = json.loads((state / "owner.json").read_text())
                server_pid, server_start = int(owner["server_pid"]), str(owner["server_start"])
                pids = {int(p): str(t) for p, t in dict(owner.get("pids", {})).items() if t}
            except (OSError, ValueError, KeyError, TypeError):
                if time.time() - state.stat().st_mtime < 60:
                    continue  # a sandbox being created right now by a live server
                server_pid, server_start, pids = -1, "", {}
            if server_pid > 0 and _alive(server_pid, server_start):
                continue
            self._kill_state_dir(state, pids)
            reaped += 1
        return reaped + self._reap_lost_cgroups()

    def _reap_lost_cgroups(self) -> int:
        """Kill jails whose state directory is gone but whose cgroup still holds processes.

        A server stopped while a jail was starting can lose it that way. Such a jail names its
        own state directory on its command line (the `sock/` bind), which is how a jail of
        another, live server (whose state directory exists) is told apart and left alone.
        """
        if not self._cgroups.available:
            return 0
        reaped = 0
        for name in self._cgroups.names():
            if name in self._jails:
                continue
            group = self._cgroups.existing(name)
            pids = group.pids()
            if not pids:
                if time.time() - group.dirs[0].stat().st_mtime > 60:
                    group.kill_all()  # an empty leftover: removes its directories
                continue
            if any(os.path.isdir(d) for d in _state_dirs_of(pids)):
                continue
            group.kill_all()
            reaped += 1
        return reaped

    def _kill_state_dir(self, state: Path, pids: dict[int, str] | None = None) -> None:
        """Kill a jail this process did not start (its pids checked by start time), and
        remove its cgroups and state directory."""
        if pids is None:
            try:
                owner = json.loads((state / "owner.json").read_text())
                pids = {int(p): str(t) for p, t in dict(owner.get("pids", {})).items() if t}
            except (OSError, ValueError, TypeError):
                pids = {}
        for pid, started in pids.items():
            if _alive(pid, started):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        self._cgroups.existing(state.name).kill_all()
        shutil.rmtree(state, ignore_errors=True)
