"""What keeping blocked mail costs: msg/s of the filter with a mix that quarantines 20%.

Starts `contentfilter serve` three times (quarantine off, SQLite, PostgreSQL) on the
same mix: 4 of 5 messages clean, 1 of 5 caught by a body rule of the banned
category (destiny discard, so kept). clamd and spamd are off, so the figures show the
store's share, not the scanners'. The next hop is benchmarks.sink; PostgreSQL is a
private server from Debian's package (tests/support/postgres.py) with fsync on, as a
real one runs. Run as root or as a user that may start PostgreSQL:

    .venv/bin/python benchmarks/quarantine.py [--messages 600] [--concurrency 4]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiosmtplib

from tests.support.daemons import filter_command
from tests.support.net import free_port, smtp_greeting, wait_until
from tests.support.postgres import start_postgres

RULES = """
scanners:
  clamav: false
  spamassassin: false
  bad_header: false
  banned: false
  marker:
    type: regex
    rules:
      - {body: "QUARANTINE-ME", category: banned, detail: "benchmark marker"}
cache: {enabled: false}
"""


def message(n: int, size: int) -> bytes:
    marker = b"QUARANTINE-ME\r\n" if n % 5 == 0 else b""
    filler = (b"All work and no play makes Jack a dull boy. " * 2 + b"\r\n") * (size // 90)
    return (
        (
            f"From: a@example.org\r\nTo: b@example.com\r\nSubject: bench {n}\r\n"
            f"Message-ID: <bench-{n}@example.org>\r\n\r\n"
        ).encode()
        + marker
        + filler
    )


async def send_all(port: int, count: int, concurrency: int, size: int) -> float:
    """Seconds to send `count` messages over `concurrency` sessions of 20 messages."""
    numbers = iter(range(count))

    async def worker() -> None:
        while True:
            batch = [n for _, n in zip(range(20), numbers, strict=False)]
            if not batch:
                return
            async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=120) as smtp:
                for n in batch:
                    await smtp.sendmail("a@example.org", ["b@example.com"], message(n, size))

    started = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.monotonic() - started


def run_filter(
    workdir: Path, sink_port: int, quarantine: str
) -> tuple[subprocess.Popen[bytes], int, Path]:
    port = free_port()
    config = workdir / f"bench-{port}.yaml"
    config.write_text(RULES + quarantine)
    argv = [*filter_command(), "serve", "-c", str(config), "--listen", f"127.0.0.1:{port}"]
    argv += ["--next-hop", f"127.0.0.1:{sink_port}", "--metrics", "off"]
    argv += ["--temp-directory", str(workdir / "tmp")]  # private, not a shared /tmp one
    if os.geteuid() == 0:  # keep root: the store's directory is ours (root's)
        argv.append("--allow-root")
    with open(workdir / f"filter-{port}.log", "wb") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=log)
    wait_until(lambda: smtp_greeting("127.0.0.1", port).startswith(b"220"), "filter", 60, process)
    return process, port, config


def measure(workdir: Path, sink_port: int, quarantine: str, args: argparse.Namespace) -> float:
    """msg/s of one filter run on the mix."""
    process, port, _config = run_filter(workdir, sink_port, quarantine)
    try:
        asyncio.run(send_all(port, 40, args.concurrency, args.size))  # warm-up
        seconds = asyncio.run(send_all(port, args.messages, args.concurrency, args.size))
    finally:
        process.terminate()
        process.wait(30)
    return args.messages / seconds


def kept(config_text: str, workdir: Path) -> str:
    """What the store holds (`quarantine stats`): proof that the kept 20% were kept."""
    config = workdir / "stats.yaml"
    config.write_text(config_text)
    result = subprocess.run(
        [*filter_command(), "quarantine", "stats", "-c", str(config)],
        capture_output=True,
        text=True,
        check=False,
    )
    return result.stdout.split("\n")[0] or result.stderr.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=600)
    parser.add_argument("--rounds", type=int, default=3, help="off/sqlite/postgresql in turn")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--size", type=int, default=8000, help="bytes of filler per message")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="contentfilter-bench-q-"))
    sink_port = free_port()
    sink = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.sink", "--listen", f"127.0.0.1:{sink_port}"],
        cwd=Path(__file__).resolve().parent.parent,
    )
    try:
        wait_until(
            lambda: smtp_greeting("127.0.0.1", sink_port).startswith(b"220"), "sink", 30, sink
        )
        with start_postgres(fsync=True) as server:
            modes = {
                "off": "quarantine: {enabled: false}\n",
                "sqlite": f"quarantine: {{directory: {workdir}/q}}\n",
                "postgresql": f"quarantine: {{database: '{server.create_database('bench')}'}}\n",
            }
            rates: dict[str, list[float]] = {name: [] for name in modes}
            for _ in range(args.rounds):  # in turn, so a busy moment hits every mode
                for name, text in modes.items():
                    rates[name].append(measure(workdir, sink_port, text, args))
            for name, text in modes.items():
                store = "" if name == "off" else f"; store: {kept(text, workdir)}"
                print(
                    f"{name:<11} median {statistics.median(rates[name]):7.1f} msg/s"
                    f" (runs: {', '.join(f'{r:.0f}' for r in rates[name])}){store}"
                )
    finally:
        sink.terminate()
        sink.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)
    print(
        f"{args.messages} messages per run, 1 in 5 kept, {args.concurrency} sessions,"
        f" {args.size} bytes; load average {os.getloadavg()[0]:.1f}"
    )


if __name__ == "__main__":
    main()
