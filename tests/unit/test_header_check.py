"""amavisd-new's bad-header checks as a table."""

from __future__ import annotations

import pytest

from contentfilter.model import ContentsCategory, Envelope, Recipient
from contentfilter.rfc5322 import read_message
from scanners.header_check import HeaderCheckScanner, HeaderCheckSettings, problems

GOOD = b"From: a@example.org\r\nDate: Fri, 20 Nov 2026 10:00:00 +0000\r\nSubject: hi\r\n\r\n"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (GOOD, []),
        (
            GOOD.replace(b"hi", b"h\xc3\xa9"),
            ["Non-encoded 8-bit data (char C3 hex) in message header 'Subject'"],
        ),
        (
            GOOD.replace(b"hi", b"h\x07i"),
            ["Improper use of control character (char 07 hex) in message header 'Subject'"],
        ),
        (
            GOOD.replace(b"Subject: hi\r\n", b"Subject: hi\r\n \t\r\n"),
            ["Improper folded header field made up entirely of whitespace: Subject"],
        ),
        (GOOD.replace(b"hi", b"x" * 1000), ["Header line longer than 998 characters: Subject"]),
        (GOOD.replace(b"Subject: hi", b"Subject hi"), ["Header field syntax error: Subject hi"]),
        (
            GOOD.replace(b"Date: Fri, 20 Nov 2026 10:00:00 +0000\r\n", b""),
            ['Missing required header field: "Date"'],
        ),
        (GOOD + b"Subject: again\r\n", ['Duplicate header field: "Subject"']),
        (
            GOOD.replace(b"\r\n\r\n", b"\r\nMessage-ID: <a@b>\r\nmessage-id: <c@d>\r\n\r\n"),
            ['Duplicate header field: "Message-ID"'],
        ),
    ],
)
def test_problems(header: bytes, expected: list[str]) -> None:
    assert problems(header) == expected


def test_utf8_headers_are_fine_under_smtputf8() -> None:
    assert problems(GOOD.replace(b"hi", b"h\xc3\xa9"), smtputf8=True) == []


async def test_scanner_reports_the_first_problem_as_bad_header() -> None:
    raw = GOOD.replace(b"Subject: hi", b"Subject: h\x00i") + b"Subject: twice\r\n\r\nbody\r\n"
    message = read_message("1-01", "m", Envelope("a@x", (Recipient("b@y"),)), raw)
    result = await HeaderCheckScanner("bad_header", HeaderCheckSettings()).scan(message)
    assert [(f.category, f.detail) for f in result.findings] == [
        (
            ContentsCategory.BAD_HEADER,
            "Improper use of control character (char 00 hex) in message header 'Subject'",
        )
    ]


@pytest.mark.parametrize(
    "header",
    [b" From: a@example.org\r\n" + GOOD, b"\tSubject: hidden\r\n" + GOOD],
)
def test_a_section_that_starts_with_whitespace_is_a_bad_header(header: bytes) -> None:
    first_line = header.split(b"\r\n")[0].decode()
    assert problems(header) == [f"Header field syntax error: {first_line}"]


async def test_scanner_sees_the_whole_section_that_starts_with_whitespace() -> None:
    raw = b" From: a@example.org\r\n" + GOOD + b"body\r\n"
    message = read_message("1-01", "m", Envelope("a@x", (Recipient("b@y"),)), raw)
    result = await HeaderCheckScanner("bad_header", HeaderCheckSettings()).scan(message)
    assert [(f.category, f.detail) for f in result.findings] == [
        (ContentsCategory.BAD_HEADER, "Header field syntax error:  From: a@example.org")
    ]
