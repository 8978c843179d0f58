"""Where the filter's time goes: py-spy under load, summarised.

`py-spy record -f raw` writes collapsed stacks ("frame;frame;frame count").
The summary keeps the functions with the most samples on top of the stack
(self) and on the stack at all (inclusive), minus the event-loop and
entry-point frames that are on every stack. Line numbers are merged, so a
function counts once however many of its lines were sampled.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_LINE = re.compile(r":\d+\)$")

# Frames present in nearly every sample: they say nothing about where time goes.
_EVERYWHERE = (
    "asyncio/runners.py",
    "asyncio/base_events.py",
    "<module>",
    "contentfilter/cli.py",
    "threading.py",
    "asyncio/events.py",
)


def find_py_spy() -> str | None:
    """py-spy on PATH, or in the tools venv benchmarks/run installs it to."""
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    candidates = [
        shutil.which("py-spy"),
        str(cache / "contentfilter-bench" / "venv" / "bin" / "py-spy"),
    ]
    return next((path for path in candidates if path and Path(path).exists()), None)


@contextlib.contextmanager
def recording(py_spy: str, pid: int, out: Path, rate: int = 100) -> Iterator[None]:
    """Sample `pid` and its child processes (without pausing them) while the block runs."""
    process = subprocess.Popen(
        [
            py_spy,
            "record",
            "-p",
            str(pid),
            "-f",
            "raw",
            "-o",
            str(out),
            "-r",
            str(rate),
            "--nonblocking",
            "--subprocesses",  # the decoder workers (and serve's workers) too
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(0.5)  # let it attach
    try:
        yield
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def summarise(raw: Path, top: int = 15) -> dict[str, Any]:
    """Top functions by self and inclusive share of samples (line numbers merged)."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    if raw.exists():
        for line in raw.read_text(errors="replace").splitlines():
            stack, _, count_text = line.rpartition(" ")
            if not count_text.isdigit():
                continue
            count = int(count_text)
            total += count
            frames = [_LINE.sub(")", frame) for frame in stack.split(";") if frame]
            if not frames:
                continue
            own[frames[-1]] += count
            for frame in set(frames):
                inclusive[frame] += count

    def share(counter: Counter[str]) -> list[tuple[float, str]]:
        interesting = [
            (n, frame)
            for frame, n in counter.most_common()
            if not frame.endswith(")") or not any(part in frame for part in _EVERYWHERE)
        ]
        return (
            [(round(100 * n / total, 1), frame) for n, frame in interesting[:top]] if total else []
        )

    return {"samples": total, "self": share(own), "inclusive": share(inclusive)}
