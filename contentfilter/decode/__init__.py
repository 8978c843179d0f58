"""Raw message bytes -> the tree of its parts: MIME parts, archive members and the like.

`decode` never raises for anything in the message: every limit it hits and
everything it cannot decode (an encrypted archive, damaged base64, an
over-deep structure) becomes a line in `DecodedMessage.problems`, which makes
the message UNCHECKED. It runs in a worker thread and is bounded in work and
memory by `DecoderLimits`.

The package itself is light: the decoder proper (MIME, archives through
libarchive, TNEF, libmagic) is imported by the first `decode`, which in the
daemon happens in the decoder worker processes. A process that only hands
messages to the workers, or only names parts (`describe`), never loads it.
"""

from __future__ import annotations

from contentfilter.decoder_settings import DecoderLimits
from contentfilter.model import DecodedMessage, Part

__all__ = ["DecoderLimits", "decode", "describe", "format_tree"]


def decode(raw: bytes, limits: DecoderLimits, spool: str | None = None) -> DecodedMessage:
    """The part tree of a message (p001 is the message itself), with any problems.

    With `spool` (a private directory, made here with the first file if it does not
    exist yet), the bytes of the parts the decoder extracted are written there and
    listed in `extracted`.
    """
    from contentfilter.decode import mimeparts
    from contentfilter.decode.session import Session

    session = Session(limits, len(raw), spool)
    try:
        root = session.new_root()
        mimeparts.walk(session, raw, 0, len(raw), root)
        return DecodedMessage(root.freeze(), session.final_problems(), tuple(session.extracted))
    finally:
        session.close()


def describe(part: Part) -> str:
    """amavisd-new's description of one part: `P=p003,L=1/2,M=...,T=exe,T=exe-ms,N=x.exe`."""
    fields = [f"P={part.part_id}", "L=" + "/".join(map(str, part.level))]
    if part.declared_type:
        fields.append(f"M={part.declared_type}")
    fields += [f"T={short}" for short in part.detected_types or filter(None, [part.detected_type])]
    fields += [f"N={_printable(name)}" for name in part.names]
    fields += [f"A={letter}" for letter in part.attributes]
    return ",".join(fields)


def format_tree(decoded: DecodedMessage) -> list[str]:
    """One line per part, indented by depth, for `contentfilter scan`."""
    lines = []
    for part in decoded.walk():
        size = f", {part.size} bytes" if part.size or not part.children else ""
        kind = f" [{part.file_type}]" if part.file_type else ""
        lines.append("  " * (len(part.level) - 1) + describe(part) + size + kind)
    return lines


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)
