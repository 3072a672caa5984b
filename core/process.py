"""Is the process that claimed something still running? An owner id names boot, pid and start time, so a pid
the kernel reused for another process does not count as the owner."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def _boot_id() -> str:
    with contextlib.suppress(OSError):
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    return "noboot"


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), to tell a reused pid from the original."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


_owner_cache: dict[int, str] = {}


def owner_id() -> str:
    """This process as `boot:pid:start` (the value owner_alive checks)."""
    pid = os.getpid()
    if pid not in _owner_cache:
        _owner_cache[pid] = f"{_boot_id()}:{pid}:{_start_time(pid) or '-'}"
    return _owner_cache[pid]


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (another user's process counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def owner_alive(owner: str | None) -> bool:
    """Whether the process an owner_id() of this box names still runs; a bare pid is checked without the guard.

    Unreadable owners count as alive, so nothing is taken from a process that may still hold it."""
    if not owner:
        return True
    parts = owner.split(":")
    if len(parts) == 1 and parts[0].isdigit():
        return pid_alive(int(parts[0]))
    if len(parts) != 3 or not parts[1].isdigit():
        return True
    boot, pid, started = parts[0], int(parts[1]), parts[2]
    if boot != _boot_id():
        return False  # made before this boot
    if started != "-":
        return _start_time(pid) == started
    return pid_alive(pid)
