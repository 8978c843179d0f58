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

import codecs
import re
import urllib.parse
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


# --- multipart boundaries -------------------------------------------------------------

MAX_BOUNDARIES = 8  # readings of one Content-Type worth a split each; more is an attack
_PARAMETER = re.compile(r'\s*([^=;]*?)\s*=\s*("(?:\\.|[^"\\])*"?|[^;]*)', re.DOTALL)
_CONTINUATION = re.compile(r"boundary\*(\d+)\*?$")


def boundaries(header: Message) -> tuple[str, ...]:
    """The boundaries a multipart can be split at, the mail clients' first.

    First the one the stdlib (like Thunderbird and Outlook: the first field, its
    first `boundary`, RFC 2231 applied) reads; then every other `boundary`
    parameter of every Content-Type field, each as written, unquoted (double or
    single quotes), unescaped, trimmed, without comments (Outlook drops them),
    reassembled from RFC 2231 pieces in any order, and as RFC 2047 words.
    """
    found: list[str] = []
    first = header.get_boundary()
    if first:
        found.append(first)
    for value in header.get_all("content-type", []):
        text = _FOLDING.sub(" ", str(value))
        for variant in dict.fromkeys((text, without_comments(text))):
            found += _boundary_parameters(variant)
    unique = [boundary for boundary in dict.fromkeys(found) if boundary.strip()]
    return tuple(unique[:MAX_BOUNDARIES])


def claims_multipart(header: Message) -> bool:
    """Whether any Content-Type field names a multipart type, however oddly written."""
    for value in header.get_all("content-type", []):
        kind = without_comments(_FOLDING.sub(" ", str(value))).partition(";")[0]
        if "multipart" in kind.lower():
            return True
    return False


def _boundary_parameters(value: str) -> list[str]:
    found: list[str] = []
    pieces: list[tuple[int, str]] = []
    for match in _PARAMETER.finditer(value.partition(";")[2] if ";" in value else ""):
        name = match.group(1).lower().replace("\\", "").strip()
        raw = match.group(2).strip()
        if name == "boundary":
            found += _spellings(raw)
        elif name == "boundary*":
            found += [_rfc2231(text) for text in _spellings(raw)]
        elif (piece := _CONTINUATION.match(name)) is not None:
            encoded = name.endswith("*")
            text = _unquoted(raw)
            pieces.append((int(piece.group(1)), _rfc2231(text) if encoded else text))
    if pieces:
        found.append("".join(text for _, text in sorted(pieces)))
        found.append("".join(text for _, text in pieces))
    return found


def _spellings(raw: str) -> list[str]:
    """A parameter value as the various readers take it."""
    values = [_unquoted(raw), raw]
    if raw.startswith('"') and raw.endswith('"') and len(raw) > 1:
        values.append(raw[1:-1])  # backslashes kept
    if raw.startswith("'") and raw.endswith("'") and len(raw) > 1:
        values.append(raw[1:-1])
    values += [value.strip() for value in values]
    values += [decode_encoded_words(value) for value in values if "=?" in value]
    values += [value.replace("\\", "") for value in values if "\\" in value]
    return values


def _unquoted(raw: str) -> str:
    if raw.startswith('"'):
        return re.sub(r"\\(.)", r"\1", raw[1:-1] if raw.endswith('"') and len(raw) > 1 else raw[1:])
    return raw


def _rfc2231(text: str) -> str:
    """`charset'language'percent-encoded` (RFC 2231 section 4): the value, decoded."""
    parts = text.split("'", 2)
    encoded = parts[2] if len(parts) == 3 else text
    return urllib.parse.unquote(
        encoded, encoding=_charset(parts[0]) if len(parts) == 3 else "utf-8", errors="replace"
    )


def _charset(name: str) -> str:
    try:
        return codecs.lookup(name).name if name else "utf-8"
    except LookupError:
        return "utf-8"
