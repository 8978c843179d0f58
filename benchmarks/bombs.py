"""What decoding hostile messages costs: CPU seconds and peak memory per bomb.

    python -m benchmarks.bombs            # every bomb, a table for BENCHMARKS.md
    python -m benchmarks.bombs --json     # the same as JSON lines
    python -m benchmarks.bombs gzip-1g    # some of them

Each bomb is built and decoded in a fresh Python process, so one bomb's peak
cannot hide another's: the child reports its RSS just before decoding, its peak
RSS (VmHWM) after, the CPU time of `decode()` alone (user + system, all
threads) and the outcome. Bombs are built in memory without ever holding their
expanded size (see tests.support.mimegen); the message itself is in memory, as
it is in the filter.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from contentfilter.mime import DecoderLimits, decode  # noqa: E402
from tests.support import mimegen as g  # noqa: E402

GiB = 1024**3
MiB = 1024**2


def _attach(data: bytes, name: str) -> bytes:
    return g.with_attachments(g.attachment(data, name))


def _rfc822_nest(depth: int) -> bytes:
    inner = g.text("bottom\r\n")
    for _ in range(depth):
        inner = g.rfc822(g.message(inner))
    return g.message(inner)


BOMBS: dict[str, tuple[str, Callable[[], bytes]]] = {
    "zip-1g": ("zip, one member of 1 GiB of zeros", lambda: _attach(g.zeros_zip(GiB), "bomb.zip")),
    "gzip-1g": (
        "gzip of 1 GiB of zeros (no size up front)",
        lambda: _attach(g.zeros_gzip(GiB), "x.gz"),
    ),
    "gzip-64m": (
        "gzip of 64 MiB of zeros (message quota)",
        lambda: _attach(g.zeros_gzip(64 * MiB), "x.gz"),
    ),
    "42-zip": (
        "nested zips, 5 levels x 16, 16 MiB members",
        lambda: _attach(g.nested_zip_bomb(levels=5, fanout=16), "42.zip"),
    ),
    "zip-50k": ("zip with 50,000 entries", lambda: _attach(g.many_entries_zip(50_000), "many.zip")),
    "mime-500": ("multiparts nested 500 deep", lambda: g.nested_multiparts(500)),
    "mime-500-lines": (
        "multiparts nested 500 deep, 200,000 lines",
        lambda: g.nested_multiparts(500).replace(b"deep inside\r\n", b"x\r\n" * 200_000),
    ),
    "rfc822-1500": ("attached messages nested 1,500 deep", lambda: _rfc822_nest(1500)),
    "parts-5000": (
        "5,000 MIME parts",
        lambda: g.message(g.multipart(*(g.text(f"{i}\r\n") for i in range(5000)))),
    ),
    "binhex-rle": ("BinHex run-length bomb, 1:1000", lambda: _attach(g.binhex_rle_bomb(), "x.hqx")),
    "legit-30m": (
        "not a bomb: 30 MiB random attachment (base64)",
        lambda: _attach(os.urandom(30 * MiB), "video.bin"),
    ),
    "legit-zip-40m": (
        "not a bomb: zip of 40 MiB of text lines",
        lambda: _attach(
            g.zip_archive(
                {"log.txt": b"".join(b"line %d of the log\n" % i for i in range(2_000_000))}
            ),
            "logs.zip",
        ),
    ),
}


def _status(field: str) -> int:
    """A VmRSS/VmHWM value from /proc/self/status, in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def measure(name: str) -> dict[str, object]:
    """Build and decode one bomb in this process (call in a fresh one)."""
    description, build = BOMBS[name]
    raw = build()
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM: building is not decoding
    rss_before = _status("VmRSS")
    cpu_start, wall_start = time.process_time(), time.perf_counter()
    decoded = decode(raw, DecoderLimits())
    cpu, wall = time.process_time() - cpu_start, time.perf_counter() - wall_start
    return {
        "bomb": name,
        "description": description,
        "message_bytes": len(raw),
        "parts": sum(1 for _ in decoded.walk()),
        "cpu_s": round(cpu, 3),
        "wall_s": round(wall, 3),
        "rss_before_mb": round(rss_before / MiB, 1),
        "peak_rss_mb": round(_status("VmHWM") / MiB, 1),
        "problems": list(decoded.problems),
    }


def run_isolated(name: str) -> dict[str, object]:
    output = subprocess.run(
        [sys.executable, "-m", "benchmarks.bombs", "--child", name],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    result: dict[str, object] = json.loads(output)
    return result


def table(results: list[dict[str, object]]) -> str:
    lines = [
        "| bomb | message | CPU s | peak RSS MB (before decode) | parts | outcome |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for r in results:
        problems = r["problems"]
        assert isinstance(problems, list)
        outcome = problems[0] if problems else "decoded, no problem"
        size = int(str(r["message_bytes"]))
        lines.append(
            f"| {r['description']} | {size / MiB:.2f} MiB | {r['cpu_s']} "
            f"| {r['peak_rss_mb']} ({r['rss_before_mb']}) | {r['parts']} | {outcome} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("bombs", nargs="*", choices=[[], *BOMBS], help="default: all")
    parser.add_argument("--json", action="store_true", help="JSON lines instead of a table")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(measure(args.child)))
        return
    results = []
    for name in args.bombs or list(BOMBS):
        result = run_isolated(name)
        results.append(result)
        if args.json:
            print(json.dumps(result), flush=True)
    if not args.json:
        print(f"Python {sys.version.split()[0]}, DecoderLimits() defaults, one process per bomb\n")
        print(table(results))


if __name__ == "__main__":
    main()
