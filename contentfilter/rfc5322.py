"""Reading a message's header section (RFC 5322): the one reader everything uses.

Where the section ends, its fields, their unfolded values, and the one RFC 2047
decoder. Pure and read-only; it imports nothing from the filter but the records
of `model`. A message's section is parsed once, when its `Message` is made
(`read_message`); the scanners, the policy, the header edits and the log line
all read that one `HeaderSection`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from email.errors import HeaderParseError
from email.header import decode_header

from contentfilter.model import Envelope, HeaderField, HeaderSection, Message

__all__ = [
    "HeaderField",
    "HeaderSection",
    "decode_encoded_words",
    "decoded_text",
    "field_value",
    "header_fields",
    "header_section_end",
    "parse_header",
    "read_message",
    "text_of",
    "unfold",
]

# RFC 5322 section 3.6.8: a field name is printable US-ASCII except ":"; section 4.5.3
# (obsolete syntax) allows whitespace between the name and the colon.
_FIELD_NAME = re.compile(rb"([\x21-\x39\x3b-\x7e]+)[ \t]*:")
_FOLD = re.compile(rb"\r?\n(?=[ \t])")


def read_message(log_id: str, mail_id: str, envelope: Envelope, raw: bytes) -> Message:
    """A message as received, its header section parsed (once, here)."""
    return Message(log_id, mail_id, envelope, raw, parse_header(raw))


def parse_header(raw: bytes) -> HeaderSection:
    """Where the header section of `raw` and each of its fields are.

    The section ends at the first empty line (RFC 5322 section 2.1), or at the first
    line that is neither a field nor a continuation: Postfix's cleanup takes such a
    line as the start of the body. Lines may end in CRLF or a bare LF. A section that
    starts with whitespace has a first field without a name (b""): those lines
    continue nothing (section 2.2.3), but they stay one unit of the section.
    """
    fields: list[HeaderField] = []
    name, start, position = b"", -1, 0
    for line_start, line_end in _lines(raw):
        line = raw[line_start:line_end]
        if line in (b"\r\n", b"\n"):
            break
        if line[:1] in (b" ", b"\t"):
            if start < 0:  # the section starts with whitespace: a nameless field
                start = line_start
            position = line_end  # RFC 5322 section 2.2.3: a continuation line
            continue
        match = _FIELD_NAME.match(line)
        if not match:
            break
        if start >= 0:
            fields.append(HeaderField(name, start, line_start))
        name, start, position = match.group(1), line_start, line_end
    if start >= 0:
        fields.append(HeaderField(name, start, position))
    end = position
    for separator in (b"\r\n", b"\n"):
        if raw.startswith(separator, position):
            end = position + len(separator)
            break
    return HeaderSection(tuple(fields), position, end)


def header_fields(raw: bytes) -> tuple[tuple[HeaderField, ...], int]:
    """The fields of the header section and the offset just after the last of them."""
    section = parse_header(raw)
    return section.fields, section.fields_end


def header_section_end(raw: bytes) -> int:
    """Offset of the first body byte: after the empty separator line, if there is one."""
    return parse_header(raw).end


def _lines(raw: bytes) -> Iterator[tuple[int, int]]:
    position = 0
    while position < len(raw):
        newline = raw.find(b"\n", position)
        end = len(raw) if newline < 0 else newline + 1
        yield position, end
        position = end


def unfold(value: bytes) -> bytes:
    """RFC 5322 section 2.2.3: each line break before whitespace removed."""
    return _FOLD.sub(b"", value)


def field_value(raw: bytes, field: HeaderField) -> bytes:
    """The unfolded value of a field, without the name, colon and surrounding whitespace."""
    text = raw[field.start : field.end]
    return unfold(text[text.index(b":") + 1 :]).strip(b" \t\r\n")


def text_of(raw: bytes) -> str:
    """Raw 8-bit header bytes: UTF-8 where they are (RFC 6532), else Latin-1."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def decode_encoded_words(value: str) -> str:
    """`=?charset?B|Q?...?=` words decoded (RFC 2047); malformed words are kept as written."""
    if "=?" not in value:
        return value
    try:
        parts = decode_header(value)
    except (HeaderParseError, ValueError):
        return value
    decoded = []
    for chunk, charset in parts:
        if isinstance(chunk, str):
            decoded.append(chunk)
            continue
        try:  # decode_header hands back unencoded text as raw-unicode-escape bytes
            decoded.append(chunk.decode(charset or "raw-unicode-escape", errors="replace"))
        except LookupError:  # unknown charset
            decoded.append(chunk.decode("latin-1"))
    return "".join(decoded)


def decoded_text(value: bytes) -> str:
    """An unfolded header value decoded to text (RFC 2047 words and raw UTF-8 alike)."""
    return decode_encoded_words(value.decode("utf-8", errors="replace"))
