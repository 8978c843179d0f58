"""Decoding a part by what it is: archives, compressed files, TNEF, BinHex, uuencode.

Which decoder applies is chosen from the part's short types (as amavisd-new's
`@decoders` table does), never from its name or declared MIME type: the sender
controls those. A decoder yields the members it finds one at a time; each
becomes a child part and is examined in turn before the next is read, so only
the members on the current path are held at once.
"""

from __future__ import annotations

from collections.abc import Callable

from contentfilter.decode import archives, textcodecs, tnef
from contentfilter.decode.content import Content
from contentfilter.decode.session import Member, Members, Node, Session
from contentfilter.filetypes import FileType

Decoder = Callable[[Session, Node, Content], Members]

# Set in decoder worker processes only, for tests (see workers.FAULT_VARIABLE): called
# with the bytes of each part, it crashes or hangs the worker on the one a test marked.
fault: Callable[[bytes], None] | None = None


def _archive(session: Session, node: Node, content: Content) -> Members:
    return archives.archive_members(session, node, content, wanted)


def _compressed(session: Session, node: Node, content: Content) -> Members:
    return archives.decompressed(session, node, content, wanted)


DECODERS: tuple[tuple[frozenset[str], Decoder], ...] = (
    (archives.ARCHIVE_TYPES, _archive),
    (frozenset(archives.COMPRESSED_TYPES), _compressed),
    (frozenset({"tnef"}), tnef.members),
    (frozenset({"hqx"}), textcodecs.binhex_members),
    (frozenset({"uue"}), textcodecs.uuencoded_members),
)


def decoder_for(file_type: FileType) -> Decoder | None:
    for short_types, decoder in DECODERS:
        if short_types.intersection(file_type.short_types):
            return decoder
    return None


def wanted(file_type: FileType) -> bool:
    """Whether a part of this type is decoded further (so its bytes must be kept)."""
    return decoder_for(file_type) is not None


def examine(
    session: Session, node: Node, content: Content, tier: int, text_body: bool = False
) -> None:
    """Record what `content` is on `node` and decode it into child parts if it holds any.

    `tier` counts decoding steps as amavisd-new's $MAXLEVELS does (MIME parts are
    tier 1); `text_body` marks a text part of the message, which is searched for
    uuencoded files whatever its type. Afterwards the bytes of a leaf, or of a part
    whose decoding stopped, go to the message's spool for the virus scanners.
    """
    node.set_content(content)
    try:
        if fault is not None and content.kept:
            fault(content.read_all())
        _decode(session, node, content, tier, text_body)
    finally:
        session.extract(node, content)


def _decode(session: Session, node: Node, content: Content, tier: int, text_body: bool) -> None:
    decoder = decoder_for(content.file_type)
    if decoder is None and text_body and textcodecs.has_uuencoded(content.read_all()):
        decoder = textcodecs.uuencoded_members
    if decoder is None or not content.kept:
        return
    if session.quota_exhausted or session.files_exhausted:
        node.undecoded = True
        return
    if tier >= session.limits.max_depth:
        session.problem(f"Maximum decoding depth ({session.limits.max_depth}) exceeded", node)
        return
    members = decoder(session, node, content)
    try:
        for member in members:
            child = session.new_child(node)
            if child is None:
                _discard(member)
                break
            _take(session, node, child, member, tier + 1)
    finally:
        members.close()  # e.g. closes the archive when max_files stopped us early


def _take(session: Session, node: Node, child: Node, member: Member, tier: int) -> None:
    child.add_names(*member.names)
    child.declared_type = member.declared_type
    child.add_attribute(member.attributes)
    if member.problem:
        session.problem(member.problem, child)
    if member.content is None or member.problem:
        node.undecoded = True  # a member could not be read: the container goes to clamd whole
    if member.content is None:
        return
    try:
        examine(session, child, member.content, tier)
    finally:
        member.content.release()


def _discard(member: Member) -> None:
    if member.content is not None:
        member.content.delete_file()
        member.content.release()
