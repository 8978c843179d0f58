"""What decoding in worker processes costs per message, against decoding in-process.

    .venv/bin/python -m benchmarks.decoder_workers        # a table for BENCHMARKS.md

Three messages (a small text mail, a 100 KB zip attachment, a 2 MB attachment),
each decoded `--rounds` times one after the other through
`contentfilter.pipeline.Pipeline.decode`:

- in-process: no pool, no spool (the decoder as it ran before worker processes);
- in-process + spool: the same, writing the extracted parts to a spool directory;
- worker, no spool: a worker of a started pool (the IPC round trip), nothing written;
- worker + spool: what the filter does now (worker, extracted parts written), with
  the spool directory's creation and removal as `Pipeline.scan` does them.

Wall time per message (median and 90th percentile) on the event loop's side, and the
mean CPU time per message of the filter process and its decoder workers together
(from /proc: less sensitive than wall time to other load on the machine).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from contentfilter import config  # noqa: E402
from contentfilter.model import Envelope, Recipient  # noqa: E402
from contentfilter.pipeline import Pipeline  # noqa: E402
from contentfilter.rfc5322 import read_message  # noqa: E402
from tests.support import mimegen as g  # noqa: E402

try:
    from contentfilter.decode.spool import Spool
    from contentfilter.decode.workers import DecoderPool
except ImportError:  # a checkout from before worker processes: in-process only
    Spool = DecoderPool = None  # type: ignore[assignment,misc]


def messages() -> dict[str, bytes]:
    text = random.Random(1).choices(b"abcdefghij klmnop\r\n", k=90_000)
    return {
        "small text mail (1 KB)": g.message(g.text("Hello Bob,\r\nlunch at noon?\r\n"), "lunch"),
        "100 KB zip attachment": g.with_attachments(
            g.attachment(g.zip_archive({"report.txt": bytes(text)}), "report.zip")
        ),
        "2 MB attachment": g.with_attachments(g.attachment(os.urandom(2 * 1024 * 1024), "x.bin")),
    }


async def measure(
    pipeline: Pipeline, raw: bytes, rounds: int, spool: bool, temp_directory: str = ""
) -> list[float]:
    envelope = Envelope("a@example.org", (Recipient("b@example.com"),))
    message = read_message("bench-01", "bench", envelope, raw)
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        directory = Spool(temp_directory) if spool else None
        try:
            decoded = await (
                pipeline.decode(message, directory) if spool else pipeline.decode(message)
            )
        finally:
            if directory is not None:
                directory.remove()
        times.append(time.perf_counter() - started)
        assert not decoded.problems, decoded.problems
    return times


def cpu_seconds(pool: DecoderPool | None) -> float:
    """CPU time so far of this process and of the pool's workers."""
    total = time.process_time()
    ticks = os.sysconf("SC_CLK_TCK")
    for worker in list(pool._workers) if pool is not None else []:
        fields = Path(f"/proc/{worker.process.pid}/stat").read_text().rpartition(")")[2].split()
        total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    return total


async def main(rounds: int, temp_directory: str) -> None:
    settings = config.from_mapping({"scanners": {}})
    modes = {"in-process": (Pipeline(settings, [], None), False)}  # type: ignore[arg-type]
    pool = None
    if DecoderPool is not None:
        pool = DecoderPool(settings.decoder)
        await pool.start()
        in_worker = Pipeline(settings, [], None, decoder=pool)  # type: ignore[arg-type]
        modes["in-process + spool"] = (Pipeline(settings, [], None), True)  # type: ignore[arg-type]
        modes["worker, no spool"] = (in_worker, False)
        modes["worker + spool"] = (in_worker, True)
    print("| message | mode | median ms | p90 ms | CPU ms |")
    print("|---|---|---:|---:|---:|")
    for name, raw in messages().items():
        count = rounds if len(raw) < 1_000_000 else max(5, rounds // 10)
        for mode, (pipeline, spool) in modes.items():
            await measure(pipeline, raw, 3, spool, temp_directory)  # warm up
            cpu = cpu_seconds(pool)
            times = sorted(await measure(pipeline, raw, count, spool, temp_directory))
            cpu = (cpu_seconds(pool) - cpu) / count
            p90 = times[int(len(times) * 0.9) - 1]
            median = statistics.median(times)
            print(
                f"| {name} | {mode} | {median * 1000:.2f} | {p90 * 1000:.2f} | {cpu * 1000:.2f} |"
            )
    if pool is not None:
        pool.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--temp-directory", default="", help="where spools go (default: $TMPDIR)")
    arguments = parser.parse_args()
    asyncio.run(main(arguments.rounds, arguments.temp_directory))
