"""Messages that hide a zipped EICAR where mail clients and strict MIME parsers disagree.

Each case is written after one in Steffen Ullrich's "MIME is broken" research
(https://github.com/noxxi/mime-is-broken, BSides Munich 2022): a mail client
still shows `eicar.zip`, a strict parser reads something else. The decoder must
find `eicar.com` in every one of them, and clamd must then see it.
"""

from __future__ import annotations

import base64
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

ALL = TRANSFER_ENCODINGS
