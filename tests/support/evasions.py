"""Messages that hide a zipped EICAR where mail clients and strict MIME parsers disagree.

Each case is written after one in Steffen Ullrich's "MIME is broken" research
(https://github.com/noxxi/mime-is-broken, BSides Munich 2022): a mail client
still shows `eicar.zip`, a strict parser reads something else. The decoder must
find `eicar.com` in every one of them, and clamd must then see it.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from dataclasses import dataclass

from tests.support import mimegen as g
from tests.support.messages import EICAR

EICAR_ZIP = g.zip_archive({"eicar.com": EICAR})
_BASE64 = base64.encodebytes(EICAR_ZIP).replace(b"\n", b"\r\n")
_ZIP_TYPE = 'Content-Type: application/zip; name="eicar.zip"'
_ZIP_DISPOSITION = 'Content-Disposition: attachment; filename="eicar.zip"'


@dataclass(frozen=True)
class Evasion:
    name: str
    what: str  # the trick, in a few words
    build: Callable[[], bytes]

    def __str__(self) -> str:
        return self.name


def _attachment(*encoding_lines: str, body: bytes = _BASE64) -> bytes:
    """eicar.zip with the given Content-Transfer-Encoding header lines (raw, may fold)."""
    header = "\r\n".join([_ZIP_TYPE, _ZIP_DISPOSITION, *encoding_lines])
    return header.encode() + b"\r\n\r\n" + body


def _mail(attachment: bytes) -> Callable[[], bytes]:
    return lambda: g.message(g.multipart(g.text("Virus attached\r\n"), attachment))


CTE = "Content-Transfer-Encoding:"

TRANSFER_ENCODINGS = [
    Evasion(
        "cte-folded", "encoding folded onto the next line", _mail(_attachment(f"{CTE}\r\n base64"))
    ),
    Evasion(
        "cte-folded-twice",
        "encoding after an empty folded line",
        _mail(_attachment(f"{CTE}\r\n \r\n base64")),
    ),
    Evasion(
        "cte-qp-then-base64",
        "two fields: the first says quoted-printable",
        _mail(_attachment(f"{CTE} quoted-printable", f"{CTE} base64")),
    ),
    Evasion(
        "cte-base64-then-qp",
        "two fields: the last says quoted-printable",
        _mail(_attachment(f"{CTE} base64", f"{CTE} quoted-printable")),
    ),
    Evasion(
        "cte-7bit-then-base64",
        "two fields: the first says 7bit",
        _mail(_attachment(f"{CTE} 7bit", f"{CTE} base64")),
    ),
    Evasion(
        "cte-list",
        "one field lists quoted-printable, base64",
        _mail(_attachment(f"{CTE} quoted-printable, base64")),
    ),
    Evasion(
        "cte-words",
        "one field says base64 quoted-printable",
        _mail(_attachment(f"{CTE} base64 quoted-printable")),
    ),
    Evasion("cte-comment", "a comment before the value", _mail(_attachment(f"{CTE} (x) base64"))),
    Evasion(
        "cte-comment-inside",
        "a folded comment inside the word",
        _mail(_attachment(f"{CTE} bas(\r\n )e64")),
    ),
    Evasion("cte-case", "the value in odd case", _mail(_attachment(f"{CTE} BaSe64"))),
    Evasion("cte-quoted", "the value quoted", _mail(_attachment(f'{CTE} "base64"'))),
    Evasion("cte-escaped", "a backslash inside the value", _mail(_attachment(f"{CTE} base\\64"))),
    Evasion(
        "cte-rfc2047",
        "the value as an RFC 2047 word",
        _mail(_attachment(f"{CTE} =?UTF-8?B?YmFzZTY0?=")),
    ),
    Evasion("cte-x-base64", "x-base64", _mail(_attachment(f"{CTE} x-base64"))),
    Evasion(
        "cte-junk-then-base64",
        "two fields: the first names no encoding",
        _mail(_attachment(f"{CTE} xxx", f"{CTE} base64")),
    ),
]

_TEXT = b"Content-Type: text/plain\r\n\r\nVirus attached\r\n"
_ZIP = _attachment("Content-Transfer-Encoding: base64")


def _parts(boundary: str, *parts: bytes, close: bool = True) -> bytes:
    """A multipart body: each part after a `--boundary` line, then the close delimiter."""
    dashes = b"--" + boundary.encode()
    body = b"".join(dashes + b"\r\n" + part + b"\r\n" for part in parts)
    return body + (dashes + b"--\r\n" if close else b"")


def _multipart(*content_types: str, body: bytes) -> Callable[[], bytes]:
    """A message whose top-level header has these Content-Type lines (raw, may fold)."""
    header = "\r\n".join(content_types).encode() + b"\r\n\r\n"
    return lambda: g.message(header + body)


def _hidden_in(outer: str, inner: str) -> bytes:
    """The attachment in a multipart `inner`, wrapped as the text of a multipart `outer`."""
    return _parts(outer, _TEXT + _parts(inner, _TEXT, _ZIP))


CT = "Content-Type: multipart/mixed;"

BOUNDARIES = [
    Evasion(
        "boundary-two-fields-clients-first",
        "two Content-Type fields; clients take the first",
        _multipart(f"{CT} boundary=good", f"{CT} boundary=bad", body=_hidden_in("bad", "good")),
    ),
    Evasion(
        "boundary-two-fields-clients-last",
        "two Content-Type fields; strict parsers take the first",
        _multipart(f"{CT} boundary=bad", f"{CT} boundary=good", body=_hidden_in("bad", "good")),
    ),
    Evasion(
        "boundary-two-parameters",
        "two boundary parameters in one field",
        _multipart(f"{CT} boundary=bad; boundary=good", body=_hidden_in("bad", "good")),
    ),
    Evasion(
        "boundary-rfc2231-and-plain",
        "an RFC 2231 boundary* next to a plain one",
        _multipart(f"{CT} boundary=bad; boundary*=''good", body=_hidden_in("bad", "good")),
    ),
    Evasion(
        "boundary-rfc2231-pieces-reversed",
        "RFC 2231 continuations in reverse order",
        _multipart(f"{CT} boundary*1=od; boundary*0=go", body=_parts("good", _TEXT, _ZIP)),
    ),
    Evasion(
        "boundary-comment",
        "a comment before the boundary value (Outlook drops it)",
        _multipart(f"{CT} boundary=(boundary=bad) good", body=_hidden_in("bad", "good")),
    ),
    Evasion(
        "boundary-single-quotes",
        "the boundary in single quotes",
        _multipart(f"{CT} boundary='good'", body=_parts("good", _TEXT, _ZIP)),
    ),
    Evasion(
        "boundary-escaped",
        "a backslash escape in an unquoted boundary",
        _multipart(f"{CT} boundary=go\\od", body=_parts("good", _TEXT, _ZIP)),
    ),
    Evasion(
        "boundary-rfc2047",
        "the boundary as an RFC 2047 word",
        _multipart(f'{CT} boundary="=?us-ascii?Q?good?="', body=_parts("good", _TEXT, _ZIP)),
    ),
    Evasion(
        "boundary-space-inside-quotes",
        "white space around the boundary inside its quotes",
        _multipart(f'{CT} boundary=" good "', body=_parts("good", _TEXT, _ZIP)),
    ),
    Evasion(
        "boundary-reused-by-inner",
        "an inner multipart whose delimiter is the outer close delimiter",
        _multipart(
            f"{CT} boundary=b",
            body=b"--b\r\n"
            + f"{CT} boundary=b--".encode()
            + b"\r\n\r\n"
            + _parts("b--", _TEXT, _ZIP),
        ),
    ),
    Evasion(
        "boundary-inner-closes-first",
        "an inner multipart with the outer's boundary, closed before the attachment",
        _multipart(
            f"{CT} boundary=b",
            body=b"--b\r\n"
            + f"{CT} boundary=b".encode()
            + b"\r\n\r\n"
            + _parts("b", _TEXT)
            + b"\r\n"
            + _parts("b", _ZIP),
        ),
    ),
    Evasion(
        "boundary-after-close",
        "parts after the close delimiter (in the epilogue)",
        _multipart(f"{CT} boundary=b", body=_parts("b", _TEXT) + _parts("b", _ZIP)),
    ),
    Evasion(
        "boundary-vertical-tab",
        "delimiter lines ending in white space other than blanks (Thunderbird strips it)",
        _multipart(
            f"{CT} boundary=b",
            body=b"--b\x0b\r\n" + _TEXT + b"\r\n--b\x0c\r\n" + _ZIP + b"\r\n--b--\x0b\r\n",
        ),
    ),
    Evasion(
        "boundary-no-close",
        "no close delimiter",
        _multipart(f"{CT} boundary=b", body=_parts("b", _TEXT, _ZIP, close=False)),
    ),
    Evasion(
        "multipart-odd-type",
        "x-multipart/mixed",
        _multipart("Content-Type: x-multipart/mixed; boundary=b", body=_parts("b", _TEXT, _ZIP)),
    ),
    Evasion(
        "multipart-second-type",
        "text/plain, then a second Content-Type field that says multipart",
        _multipart("Content-Type: text/plain", f"{CT} boundary=b", body=_parts("b", _TEXT, _ZIP)),
    ),
]


def _yencode(data: bytes) -> bytes:
    out = bytearray()
    for byte in data:
        byte = (byte + 42) & 0xFF
        if byte in (0, 10, 13, 61):
            out += b"=" + bytes([(byte + 64) & 0xFF])
        else:
            out.append(byte)
    lines = b"\r\n".join(bytes(out[i : i + 128]) for i in range(0, len(out), 128))
    size = len(data)
    return b"=ybegin line=128 size=%d name=eicar.zip\r\n%s\r\n=yend size=%d\r\n" % (
        size,
        lines,
        size,
    )


def _quoted_printable_with_blanks(data: bytes) -> bytes:
    """Quoted-printable whose soft line breaks carry trailing blanks (RFC 2045 6.7 (3))."""
    encoded = binascii.b2a_qp(data, istext=False).replace(b"\n", b"\r\n")
    return encoded.replace(b"=\r\n", b"=  \r\n")


_B64_TEXT = base64.b64encode(EICAR_ZIP)

BODY_ENCODINGS = [
    Evasion(
        "base64-padding-inside",
        "base64 padded in the middle (chunks encoded one by one)",
        _mail(
            _attachment(
                f"{CTE} base64",
                body=base64.b64encode(EICAR_ZIP[:100])
                + b"\r\n"
                + base64.b64encode(EICAR_ZIP[100:]),
            )
        ),
    ),
    Evasion(
        "base64-junk",
        "characters outside the base64 alphabet between the lines",
        _mail(_attachment(f"{CTE} base64", body=_BASE64.replace(b"\r\n", b"\r\n!#*\r\n"))),
    ),
    Evasion(
        "base64-no-padding",
        "base64 without its = padding",
        _mail(_attachment(f"{CTE} base64", body=_B64_TEXT.rstrip(b"=") + b"\r\n")),
    ),
    Evasion(
        "base64-whitespace",
        "blanks and tabs inside the base64 lines",
        _mail(_attachment(f"{CTE} base64", body=_BASE64.replace(b"A", b"A \t"))),
    ),
    Evasion(
        "base64-begin-line",
        "a `uuencode -m` begin line before the base64 (clients decode it as junk)",
        _mail(
            _attachment(
                f"{CTE} base64", body=b"begin-base64 644 eicar.zip\r\n" + _BASE64 + b"====\r\n"
            )
        ),
    ),
    Evasion(
        "qp-soft-break-blanks",
        "quoted-printable soft line breaks followed by blanks",
        _mail(
            _attachment(f"{CTE} quoted-printable", body=_quoted_printable_with_blanks(EICAR_ZIP))
        ),
    ),
    Evasion(
        "yenc",
        "x-yencode, which Thunderbird decodes",
        _mail(_attachment(f"{CTE} x-yencode", body=_yencode(EICAR_ZIP))),
    ),
]

HEADERS = [
    Evasion(
        "header-junk-line",
        "a line without a colon among the part's header fields (Thunderbird skips it)",
        _mail(_attachment("this line is no header field", f"{CTE} base64")),
    ),
    Evasion(
        "header-blank-before-colon",
        "blanks between the field name and its colon",
        _mail(_attachment("Content-Transfer-Encoding : base64")),
    ),
    Evasion(
        "header-junk-before-body",
        "a base64-looking line between the header fields and the empty line",
        _mail(_attachment(f"{CTE} base64", "ABCD")),
    ),
]

ALL = TRANSFER_ENCODINGS + BODY_ENCODINGS + BOUNDARIES + HEADERS


def _named(*disposition_lines: str) -> Callable[[], bytes]:
    """A harmless attachment whose Content-Disposition lines hide the name `invoice.exe`."""
    header = "\r\n".join(["Content-Type: application/octet-stream", *disposition_lines])
    attachment = header.encode() + b"\r\n\r\nnothing to see\r\n"
    return lambda: g.message(g.multipart(g.text("Invoice attached\r\n"), attachment))


CD = "Content-Disposition: attachment;"

FILE_NAMES = [
    Evasion(
        "name-plain-and-rfc2231",
        "a plain filename (Outlook) next to RFC 2231 pieces (Thunderbird)",
        _named(f"{CD} filename=invoice.pdf; filename*0=invoice.; filename*1=exe"),
    ),
    Evasion(
        "name-rfc2231-pieces-reversed",
        "RFC 2231 pieces in reverse order",
        _named(f"{CD} filename*1=exe; filename*0=invoice."),
    ),
    Evasion(
        "name-two-fields",
        "two Content-Disposition fields",
        _named(f"{CD} filename=invoice.pdf", f"{CD} filename=invoice.exe"),
    ),
    Evasion(
        "name-two-parameters",
        "two filename parameters in one field",
        _named(f"{CD} filename=invoice.pdf; filename=invoice.exe"),
    ),
    Evasion(
        "name-comment",
        "a comment inside the unquoted name (Outlook drops it)",
        _named(f"{CD} filename=invoice.exe(.pdf)"),
    ),
    Evasion(
        "name-comment-in-parameter-name",
        "a comment inside the parameter's name",
        _named(f"{CD} filena()me=invoice.exe"),
    ),
    Evasion(
        "name-rfc2231-utf16",
        "an RFC 2231 name in UTF-16 (big-endian bytes)",
        _named(f"{CD} filename*=UTF-16''" + "".join(f"%00{c}" for c in "invoice.exe")),
    ),
]
