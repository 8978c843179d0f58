"""Attachments inside TNEF (winmail.dat), read with bounded, linear work.

Format: [MS-OXTNEF]. A stream is a signature, a key and a list of attributes
(level, id, length, data, checksum); an attachment starts at its
attAttachRendData attribute, its bytes are in attAttachData, its names in
attAttachTitle and in the MAPI properties of attAttachment.

tnefparse (the obvious library) is not used to walk the stream: it copies the
rest of the stream for every attribute (quadratic in the number of attributes)
and trusts the property counts in the data (a 20-byte property block that
claims four billion properties keeps it busy for minutes). Both are fine for
files users open and fatal for hostile mail in a worker thread. Only the MAPI
property ids come from tnefparse.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import NoReturn

from tnefparse import properties as mapi

from contentfilter.decode.content import Content
from contentfilter.decode.session import Member, Members, Node, Session

SIGNATURE = 0x223E9F78
LEVEL_ATTACHMENT = 0x02
ATT_ATTACH_DATA = 0x800F
ATT_ATTACH_TITLE = 0x8010
ATT_ATTACH_REND_DATA = 0x9002
ATT_ATTACHMENT = 0x9005
ATT_OEM_CODEPAGE = 0x9007

# MAPI property types: fixed sizes as stored in TNEF (16-bit values are padded to 4)
_FIXED_SIZES = {
    0x0002: 4,
    0x0003: 4,
    0x0004: 4,
    0x000A: 4,
    0x000B: 4,
    0x0005: 8,
    0x0006: 8,
    0x0007: 8,
    0x0014: 8,
    0x0040: 8,
    0x0048: 16,
}
_STRING8, _UNICODE, _OBJECT, _BINARY = 0x001E, 0x001F, 0x000D, 0x0102
_MULTI_VALUE = 0x1000
_IID_IMESSAGE = bytes.fromhex("0703020000000000c000000000000046")


class TNEFError(ValueError):
    """The stream ends early or contradicts itself."""


@dataclass
class Attachment:
    names: list[str] = field(default_factory=list)
    data: bytes | None = None
    mime_tag: str | None = None


def members(session: Session, node: Node, content: Content) -> Members:
    """The attachments of a TNEF stream, as parts."""
    attachments: list[Attachment] = []
    try:
        _read_stream(content.read_all(), attachments)
    except TNEFError as error:
        session.problem(f"TNEF could not be decoded ({error})", node)
    for attachment in attachments:
        if attachment.data is None:
            continue
        if not session.charge(len(attachment.data), node):
            yield Member(tuple(attachment.names), attributes="U")
            continue
        content = Content.from_bytes(attachment.data)
        yield Member(tuple(attachment.names), content, declared_type=attachment.mime_tag)


def _read_stream(data: bytes, attachments: list[Attachment]) -> None:
    if len(data) < 6 or _u32(data, 0) != SIGNATURE:
        raise TNEFError("no TNEF signature")
    offset, codepage = 6, "cp1252"
    while offset + 11 <= len(data):  # shorter leftovers are padding (tnefparse agrees)
        level, attribute_id, length = struct.unpack_from("<BII", data, offset)
        start = offset + 9
        if start + length + 2 > len(data):
            raise TNEFError("truncated attribute")
        value = data[start : start + length]
        offset = start + length + 2  # the checksum is not worth verifying
        name = attribute_id & 0xFFFF
        if name == ATT_OEM_CODEPAGE and length >= 4:
            codepage = _codepage(_u32(value, 0))
        elif name == ATT_ATTACH_REND_DATA:
            attachments.append(Attachment())
        elif level == LEVEL_ATTACHMENT and attachments:
            _attachment_attribute(attachments[-1], name, value, codepage)


def _attachment_attribute(attachment: Attachment, name: int, value: bytes, codepage: str) -> None:
    if name == ATT_ATTACH_DATA:
        attachment.data = value
    elif name == ATT_ATTACH_TITLE:
        _add_name(attachment, value.split(b"\0", 1)[0].decode(codepage, "replace"))
    elif name == ATT_ATTACHMENT:
        for prop_id, prop_type, item in _properties(value):
            _attachment_property(attachment, prop_id, prop_type, item, codepage)


def _attachment_property(
    attachment: Attachment, prop_id: int, prop_type: int, item: bytes, codepage: str
) -> None:
    if prop_id in (
        mapi.MAPI_ATTACH_LONG_FILENAME,
        mapi.MAPI_ATTACH_FILENAME,
        mapi.MAPI_DISPLAY_NAME,
    ):
        if prop_type in (_STRING8, _UNICODE):
            text = _text(item, prop_type, codepage)
            first = prop_id == mapi.MAPI_ATTACH_LONG_FILENAME  # the name the user sees
            _add_name(attachment, text, first)
    elif prop_id == mapi.MAPI_ATTACH_MIME_TAG and prop_type in (_STRING8, _UNICODE):
        attachment.mime_tag = _text(item, prop_type, codepage).strip().lower() or None
    elif prop_id == mapi.MAPI_ATTACH_DATA_OBJ:
        if prop_type == _OBJECT and item.startswith(_IID_IMESSAGE):
            attachment.data = item[len(_IID_IMESSAGE) :]  # an embedded message: TNEF again
        elif prop_type in (_BINARY, _OBJECT) and attachment.data is None:
            attachment.data = item


def _properties(data: bytes) -> Iterator[tuple[int, int, bytes]]:
    """(id, type, value) of each property in a MAPI property block, values unpadded."""
    count, offset = _u32(data, 0), 4
    _check_count(count, data, offset)
    for _ in range(count):
        prop_type, prop_id = _u16_pair(data, offset)
        offset += 4
        if prop_id >= 0x8000:  # a named property: GUID, kind, then an id or a name
            kind = _u32(data, offset + 16)
            offset += 24 if kind == 0 else 20 + _padded(_u32(data, offset + 20)) + 4
        values = 1
        if prop_type & _MULTI_VALUE:
            prop_type ^= _MULTI_VALUE
            values = _u32(data, offset)
            offset += 4
            _check_count(values, data, offset)
        for _ in range(values):
            item, offset = _value(data, offset, prop_type, multi=values != 1)
            yield prop_id, prop_type, item


def _value(data: bytes, offset: int, prop_type: int, multi: bool) -> tuple[bytes, int]:
    if prop_type in _FIXED_SIZES:
        end = offset + _FIXED_SIZES[prop_type]
        if end > len(data):
            _end()
        return data[offset:end], end
    if prop_type not in (_STRING8, _UNICODE, _OBJECT, _BINARY):
        raise TNEFError(f"unknown MAPI property type {prop_type:#06x}")
    if not multi:  # single-valued variable-length properties carry a count of 1
        offset += 4
    length = _u32(data, offset)
    start = offset + 4
    if start + length > len(data):
        _end()
    return data[start : start + length], start + _padded(length)


def _check_count(count: int, data: bytes, offset: int) -> None:
    if count > (len(data) - offset) // 4:  # every value takes at least 4 bytes
        raise TNEFError(f"property count {count} larger than its data")


def _u32(data: bytes, offset: int) -> int:
    if offset + 4 > len(data):
        _end()
    value: int = struct.unpack_from("<I", data, offset)[0]
    return value


def _u16_pair(data: bytes, offset: int) -> tuple[int, int]:
    if offset + 4 > len(data):
        _end()
    first, second = struct.unpack_from("<HH", data, offset)
    return first, second


def _end() -> NoReturn:
    raise TNEFError("truncated property")


def _padded(length: int) -> int:
    return (length + 3) & ~3


def _text(item: bytes, prop_type: int, codepage: str) -> str:
    if prop_type == _UNICODE:
        return item.decode("utf-16-le", "replace").split("\0", 1)[0]
    return item.split(b"\0", 1)[0].decode(codepage, "replace")


def _add_name(attachment: Attachment, name: str, first: bool = False) -> None:
    if name and name not in attachment.names:
        attachment.names.insert(0 if first else len(attachment.names), name)


def _codepage(number: int) -> str:
    name = f"cp{number}"
    try:
        "".encode(name)
    except LookupError:
        return "cp1252"
    return name
