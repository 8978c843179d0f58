"""How a MIME header can be read where mail clients and strict parsers disagree.

A message that says two things at once (two Content-Transfer-Encoding fields,
`base64, quoted-printable` in one field, a comment inside the value) is read
by mail clients one way and by strict MIME parsers another; an attacker hides
an attachment in the gap. Each function here lists every reading, the one the
common mail clients take first (Thunderbird and Outlook take the first field
and its first word), so that the decoder can decode all of them and the
scanners see whatever any client would show. A well-formed header has exactly
one reading, so ordinary mail decodes as before.

Sources: Steffen Ullrich, "MIME is broken" (BSides Munich 2022) and its test
mails, https://github.com/noxxi/mime-is-broken; RFC 2045 sections 5 and 6,
RFC 5322 section 3.2.2 (comments).
"""

from __future__ import annotations

import re
from email.message import Message

from contentfilter.headers import decode_encoded_words

IDENTITY_ENCODINGS = frozenset({"7bit", "8bit", "binary"})
UUENCODE = "x-uuencode"
_UU_NAMES = frozenset({"x-uuencode", "uuencode", "x-uue", "uue", "x-uu"})
_DECODING = ("base64", "quoted-printable")
_SEPARATORS = re.compile(r"[\s,;:]+")
_FOLDING = re.compile(r"\r?\n(?=[ \t])|\r")


def transfer_encodings(header: Message) -> tuple[str, ...]:
    """The Content-Transfer-Encodings a part can be read with, the mail clients' first.

    Each `Content-Transfer-Encoding` field is read in order, unfolded, without
    comments, quotes or escapes, as RFC 2047 words too, and split into words;
    every word that names an encoding (also `x-base64`, `xxbase64`: a reading
    costs only time) is a reading. Empty: no field, or none naming an encoding.
    """
    found: list[str] = []
    for value in header.get_all("content-transfer-encoding", []):
        text = str(value)
        for variant in dict.fromkeys((text, decode_encoded_words(text))):
            found += filter(None, map(_encoding, _words(variant)))
    return tuple(dict.fromkeys(found))


def _words(value: str) -> list[str]:
    text = _FOLDING.sub(" ", value)
    text = without_comments(text).replace('"', " ").replace("\\", "")
    return [word for word in _SEPARATORS.split(text.lower()) if word]


def _encoding(word: str) -> str | None:
    if word in IDENTITY_ENCODINGS or word in _DECODING:
        return word
    if word in _UU_NAMES:
        return UUENCODE
    return next((name for name in _DECODING if name in word), None)


def without_comments(value: str) -> str:
    """The value with its RFC 5322 comments, `(...)`, nested or not, left out."""
    if "(" not in value:
        return value
    out: list[str] = []
    depth = 0
    quoted = escaped = False
    for char in value:
        if escaped:
            escaped = False
            if depth == 0:
                out.append(char)
            continue
        if char == "\\":
            escaped = True
            if depth == 0:
                out.append(char)
        elif char == '"' and depth == 0:
            quoted = not quoted
            out.append(char)
        elif char == "(" and not quoted:
            depth += 1
        elif char == ")" and depth > 0:
            depth -= 1
        elif depth == 0:
            out.append(char)
    return "".join(out)
