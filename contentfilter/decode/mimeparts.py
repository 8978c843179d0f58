"""The MIME structure of a message, read in place from its raw bytes.

Header fields are parsed by the stdlib `email` package (its compat32 parser:
RFC 2047 words, RFC 2231 parameters and continuations); bodies are never given
to it. Its feed parser turns a body into one string per line before joining
them (a 41 MB message peaked at 317 MB) and tests every line against the
boundary of every enclosing multipart (a 360 KB message nested 900 deep took
15 s of CPU). Instead, multipart bodies are split here at their delimiter lines
(RFC 2046 5.1.1) with one regex scan of the part's own byte range, and each part
is handled as offsets into the raw message. Nothing is ever re-serialised.

Where the stdlib parser is lenient, so is this: a missing closing delimiter
ends the last part at the end of its container, a line that is not a header
field ends the header, a delimiter of an enclosing multipart ends the inner one.
"""

from __future__ import annotations

import binascii
import email.errors
import email.header
import email.parser
import email.utils
import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import Message
from email.policy import compat32

from contentfilter.decode import readings
from contentfilter.decode.content import Content
from contentfilter.decode.session import Node, Session
from contentfilter.decode.textcodecs import uudecode_body
from contentfilter.decode.walker import examine
from contentfilter.headers import decode_encoded_words, text_of

# a header line, as the stdlib feed parser recognises one (email.feedparser.headerRE)
_HEADER_LINE = re.compile(rb"From |[\x21-\x39\x3b-\x7e]+:|[\t ]")
_MESSAGES = {"message/rfc822", "message/global", "message/news"}
_FRAGMENTS = {"message/partial", "message/external-body"}  # RFC 2046 5.2.2, 5.2.3
_BASE64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


_Encoded = tuple[str | None, str | None, str]  # an RFC 2231 value: charset, language, text


@dataclass(frozen=True)
class Entity:
    """A MIME entity inside `raw`: its parsed header and where its body is."""

    header: Message  # header fields only
    body_start: int
    body_end: int


def read_entity(raw: bytes, start: int, end: int) -> Entity:
    header_end, body_start = _header_end(raw, start, end)
    header = email.parser.BytesHeaderParser(policy=compat32).parsebytes(raw[start:header_end])
    return Entity(header, body_start, end)


def _header_end(raw: bytes, start: int, end: int) -> tuple[int, int]:
    """(end of the header, start of the body): at the empty line, or at the first
    line that cannot be a header field (the stdlib's MissingHeaderBodySeparator)."""
    position = start
    while position < end:
        newline = raw.find(b"\n", position, end)
        line_end = end if newline < 0 else newline + 1
        if raw[position:line_end] in (b"\r\n", b"\n"):
            return position, line_end
        if not _HEADER_LINE.match(raw, position, line_end):
            return position, position
        position = line_end
    return end, end


@dataclass(frozen=True)
class Split:
    parts: list[tuple[int, int]]  # (start, end) of each body part
    found: bool  # any delimiter at all
    closed: bool  # the close delimiter was there
    truncated: bool  # more parts than we were willing to list


def split_multipart(raw: bytes, start: int, end: int, boundary: str, limit: int) -> Split:
    """The body parts between delimiter lines `--boundary` (RFC 2046 5.1.1).

    The line break before a delimiter belongs to it; the preamble (before the
    first delimiter) and the epilogue (after the close delimiter) are no parts.
    """
    parts: list[tuple[int, int]] = []
    part_start = None
    found = False
    for line_start, line_end, closing in _delimiters(raw, start, end, boundary):
        found = True
        if part_start is not None:
            parts.append((part_start, _strip_line_break(raw, part_start, line_start)))
            if len(parts) > limit:
                return Split(parts[:limit], True, False, True)
        if closing:
            return Split(parts, True, True, False)
        part_start = line_end
    if part_start is not None:
        parts.append((part_start, end))
    return Split(parts[:limit], found, False, len(parts) > limit)


def _delimiters(raw: bytes, start: int, end: int, boundary: str) -> Iterator[tuple[int, int, bool]]:
    """(line start, next line start, is the close delimiter) of each delimiter line.

    bytes.find() for the candidates, a regex only to check the rest of their line:
    a regex scan of a 40 MB body costs half a second, find() a few milliseconds.
    """
    dashes = b"--" + boundary.encode("utf-8", "surrogateescape")
    rest = re.compile(rb"(--)?[ \t]*(\r?\n|\r?$)")
    position = start
    while position < end:
        if position == start and raw.startswith(dashes, start, end):
            candidate = start
        else:  # from the newline that ends the previous line: parts may be empty
            newline = raw.find(b"\n" + dashes, max(position - 1, start), end)
            if newline < 0:
                return
            candidate = newline + 1
        match = rest.match(raw, candidate + len(dashes), end)
        if match:
            yield candidate, match.end(), match.group(1) is not None
            position = match.end()
        else:
            position = candidate + len(dashes)


def _strip_line_break(raw: bytes, start: int, end: int) -> int:
    if end > start and raw[end - 1 : end] == b"\n":
        end -= 1
        if end > start and raw[end - 1 : end] == b"\r":
            end -= 1
    return end


def walk(
    session: Session,
    raw: bytes,
    start: int,
    end: int,
    node: Node,
    mime_depth: int = 1,
    default_type: str = "text/plain",
) -> None:
    """Fill `node` from the entity at raw[start:end] and its parts, depth first."""
    entity = read_entity(raw, start, end)
    header = entity.header
    header.set_default_type(default_type)
    node.declared_type = header.get_content_type()
    node.add_names(*names(header))
    if "encrypted" in node.declared_type.partition("/")[2]:  # amavisd-new's test
        node.add_attribute("UC")
        session.problem("Encrypted MIME part", node)
    if node.declared_type in _FRAGMENTS:
        return  # not a message: a piece of one, or where to fetch it
    if node.declared_type.startswith("multipart/") and _walk_multipart(
        session, raw, entity, node, mime_depth
    ):
        return
    if node.declared_type in _MESSAGES:
        _walk_attached_message(session, raw, entity, node, mime_depth)
        return
    _leaf(session, raw, entity, node)


def _walk_multipart(
    session: Session, raw: bytes, entity: Entity, node: Node, mime_depth: int
) -> bool:
    """Walk the parts; False when there are none to walk (then the body is a leaf)."""
    boundary = entity.header.get_boundary()
    if not boundary:
        session.problem("MIME multipart without a boundary", node)
        return False
    if mime_depth >= session.limits.max_mime_depth:
        session.problem(
            f"Maximum MIME nesting depth ({session.limits.max_mime_depth}) exceeded", node
        )
        return True
    room = session.limits.max_files - session.files + 1
    split = split_multipart(raw, entity.body_start, entity.body_end, boundary, room)
    if not split.found:
        session.problem("MIME multipart whose boundary never occurs", node)
        return False
    if not split.closed and not split.truncated:
        session.problem("MIME multipart without its closing boundary", node)
    # RFC 2046 5.1.5: the parts of a digest are messages unless they say otherwise
    default = "message/rfc822" if node.declared_type == "multipart/digest" else "text/plain"
    for part_start, part_end in split.parts:
        child = session.new_child(node)
        if child is None:
            break
        walk(session, raw, part_start, part_end, child, mime_depth + 1, default)
    return True


def _walk_attached_message(
    session: Session, raw: bytes, entity: Entity, node: Node, mime_depth: int
) -> None:
    body = raw
    start, end = entity.body_start, entity.body_end
    encoding = next(iter(readings.transfer_encodings(entity.header)), "")
    if encoding not in readings.IDENTITY_ENCODINGS:  # not allowed (RFC 2046 5.2.1), but seen
        body = transfer_decode(session, encoding, raw[start:end], node)
        start, end = 0, len(body)
    node.size = end - start
    node.digest = hashlib.sha256(memoryview(body)[start:end]).hexdigest()
    if mime_depth >= session.limits.max_mime_depth:
        session.problem(
            f"Maximum MIME nesting depth ({session.limits.max_mime_depth}) exceeded", node
        )
        return
    child = session.new_child(node)
    if child is not None:
        walk(session, body, start, end, child, mime_depth + 1)


def _leaf(session: Session, raw: bytes, entity: Entity, node: Node) -> None:
    """Decode the body; when its header allows several readings, each is a child part.

    The first reading is the one common mail clients take; the others are what
    other readers see, decoded too so the scanners see every attachment any
    client shows. Only the first reading reports damage.
    """
    body = raw[entity.body_start : entity.body_end]
    encodings = readings.transfer_encodings(entity.header) or ("",)
    if len(encodings) == 1:
        _decoded_leaf(session, body, encodings[0], entity.header, node)
        return
    for index, encoding in enumerate(encodings):
        child = session.new_child(node)
        if child is None:
            return
        child.declared_type = node.declared_type
        child.add_names(*node.names)
        _decoded_leaf(session, body, encoding, entity.header if index == 0 else None, child)


def _decoded_leaf(
    session: Session, body: bytes, encoding: str, header: Message | None, node: Node
) -> None:
    data = transfer_decode(session, encoding, body, node if header is not None else None)
    if header is not None and not encoding:
        _report_unknown_encoding(session, header, node)
    session.charge(len(data), node)
    content = Content.from_bytes(data)
    examine(session, node, content, tier=1, text_body=node.declared_type == "text/plain")
    content.release()


# --- names --------------------------------------------------------------------------------


def names(header: Message) -> list[str]:
    """File names a part goes by, as amavisd-new lists them: each decoded, then as written.

    Content-Disposition `filename` comes first, then Content-Type `name`; RFC 2231
    parameters (continuations, charsets) and RFC 2047 encoded words (which Outlook
    puts in quoted parameters) are decoded.
    """
    found: list[str] = []
    for field, parameter in (("content-disposition", "filename"), ("content-type", "name")):
        value = _parameter(header, field, parameter)
        if isinstance(value, tuple):  # RFC 2231: (charset, language, value)
            found.append(email.utils.collapse_rfc2231_value(value, errors="replace"))
        elif isinstance(value, str):
            found += [decode_encoded_words(value), value]
    return list(dict.fromkeys(name for name in found if name))


def _parameter(header: Message, field: str, parameter: str) -> str | _Encoded | None:
    """A header parameter with raw 8-bit bytes intact.

    compat32's own get_param() turns 8-bit bytes into U+FFFD, so the raw field is
    read, its bytes decoded (UTF-8, else Latin-1) and parsed on a scratch Message.
    """
    raw = next((str(v) for k, v in header.raw_items() if k.lower() == field), None)
    if raw is None:
        return None
    scratch = Message()
    scratch[field] = _undo_surrogates(raw)
    try:
        value = scratch.get_param(parameter, header=field)
    except (ValueError, TypeError, LookupError):  # the stdlib on broken parameters
        return None
    return value if isinstance(value, str | tuple) else None


def _undo_surrogates(value: str) -> str:
    """Raw 8-bit header bytes (parsed as surrogate escapes): UTF-8 if they are, else Latin-1."""
    return text_of(value.encode("utf-8", "surrogateescape"))


# --- transfer encodings -------------------------------------------------------------------


def _report_unknown_encoding(session: Session, header: Message, node: Node) -> None:
    values = header.get_all("content-transfer-encoding", [])
    stated = " ".join(" ".join(str(value).split()) for value in values).lower()
    if stated:
        session.problem(f"Unknown Content-Transfer-Encoding {stated[:40]!r}", node)


def transfer_decode(session: Session, encoding: str, body: bytes, node: Node | None) -> bytes:
    """The body with `encoding` undone (RFC 2045 6); damage is reported on `node` if given."""
    if encoding == "base64":
        data, damaged = decode_base64(body)
        if damaged and node is not None:
            session.problem(f"Damaged base64 ({damaged})", node)
        return data
    if encoding == "quoted-printable":
        return binascii.a2b_qp(body)
    if encoding == readings.UUENCODE:
        return uudecode_body(body)
    return body


def decode_base64(body: bytes) -> tuple[bytes, str | None]:
    """Decode leniently, as mail clients do, and say what was wrong with it if anything.

    Line breaks and blanks are ignored; chunks that were encoded separately and
    concatenated (each with its own `=` padding) are all decoded.
    """
    padding = body.find(b"=")
    simple = padding < 0 or not body[padding:].strip(b"= \t\r\n")
    if simple and not body.translate(None, _BASE64_ALPHABET + b"= \t\r\n"):
        try:  # the usual case, in one pass and one copy
            return binascii.a2b_base64(body), None
        except binascii.Error:
            pass  # truncated or missing padding: the careful way below
    text = body.translate(None, b" \t\r\n")
    damaged = None
    stray = text.translate(None, _BASE64_ALPHABET + b"=")
    if stray:
        damaged = f"{len(stray)} characters outside the base64 alphabet"
        text = text.translate(None, stray)
    out = bytearray()
    for chunk in text.split(b"="):
        if len(chunk) % 4 == 1:
            damaged = damaged or "truncated data"
            chunk = chunk[:-1]
        if chunk:
            out += binascii.a2b_base64(chunk + b"=" * (-len(chunk) % 4))
    return bytes(out), damaged
