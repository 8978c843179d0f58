"""Do scanners run side by side? Two fake scanners that take 1 s each, one message.

Runs them through `contentfilter.pipeline.Pipeline.scan` (a TaskGroup, one task
per scanner) and, for comparison, one after the other. Side by side the wall
time is about the slowest scanner (~1 s), not the sum (~2 s):

    .venv/bin/python benchmarks/concurrency.py [--delay 1.0] [--scanners 2]

No sockets: the scanners sleep, as a scanner does while it waits for clamd or
spamd; the cache is off so every run really waits.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from contentfilter import config
from contentfilter.model import (
    Envelope,
    FailureAction,
    Message,
    Recipient,
    Scanner,
    ScanResult,
)
from contentfilter.pipeline import Pipeline
from contentfilter.relay import Delivery
from contentfilter.rfc5322 import read_message


class SlowScanner:
    """Waits `delay` seconds, then finds nothing."""

    needs_parts = False
    on_failure = FailureAction.TEMPFAIL

    def __init__(self, name: str, delay: float) -> None:
        self.name = name
        self.delay = delay
        self.timeout = delay * 10

    def cache_key(self, message: Message) -> None:
        return None

    async def scan(self, message: Message) -> ScanResult:
        await asyncio.sleep(self.delay)
        return ScanResult(self.name)

    async def close(self) -> None:
        pass


class NoNextHop:
    """Scanning alone never delivers."""

    label = "nowhere"

    async def deliver(
        self,
        envelope: Envelope,
        recipients: Sequence[Recipient],
        data: bytes,
    ) -> Delivery:
        raise AssertionError("the benchmark only scans")


async def measure(delay: float, count: int) -> tuple[float, float]:
    scanners: list[Scanner] = [SlowScanner(f"slow{n}", delay) for n in range(count)]
    pipeline = Pipeline(config.from_mapping({"scanners": {}}), scanners, NoNextHop())
    envelope = Envelope("alice@sender.example", (Recipient("bob@recipient.example"),))
    message = read_message("1-01", "bench", envelope, b"Subject: x\r\n\r\nhello\r\n")

    started = time.perf_counter()
    results = await pipeline.scan(message)
    side_by_side = time.perf_counter() - started
    assert [r.scanner for r in results] == [s.name for s in scanners]

    started = time.perf_counter()
    for scanner in scanners:
        await scanner.scan(message)
    one_after_another = time.perf_counter() - started
    return side_by_side, one_after_another


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--delay", type=float, default=1.0, help="seconds per scanner")
    parser.add_argument("--scanners", type=int, default=2, help="how many slow scanners")
    args = parser.parse_args(argv)
    side_by_side, one_after_another = asyncio.run(measure(args.delay, args.scanners))
    print(f"{args.scanners} scanners x {args.delay:g} s each")
    print(f"pipeline (concurrent): {side_by_side:.3f} s wall")
    print(f"one after another:     {one_after_another:.3f} s wall")


if __name__ == "__main__":
    main()
