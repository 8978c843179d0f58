"""Memory and CPU of a process tree, read from /proc.

A filter may be one process (contentfilter) or a master with forked children
and the helpers they spawn (amavisd-new, file(1), ...): everything below the
root pid counts. RSS is summed over the tree (it counts pages shared between
forked children once per process, which flatters nobody); PSS from
/proc/PID/smaps_rollup splits shared pages fairly and is reported beside it.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

PAGE = os.sysconf("SC_PAGE_SIZE")
TICK = os.sysconf("SC_CLK_TCK")
MB = 1024 * 1024


def _children(pid: int) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError):
                found += [
                    int(child)
                    for child in Path(f"/proc/{pid}/task/{task}/children").read_text().split()
                ]
    return found


def tree(root: int) -> list[int]:
    """The root and all its descendants that exist now."""
    pids = [root]
    index = 0
    while index < len(pids):
        pids += _children(pids[index])
        index += 1
    return pids


def _rss(pid: int) -> int:
    with contextlib.suppress(OSError, ValueError, IndexError):
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
    return 0


def _pss(pid: int) -> int:
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    return 0


def cpu_seconds(root: int) -> float:
    """User+system CPU of the tree, including children it has reaped."""
    total = 0
    for pid in tree(root):
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = Path(f"/proc/{pid}/stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            # utime, stime, cutime, cstime are fields 14-17 of stat(5); here 11-14.
            total += sum(int(value) for value in fields[11:15])
    return total / TICK


def children_cpu_seconds(root: int) -> dict[int, float]:
    """CPU of each direct child's tree (a supervisor's workers, with their helpers)."""
    return {child: cpu_seconds(child) for child in _children(root)}


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    total = sum(fields[:8])
    return (total - idle) / TICK, total / TICK


@dataclass
class Memory:
    """What a sampler saw."""

    peak_rss: int = 0
    peak_pss: int = 0
    peak_processes: int = 0
    samples: int = 0
    last_rss: int = 0


class TreeSampler:
    """Samples the tree's memory in a thread until stopped; peaks in `memory`."""

    def __init__(self, root: int, interval: float = 0.05, pss_every: int = 4) -> None:
        self.root = root
        self.interval = interval
        self.pss_every = pss_every
        self.memory = Memory()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> TreeSampler:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def sample(self) -> None:
        memory = self.memory
        pids = tree(self.root)
        rss = sum(_rss(pid) for pid in pids)
        memory.last_rss = rss
        memory.peak_rss = max(memory.peak_rss, rss)
        memory.peak_processes = max(memory.peak_processes, len(pids))
        if memory.samples % self.pss_every == 0:
            memory.peak_pss = max(memory.peak_pss, sum(_pss(pid) for pid in pids))
        memory.samples += 1


def idle_rss(root: int, seconds: float = 1.0) -> int:
    """Median tree RSS over a quiet interval: the baseline before a test."""
    values = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        values.append(sum(_rss(pid) for pid in tree(root)))
        time.sleep(0.05)
    values.sort()
    return values[len(values) // 2]
