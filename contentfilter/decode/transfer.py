"""Content-Transfer-Encodings undone (RFC 2045 section 6), the ways mail clients undo them.

`transfer_readings` gives one decoding of a body, or, where damaged base64 is
read differently by different clients, each of their decodings: ours (chunks
between `=` padding decoded separately, which also reads concatenated base64),
Thunderbird's (every 4 characters of the alphabet or `=` a token, anything
else skipped; mailnews/mime/src/modmimee.cpp) and one that drops every line
that is not base64 (a `begin-base64` line of `uuencode -m`). Sources: RFC 2045
6.8 and 6.7; Steffen Ullrich, "MIME is broken" (BSides Munich 2022).
"""

from __future__ import annotations

import binascii
import re

from contentfilter.decode import readings
from contentfilter.decode.session import Node, Session
from contentfilter.decode.textcodecs import uudecode_body, ydecode_body

_BASE64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_NOT_BASE64 = bytes(sorted(set(range(256)) - set(_BASE64_ALPHABET + b"=")))
_MAX_PADDED_TOKENS = 100_000  # Thunderbird's reading costs a Python step per padded token
_BASE64_LINE = re.compile(rb"^[A-Za-z0-9+/]+=*[ \t\r]*$", re.MULTILINE)
# RFC 2045 6.7 (3): white space at the end of an encoded line is deleted, so "= " is a soft break
_SOFT_BREAK_BLANKS = re.compile(rb"=[ \t]+(?=\r?\n|$)")


def transfer_readings(
    session: Session, encoding: str, body: bytes, node: Node | None
) -> list[bytes]:
    """The body with `encoding` undone: one reading, or several where clients differ.

    Damage in the first reading is reported on `node` if one is given.
    """
    if encoding == "base64":
        data, damaged = decode_base64(body)
        if not damaged:
            return [data]
        if node is not None:
            session.problem(f"Damaged base64 ({damaged})", node)
        found = [data]
        for other in (decode_base64_tokens(body), decode_base64_lines(body)):
            if other is not None and other not in found:
                found.append(other)
        return found
    if encoding == "quoted-printable":
        if b"= " in body or b"=\t" in body:
            body = _SOFT_BREAK_BLANKS.sub(b"=", body)
        return [binascii.a2b_qp(body)]
    if encoding == readings.UUENCODE:
        return [uudecode_body(body)]
    if encoding == readings.YENCODE:
        return [ydecode_body(body)]
    return [body]


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


def decode_base64_tokens(body: bytes) -> bytes | None:
    """Thunderbird's reading: characters outside the alphabet are skipped, every four
    that remain are one token, and a token with n `=` in it gives 3 - n bytes.
    None when the body has too many padded tokens to decode them one by one."""
    text = body.translate(None, _NOT_BASE64)
    text = text[: len(text) - len(text) % 4]
    decoded = binascii.a2b_base64(text.replace(b"=", b"A"))  # 3 bytes per token
    padded: dict[int, int] = {}  # token -> number of "=" in it
    position = text.find(b"=")
    while position >= 0:
        padded[position // 4] = padded.get(position // 4, 0) + 1
        if len(padded) > _MAX_PADDED_TOKENS:
            return None
        position = text.find(b"=", position + 1)
    out = bytearray()
    done = 0
    for token, count in padded.items():
        out += decoded[done * 3 : token * 3] + decoded[token * 3 : token * 3 + max(3 - count, 0)]
        done = token + 1
    out += decoded[done * 3 :]
    return bytes(out)


def decode_base64_lines(body: bytes) -> bytes | None:
    """Only the lines that are base64 and nothing else, decoded; None if there are none."""
    lines = _BASE64_LINE.findall(body)
    if not lines:
        return None
    data, _ = decode_base64(b"".join(line.rstrip() for line in lines))
    return data
