"""The benchmark's message mix: deterministic, and unique per message.

Every message carries its sequence number in an `X-Bench-Seq` header and a unique
line in its body, and every attachment has unique bytes, so no result cache can
serve a repeat: not amavisd-new's body-digest cache, not clamd's per-file cache.
Line endings are CRLF and lines are short, as on the wire; no line starts with a
dot, so the bytes need no dot-stuffing.
"""

from __future__ import annotations

import base64
import io
import random
import zipfile
from collections.abc import Callable
from dataclasses import dataclass

EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
GTUBE = b"XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"

SENDER = "sender@example.org"
RECIPIENT = "recipient@example.com"

_WORDS = (
    "the",
    "quarterly",
    "report",
    "invoice",
    "meeting",
    "schedule",
    "project",
    "budget",
    "review",
    "attached",
    "please",
    "find",
    "below",
    "regards",
    "thanks",
    "update",
    "delivery",
    "customer",
    "account",
    "order",
    "shipment",
    "contract",
    "draft",
    "agenda",
    "minutes",
    "proposal",
    "summary",
    "figures",
    "team",
    "office",
    "monday",
    "tuesday",
    "friday",
    "week",
    "month",
    "year",
    "client",
    "server",
    "network",
    "backup",
    "policy",
)

# A blob of random bytes made once; attachments are slices of it with a unique
# prefix, which is far cheaper than fresh random bytes per message.
_BLOB = random.Random(20240229).randbytes(40 * 1024 * 1024)


@dataclass(frozen=True)
class Kind:
    """One message type of the mix."""

    name: str
    build: Callable[[int], bytes]
    description: str


def _text(rng: random.Random, size: int) -> bytes:
    """Plausible plain text of about `size` bytes in lines under 78 characters."""
    words = rng.choices(_WORDS, k=size // 6 + 12)
    lines: list[str] = []
    total = 0
    index = 0
    while total < size:
        count = 6 + (index % 6)
        line = " ".join(words[index : index + count]).capitalize() + "."
        index = (index + count) % (len(words) - 12)
        lines.append(line)
        total += len(line) + 2
    return "\r\n".join(lines).encode() + b"\r\n"


def _headers(seq: int, subject: str, content_type: str) -> bytes:
    return (
        f"Received: from client.example.org (client.example.org [192.0.2.10])\r\n"
        f"\tby mx.example.com (Postfix) with ESMTPS id 4Bench{seq:08d}\r\n"
        f"\tfor <{RECIPIENT}>; Thu, 29 Feb 2024 12:00:00 +0000 (UTC)\r\n"
        f"From: Sender Name <{SENDER}>\r\n"
        f"To: Recipient Name <{RECIPIENT}>\r\n"
        f"Subject: {subject} #{seq}\r\n"
        f"Date: Thu, 29 Feb 2024 12:00:00 +0000\r\n"
        f"Message-ID: <bench.{seq}@example.org>\r\n"
        f"X-Bench-Seq: {seq}\r\n"
        f"MIME-Version: 1.0\r\n"
        f"Content-Type: {content_type}\r\n"
    ).encode()


def _b64(data: bytes) -> bytes:
    return base64.encodebytes(data).replace(b"\n", b"\r\n")


def _unique_bytes(seq: int, size: int) -> bytes:
    """`size` bytes of random-looking data that differ for every `seq`."""
    start = (seq * 7919) % (len(_BLOB) - size) if size < len(_BLOB) else 0
    prefix = f"bench-unique-{seq:012d}|".encode()
    return (prefix + _BLOB[start : start + size])[:size]


def _multipart(
    seq: int, subject: str, text: bytes, attachment: bytes, mime: str, name: str
) -> bytes:
    boundary = f"=_bench_{seq:08d}"
    return (
        _headers(seq, subject, f'multipart/mixed; boundary="{boundary}"')
        + b"\r\n"
        + f"--{boundary}\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n".encode()
        + text
        + f'--{boundary}\r\nContent-Type: {mime}; name="{name}"\r\n'
        f"Content-Transfer-Encoding: base64\r\n"
        f'Content-Disposition: attachment; filename="{name}"\r\n\r\n'.encode()
        + _b64(attachment)
        + f"--{boundary}--\r\n".encode()
    )


def small(seq: int) -> bytes:
    """About 3 KB of clean plain text."""
    rng = random.Random(seq)
    body = f"Reference {seq}-{rng.getrandbits(64):016x}\r\n".encode() + _text(rng, 2300)
    return _headers(seq, "Meeting notes", "text/plain; charset=us-ascii") + b"\r\n" + body


def _zip(seq: int, rng: random.Random) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("notes.txt", _text(rng, 60_000))
        # Random bytes do not compress: store them, as zip tools do.
        archive.writestr("data.bin", _unique_bytes(seq, 62_000), zipfile.ZIP_STORED)
    return buffer.getvalue()


def zip100k(seq: int) -> bytes:
    """About 100 KB: a short note and a zip of a text file and binary data."""
    rng = random.Random(seq)
    return _multipart(
        seq, "Report", _text(rng, 600), _zip(seq, rng), "application/zip", "report.zip"
    )


def _pdf(seq: int, size: int) -> bytes:
    """A PDF-shaped file: header, one binary stream object, trailer."""
    stream = _unique_bytes(seq, size)
    return (
        b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Length "
        + str(len(stream)).encode()
        + b" >>\nstream\n"
        + stream
        + b"\nendstream\nendobj\ntrailer\n<< /Root 1 0 R >>\n%%EOF\n"
    )


def pdf2m(seq: int) -> bytes:
    """About 2 MB: a short note and a 1.5 MB PDF-sized attachment."""
    rng = random.Random(seq)
    return _multipart(
        seq,
        "Scanned document",
        _text(rng, 600),
        _pdf(seq, 1_500_000),
        "application/pdf",
        "scan.pdf",
    )


def big50m(seq: int) -> bytes:
    """About 50 MB (50,000,000 bytes give or take): a 36 MB PDF-sized attachment."""
    rng = random.Random(seq)
    return _multipart(
        seq, "Large file", _text(rng, 600), _pdf(seq, 36_400_000), "application/pdf", "big.pdf"
    )


def eicar(seq: int) -> bytes:
    """Small message whose body carries the EICAR test string."""
    rng = random.Random(seq)
    body = _text(rng, 400) + EICAR + b"\r\n" + f"Reference {seq}\r\n".encode()
    return _headers(seq, "Test file", "text/plain; charset=us-ascii") + b"\r\n" + body


def gtube(seq: int) -> bytes:
    """Small message whose body carries the GTUBE test string."""
    rng = random.Random(seq)
    body = _text(rng, 800) + GTUBE + b"\r\n" + f"Reference {seq}\r\n".encode()
    return _headers(seq, "Test spam mail (GTUBE)", "text/plain; charset=us-ascii") + b"\r\n" + body


KINDS: dict[str, Kind] = {
    kind.name: kind
    for kind in (
        Kind("small", small, "~3 KB clean plain text"),
        Kind("zip100k", zip100k, "~100 KB, zip attachment"),
        Kind("pdf2m", pdf2m, "~2 MB, PDF-sized attachment"),
        Kind("eicar", eicar, "small, EICAR in the body"),
        Kind("gtube", gtube, "small, GTUBE in the body"),
        Kind("big50m", big50m, "~50 MB, one attachment"),
    )
}

# The realistic blend: most mail is small text; some carries office attachments;
# a few large scans; a little spam and malware. Mean size is about 80 KB.
BLEND: tuple[tuple[str, float], ...] = (
    ("small", 0.75),
    ("zip100k", 0.15),
    ("pdf2m", 0.03),
    ("gtube", 0.05),
    ("eicar", 0.02),
)

MIXES: tuple[str, ...] = ("small", "zip100k", "pdf2m", "eicar", "gtube", "blend")


def kind_for(mix: str, index: int) -> str:
    """The kind of message number `index` of `mix`: the same in every run."""
    if mix != "blend":
        if mix not in KINDS:
            raise ValueError(f"unknown mix {mix!r}; choose from {', '.join(MIXES)}")
        return mix
    point = random.Random(index * 2654435761).random()
    for name, weight in BLEND:
        point -= weight
        if point < 0:
            return name
    return BLEND[0][0]


def build(kind: str, unique: int) -> bytes:
    """A message of `kind` whose bytes are unique to the number `unique`."""
    return KINDS[kind].build(unique)
