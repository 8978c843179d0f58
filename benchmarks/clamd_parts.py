"""What it costs that clamd scans the extracted files too: clamd time and filter CPU per message.

    .venv/bin/python -m benchmarks.clamd_parts              # 40 messages of each kind
    .venv/bin/python -m benchmarks.clamd_parts --count 100

The ClamAV scanner alone (no SMTP, no other scanners) against a private clamd
with the test signatures, for the load generator's three kinds of message (a
small text mail, a 100 KB zip attachment, a 2 MB PDF attachment; unique bytes in
each, so neither our cache nor clamd's own clean-file cache serves a repeat),
scanned in four ways (each message in every way in turn):

    before        the raw message by INSTREAM over the unix socket (the scanner
                  until 2026-11-30)
    raw FILDES    the raw message by FILDES (a memfd) over the unix socket
    after, unix   raw by FILDES, then every extracted file in one IDSESSION by FILDES
    after, TCP    raw by INSTREAM, then every extracted file in one IDSESSION by INSTREAM

Per message: wall time of the scan (the time clamd costs a message), the
filter's CPU for the scan (decoding excluded: it is done before, in this
process), clamd's CPU (utime + stime from /proc, 10 ms ticks summed over the
run), clamd connections, and the files extracted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import messages  # noqa: E402
from contentfilter.mime import DecoderLimits, decode  # noqa: E402
from contentfilter.model import Envelope, Recipient  # noqa: E402
from contentfilter.rfc5322 import read_message  # noqa: E402
from scanners.clamav import ClamAVScanner, ClamAVSettings  # noqa: E402
from tests.support.daemons import start_clamd  # noqa: E402

KINDS: dict[str, Callable[[int], bytes]] = {
    "small": messages.small,
    "zip 100 KB": messages.zip100k,
    "attachment 2 MB": messages.pdf2m,
}
TICK = os.sysconf("SC_CLK_TCK")


def clamd_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


def modes(socket_path: str, tcp: str) -> dict[str, ClamAVSettings]:
    return {
        "before": ClamAVSettings(servers=(socket_path,), fildes=False, scan_parts=False),
        "raw FILDES": ClamAVSettings(servers=(socket_path,), scan_parts=False),
        "after, unix": ClamAVSettings(servers=(socket_path,)),
        "after, TCP": ClamAVSettings(servers=(tcp,)),
    }


@dataclass
class Tally:
    walls: list[float] = field(default_factory=list)
    cpu: float = 0.0
    clamd_cpu: float = 0.0
    files: int = 0

    def row(self, kind: str, mode: str, count: int) -> str:
        p90 = statistics.quantiles(self.walls, n=10)[-1]
        connections = 1 + (mode.startswith("after") and self.files > 0)
        return (
            f"| {kind} | {mode} | {statistics.median(self.walls) * 1000:.1f} ms, "
            f"{p90 * 1000:.1f} ms | {self.cpu / count * 1000:.2f} ms "
            f"| {self.clamd_cpu / count * 1000:.1f} ms | {connections} "
            f"| {self.files / count:.0f} |"
        )


async def run(count: int, workdir: Path) -> list[str]:
    """Each message is scanned in every mode in turn, so a change of load on the machine
    meets every mode alike."""
    rows = [
        "| message | mode | clamd time per message (median, p90) | filter CPU per message "
        "| clamd CPU per message | clamd connections | files extracted |",
        "|---|---|---|---|---|---|---|",
    ]
    limits = DecoderLimits()
    envelope = Envelope("bench@example.org", (Recipient("sink@example.com"),))
    with start_clamd(workdir / "clamd") as clamd:
        pid = clamd.process.pid
        scanners = {
            mode: ClamAVScanner("clamav", settings, limits)
            for mode, settings in modes(str(clamd.socket_path), clamd.address).items()
        }
        for kind, build in KINDS.items():
            tallies = {mode: Tally() for mode in scanners}
            for seq in range(count):
                for number, (mode, scanner) in enumerate(scanners.items()):
                    raw = build(1 + seq * len(scanners) + number)  # unique for every scan
                    tally = tallies[mode]
                    with tempfile.TemporaryDirectory(dir=workdir) as spool:
                        parts = decode(raw, limits, spool)
                        message = replace(
                            read_message(f"{seq}", "bench", envelope, raw), parts=parts
                        )
                        tally.files += len(parts.extracted)
                        clamd_started = clamd_cpu(pid)
                        started, cpu_started = time.perf_counter(), time.process_time()
                        result = await scanner.scan(message)
                        tally.cpu += time.process_time() - cpu_started
                        tally.walls.append(time.perf_counter() - started)
                        tally.clamd_cpu += clamd_cpu(pid) - clamd_started
                    assert not result.findings, result.findings
            rows += [tally.row(kind, mode, count) for mode, tally in tallies.items()]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=40, help="messages of each kind per mode")
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="clamd-parts-") as workdir:
        rows = asyncio.run(run(arguments.count, Path(workdir)))
    print("\n".join(rows))


if __name__ == "__main__":
    main()
