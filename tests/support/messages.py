"""Test mail: the EICAR and GTUBE strings and small messages built around them.

Messages are bytes with CRLF line endings and complete headers (From, To, Date,
Message-ID, Subject) so no MTA on the way has a reason to add or rewrite any.
"""

from __future__ import annotations

import base64
import email
import email.parser
import email.policy
import uuid
from email.message import EmailMessage
from pathlib import Path

EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
GTUBE = b"XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"

SENDER = "alice@sender.example"
RECIPIENT = "bob@recipient.example"


def message(
    subject: str,
    body: bytes,
    *,
    sender: str = SENDER,
    recipient: str = RECIPIENT,
    content_type: str = "text/plain; charset=us-ascii",
    extra_headers: tuple[str, ...] = (),
) -> bytes:
    """A plain-text message; `body` lines must already end in CRLF."""
    headers = [
        f"From: Alice <{sender}>",
        f"To: Bob <{recipient}>",
        f"Subject: {subject}",
        "Date: Thu, 20 Nov 2025 12:00:00 +0000",
        f"Message-ID: <{uuid.uuid4().hex}@sender.example>",
        "MIME-Version: 1.0",
        f"Content-Type: {content_type}",
        *extra_headers,
    ]
    return ("\r\n".join(headers) + "\r\n\r\n").encode() + body


def clean(subject: str = "Quarterly report") -> bytes:
    body = (
        b"Hello Bob,\r\n"
        b"\r\n"
        b"the numbers are attached in spirit. Trailing spaces stay:   \r\n"
        b".a line that starts with a dot (dot-stuffed on the wire)\r\n"
        b"\ttab-indented line\r\n"
        b"\r\n"
        b"-- \r\n"
        b"Alice\r\n"
    )
    return message(subject, body)


def gtube(subject: str = "Test spam mail (GTUBE)") -> bytes:
    body = b"This is the GTUBE, the Generic Test for Unsolicited Bulk Email.\r\n\r\n"
    return message(subject, body + GTUBE + b"\r\n")


def eicar_attachment(subject: str = "Invoice") -> bytes:
    """EICAR as a base64 attachment (what a virus in the wild looks like)."""
    boundary = "=_boundary_" + uuid.uuid4().hex
    encoded = base64.encodebytes(EICAR).replace(b"\n", b"\r\n")
    body = (
        (
            f"--{boundary}\r\n"
            "Content-Type: text/plain; charset=us-ascii\r\n\r\n"
            "Please find the invoice attached.\r\n\r\n"
            f"--{boundary}\r\n"
            'Content-Type: application/octet-stream; name="eicar.com"\r\n'
            'Content-Disposition: attachment; filename="eicar.com"\r\n'
            "Content-Transfer-Encoding: base64\r\n\r\n"
        ).encode()
        + encoded
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return message(subject, body, content_type=f'multipart/mixed; boundary="{boundary}"')


def banned_exe() -> bytes:
    """samples/banned-exe.eml (a message with a Windows program attached), CRLF lines."""
    sample = Path(__file__).resolve().parents[2] / "samples" / "banned-exe.eml"
    return sample.read_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def eicar_inline(subject: str = "EICAR test") -> bytes:
    """The EICAR string alone in a text body."""
    return message(subject, EICAR + b"\r\n")


def added_headers(received: bytes, original: bytes) -> list[bytes]:
    """The header fields put on top of `original`; fails unless that is all that changed.

    Each returned field is one header (continuation lines included, CRLF removed).
    """
    assert received.endswith(original), "the original message is not intact at the end"
    prefix = received[: len(received) - len(original)]
    assert prefix == b"" or prefix.endswith(b"\r\n"), f"prefix not CRLF-terminated: {prefix!r}"
    fields: list[bytes] = []
    for line in prefix.split(b"\r\n")[:-1]:
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += b"\r\n" + line
        else:
            name, colon, _ = line.partition(b":")
            assert colon and name and all(33 <= c <= 126 for c in name), (
                f"not a header line: {line!r}"
            )
            fields.append(line)
    return fields


def header_names(fields: list[bytes]) -> list[str]:
    return [field.partition(b":")[0].decode().lower() for field in fields]


def header_value(message_bytes: bytes, name: str) -> str | None:
    """The first value of header `name` in a message, unfolded (None if absent)."""
    parsed = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(message_bytes)
    value = parsed.get(name)
    if value is None:
        return None
    return " ".join(str(value).split())


def parsed(raw: bytes) -> EmailMessage:
    """The message as the standard library's modern API reads it."""
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def text_body(message: EmailMessage) -> str:
    """The decoded text of a single-part text message."""
    content = message.get_content()
    assert isinstance(content, str)
    return content
