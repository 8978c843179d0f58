"""Start-up of `contentfilter spawn` and throughput of `contentfilter pipe`.

    .venv/bin/python -m benchmarks.oneshot [--runs 20] [--messages 40] [--concurrency 4]
        [--tree DIR]     # another source tree (e.g. `git archive` of an older commit)

spawn: time from exec to the 220 greeting on the socket spawn(8) would hand over
(a socketpair here), with the shipped config/contentfilter.yaml (scanners
configured, not contacted before the first message).
pipe: messages per second of `contentfilter pipe` with no scanners and a
sendmail that only reads its input, one process per message as pipe(8) runs it,
`--concurrency` at a time (Postfix's maxproc for the pipe service), next to
`contentfilter serve` on the same harness (a session per message, no scanners).
"""

from __future__ import annotations

import argparse
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMAND = [str(Path(sys.prefix) / "bin" / "contentfilter")]
ENVIRONMENT: dict[str, str] | None = None  # with --tree: PYTHONPATH to that tree
CONFIG = ROOT / "config" / "contentfilter.yaml"
FLAGS = ["--log-file", "/dev/null", "-f", "alice@example.org", "--", "bob@example.com"]
MESSAGE = (ROOT / "samples" / "clean.eml").read_bytes()


def spawn_startup() -> tuple[float, float]:
    """Seconds from exec to the first byte of the greeting, and CPU seconds of the process
    (start, greeting, QUIT, exit): the part a busy machine does not inflate."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    ours, theirs = socket.socketpair()
    started = time.perf_counter()
    process = subprocess.Popen(
        [*COMMAND, "spawn", "-c", str(CONFIG), "--log-file", "/dev/null"],
        stdin=theirs.fileno(),
        stdout=theirs.fileno(),
        env=ENVIRONMENT,
    )
    theirs.close()
    greeting = ours.recv(512)
    elapsed = time.perf_counter() - started
    assert greeting.startswith(b"220 "), greeting
    ours.sendall(b"QUIT\r\n")
    ours.recv(512)
    ours.close()
    process.wait(30)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return elapsed, cpu


def pipe_once(sendmail: str) -> None:
    run = subprocess.run(
        [*COMMAND, "pipe", "--clamd", "off", "--spamd", "off", "--sendmail", sendmail, *FLAGS],
        input=MESSAGE,
        capture_output=True,
        env=ENVIRONMENT,
    )
    assert run.returncode == 0, run


def daemon_rate(messages: int, concurrency: int) -> float:
    """msg/s of `contentfilter serve` (no scanners) on the same harness, for comparison."""
    import smtplib

    from tests.support.daemons import CaptureSink, start_filter

    with CaptureSink() as sink, tempfile.TemporaryDirectory() as scratch:
        daemon = start_filter(Path(scratch), next_hop=sink.address, clamd="off", spamd="off")
        try:

            def send(_: int) -> None:
                with smtplib.SMTP(daemon.host, daemon.port) as client:
                    client.sendmail("alice@example.org", ["bob@example.com"], _crlf(MESSAGE))

            started = time.perf_counter()
            with ThreadPoolExecutor(concurrency) as pool:
                list(pool.map(send, range(messages)))
            return messages / (time.perf_counter() - started)
        finally:
            daemon.stop()


def _crlf(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--messages", type=int, default=40)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--tree", type=Path, help="run this source tree's contentfilter")
    parser.add_argument("--no-serve", action="store_true", help="skip the serve comparison")
    arguments = parser.parse_args()
    if arguments.tree is not None:
        global COMMAND, ENVIRONMENT, CONFIG
        tree = arguments.tree.resolve()
        COMMAND = [  # -P: the tree on PYTHONPATH, not the current directory, comes first
            sys.executable,
            "-P",
            "-c",
            "import sys; from contentfilter.cli import main; sys.exit(main())",
        ]
        ENVIRONMENT = dict(os.environ, PYTHONPATH=str(tree))
        CONFIG = tree / "config" / "contentfilter.yaml"  # its own: keys differ between trees
    runs = [spawn_startup() for _ in range(arguments.runs)]
    times = sorted(wall for wall, _ in runs)
    cpu = statistics.median(c for _, c in runs)
    print(
        f"spawn exec -> 220: median {statistics.median(times) * 1000:.0f} ms,"
        f" min {times[0] * 1000:.0f} ms, max {times[-1] * 1000:.0f} ms ({arguments.runs} runs);"
        f" CPU per session {cpu * 1000:.0f} ms"
    )
    with tempfile.TemporaryDirectory() as scratch:
        sendmail = Path(scratch) / "sendmail"
        sendmail.write_text("#!/bin/sh\nexec cat >/dev/null\n")
        sendmail.chmod(0o755)
        started = time.perf_counter()
        with ThreadPoolExecutor(arguments.concurrency) as pool:
            list(pool.map(lambda _: pipe_once(str(sendmail)), range(arguments.messages)))
        elapsed = time.perf_counter() - started
    print(
        f"pipe: {arguments.messages / elapsed:.1f} msg/s, {elapsed / arguments.messages * 1000:.0f}"
        f" ms per message ({arguments.messages} messages, {arguments.concurrency} at a time,"
        " no scanners)"
    )
    if not arguments.no_serve:
        rate = daemon_rate(arguments.messages * 5, arguments.concurrency)
        print(f"serve, same harness: {rate:.1f} msg/s (one SMTP session per message)")


if __name__ == "__main__":
    main()
