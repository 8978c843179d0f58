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
from contentfilter.decode.multipart import Split, split_multipart, split_nested
from contentfilter.decode.session import Node, Session
from contentfilter.decode.transfer import transfer_readings
from contentfilter.decode.walker import examine
from contentfilter.rfc5322 import decode_encoded_words, text_of

# a header line, as the stdlib feed parser recognises one (email.feedparser.headerRE)
_HEADER_LINE = re.compile(rb"From |[\x21-\x39\x3b-\x7e]+:|[\t ]")
_MIME_FIELDS = {"content-type", "content-transfer-encoding", "content-disposition"}
_MAX_HEADER_AFTER_JUNK = 64 * 1024  # where Thunderbird would read on as header
_BLANKS_BEFORE_COLON = re.compile(rb"^([^:\s]+)[ \t]+:")
_MESSAGES = {"message/rfc822", "message/global", "message/news"}
_FRAGMENTS = {"message/partial", "message/external-body"}  # RFC 2046 5.2.2, 5.2.3


_Encoded = tuple[str | None, str | None, str]  # an RFC 2231 value: charset, language, text


@dataclass(frozen=True)
class Entity:
    """A MIME entity inside `raw`: its parsed header and where its body is."""

    header: Message  # header fields only
    body_start: int
    body_end: int
    header_end: int = -1  # where the strict reading ended the header


def read_entity(raw: bytes, start: int, end: int) -> Entity:
    header_end, body_start = _header_end(raw, start, end)
    header = email.parser.BytesHeaderParser(policy=compat32).parsebytes(raw[start:header_end])
    return Entity(header, body_start, end, header_end)


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


def read_entity_as_thunderbird(raw: bytes, start: int, strict: Entity) -> Entity | None:
    """The entity as Thunderbird reads it where that differs from `read_entity`, else None.

    Thunderbird's header ends only at an empty line; a line without a colon in it
    is skipped, not taken for the start of the body, and blanks may stand before
    the colon (MimeHeaders_get in mailnews/mime/src/mimehdrs.cpp).
    """
    header_end, body_start, end = strict.header_end, strict.body_start, strict.body_end
    if header_end != body_start or body_start == end:
        return None  # the strict reading ended at the empty line too
    limit = min(end, header_end + _MAX_HEADER_AFTER_JUNK)
    found = [raw.find(empty, max(header_end - 1, start), limit) for empty in (b"\n\r\n", b"\n\n")]
    if max(found) < 0:
        return None  # no empty line: Thunderbird shows no body at all
    empty = min(position for position in found if position >= 0) + 1
    body_start = raw.find(b"\n", empty, end) + 1
    kept: list[bytes] = []
    keep = True
    for line in raw[start:empty].splitlines(keepends=True):
        if line[:1] in (b" ", b"\t"):
            if keep:
                kept.append(line)
            continue
        keep = b":" in line
        if keep:
            kept.append(_BLANKS_BEFORE_COLON.sub(rb"\1:", line, count=1))
    header = email.parser.BytesHeaderParser(policy=compat32).parsebytes(b"".join(kept))
    same = _mime_fields(header) == _mime_fields(strict.header)
    if same and strict.header.get_content_maintype() == "multipart":
        return None  # the same parts: only the preamble starts a few lines later
    return Entity(header, body_start, end)


def _mime_fields(header: Message) -> list[tuple[str, str]]:
    return [
        (name.lower(), str(value))
        for name, value in header.raw_items()
        if name.lower() in _MIME_FIELDS
    ]


def walk(
    session: Session,
    raw: bytes,
    start: int,
    end: int,
    node: Node,
    mime_depth: int = 1,
    default_type: str = "text/plain",
    quiet: bool = False,
) -> None:
    """Fill `node` from the entity at raw[start:end] and its parts, depth first.

    `quiet`: this entity belongs to a reading that mail clients do not take
    (see `readings`); it is decoded for the scanners, but damage in it is no
    problem of the message. Where Thunderbird reads the entity's header
    differently, its reading is walked too, as a child.
    """
    entity = read_entity(raw, start, end)
    _walk_entity(session, raw, entity, node, mime_depth, default_type, quiet)
    other = read_entity_as_thunderbird(raw, start, entity)
    if other is not None and mime_depth < session.limits.max_mime_depth:
        child = session.new_child(node)
        if child is not None:
            _walk_entity(session, raw, other, child, mime_depth + 1, default_type, True)


def _walk_entity(
    session: Session,
    raw: bytes,
    entity: Entity,
    node: Node,
    mime_depth: int,
    default_type: str,
    quiet: bool,
) -> None:
    header = entity.header
    header.set_default_type(default_type)
    node.declared_type = header.get_content_type()
    node.add_names(*names(header))
    if "encrypted" in node.declared_type.partition("/")[2]:  # amavisd-new's test
        node.add_attribute("UC")
        session.problem("Encrypted MIME part", node)
    if node.declared_type in _FRAGMENTS:
        return  # not a message: a piece of one, or where to fetch it
    walker = _Multipart(session, raw, entity, node, mime_depth, quiet)
    if node.declared_type.startswith("multipart/") and walker.walk():
        return
    if node.declared_type in _MESSAGES:
        _walk_attached_message(session, raw, entity, node, mime_depth, quiet)
        return
    _leaf(session, raw, entity, node, quiet)
    if not node.declared_type.startswith("multipart/") and readings.claims_multipart(header):
        # a multipart type the stdlib does not recognise (`multipart`, `x-multipart/mixed`,
        # a second Content-Type field): split it too
        walker.quiet = True
        walker.walk()


@dataclass
class _Multipart:
    """Walking the parts of a multipart entity in every reading its header allows."""

    session: Session
    raw: bytes
    entity: Entity
    node: Node
    mime_depth: int
    quiet: bool

    def walk(self) -> bool:
        """Walk the parts; False when there are none to walk (then the body is a leaf)."""
        session, node = self.session, self.node
        boundaries = readings.boundaries(self.entity.header)
        if not boundaries:
            self.problem("MIME multipart without a boundary")
            return False
        if self.mime_depth >= session.limits.max_mime_depth:
            limit = session.limits.max_mime_depth
            session.problem(f"Maximum MIME nesting depth ({limit}) exceeded", node)
            return True
        walked: set[tuple[int, int]] = set()
        found = False
        for index, boundary in enumerate(boundaries):
            if index > 0 and not self.afford():
                break
            for split, clients in self.splits(boundary):
                found = found or split.found
                complete = split.closed or split.truncated or not split.found
                if index == 0 and clients and not complete:
                    self.problem("MIME multipart without its closing boundary")
                self.walk_parts(split, walked, quiet=self.quiet or index > 0 or not clients)
        if not found:
            self.problem("MIME multipart whose boundary never occurs")
        return found

    def afford(self) -> bool:
        """Take another reading's work from the quota: readings could otherwise multiply
        with every level of nesting."""
        return self.session.charge(self.entity.body_end - self.entity.body_start, self.node)

    def splits(self, boundary: str) -> Iterator[tuple[Split, bool]]:
        """(split, is it the clients' reading): the clients' split first, then those
        other readers make where they differ from it."""
        raw, start, end = self.raw, self.entity.body_start, self.entity.body_end
        room = self.session.limits.max_files - self.session.files + 1
        split = split_multipart(raw, start, end, boundary, room)
        if self.mentioned_elsewhere(boundary, split) and any(
            self.reuses(boundary, part) for part in split.parts
        ):
            # an inner multipart uses our delimiter lines: Thunderbird gives them to it
            if not self.afford():
                yield split, True
                return
            yield split_nested(raw, start, end, boundary, room, self.inner_boundaries), True
            yield split, False
        else:
            yield split, True
        if split.closed and split.close_end < end:  # parts after the close delimiter
            yield split_multipart(raw, split.close_end, end, boundary, room), False

    def walk_parts(self, split: Split, walked: set[tuple[int, int]], quiet: bool) -> None:
        # RFC 2046 5.1.5: the parts of a digest are messages unless they say otherwise
        digest = self.node.declared_type == "multipart/digest"
        default = "message/rfc822" if digest else "text/plain"
        for part in split.parts:
            if part in walked:
                continue
            walked.add(part)
            child = self.session.new_child(self.node)
            if child is None:
                return
            walk(self.session, self.raw, *part, child, self.mime_depth + 1, default, quiet)

    def mentioned_elsewhere(self, boundary: str, split: Split) -> bool:
        """Whether the boundary occurs in the body beyond its delimiter lines (one count
        in C, so that the parts' headers are read again only when it does)."""
        text = boundary.removesuffix("--").encode("utf-8", "surrogateescape")
        occurrences = self.raw.count(text, self.entity.body_start, self.entity.body_end)
        return occurrences > len(split.parts) + 1

    def reuses(self, boundary: str, part: tuple[int, int]) -> bool:
        """Whether the part is a multipart whose delimiter lines can be ours too."""
        ours = {boundary, boundary + "--"}
        return any(inner in ours or inner + "--" in ours for inner in self.inner_boundaries(*part))

    def inner_boundaries(self, start: int, end: int) -> tuple[str, ...]:
        header_end, _ = _header_end(self.raw, start, end)
        if not re.search(rb"(?i)boundary", self.raw[start:header_end]):
            return ()
        header = read_entity(self.raw, start, end).header
        return readings.boundaries(header) if readings.claims_multipart(header) else ()

    def problem(self, reason: str) -> None:
        if not self.quiet:
            self.session.problem(reason, self.node)


def _walk_attached_message(
    session: Session, raw: bytes, entity: Entity, node: Node, mime_depth: int, quiet: bool
) -> None:
    body = raw
    start, end = entity.body_start, entity.body_end
    encoding = next(iter(readings.transfer_encodings(entity.header)), "")
    if encoding not in readings.IDENTITY_ENCODINGS:  # not allowed (RFC 2046 5.2.1), but seen
        body = transfer_readings(session, encoding, raw[start:end], None if quiet else node)[0]
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
        walk(session, body, start, end, child, mime_depth + 1, quiet=quiet)


def _leaf(session: Session, raw: bytes, entity: Entity, node: Node, quiet: bool) -> None:
    """Decode the body; when clients read it in several ways, each reading is a child part.

    The first reading is the one common mail clients take; the others are what
    other readers see, decoded too so the scanners see every attachment any
    client shows. Only the first reading reports damage.
    """
    body = raw[entity.body_start : entity.body_end]
    encodings = readings.transfer_encodings(entity.header) or ("",)
    if len(encodings) > 1 and set(encodings) <= readings.IDENTITY_ENCODINGS:
        encodings = encodings[:1]  # 7bit, 8bit and binary read alike
    report = None if quiet else node
    if report is not None and encodings == ("",):
        _report_unknown_encoding(session, entity.header, node)
    if len(encodings) == 1:
        decoded = transfer_readings(session, encodings[0], body, report)
        if len(decoded) == 1:
            _examine_leaf(session, decoded[0], node)
            return
    else:
        decoded = []
    for index, encoding in enumerate(encodings):
        if len(encodings) > 1:
            decoded = transfer_readings(session, encoding, body, report if index == 0 else None)
        for data in decoded:
            child = session.new_child(node)
            if child is None:
                return
            child.declared_type = node.declared_type
            child.add_names(*node.names)
            _examine_leaf(session, data, child)


def _examine_leaf(session: Session, data: bytes, node: Node) -> None:
    session.charge(len(data), node)
    content = Content.from_bytes(data)
    examine(session, node, content, tier=1, text_body=node.declared_type == "text/plain")
    content.release()


# --- names --------------------------------------------------------------------------------


def names(header: Message) -> list[str]:
    """File names a part goes by, as amavisd-new lists them: each decoded, then as written.

    Content-Disposition `filename` comes first, then Content-Type `name`; RFC 2231
    parameters (continuations, charsets) and RFC 2047 encoded words (which Outlook
    puts in quoted parameters) are decoded. Then the names other readers see in
    the same header (a second field, a plain `filename` next to RFC 2231 pieces).
    """
    found: list[str] = []
    for field, parameter in (("content-disposition", "filename"), ("content-type", "name")):
        value = _parameter(header, field, parameter)
        if isinstance(value, tuple):  # RFC 2231: (charset, language, value)
            found.append(email.utils.collapse_rfc2231_value(value, errors="replace"))
        elif isinstance(value, str):
            found += [decode_encoded_words(value), value]
    found += readings.file_names(header)  # what other readers take
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
