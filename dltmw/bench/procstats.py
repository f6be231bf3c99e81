"""CPU time and peak resident memory of the node processes and of the client (this process).

CPU is the difference of user+system time between two snapshots (the measurement window only,
so start-up and setup are excluded). Peak RSS is the kernel's high-water mark (`VmHWM` in
/proc/PID/status) where available — exact, no sampling gaps — else the current RSS.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import psutil


@dataclass(frozen=True)
class CpuSnapshot:
    """user+system CPU seconds per process name at one moment."""

    cpu_s: dict[str, float]


def _cpu(pid: int) -> float | None:
    try:
        t = psutil.Process(pid).cpu_times()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None
    return float(t.user + t.system)


def snapshot(pids: dict[str, int]) -> CpuSnapshot:
    """CPU seconds so far of every named process (missing processes are left out)."""
    out: dict[str, float] = {}
    for name, pid in pids.items():
        value = _cpu(pid)
        if value is not None:
            out[name] = value
    return CpuSnapshot(out)


def cpu_delta(before: CpuSnapshot, after: CpuSnapshot) -> dict[str, float]:
    """CPU seconds spent between two snapshots, per process present in both."""
    return {n: after.cpu_s[n] - before.cpu_s[n] for n in before.cpu_s if n in after.cpu_s}


def peak_rss_bytes(pid: int) -> int | None:
    """The process's peak resident set size, or None if it is gone."""
    status = Path(f"/proc/{pid}/status")
    try:
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(psutil.Process(pid).memory_info().rss)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def peak_rss(pids: dict[str, int]) -> dict[str, int]:
    """Peak RSS per named process (missing processes are left out)."""
    out: dict[str, int] = {}
    for name, pid in pids.items():
        value = peak_rss_bytes(pid)
        if value is not None:
            out[name] = value
    return out


def own_pid() -> int:
    """This process (the benchmark client)."""
    return os.getpid()
