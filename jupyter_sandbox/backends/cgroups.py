"""Per-sandbox resource limits through cgroups (v2 if writable, else v1), or rlimits.

These machines have v1 "hybrid" cgroups: the memory, pids and cpu controllers are separate
hierarchies, so one sandbox is one directory in each. A process joins by writing its pid to
`cgroup.procs`; the sandbox's launcher does that for itself before exec'ing bubblewrap, so
every process of the sandbox is born inside the limits.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

from .base import Limits

ROOT = Path("/sys/fs/cgroup")
CPU_PERIOD_US = 100_000


def _writable(path: Path) -> bool:
    return path.is_dir() and os.access(path, os.W_OK)


class CgroupSet:
    """The cgroup directories of one sandbox (one per v1 controller, or one v2 directory)."""

    def __init__(self, dirs: list[Path]):
        self.dirs = dirs

    @property
    def procs_files(self) -> list[str]:
        return [str(d / "cgroup.procs") for d in self.dirs]

    def pids(self) -> set[int]:
        found: set[int] = set()
        for d in self.dirs:
            with contextlib.suppress(OSError):
                found.update(int(p) for p in (d / "cgroup.procs").read_text().split())
        return found

    def _freezer(self) -> Path | None:
        for d in self.dirs:
            if (d / "freezer.state").exists():
                return d
        return None

    def kill_all(self, timeout: float = 5.0) -> None:
        """SIGKILL every process in the sandbox (a fork bomb included) and remove the dirs.

        The group is frozen while its pids are read and signalled, so no listed process can
        exit, fork, or have its pid reused by another sandbox in between (pid_max is often
        only 32768, and a fork bomb recycles pids fast).
        """
        deadline = time.monotonic() + timeout
        freezer = self._freezer()
        for d in self.dirs:
            with contextlib.suppress(OSError):
                (d / "cgroup.kill").write_text("1")  # v2: the kernel does it atomically
        while True:
            if freezer is not None:
                self._set_frozen(freezer, True, deadline)
            pids = self.pids()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            if freezer is not None:
                self._set_frozen(freezer, False, deadline)
            if not pids or time.monotonic() > deadline:
                break
            time.sleep(0.005)
        for d in self.dirs:
            for _ in range(200):
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:  # EBUSY while the last processes exit
                    time.sleep(0.01)

    @staticmethod
    def _set_frozen(freezer: Path, frozen: bool, deadline: float) -> None:
        state = "FROZEN" if frozen else "THAWED"
        with contextlib.suppress(OSError):
            (freezer / "freezer.state").write_text(state)
            while frozen and (freezer / "freezer.state").read_text().strip() != state:
                if time.monotonic() > deadline:
                    return
                time.sleep(0.001)

    def set_cpu_weight(self, background: bool) -> None:
        """Warming sandboxes yield the CPU to the ones serving calls (and to the server)."""
        for d in self.dirs:
            for name, low, normal in (("cpu.shares", "128", "1024"), ("cpu.weight", "10", "100")):
                with contextlib.suppress(OSError):
                    (d / name).write_text(low if background else normal)


class Cgroups:
    """Makes CgroupSets under `<root>/<parent>/`; `available` tells whether limits can be set."""

    def __init__(self, parent: str = "jupyter-sandbox"):
        self.parent = parent
        v2 = ROOT / "cgroup.controllers"
        if v2.exists() and _writable(ROOT):
            self.version = 2
            self.bases = [ROOT / parent]
        else:
            self.version = 1
            self.bases = [ROOT / c / parent for c in ("memory", "pids", "cpu", "freezer")]
        self.available = all(_writable(b.parent) for b in self.bases)

    def create(self, name: str, limits: Limits) -> CgroupSet:
        dirs = []
        for base in self.bases:
            base.mkdir(exist_ok=True)
            if self.version == 2:
                with contextlib.suppress(OSError):
                    (base / "cgroup.subtree_control").write_text("+memory +pids +cpu")
            d = base / name
            d.mkdir(exist_ok=True)
            dirs.append(d)
        cg = CgroupSet(dirs)
        try:
            self._apply(dirs, limits)
            cg.set_cpu_weight(background=True)
        except OSError:
            cg.kill_all()
            raise
        return cg

    def _apply(self, dirs: list[Path], limits: Limits) -> None:
        quota = max(1000, int(limits.cpus * CPU_PERIOD_US))
        if self.version == 2:
            (d,) = dirs
            (d / "memory.max").write_text(str(limits.memory_bytes))
            with contextlib.suppress(OSError):
                (d / "memory.swap.max").write_text("0")
            (d / "pids.max").write_text(str(limits.pids))
            (d / "cpu.max").write_text(f"{quota} {CPU_PERIOD_US}")
            return
        memory, pids, cpu, _freezer = dirs
        (memory / "memory.limit_in_bytes").write_text(str(limits.memory_bytes))
        with contextlib.suppress(OSError):  # absent without swap accounting
            (memory / "memory.memsw.limit_in_bytes").write_text(str(limits.memory_bytes))
        (pids / "pids.max").write_text(str(limits.pids))
        (cpu / "cpu.cfs_period_us").write_text(str(CPU_PERIOD_US))
        (cpu / "cpu.cfs_quota_us").write_text(str(quota))

    def existing(self, name: str) -> CgroupSet:
        return CgroupSet([b / name for b in self.bases if (b / name).is_dir()])

    def names(self) -> list[str]:
        """The sandbox cgroups that exist now (of every server on this host)."""
        base = self.bases[0]
        return [d.name for d in base.iterdir() if d.is_dir()] if base.is_dir() else []


def rlimit_shell(limits: Limits) -> str:
    """The `ulimit` commands that approximate the limits where cgroups cannot be written."""
    return (
        f"ulimit -v {limits.memory_bytes // 1024} 2>/dev/null; ulimit -u {limits.pids} 2>/dev/null;"
    )
