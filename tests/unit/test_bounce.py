"""contentfilter.bounce: RFC 3464 reports, parsed back with the stdlib email package."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from email.message import EmailMessage, Message
from typing import Any

import pytest

from contentfilter.bounce import FailedRecipient, build_dsn, dsn_subject, should_send_dsn
from contentfilter.model import ContentsCategory
from tests.support.messages import parsed

C = ContentsCategory
EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
HEADER = (
    b"Received: from client.example.org (client.example.org [192.0.2.1])\r\n"
    b"\tby mx.example.com (Postfix) with ESMTP id 55946218A06\r\n"
    b"\tfor <b@y>; Tue, 02 Jan 2024 03:04:05 +0000 (UTC)\r\n"
    b"From: Alice <a@x>\r\n"
    b"To: b@y\r\n"
    b"Subject: Invoice\r\n"
    b"Message-ID: <m1@x>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain\r\n"
)
ORIGINAL = HEADER + b"\r\n" + EICAR + b"\r\n"
ARRIVAL = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
REJECT = (554, "5.7.0", "Reject, id=12345-01 - INFECTED: Eicar-Test-Signature")


def dsn(
    failed: Sequence[FailedRecipient] = (("b@y", None, *REJECT),),
    original: bytes = ORIGINAL,
    header_end: int | None = None,
    **overrides: Any,
) -> bytes:
    arguments: dict[str, Any] = {
        "envelope_sender": "a@x",
        "reporting_mta": "mx.example.com",
        "arrival_date": ARRIVAL,
        "log_id": "12345-01",
        "reason": "INFECTED: Eicar-Test-Signature",
        "category": C.VIRUS,
        "details": ["Eicar-Test-Signature"],
    }
    arguments.update(overrides)
    end = original.index(b"\r\n\r\n") + 4 if header_end is None else header_end
    return build_dsn(original=original, header_end=end, failed=failed, **arguments)


def parts(message: EmailMessage) -> list[EmailMessage]:
    payload = message.get_payload()
    assert isinstance(payload, list)
    return [part for part in payload if isinstance(part, EmailMessage)]


def status_blocks(message: EmailMessage) -> list[Message]:
    blocks = parts(message)[1].get_payload()
    assert isinstance(blocks, list)
    return [block for block in blocks if isinstance(block, Message)]


def test_dsn_structure() -> None:
    raw = dsn()
    message = parsed(raw)
    assert message.get_content_type() == "multipart/report"
    assert message.get_param("report-type") == "delivery-status"
    assert message["From"] == "MAILER-DAEMON@mx.example.com"
    assert b"\r\nTo: <a@x>\r\n" in raw
    assert message["Subject"] == "VIRUS in message apparently from you (Eicar-Test-Signature)"
    assert message["Auto-Submitted"] == "auto-replied"
    assert message["MIME-Version"] == "1.0"
    assert message["In-Reply-To"] == "<m1@x>"
    assert re.fullmatch(r"<VS[0-9a-f]{24}@mx\.example\.com>", str(message["Message-ID"]))
    assert message["Date"].datetime == ARRIVAL
    types = [part.get_content_type() for part in parts(message)]
    assert types == ["text/plain", "message/delivery-status", "text/rfc822-headers"]
    assert message.defects == [] and all(part.defects == [] for part in parts(message))


def test_dsn_is_crlf_and_short_lined() -> None:
    raw = dsn()
    assert re.search(rb"(?<!\r)\n", raw) is None
    assert re.search(rb"\r(?!\n)", raw) is None
    assert all(len(line) <= 78 for line in raw.split(b"\r\n"))
    assert raw.isascii()


def test_delivery_status_fields() -> None:
    failed = [
        ("b@y", "rfc822;b+2Btag@y", *REJECT),
        ("c@z", None, 554, "5.7.0", "Reject, id=12345-01 - BANNED: invoice.exe"),
    ]
    message = parsed(dsn(failed, envid="QQ+2B314"))
    per_message, first, second = status_blocks(message)
    assert per_message["Reporting-MTA"] == "dns; mx.example.com"
    assert per_message["Arrival-Date"] == "Tue, 02 Jan 2024 03:04:05 +0000"
    assert per_message["Original-Envelope-Id"] == "QQ+314"  # RFC 3461 xtext decoded
    assert first["Original-Recipient"] == "rfc822;b+tag@y"
    assert first["Final-Recipient"] == "rfc822; b@y"
    assert first["Action"] == "failed"
    assert first["Status"] == "5.7.0"
    assert first["Diagnostic-Code"] == (
        "smtp; 554 5.7.0 Reject, id=12345-01 - INFECTED: Eicar-Test-Signature"
    )
    assert first["Final-Log-ID"] == "12345-01"
    assert second["Original-Recipient"] is None
    assert second["Final-Recipient"] == "rfc822; c@z"
    assert "BANNED: invoice.exe" in str(second["Diagnostic-Code"])


def test_headers_part_never_carries_the_body() -> None:
    raw = dsn()
    assert EICAR not in raw
    returned = parts(parsed(raw))[2].get_payload(decode=True)
    assert isinstance(returned, bytes)
    assert returned == b"Return-Path: <a@x>\r\n" + HEADER


@pytest.mark.parametrize(
    ("original", "header_end"),
    [
        (ORIGINAL, len(ORIGINAL)),  # a caller's wrong offset must not leak the body
        (b"\r\n" + EICAR + b"\r\n\r\nmore\r\n", 0),  # empty header section
        (HEADER, len(HEADER)),  # no body at all
        (HEADER.replace(b"\r\n", b"\n") + b"\n" + EICAR + b"\n", 10_000),  # bare LF
    ],
)
def test_headers_part_is_the_header_section_only(original: bytes, header_end: int) -> None:
    raw = dsn(original=original, header_end=header_end)
    assert EICAR not in raw
    assert re.search(rb"(?<!\r)\n", raw) is None
    assert parts(parsed(raw))[2].get_content_type() == "text/rfc822-headers"


def test_explanation_text() -> None:
    text = parts(parsed(dsn()))[0].get_content().replace("\r\n", "\n")
    assert text.startswith("VIRUS ALERT\n")
    assert "<b@y>: 554 5.7.0 Reject, id=12345-01 - INFECTED: Eicar-Test-Signature" in text
    assert "Reason: INFECTED: Eicar-Test-Signature" in text
    assert "  Message-ID: <m1@x>" in text and "  Subject: Invoice" in text
    assert "Please check your system for viruses" in text


def test_non_ascii_subject_and_names() -> None:
    original = HEADER.replace(b"Subject: Invoice", b"Subject: =?UTF-8?B?0KHRh9GR0YI=?=")
    original += b"\r\n" + EICAR
    raw = dsn(
        original=original,
        header_end=len(HEADER) + 2,
        category=C.BANNED,
        details=["application/x-msdownload,.exe,счёт.exe"],
    )
    assert raw.isascii()
    message = parsed(raw)
    assert message["Subject"] == "BANNED contents from you (application/x-msdownload,.exe,счёт.exe)"
    assert "  Subject: Счёт" in parts(message)[0].get_content()


def test_utf8_header_section_is_message_global_headers() -> None:
    original = HEADER.replace(b"Subject: Invoice", "Subject: Счёт".encode()) + b"\r\n" + EICAR
    message = parsed(dsn(original=original, header_end=len(HEADER) + 4))
    assert parts(message)[2].get_content_type() == "message/global-headers"  # RFC 6533
    assert message["Content-Transfer-Encoding"] == "8bit"


def test_dsn_is_deterministic_and_from_is_settable() -> None:
    assert dsn() == dsn()
    assert dsn() != dsn(log_id="12345-02")
    message = parsed(
        dsn(from_address="postmaster@mx.example.com", mail_id="aBc", category=None, details=())
    )
    assert message["From"] == "postmaster@mx.example.com"
    assert message["Message-ID"] == "<DSNaBc@mx.example.com>"
    assert message["Subject"] == "Undeliverable mail"
    assert status_blocks(message)[1]["Final-Log-ID"] == "12345-01/aBc"


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [({"failed": ()}, "failed recipient"), ({"envelope_sender": ""}, "null sender")],
)
def test_dsn_refuses(kwargs: dict[str, Any], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        dsn(**kwargs)


@pytest.mark.parametrize(
    ("category", "details", "subject"),
    [
        (
            C.VIRUS,
            ["Eicar-Test-Signature", "Win.Test.EICAR_HDB-1"],
            "VIRUS in message apparently from you (Eicar-Test-Signature, Win.Test.EICAR_HDB-1)",
        ),
        (C.VIRUS, [], "VIRUS in message apparently from you"),
        (
            C.BANNED,
            ["text/plain,.exe,run.exe", "b"],
            "BANNED contents from you (text/plain,.exe,run.exe)",
        ),
        (C.SPAM, [], "Considered UNSOLICITED BULK EMAIL, apparently from you"),
        (C.SPAMMY, [], "Undeliverable mail, UNSOLICITED BULK EMAIL apparently from you"),
        (C.OVERSIZED, [], "Undeliverable mail, OVERSIZED message"),
        (C.BAD_HEADER, [], "Undeliverable mail, invalid header section"),
        (C.UNCHECKED, [], "Undeliverable mail, contents UNCHECKED"),
        (C.CLEAN, [], "Undeliverable mail"),
        (None, [], "Undeliverable mail"),
    ],
)
def test_dsn_subject(category: ContentsCategory | None, details: list[str], subject: str) -> None:
    assert dsn_subject(category, details) == subject


DEBIAN_FAKERS = ["!*eicar*", "*"]  # Debian's default: every virus but the EICAR test


@pytest.mark.parametrize(
    ("sender", "score", "cutoff", "viruses", "patterns", "reason"),
    [
        ("a@x", None, None, [], [], None),
        ("", None, None, [], [], "null sender"),
        ("<>", None, None, [], [], "null sender"),
        ("a@x", 12.0, 10.0, [], [], "spam level 12 reaches the DSN cutoff level 10"),
        ("a@x", 10.0, 10.0, [], [], "spam level 10 reaches"),
        ("a@x", 9.99, 10.0, [], [], None),
        ("a@x", 50.0, None, [], [], None),
        ("a@x", None, 10.0, [], [], None),
        ("a@x", None, None, ["Worm.Mydoom.A"], ["worm.*", "*.Netsky*"], "Worm.Mydoom.A fakes"),
        ("a@x", None, None, ["Win.Test.X"], ["worm.*"], None),
        ("a@x", None, None, ["Eicar-Test-Signature"], DEBIAN_FAKERS, None),
        ("a@x", None, None, ["Win.Trojan.Agent"], DEBIAN_FAKERS, "matches *)"),
        ("a@x", None, None, ["Eicar-Test-Signature", "Worm.X"], DEBIAN_FAKERS, "Worm.X fakes"),
        ("a@x", None, None, ["W32.Sober[x]"], ["w32.sober[[]*"], "fakes"),  # glob classes
        ("", 99.0, 1.0, ["Worm.X"], ["*"], "null sender"),  # amavisd-new's order
        ("a@x", 99.0, 1.0, ["Worm.X"], ["*"], "INFECTED"),
    ],
)
def test_should_send_dsn(
    sender: str,
    score: float | None,
    cutoff: float | None,
    viruses: list[str],
    patterns: list[str],
    reason: str | None,
) -> None:
    result = should_send_dsn(sender, score, cutoff, viruses, patterns)
    if reason is None:
        assert result is None
    else:
        assert result is not None and reason in result
