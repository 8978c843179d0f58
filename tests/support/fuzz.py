"""A seeded mutation fuzzer for the decoder: mutated archives inside mutated MIME.

Input number `i` of run `seed` is a pure function of (seed, i), so any input can be
rebuilt alone. Each input starts from a small valid container (zip, tar, tar.gz,
gzip, bzip2, xz, cab, 7z, rar, cpio, TNEF, BinHex, uuencode, nested zips), mutates
its bytes (bit flips, interesting values in length fields, inserted, deleted and
duplicated ranges, truncation, splices with another container), wraps it in a
message (multipart, nested multiparts, an attached message, or the whole body,
base64 or binary) and sometimes mutates the MIME text as well.

    python -m tests.support.fuzz --count 200000 --seed 7   # a longer local run

A longer run saves every failing input to tests/unit/decoder_cases/, where the
suite re-runs it always.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import bz2
import gzip
import io
import lzma
import random
import re
import struct
import sys
import tarfile
import time
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from tests.support import mimegen as g

CASES = Path(__file__).resolve().parents[1] / "unit" / "decoder_cases"
EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
TEXT = b"Minutes of the meeting\r\n" * 20
INTERESTING = (0, 1, 0x7F, 0x80, 0xFF, 0x7FFF, 0x8000, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF)


# --- seed containers ---------------------------------------------------------------------


def rar(members: dict[str, bytes]) -> bytes:
    """A RAR 4 archive with stored members (no rar tool needed)."""

    def block(head_type: int, flags: int, body: bytes) -> bytes:
        rest = struct.pack("<BHH", head_type, flags, 7 + len(body)) + body
        return struct.pack("<H", zlib.crc32(rest) & 0xFFFF) + rest

    out = b"Rar!\x1a\x07\x00" + block(0x73, 0, bytes(6))
    for name, data in members.items():
        encoded = name.encode()
        header = struct.pack(
            "<IIBIIBBHI", len(data), len(data), 0, zlib.crc32(data), 0, 20, 0x30, len(encoded), 0x20
        )
        out += block(0x74, 0x8000, header + encoded) + data
    return out + block(0x7B, 0x4000, b"")


def tar(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _testfile(name: str) -> bytes:
    path = g.CLAMAV_TESTFILES / name
    return path.read_bytes() if path.exists() else b""


@cache
def seeds() -> dict[str, bytes]:
    """The valid containers mutations start from (kind -> bytes), all small."""
    members = {"report.txt": TEXT, "setup.exe": g.tiny_pe(), "eicar.com": EICAR}
    found = {
        "zip": g.zip_archive(members),
        "zip-stored": g.zip_archive(members, zipfile.ZIP_STORED),
        "zip-in-zip": g.zip_archive({"inner.zip": g.zip_archive(members), "a.txt": TEXT}),
        "tar": tar(members),
        "tar.gz": g.tar_gz(members),
        "gzip": gzip.compress(TEXT, mtime=0),
        "bzip2": bz2.compress(TEXT),
        "xz": lzma.compress(TEXT),
        "rar": rar(members),
        "tnef": g.tnef([("report.doc", TEXT), ("setup.exe", g.tiny_pe())]),
        "uue": b"begin 644 setup.exe\r\n"
        + b"".join(
            binascii.b2a_uu(g.tiny_pe()[i : i + 45]).replace(b"\n", b"\r\n")
            for i in range(0, 360, 45)
        )
        + b"`\r\nend\r\n",
        "cab": _testfile("clam.cab"),
        "7z": _testfile("clam.7z"),
        "cpio": _testfile("clam.newc.cpio"),
        "binhex": _testfile("clam.exe.binhex"),
    }
    return {kind: data for kind, data in found.items() if data}


_NAMES = {
    "zip": "a.zip",
    "zip-stored": "b.zip",
    "zip-in-zip": "c.zip",
    "tar": "d.tar",
    "tar.gz": "e.tar.gz",
    "gzip": "f.txt.gz",
    "bzip2": "g.txt.bz2",
    "xz": "h.txt.xz",
    "rar": "i.rar",
    "tnef": "winmail.dat",
    "uue": "j.txt",
    "cab": "k.cab",
    "7z": "l.7z",
    "cpio": "m.cpio",
    "binhex": "n.hqx",
}


# --- mutations ---------------------------------------------------------------------------


def _flip_bit(rng: random.Random, data: bytearray) -> None:
    if data:
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)


def _set_byte(rng: random.Random, data: bytearray) -> None:
    if data:
        value = rng.choice((rng.randrange(256), *INTERESTING[:5]))
        data[rng.randrange(len(data))] = value & 0xFF


def _set_integer(rng: random.Random, data: bytearray) -> None:
    size = rng.choice((2, 4))
    if len(data) < size:
        return
    position = rng.randrange(len(data) - size + 1)
    value = rng.choice((*INTERESTING, len(data), len(data) + 1, rng.randrange(1 << (8 * size))))
    data[position : position + size] = (value & ((1 << (8 * size)) - 1)).to_bytes(
        size, rng.choice(("little", "big"))
    )


def _insert(rng: random.Random, data: bytearray) -> None:
    position = rng.randrange(len(data) + 1)
    data[position:position] = rng.randbytes(rng.randrange(1, 64))


def _delete(rng: random.Random, data: bytearray) -> None:
    if data:
        start = rng.randrange(len(data))
        del data[start : start + rng.randrange(1, 64)]


def _duplicate(rng: random.Random, data: bytearray) -> None:
    if data:
        start = rng.randrange(len(data))
        chunk = data[start : start + rng.randrange(1, 256)]
        position = rng.randrange(len(data) + 1)
        data[position:position] = chunk * rng.choice((1, 1, 2, 8))


def _truncate(rng: random.Random, data: bytearray) -> None:
    if data:
        del data[rng.randrange(len(data)) :]


def _splice(rng: random.Random, data: bytearray) -> None:
    other = rng.choice(list(seeds().values()))
    start = rng.randrange(len(data) + 1)
    data[start:] = other[rng.randrange(len(other)) :]


MUTATIONS: tuple[Callable[[random.Random, bytearray], None], ...] = (
    _flip_bit,
    _set_byte,
    _set_byte,
    _set_integer,
    _set_integer,
    _insert,
    _delete,
    _duplicate,
    _truncate,
    _splice,
)


def mutate(rng: random.Random, data: bytes, rounds: int) -> bytes:
    buffer = bytearray(data)
    for _ in range(rounds):
        rng.choice(MUTATIONS)(rng, buffer)
    return bytes(buffer)


def _mutate_mime(rng: random.Random, raw: bytes) -> bytes:
    """Line-level damage to the message text: what a broken or hostile mailer sends."""
    lines = raw.split(b"\r\n")
    for _ in range(rng.randrange(1, 4)):
        index = rng.randrange(len(lines))
        choice = rng.randrange(5)
        if choice == 0:
            del lines[index]
        elif choice == 1:
            lines.insert(index, lines[rng.randrange(len(lines))])
        elif choice == 2 and lines[index]:
            line = bytearray(lines[index])
            line[rng.randrange(len(line))] = rng.choice(b'-=";: \t\x00\xff')
            lines[index] = bytes(line)
        elif choice == 3:
            lines[index] = lines[index][: rng.randrange(len(lines[index]) + 1)]
        else:
            lines.insert(index, rng.choice((b"", b"--", b"Content-Type: multipart/mixed", b" ")))
    return b"\r\n".join(lines)


# --- whole messages ----------------------------------------------------------------------


def _wrap(rng: random.Random, kind: str, data: bytes) -> bytes:
    encoding = rng.choice(("base64", "base64", "base64", "8bit", "quoted-printable"))
    part = g.attachment(data, _NAMES[kind], encoding=encoding)

    def multipart(*parts: bytes, subtype: str = "mixed") -> bytes:
        return g.multipart(*parts, subtype=subtype, boundary=f"=_fuzz{rng.getrandbits(32):08x}")

    shape = rng.randrange(4)
    if shape == 0:
        entity = multipart(g.text(), part)
    elif shape == 1:
        entity = multipart(g.text(), part)
        for _ in range(rng.randrange(1, 5)):
            entity = multipart(entity, subtype=rng.choice(("mixed", "related", "alternative")))
    elif shape == 2:
        attached = g.rfc822(g.message(multipart(g.text(), part)), "forwarded.eml")
        entity = multipart(g.text(), attached)
    else:
        entity = g.entity(
            [
                f'Content-Type: application/octet-stream; name="{_NAMES[kind]}"',
                "Content-Transfer-Encoding: base64",
            ],
            base64.encodebytes(data).replace(b"\n", b"\r\n"),
        )
    raw = g.message(entity, f"fuzz {kind}")
    return _MESSAGE_ID.sub(f"Message-ID: <{rng.getrandbits(64):016x}@fuzz>".encode(), raw)


_MESSAGE_ID = re.compile(rb"Message-ID: <[^>\r\n]*>")


def message(seed: int, index: int) -> bytes:
    """Input `index` of the run `seed`: the same bytes every time."""
    rng = random.Random(f"{seed}:{index}")
    kind = rng.choice(sorted(seeds()))
    data = mutate(rng, seeds()[kind], min(1 + int(rng.expovariate(0.5)), 16))
    raw = _wrap(rng, kind, data)
    if rng.random() < 0.3:
        raw = _mutate_mime(rng, raw)
    return raw


def inputs(seed: int, start: int, count: int) -> Iterator[tuple[int, bytes]]:
    for index in range(start, start + count):
        yield index, message(seed, index)


# --- running -----------------------------------------------------------------------------

MAX_SAVED = 20  # failing inputs kept per run: more are usually the same bug

# problems that mean the decoder itself failed, not the message
FAILURES = ("Decoder crashed", "Decoder killed", "Decoder exited", "Decoder error")


@dataclass
class Report:
    inputs: int = 0
    failures: list[tuple[int, str]] | None = None
    slowest: float = 0.0
    unchecked: int = 0

    def __post_init__(self) -> None:
        self.failures = []


async def run(
    seed: int, start: int, count: int, workers: int = 2, timeout: float = 10.0
) -> tuple[Report, dict[int, bytes]]:
    """Decode every input in worker processes and check the daemon's side of each result.

    Returns the report and the failing inputs by index.
    """
    from contentfilter.decode import DecoderLimits, format_tree
    from contentfilter.decode.spool import Spool
    from contentfilter.decode.workers import DecoderPool
    from scanners.banned import BannedSettings, find_banned

    pool = DecoderPool(DecoderLimits(workers=workers, timeout=timeout))
    report = Report()
    failing: dict[int, bytes] = {}
    rules = BannedSettings().rule_table
    queue = iter(inputs(seed, start, count))

    async def one(index: int, raw: bytes) -> None:
        spool = Spool()
        started = time.perf_counter()
        try:
            decoded = await pool.decode(raw, spool)
            format_tree(decoded)
            find_banned(decoded, rules)
            failed = [p for p in decoded.problems if p.startswith(FAILURES)]
            report.unchecked += bool(decoded.problems)
        except Exception as error:  # daemon-side code must not raise for any message
            failed = [f"{type(error).__name__}: {error}"]
        finally:
            spool.remove()
        report.slowest = max(report.slowest, time.perf_counter() - started)
        report.inputs += 1
        if failed:
            assert report.failures is not None
            report.failures.append((index, failed[0]))
            failing[index] = raw

    async def lane() -> None:
        for index, raw in queue:
            await one(index, raw)

    try:
        await pool.start()
        await asyncio.gather(*(lane() for _ in range(workers * 2)))
    finally:
        await asyncio.to_thread(pool.close)
    return report, failing


def main() -> int:
    parser = argparse.ArgumentParser(description="Fuzz the decoder (see tests/support/fuzz.py)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=2)
    arguments = parser.parse_args()
    started = time.perf_counter()
    report, failing = asyncio.run(
        run(arguments.seed, arguments.start, arguments.count, arguments.workers)
    )
    for index, raw in sorted(failing.items())[:MAX_SAVED]:
        path = CASES / f"fuzz-{arguments.seed}-{index}.eml"
        path.write_bytes(raw)
        print(f"saved {path}")
    assert report.failures is not None
    print(
        f"{report.inputs} inputs in {time.perf_counter() - started:.1f} s, "
        f"slowest {report.slowest:.2f} s, {report.unchecked} UNCHECKED, "
        f"{len(report.failures)} failures: {sorted(report.failures)[:MAX_SAVED]}"
    )
    return 1 if failing else 0


if __name__ == "__main__":
    sys.exit(main())
