"""Postfix's smtp-source as a load driver: one repeated body, one connection per message.

This is how administrators measure a filter (`smtp-source -s 16 -m 1000 -F
message.eml host:port`): every message is the same file, each one over a new
connection (smtp-source disconnects after each message unless given -d), no
PIPELINING. smtp-source reports no per-message times, so a point measured this
way has throughput, CPU and memory, not latency percentiles.
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks import messages

SMTP_SOURCE = Path("/usr/sbin/smtp-source")
# smtp-source waits 300 s for a greeting that a server whose listen queue overflowed
# never sends (clamsmtpd listens with a backlog of 5): a point is cut off after this.
TIMEOUT = 90.0


@dataclass(frozen=True)
class SourceRun:
    """What one smtp-source run did."""

    messages: int
    seconds: float
    returncode: int  # -9: killed after TIMEOUT
    errors: str  # the end of its stderr, when it complained


def message_file(directory: Path, kind: str, unique: int) -> Path:
    """The body smtp-source repeats: a message of `kind`, with LF line ends (smtp-source
    sends each line with CRLF and dot-stuffs it)."""
    path = directory / f"source-{kind}.eml"
    data = messages.build(kind, unique).replace(b"\r\n", b"\n")
    path.write_bytes(data)
    return path


def run(address: str, body: Path, sessions: int, count: int) -> SourceRun:
    """`count` messages, `sessions` at a time, each on its own connection."""
    command = [
        str(SMTP_SOURCE),
        "-A",  # go on after a non-2xx reply: the sink's count tells what passed
        "-s",
        str(sessions),
        "-m",
        str(count),
        "-F",
        str(body),
        "-f",
        messages.SENDER,
        "-t",
        messages.RECIPIENT,
        "-M",
        "client.example.org",
        address,
    ]
    started = time.monotonic()
    try:
        finished = subprocess.run(command, capture_output=True, check=False, timeout=TIMEOUT)
    except subprocess.TimeoutExpired as expired:
        stderr = (expired.stderr or b"").decode(errors="replace").strip()[-300:]
        return SourceRun(count, TIMEOUT, -9, f"killed after {TIMEOUT:g} s; {stderr}")
    seconds = time.monotonic() - started
    errors = finished.stderr.decode(errors="replace").strip()[-400:]
    return SourceRun(count, seconds, finished.returncode, errors)
