"""Files carried as text inside a part: uuencode (and its base64 variant) and BinHex 4.0.

uuencoded files turn up inside plain-text bodies, where MIME readers do not see
them but mail clients still offer them as attachments (amavisd-new has
MIME::Parser extract them). BinHex 4.0 is the Macintosh equivalent; Python
dropped its `binhex` module in 3.11, so it is decoded here (format: RFC 1741).
"""

from __future__ import annotations

import binascii
import re
import struct

from contentfilter.decode.content import Content
from contentfilter.decode.session import Member, Members, Node, Session

# "begin 644 name": RFC-less but stable since 4.0BSD; "begin-base64" is `uuencode -m`
_BEGIN = re.compile(rb"^begin(-base64)? +[0-7]{3,4} +(.*?)[ \t]*\r?$", re.MULTILINE)
_UU_END = re.compile(rb"^end[ \t]*\r?$", re.MULTILINE)
_B64_END = re.compile(rb"^====[ \t]*\r?$", re.MULTILINE)


def has_uuencoded(data: bytes) -> bool:
    return _BEGIN.search(data) is not None


def uuencoded_members(session: Session, node: Node, content: Content) -> Members:
    """Every uuencoded file in a text, in order."""
    data = content.read_all()
    position = 0
    while (begin := _BEGIN.search(data, position)) is not None:
        is_base64, name = begin.group(1) is not None, begin.group(2).decode("utf-8", "replace")
        end = (_B64_END if is_base64 else _UU_END).search(data, begin.end())
        body = data[begin.end() : end.start() if end else len(data)]
        position = end.end() if end else len(data)
        if end is None:
            session.problem("uuencoded file without an end line", node)
        decoded = binascii.a2b_base64(body) if is_base64 else _uudecode(body)
        yield _member(session, node, (name,), decoded)


def uudecode_body(body: bytes) -> bytes:
    """A part sent with Content-Transfer-Encoding x-uuencode: one file, begin line optional."""
    begin = _BEGIN.search(body)
    if begin is None:
        return _uudecode(body)
    end = _UU_END.search(body, begin.end())
    return _uudecode(body[begin.end() : end.start() if end else len(body)])


def _uudecode(body: bytes) -> bytes:
    out = bytearray()
    for line in body.splitlines():
        if not line.strip() or line.rstrip() == b"`":
            continue
        try:
            out += binascii.a2b_uu(line)
        except binascii.Error:
            # some encoders pad lines with extra characters: cut to the announced length
            length = (((line[0] - 32) & 63) * 4 + 5) // 3
            try:
                out += binascii.a2b_uu(line[:length])
            except binascii.Error:
                continue
    return bytes(out)


# --- BinHex 4.0 -----------------------------------------------------------------------

_HQX_ALPHABET = b"!\"#$%&'()*+,-012345689@ABCDEFGHIJKLMNPQRSTUVXYZ[`abcdefhijklmpqr"
_TO_BASE64 = bytes.maketrans(
    _HQX_ALPHABET, b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
)
_MAX_TEXT = 8 * 1024 * 1024  # BinHex is rare; its run-length code is decoded in Python
_HQX_START = re.compile(rb"\(This file must be converted with BinHex[^)\r\n]*\)[ \t]*\r?\n\s*:")
_RLE_MARKER = 0x90


class BinHexError(ValueError):
    """The BinHex text is damaged."""


def binhex_members(session: Session, node: Node, content: Content) -> Members:
    """The data fork of a BinHex 4.0 file, named as in its header."""
    # run-length coding seldom gains 2:1 on real files; 4:1 is generous and keeps a
    # bomb's expansion small, since it is decoded in memory
    limit = min(session.limits.max_member_size, session.quota_left, 4 * content.size + 4096)
    try:
        if content.size > _MAX_TEXT:
            raise BinHexError(f"larger than {_MAX_TEXT} bytes")
        name, data_fork = _binhex_decode(content.read_all(), limit)
    except BinHexError as error:
        session.problem(f"BinHex could not be decoded ({error})", node)
        return
    yield _member(session, node, (name,) if name else (), data_fork)


def _binhex_decode(text: bytes, limit: int) -> tuple[str, bytes]:
    start = _HQX_START.search(text)
    begin = start.end() if start else text.find(b":") + 1
    if begin <= 0:
        raise BinHexError("no start marker")
    end = text.find(b":", begin)
    if end < 0:
        raise BinHexError("no end marker")
    data = _run_length_decode(_six_bit_decode(text[begin:end]), limit)
    length = data[0] if data else 0
    if len(data) < 1 + length + 21:
        raise BinHexError("truncated header")
    header = data[: 1 + length + 19]
    name = data[1 : 1 + length].decode("mac_roman", "replace")
    data_length, _resource_length = struct.unpack_from(">II", header, 1 + length + 11)
    _check_crc(header, data, len(header))
    fork_start = len(header) + 2
    data_fork = data[fork_start : fork_start + data_length]
    if len(data_fork) < data_length:
        raise BinHexError("truncated data fork")
    _check_crc(data_fork, data, fork_start + data_length)
    return name, bytes(data_fork)


def _six_bit_decode(text: bytes) -> bytes:
    """BinHex packs bits as base64 does, with another alphabet and no padding."""
    text = text.translate(None, b" \t\r\n")
    if text.translate(None, _HQX_ALPHABET):
        raise BinHexError("invalid characters")
    text = text.translate(_TO_BASE64)
    text = text[: len(text) - 1] if len(text) % 4 == 1 else text
    return binascii.a2b_base64(text + b"=" * (-len(text) % 4))


def _run_length_decode(data: bytes, limit: int) -> bytearray:
    """0x90 n: repeat the previous byte n-1 more times (0x90 0x00 is 0x90 itself)."""
    out = bytearray()
    index = 0
    while (marker := data.find(_RLE_MARKER, index)) >= 0 and marker + 1 < len(data):
        out += data[index:marker]
        repeat = data[marker + 1]
        if repeat == 0:
            out.append(_RLE_MARKER)
        elif out:
            out += bytes([out[-1]]) * (repeat - 1)
        index = marker + 2
        if len(out) > limit:
            raise BinHexError("expands beyond the size limits")
    out += data[index:]
    return out


def _check_crc(covered: bytes | bytearray, data: bytearray, crc_at: int) -> None:
    if crc_at + 2 > len(data):
        raise BinHexError("truncated checksum")
    expected = struct.unpack_from(">H", data, crc_at)[0]
    if binascii.crc_hqx(bytes(covered), 0) != expected:
        raise BinHexError("checksum mismatch")


def _member(session: Session, node: Node, names: tuple[str, ...], data: bytes) -> Member:
    if len(data) > session.limits.max_member_size:
        limit = session.limits.max_member_size
        return Member(
            names, attributes="U", problem=f"Member larger than max_member_size ({limit} bytes)"
        )
    if not session.charge(len(data), node):
        return Member(names, attributes="U")
    return Member(names, Content.from_bytes(data))


# --- yEnc -------------------------------------------------------------------------------

_YBEGIN = re.compile(rb"^=ybegin [^\n]*\n", re.MULTILINE)
_YEND = re.compile(rb"^=yend", re.MULTILINE)
_YPART = re.compile(rb"^=ypart [^\n]*\n", re.MULTILINE)
_Y_PLAIN = bytes((byte - 42) & 0xFF for byte in range(256))
_Y_ESCAPED = bytes((byte - 106) & 0xFF for byte in range(256))


def ydecode_body(body: bytes) -> bytes:
    """A part sent with Content-Transfer-Encoding x-yencode, which Thunderbird decodes:
    the lines between `=ybegin` and `=yend`, each byte less 42, after `=` less 64 more."""
    begin = _YBEGIN.search(body)
    if begin is None:
        return b""
    end = _YEND.search(body, begin.end())
    data = _YPART.sub(b"", body[begin.end() : end.start() if end else len(body)])
    data = data.replace(b"\r", b"").replace(b"\n", b"")
    pieces = data.split(b"=")
    out = bytearray(pieces[0].translate(_Y_PLAIN))
    for piece in pieces[1:]:
        if piece:
            out += piece[:1].translate(_Y_ESCAPED) + piece[1:].translate(_Y_PLAIN)
    return bytes(out)
