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

from contentfilter.rfc5322 import decode_encoded_words, text_of

IDENTITY_ENCODINGS = frozenset({"7bit", "8bit", "binary"})
UUENCODE = "x-uuencode"
YENCODE = "x-yencode"
_UU_NAMES = frozenset({"x-uuencode", "uuencode", "x-uue", "uue", "x-uu"})
_YENC_NAMES = frozenset({"x-yencode", "yencode", "x-yenc", "yenc"})
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
    if word in _YENC_NAMES:
        return YENCODE
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


# --- parameters: multipart boundaries, file names ----------------------------------------

MAX_BOUNDARIES = 8  # readings of one Content-Type worth a split each; more is an attack
MAX_NAMES = 16  # spellings of one file name parameter
_PARAMETER = re.compile(r'\s*([^=;]*?)\s*=\s*("(?:\\.|[^"\\])*"?|[^;]*)', re.DOTALL)
_PIECE = re.compile(r"\*(\d+)\*?$")


def boundaries(header: Message) -> tuple[str, ...]:
    """The boundaries a multipart can be split at, the mail clients' first.

    First the one the stdlib (like Thunderbird and Outlook: the first field, its
    first `boundary`, RFC 2231 applied) reads; then every spelling of every
    other `boundary` parameter of every Content-Type field (`parameter_values`).
    """
    first = header.get_boundary()
    found = [first] if first else []
    found += parameter_values(header, "content-type", "boundary", trim=True)
    unique = [boundary for boundary in dict.fromkeys(found) if boundary.strip()]
    return tuple(unique[:MAX_BOUNDARIES])


def file_names(header: Message) -> tuple[str, ...]:
    """Every spelling of every `filename` (Content-Disposition) and `name` (Content-Type).

    Outlook takes the plain `filename`, Thunderbird prefers the RFC 2231 one and
    applies it in whatever order its pieces come; both are listed.
    """
    found = parameter_values(header, "content-disposition", "filename")
    found += parameter_values(header, "content-type", "name")
    unique = [name for name in dict.fromkeys(found) if name.strip()]
    return tuple(unique[:MAX_NAMES])


def claims_multipart(header: Message) -> bool:
    """Whether any Content-Type field names a multipart type, however oddly written."""
    for value in header.get_all("content-type", []):
        kind = without_comments(_FOLDING.sub(" ", str(value))).partition(";")[0]
        if "multipart" in kind.lower():
            return True
    return False


def parameter_values(
    header: Message, field: str, parameter: str, *, trim: bool = False
) -> list[str]:
    """Every spelling of a parameter in every `field`: as written, unquoted (double
    or single quotes), unescaped, trimmed, without comments (Outlook drops them),
    reassembled from RFC 2231 pieces in order and as they come, and as RFC 2047 words;
    `trim`: also without surrounding blanks. Raw 8-bit bytes are read as UTF-8, else Latin-1."""
    found: list[str] = []
    for name, value in header.raw_items():
        if name.lower() != field or (parameter not in value.lower() and "(" not in value):
            continue  # (a comment may split the parameter's name)
        text = _FOLDING.sub(" ", text_of(str(value).encode("utf-8", "surrogateescape")))
        for variant in dict.fromkeys((text, without_comments(text))):
            found += _parameters(variant, parameter, trim)
    return found


def _parameters(value: str, parameter: str, trim: bool) -> list[str]:
    found: list[str] = []
    pieces: list[tuple[int, str]] = []
    for match in _PARAMETER.finditer(value.partition(";")[2]):
        name = match.group(1).lower().replace("\\", "").strip()
        raw = match.group(2).strip()
        if not name.startswith(parameter):
            continue
        suffix = name[len(parameter) :]
        if suffix == "":
            found += _spellings(raw, trim)
        elif suffix == "*":
            found += [text for spelling in _spellings(raw, trim) for text in _rfc2231(spelling)]
        elif (piece := _PIECE.match(suffix)) is not None:
            text = _unquoted(raw)
            pieces.append((int(piece.group(1)), text if suffix.endswith("*") else _quote(text)))
    if pieces:
        for ordered in dict.fromkeys((tuple(sorted(pieces)), tuple(pieces))):
            found += _rfc2231("".join(text for _, text in ordered))
    return found


def _spellings(raw: str, trim: bool) -> list[str]:
    """A parameter value as the various readers take it."""
    values = [_unquoted(raw)]
    if raw.startswith('"') and raw.endswith('"') and len(raw) > 1:
        values.append(raw[1:-1])  # backslashes kept
    elif "\\" in raw:
        values.append(raw.replace("\\", ""))  # an escape outside quotes
    if raw.startswith("'") and raw.endswith("'") and len(raw) > 1:
        values.append(raw[1:-1])
    if trim:
        values += [value.strip() for value in values]
    values += [decode_encoded_words(value) for value in values if "=?" in value]
    return values


def _unquoted(raw: str) -> str:
    """As the stdlib unquotes (email.utils.unquote): only `\\\\` and `\\"` are escapes."""
    if raw.startswith('"'):
        inner = raw[1:-1] if raw.endswith('"') and len(raw) > 1 else raw[1:]
        return inner.replace("\\\\", "\\").replace('\\"', '"')
    return raw


def _quote(text: str) -> str:
    """An unencoded RFC 2231 piece, made safe to join with percent-encoded ones."""
    return urllib.parse.quote(text, safe="'")


def _rfc2231(text: str) -> list[str]:
    """`charset'language'percent-encoded` (RFC 2231 section 4), decoded; UTF-16 both ways."""
    parts = text.split("'", 2)
    if len(parts) != 3:
        return [urllib.parse.unquote(text, errors="replace")]
    charset = _charset(parts[0])
    charsets = ("utf-16-be", "utf-16-le") if charset.startswith("utf-16") else (charset,)
    return [urllib.parse.unquote(parts[2], encoding=name, errors="replace") for name in charsets]


def _charset(name: str) -> str:
    try:
        return codecs.lookup(name).name if name else "utf-8"
    except LookupError:
        return "utf-8"
