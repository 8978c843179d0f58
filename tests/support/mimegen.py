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


def multipart(*parts: bytes, subtype: str = "mixed", boundary: str | None = None, close: bool = True) -> bytes:
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

    def add(self, name: str, payload: bytes, *, size: int, crc: int, method: int, flags: int = 0) -> None:
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
            "<IHHHHIIH", 0x06054B50, 0, 0, self._count, self._count,
            len(self._directory), len(self._body), 0,
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
        short = name[:8].upper() + ("." + name.rsplit(".", 1)[1][:3].upper() if "." in name else "")
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
