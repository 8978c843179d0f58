"""contentfilter.logline: amavisd-new's summary line, checked with mailgraph's regexes."""

from __future__ import annotations

import re
from collections.abc import Sequence

import pytest

from contentfilter.logline import (
    log_score,
    message_id,
    queue_id_from_headers,
    sanitize,
    smtp_path,
    summary_line,
)
from contentfilter.model import ContentsCategory

C = ContentsCategory


def mailgraph_event(text: str) -> str | None:
    """mailgraph 1.14's reading of an `amavis` syslog line (process_line), in Python."""
    if re.search(r"^\([\w-]+\) (Passed|Blocked) SPAM(?:MY)?\b", text):
        return None if re.search(r"\btag2=", text) else "spam"
    if re.search(r"^\([\w-]+\) (Passed|Not-Delivered)\b.*\bquarantine spam", text):
        return "spam"
    if re.search(r"^\([\w-]+\) (Passed |Blocked )?INFECTED\b", text):
        return None if re.search(r"\btag2=", text) else "virus"
    if re.search(r"^\([\w-]+\) (Passed |Blocked )?BANNED\b", text):
        return None if re.search(r"\btag2=", text) else "virus"
    return None


def line(
    passed: bool = True,
    category: ContentsCategory = C.CLEAN,
    details: Sequence[str] = (),
    actions: Sequence[str] = ("RelayedInbound",),
    **overrides: object,
) -> str:
    arguments: dict[str, object] = {
        "log_id": "12345-01",
        "client": "[127.0.0.1]:44556",
        "sender": "a@x",
        "recipients": ["b@y"],
        "queue_id": "ABC",
        "message_id": "<m@x>",
        "mail_id": "xyz",
        "hits": None,
        "size": 1234,
        "queued_as": ["DEF"],
        "elapsed_ms": 345,
    }
    arguments.update(overrides)
    return summary_line(
        passed=passed,
        category=category,
        details=details,
        actions=actions,
        **arguments,  # type: ignore[arg-type]
    )


TAIL = "Queue-ID: ABC, Message-ID: <m@x>, mail_id: xyz"
ROUTE = "[127.0.0.1]:44556 <a@x> -> <b@y>"


@pytest.mark.parametrize(
    ("text", "golden", "event"),
    [
        (
            line(),
            f"(12345-01) Passed CLEAN {{RelayedInbound}}, {ROUTE}, {TAIL}, Hits: -, "
            "size: 1234, queued_as: DEF, 345 ms",
            None,
        ),
        (
            line(False, C.VIRUS, ["Eicar-Test-Signature"], ["DiscardedInbound"], log_id="12345-02"),
            f"(12345-02) Blocked INFECTED (Eicar-Test-Signature) {{DiscardedInbound}}, {ROUTE}, "
            f"{TAIL}, Hits: -, size: 1234, 345 ms",
            "virus",
        ),
        (
            line(
                False,
                C.BANNED,
                ["application/octet-stream,.exe,.exe-ms,invoice.exe"],
                ["DiscardedInbound"],
            ),
            f"(12345-01) Blocked BANNED (application/octet-stream,.exe,.exe-ms,invoice.exe) "
            f"{{DiscardedInbound}}, {ROUTE}, {TAIL}, Hits: -, size: 1234, 345 ms",
            "virus",
        ),
        (
            line(True, C.SPAM, (), ["RelayedTaggedInbound"], hits=1007.457),
            f"(12345-01) Passed SPAM {{RelayedTaggedInbound}}, {ROUTE}, {TAIL}, "
            "Hits: 1007.457, size: 1234, queued_as: DEF, 345 ms",
            "spam",
        ),
        (
            line(False, C.SPAM, (), ["BouncedInbound"], hits=12.5),
            f"(12345-01) Blocked SPAM {{BouncedInbound}}, {ROUTE}, {TAIL}, "
            "Hits: 12.5, size: 1234, 345 ms",
            "spam",
        ),
        (
            line(True, C.SPAMMY, (), ["RelayedTaggedInbound"], hits=7.0),
            f"(12345-01) Passed SPAMMY {{RelayedTaggedInbound}}, {ROUTE}, {TAIL}, "
            "Hits: 7, size: 1234, queued_as: DEF, 345 ms",
            "spam",
        ),
        (
            line(True, C.BAD_HEADER, minor=8),
            f"(12345-01) Passed BAD-HEADER-8 {{RelayedInbound}}, {ROUTE}, {TAIL}, Hits: -, "
            "size: 1234, queued_as: DEF, 345 ms",
            None,
        ),
        (
            line(True, C.UNCHECKED, minor=1, actions=["RelayedTaggedInbound"]),
            f"(12345-01) Passed UNCHECKED-ENCRYPTED {{RelayedTaggedInbound}}, {ROUTE}, {TAIL}, "
            "Hits: -, size: 1234, queued_as: DEF, 345 ms",
            None,
        ),
        (
            line(False, C.OVERSIZED, (), ["BouncedInbound"]),
            f"(12345-01) Blocked OVERSIZED {{BouncedInbound}}, {ROUTE}, {TAIL}, Hits: -, "
            "size: 1234, 345 ms",
            None,
        ),
    ],
)
def test_summary_line_golden(text: str, golden: str, event: str | None) -> None:
    assert text == golden
    assert mailgraph_event(text) == event


def test_optional_fields_are_left_out() -> None:
    text = line(
        client="",
        sender="",
        recipients=["b@y", "c@z"],
        queue_id=None,
        message_id=None,
        mail_id="",
        queued_as=[],
    )
    assert text == (
        "(12345-01) Passed CLEAN {RelayedInbound}, <> -> <b@y>,<c@z>, Hits: -, size: 1234, 345 ms"
    )


def test_several_queued_as_and_quarantine() -> None:
    text = line(
        False,
        C.VIRUS,
        ["Eicar-Test-Signature", "Win.Test.EICAR_HDB-1", "Eicar-Test-Signature"],
        ["DiscardedInbound", "Quarantined"],
        quarantine=["virus-Abc123"],
        queued_as=["Q1", "Q2"],
    )
    assert text.startswith(
        "(12345-01) Blocked INFECTED (Eicar-Test-Signature, Win.Test.EICAR_HDB-1) "
        "{DiscardedInbound,Quarantined}, "
    )
    assert ", quarantine: virus-Abc123, Queue-ID: ABC," in text
    assert "queued_as" not in text  # the Blocked line does not show it
    assert "queued_as: Q1/Q2," in line(queued_as=["Q1", "Q2"])


def test_untrusted_text_cannot_break_the_line() -> None:
    text = line(message_id="<evil\n(99999-01) Blocked INFECTED (x)>", sender="a\\b@x")
    assert "\n" not in text
    assert "<evil\\n(99999-01) Blocked INFECTED (x)>" in text
    assert mailgraph_event(text) is None


@pytest.mark.parametrize(
    ("hits", "text"),
    [
        (None, "-"),
        (1007.457, "1007.457"),
        (10.0, "10"),
        (100.5, "100.5"),
        (0.0, "0"),
        (-1.9, "-1.9"),
        (-0.0, "0"),  # spamd's "-0.0"
        (-0.0001, "0"),
        (5.55555, "5.556"),
    ],
)
def test_log_score(hits: float | None, text: str) -> None:
    assert log_score(hits) == text


@pytest.mark.parametrize(
    ("address", "path"),
    [
        ("a@x", "<a@x>"),
        ("", "<>"),
        ("<a@x>", "<a@x>"),
        ("first.last+tag@example.com", "<first.last+tag@example.com>"),
        ("a b@x", '<"a b"@x>'),
        ('a"b@x', '<"a\\"b"@x>'),
        ("a..b@x", '<"a..b"@x>'),
        ("пользователь@пример.рф", "<пользователь@пример.рф>"),
        ("postmaster", "<postmaster>"),
    ],
)
def test_smtp_path(address: str, path: str) -> None:
    assert smtp_path(address) == path


@pytest.mark.parametrize(
    ("text", "clean"),
    [
        ("plain", "plain"),
        ("a\nb", "a\\nb"),
        ("t\tr\r", "t\\tr\\r"),
        ("\x01\x7f", "\\x01\\x7F"),
        ("back\\slash", "back\\\\slash"),
    ],
)
def test_sanitize(text: str, clean: str) -> None:
    assert sanitize(text) == clean


POSTFIX_RECEIVED = (
    b"Received: from client.example.org (client.example.org [192.0.2.1])\r\n"
    b"\tby mx.example.com (Postfix) with ESMTPS id 4Xyz1234AbCdz\r\n"
    b"\tfor <b@y>; Mon, 01 Jan 2024 00:00:00 +0000 (UTC)\r\n"
)


@pytest.mark.parametrize(
    ("headers", "queue_id"),
    [
        (POSTFIX_RECEIVED + b"Received: by other with SMTP id OLDER\r\n\r\n", "4Xyz1234AbCdz"),
        (
            b"Received: from a by b (Postfix) with ESMTP id D5DB9C000740; Mon, 1 Jan 2024\r\n",
            "D5DB9C000740",
        ),
        (
            b"Received: from a (authenticated id joe) by b with ESMTPA id 55946218A06\r\n",
            "55946218A06",
        ),
        (b"Received: from a (id FAKE) by b with ESMTP\r\n", None),
        (b"Received: from a by b; Mon, 1 Jan 2024 (id X)\r\n", None),
        (b"Subject: no trace\r\n\r\nReceived: by x with ESMTP id BODY\r\n", None),
        (b"Return-Path: <a@x>\r\n" + POSTFIX_RECEIVED, "4Xyz1234AbCdz"),
    ],
)
def test_queue_id_from_headers(headers: bytes, queue_id: str | None) -> None:
    assert queue_id_from_headers(headers) == queue_id


@pytest.mark.parametrize(
    ("headers", "msg_id"),
    [
        (b"Message-ID: <m@x>\r\n", "<m@x>"),
        (b"Message-Id:\r\n <folded@x>\r\n", "<folded@x>"),
        (b"message-id: (comment) <c@x> (more)\r\n", "<c@x>"),
        (b"Message-ID: <first@x>\r\nMessage-ID: <second@x>\r\n", "<first@x>"),
        (b"Message-ID: garbage@x\r\n", "<garbage@x>"),
        (b"Message-ID: \r\n", None),
        (b"Subject: none\r\n\r\nMessage-ID: <body@x>\r\n", None),
    ],
)
def test_message_id(headers: bytes, msg_id: str | None) -> None:
    assert message_id(headers) == msg_id
