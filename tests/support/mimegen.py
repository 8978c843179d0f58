"""Builders for MIME messages, archives and bombs, as raw bytes.

Everything is written by hand rather than with `email.message` so that tests
control every byte: RFC 2231 continuations, RFC 2047 words in quoted
parameters, missing closing boundaries, damaged base64. Entities (a part's
header and body) are built first and wrapped into a message last; all lines
end in CRLF.
"""

from __future__ import annotations

import base64
import io
import itertools
import struct
import tarfile
import uuid
import zipfile
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path

CLAMAV_TESTFILES = Path("/usr/share/clamav-testfiles")
CLAM_EXE = CLAMAV_TESTFILES / "clam.exe"
_counter = itertools.count(1)


def message(entity: bytes, subject: str = "test", extra_headers: Sequence[str] = ()) -> bytes:
    """A complete message whose top-level entity is `entity` (header lines + blank + body)."""
    headers = [
        "From: Alice <alice@sender.example>",
        "To: Bob <bob@recipient.example>",
        f"Subject: {subject}",
        "Date: Thu, 20 Nov 2025 12:00:00 +0000",
        f"Message-ID: <{uuid.uuid4().hex}@sender.example>",
        "MIME-Version: 1.0",
        *extra_headers,
    ]
    return ("\r\n".join(headers) + "\r\n").encode() + entity


def entity(headers: Sequence[str], body: bytes) -> bytes:
    return ("\r\n".join(headers) + "\r\n\r\n").encode() + body


def text(body: str = "Hello Bob,\r\nsee attached.\r\n", subtype: str = "plain") -> bytes:
    return entity([f"Content-Type: text/{subtype}; charset=utf-8"], body.encode())


def attachment(
    data: bytes,
    filename: str | None = None,
    content_type: str = "application/octet-stream",
    encoding: str = "base64",
    *,
    disposition: str | None = None,
    type_params: str | None = None,
) -> bytes:
    """An attachment entity; `disposition`/`type_params` replace the generated parameters."""
    if type_params is None:
        type_params = f'; name="{filename}"' if filename else ""
    if disposition is None:
        disposition = f'attachment; filename="{filename}"' if filename else "attachment"
    if encoding == "base64":
        body = base64.encodebytes(data).replace(b"\n", b"\r\n")
    elif encoding == "quoted-printable":
        import quopri

        body = quopri.encodestring(data).replace(b"\n", b"\r\n")
    else:
        body = data
    headers = [
        f"Content-Type: {content_type}{type_params}",
        f"Content-Disposition: {disposition}",
        f"Content-Transfer-Encoding: {encoding}",
    ]
    return entity(headers, body)


def multipart(
    *parts: bytes, subtype: str = "mixed", boundary: str | None = None, close: bool = True
) -> bytes:
    """A multipart entity; `close=False` leaves out the closing delimiter."""
    boundary = boundary or f"=_b{next(_counter)}_{uuid.uuid4().hex[:8]}"
    body = b"".join(b"--" + boundary.encode() + b"\r\n" + part + b"\r\n" for part in parts)
    if close:
        body += b"--" + boundary.encode() + b"--\r\n"
    return entity([f'Content-Type: multipart/{subtype}; boundary="{boundary}"'], body)


def rfc822(inner: bytes, filename: str | None = None) -> bytes:
    """An attached message (message/rfc822 entity)."""
    headers = ["Content-Type: message/rfc822"]
    if filename:
        headers.append(f'Content-Disposition: attachment; filename="{filename}"')
    return entity(headers, inner)


def with_attachments(*attachments: bytes, subject: str = "test") -> bytes:
    """The usual shape: multipart/mixed with a text part and the attachments."""
    return message(multipart(text(), *attachments), subject)


def nested_multiparts(depth: int) -> bytes:
    """A message whose multiparts nest `depth` deep around one text part."""
    inner = text("deep inside\r\n")
    for _ in range(depth):
        inner = multipart(inner)
    return message(inner, "nested")


def tiny_pe(dll: bool = False) -> bytes:
    """A harmless 1 KiB Windows executable (or DLL): valid headers, one `ret` instruction.

    libmagic calls it "PE32 executable (GUI) Intel 80386, for MS Windows"; no
    virus scanner has a reason to, unlike clam.exe.
    """
    dos = bytearray(64)
    dos[0:2] = b"MZ"
    struct.pack_into("<I", dos, 0x3C, 64)  # e_lfanew: the PE header follows at once
    characteristics = 0x0102 | (0x2000 if dll else 0)  # EXECUTABLE_IMAGE|32BIT_MACHINE[|DLL]
    coff = struct.pack("<4sHHIIIHH", b"PE\0\0", 0x14C, 1, 0, 0, 0, 0xE0, characteristics)
    optional = bytearray(0xE0)
    struct.pack_into("<HBBIIIIII", optional, 0, 0x10B, 1, 0, 0x200, 0, 0, 0x1000, 0x1000, 0x1000)
    struct.pack_into("<III", optional, 28, 0x400000, 0x1000, 0x200)
    struct.pack_into("<HHHHHH", optional, 40, 4, 0, 0, 0, 4, 0)
    struct.pack_into("<IIII", optional, 56, 0x2000, 0x200, 0, 0)
    struct.pack_into("<HH", optional, 68, 2, 0)  # subsystem: Windows GUI
    struct.pack_into("<IIIIII", optional, 72, 0x100000, 0x1000, 0x100000, 0x1000, 0, 16)
    section = struct.pack(
        "<8sIIIIIIHHI", b".text", 0x1000, 0x1000, 0x200, 0x200, 0, 0, 0, 0, 0x60000020
    )
    headers = bytes(dos) + coff + bytes(optional) + section
    return headers + bytes(0x200 - len(headers)) + b"\xc3" + bytes(0x1FF)


# --- archives ---------------------------------------------------------------------------


def zip_archive(members: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def tar_gz(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


class RawZip:
    """A zip writer for what zipfile cannot do: precompressed data, encryption.

    Enough of APPNOTE.TXT for libarchive and unzip: local headers, a central
    directory and its end record; no zip64, so members stay below 4 GiB.
    """

    def __init__(self) -> None:
        self._body = bytearray()
        self._directory = bytearray()
        self._count = 0

    def add(
        self, name: str, payload: bytes, *, size: int, crc: int, method: int, flags: int = 0
    ) -> None:
        """Add a member whose stored bytes are `payload` (compressed/encrypted already)."""
        encoded = name.encode()
        fields = (20, flags, method, 0, 0x21, crc, len(payload), size, len(encoded))
        local = struct.pack("<IHHHHHIIIHH", 0x04034B50, *fields, 0)
        offset = len(self._body)
        self._body += local + encoded + payload
        central = struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, *fields, 0, 0, 0, 0, 0, offset)
        self._directory += central + encoded
        self._count += 1

    def add_encrypted(self, name: str, data: bytes, password: bytes = b"secret") -> None:
        """A stored member under traditional PKWARE encryption (ZipCrypto)."""
        crc = zlib.crc32(data)
        cipher = _ZipCrypto(password)
        header = bytes(11) + bytes([crc >> 24])  # the last byte lets unzip check the password
        self.add(name, cipher.encrypt(header + data), size=len(data), crc=crc, method=0, flags=1)

    def getvalue(self) -> bytes:
        end = struct.pack(
            "<IHHHHIIH",
            0x06054B50,
            0,
            0,
            self._count,
            self._count,
            len(self._directory),
            len(self._body),
            0,
        )
        return bytes(self._body + self._directory + end)


class _ZipCrypto:
    def __init__(self, password: bytes) -> None:
        self.keys = [0x12345678, 0x23456789, 0x34567890]
        for byte in password:
            self._update(byte)

    @staticmethod
    def _crc(value: int, byte: int) -> int:
        return ~zlib.crc32(bytes([byte]), ~value & 0xFFFFFFFF) & 0xFFFFFFFF

    def _update(self, byte: int) -> None:
        keys = self.keys
        keys[0] = self._crc(keys[0], byte)
        keys[1] = ((keys[1] + (keys[0] & 0xFF)) * 134775813 + 1) & 0xFFFFFFFF
        keys[2] = self._crc(keys[2], keys[1] >> 24)

    def encrypt(self, data: bytes) -> bytes:
        out = bytearray()
        for byte in data:
            temp = (self.keys[2] | 2) & 0xFFFF
            out.append(byte ^ (((temp * (temp ^ 1)) >> 8) & 0xFF))
            self._update(byte)
        return bytes(out)


def encrypted_zip(members: dict[str, bytes]) -> bytes:
    archive = RawZip()
    for name, data in members.items():
        archive.add_encrypted(name, data)
    return archive.getvalue()


def zeros_zip(size: int, name: str = "zeros.bin") -> bytes:
    """A zip bomb: one member of `size` zero bytes, made without compressing them all.

    After a full flush the deflate state is back to its start, so one compressed
    mebibyte of zeros can be repeated as often as needed.
    """
    chunk = 1024 * 1024
    assert size % chunk == 0
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = compressor.compress(bytes(chunk)) + compressor.flush(zlib.Z_FULL_FLUSH)
    payload = block * (size // chunk) + compressor.flush()
    crc = 0
    zeros = bytes(chunk)
    for _ in range(size // chunk):
        crc = zlib.crc32(zeros, crc)
    archive = RawZip()
    archive.add(name, payload, size=size, crc=crc, method=8)
    return archive.getvalue()


def zeros_gzip(size: int) -> bytes:
    """A gzip bomb (RFC 1952): `size` zero bytes, no size announced anywhere but the trailer."""
    chunk = 1024 * 1024
    assert size % chunk == 0
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = compressor.compress(bytes(chunk)) + compressor.flush(zlib.Z_FULL_FLUSH)
    crc = 0
    for _ in range(size // chunk):
        crc = zlib.crc32(bytes(chunk), crc)
    header = b"\x1f\x8b\x08\x00" + bytes(4) + b"\x02\xff"
    trailer = struct.pack("<II", crc, size & 0xFFFFFFFF)
    return header + block * (size // chunk) + compressor.flush() + trailer


def binhex_rle_bomb(runs: int = 500_000) -> bytes:
    """BinHex 4.0 text whose run-length code expands 1,000-fold: 0x90 0xFF repeats 254 times."""
    fork = b"\x00" + b"\x90\xff" * runs
    header = (
        b"\x01x\x00" + b"TEXTttxt" + b"\x00\x00" + struct.pack(">II", 254 * runs, 0) + b"\x00\x00"
    )
    encoded = base64.b64encode(header + fork).rstrip(b"=")
    alphabet = b"!\"#$%&'()*+,-012345689@ABCDEFGHIJKLMNPQRSTUVXYZ[`abcdefhijklmpqr"
    standard = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    hqx = encoded.translate(bytes.maketrans(standard, alphabet))
    lines = b"\r\n".join(hqx[i : i + 64] for i in range(0, len(hqx), 64))
    return b"(This file must be converted with BinHex 4.0)\r\n:" + lines + b":\r\n"


def nested_zip_bomb(levels: int = 5, fanout: int = 16, leaf_size: int = 16 * 1024 * 1024) -> bytes:
    """A 42.zip-style bomb: `fanout` copies of the level below at every level."""
    current = zeros_zip(leaf_size, "0.bin")
    leaf = zipfile.ZipFile(io.BytesIO(current))
    assert leaf.namelist() == ["0.bin"]
    archive = RawZip()
    for index in range(fanout):  # the bottom level: many big members
        info = leaf.getinfo("0.bin")
        raw = current[30 + len(b"0.bin") : 30 + len(b"0.bin") + info.compress_size]
        archive.add(f"{index}.bin", raw, size=info.file_size, crc=info.CRC, method=8)
    current = archive.getvalue()
    for level in range(levels - 1):
        current = zip_archive({f"lib{level}_{i}.zip": current for i in range(fanout)})
    return current


def many_entries_zip(count: int) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for index in range(count):
            archive.writestr(f"f{index}.txt", b"")
    return buffer.getvalue()


# --- TNEF ---------------------------------------------------------------------------------

_TNEF_SIGNATURE = 0x223E9F78


def tnef(attachments: Iterable[tuple[str, bytes]], long_names: bool = True) -> bytes:
    """A winmail.dat with the given (name, data) attachments ([MS-OXTNEF])."""
    out = struct.pack("<IH", _TNEF_SIGNATURE, 0x0001)
    out += _tnef_attribute(1, 0x00089006, struct.pack("<I", 0x00010000))  # attTnefVersion
    out += _tnef_attribute(1, 0x00069007, struct.pack("<II", 1252, 0))  # attOemCodepage
    out += _tnef_attribute(1, 0x00078008, b"IPM.Microsoft Mail.Note\0")  # attMessageClass
    for name, data in attachments:
        out += _tnef_attribute(2, 0x00069002, bytes(14))  # attAttachRendData
        stem, dot, extension = name.rpartition(".") if "." in name else (name, "", "")
        short = stem[:8].upper() + dot + extension[:3].upper()
        out += _tnef_attribute(2, 0x00018010, short.encode("cp1252") + b"\0")  # attAttachTitle
        out += _tnef_attribute(2, 0x0006800F, data)  # attAttachData
        if long_names:
            out += _tnef_attribute(2, 0x00069005, _mapi_long_filename(name))  # attAttachment
    return out


def _tnef_attribute(level: int, attribute: int, data: bytes) -> bytes:
    checksum = sum(data) & 0xFFFF
    return struct.pack("<BII", level, attribute, len(data)) + data + struct.pack("<H", checksum)


def _mapi_long_filename(name: str) -> bytes:
    value = name.encode("utf-16-le") + b"\0\0"
    padded = value + bytes(-len(value) % 4)
    prop = struct.pack("<HH", 0x001F, 0x3707) + struct.pack("<II", 1, len(value)) + padded
    return struct.pack("<I", 1) + prop


# --- the banned samples in samples/ ------------------------------------------------------


def _sample(subject: str, *attachments: bytes, number: int) -> bytes:
    boundary = f"=_sample_{number}"
    body = multipart(
        text("Hello Bob,\r\n\r\nplease see the attachment.\r\n"), *attachments, boundary=boundary
    )
    headers = [
        "From: Alice Example <alice@example.org>",
        "To: Bob Example <bob@example.com>",
        f"Subject: {subject}",
        "Date: Fri, 20 Nov 2026 10:00:00 +0000",
        f"Message-ID: <banned-{number}@example.org>",
        "MIME-Version: 1.0",
    ]
    return ("\r\n".join(headers) + "\r\n").encode() + body


def samples() -> dict[str, bytes]:
    """The sample messages for `contentfilter scan` and the manual (LF line ends on disk)."""
    pe = tiny_pe()
    forwarded = message(multipart(text(), attachment(pe, "screensaver.scr")), "Fwd: fun")
    messages = {
        "banned-exe.eml": _sample("Invoice", attachment(pe, "invoice.exe"), number=1),
        "banned-double-extension.eml": _sample(
            "Rechnung", attachment(pe, "Rechnung.pdf.scr", "application/pdf"), number=2
        ),
        "banned-rfc2047-name.eml": _sample(
            "Zahlung", attachment(pe, "=?UTF-8?B?WmFobHVuZ3NhdmlzLmV4ZQ==?="), number=3
        ),
        "banned-disguised-exe.eml": _sample(
            "Report", attachment(pe, "report.txt", "text/plain"), number=4
        ),
        "banned-tnef-exe.eml": _sample(
            "Outlook",
            attachment(tnef([("Setup Tool.exe", pe)]), "winmail.dat", "application/ms-tnef"),
            number=5,
        ),
        "banned-in-forwarded-message.eml": _sample("Fwd", rfc822(forwarded, "fun.eml"), number=6),
        "unchecked-encrypted-zip.eml": _sample(
            "Confidential",
            attachment(encrypted_zip({"salaries.txt": b"secret\n"}), "salaries.zip"),
            number=7,
        ),
    }
    return {name: raw.replace(b"\r\n", b"\n") for name, raw in messages.items()}


if __name__ == "__main__":  # python -m tests.support.mimegen samples/
    import sys

    for file_name, content in samples().items():
        (Path(sys.argv[1]) / file_name).write_bytes(content)
