"""Reply texts and amavisd-new's rules for one reply to many recipients."""

from __future__ import annotations

import pytest

from contentfilter import replies
from contentfilter.errors import NextHopRefused, NextHopUnavailable, ScannerUnavailable
from contentfilter.model import (
    Action,
    ContentsCategory,
    Destiny,
    Disposition,
    Recipient,
    Reply,
    Verdict,
)

OK = replies.relayed("1-01", "[127.0.0.1]:10025", 250, "2.0.0 Ok: queued as ABC")
DISCARD = replies.discarded("1-01", "INFECTED: Eicar-Test-Signature")
REJECT = Reply(554, "5.7.0", "Reject, id=1-01 - INFECTED: Eicar-Test-Signature")
TEMP = Reply(451, "4.4.1", "Error in processing")
BOUNCE = replies.bounced("1-01", "BANNED: x.exe")
ACTIONS = {
    id(OK): Action.RELAYED,
    id(DISCARD): Action.DISCARDED,
    id(REJECT): Action.REJECTED,
    id(TEMP): Action.TEMPFAILED,
    id(BOUNCE): Action.BOUNCED,
}


def disposition(reply: Reply) -> Disposition:
    return Disposition(Recipient("b@example.com"), None, ACTIONS[id(reply)], reply)


def test_relayed_text_mirrors_amavisd_new() -> None:
    assert replies.render(OK) == (
        "250 2.0.0 Ok, id=1-01, from MTA([127.0.0.1]:10025): 250 2.0.0 Ok: queued as ABC"
    )


def test_discard_text() -> None:
    assert replies.render(DISCARD) == (
        "250 2.7.0 Ok, discarded, id=1-01 - INFECTED: Eicar-Test-Signature"
    )


def verdict(category: ContentsCategory, destiny: Destiny, reason: str) -> Verdict:
    return Verdict(Recipient("b@example.com"), category, destiny, reason)


@pytest.mark.parametrize(
    ("category", "rendered"),
    [
        (ContentsCategory.VIRUS, "554 5.7.0 Reject, id=1-01 - INFECTED: Eicar-Test-Signature"),
        (ContentsCategory.BAD_HEADER, "554 5.6.0 Reject, id=1-01 - INFECTED: Eicar-Test-Signature"),
        (ContentsCategory.OVERSIZED, "552 5.3.4 Reject, id=1-01 - INFECTED: Eicar-Test-Signature"),
    ],
)
def test_reject_codes_per_category(category: ContentsCategory, rendered: str) -> None:
    reply = replies.rejected(
        "1-01", verdict(category, Destiny.REJECT, "INFECTED: Eicar-Test-Signature")
    )
    assert replies.render(reply) == rendered


@pytest.mark.parametrize(
    ("recipient_replies", "expected_code", "suffix"),
    [
        ([OK, OK], 250, "queued as ABC"),
        ([OK, TEMP], 451, "Error in processing"),  # any 4xx wins
        ([REJECT, TEMP], 451, "Error in processing"),
        ([DISCARD, DISCARD], 250, "Eicar-Test-Signature"),
        ([REJECT, DISCARD], 554, "Eicar-Test-Signature"),
        ([OK, REJECT], 250, ", but 1 REJECT"),
        ([OK, REJECT, REJECT], 250, ", but 2 REJECT"),
        ([BOUNCE], 250, "BOUNCE - BANNED: x.exe"),
    ],
)
def test_combine(recipient_replies: list[Reply], expected_code: int, suffix: str) -> None:
    combined = replies.combine("1-01", [disposition(r) for r in recipient_replies])
    assert combined.code == expected_code
    assert suffix in combined.text


def test_next_hop_5xx_is_5xx_and_4xx_or_silence_is_451() -> None:
    permanent = replies.next_hop_failed("1-01", "[h]:1", NextHopRefused("x", 550, "5.1.1 no"))
    temporary = replies.next_hop_failed("1-01", "[h]:1", NextHopRefused("x", 452, "4.3.1 full"))
    silent = replies.next_hop_failed("1-01", "[h]:1", NextHopUnavailable("refused"))
    assert (permanent.code, temporary.code, silent.code) == (554, 451, 451)
    assert "550 5.1.1 no" in permanent.text


def test_internal_failures_are_never_5xx() -> None:
    for error in (ScannerUnavailable("clamav", "down"), TimeoutError(), KeyError("bug")):
        assert replies.failure("1-01", error).code == 451


def test_long_replies_become_continuation_lines() -> None:
    reply = Reply(554, "5.7.0", "Reject - BANNED: " + "x" * 1200)
    lines = replies.render(reply).split("\r\n")
    assert len(lines) == 3
    assert all(len(line) <= 510 for line in lines)
    assert lines[0].startswith("554-5.7.0 ") and lines[-1].startswith("554 5.7.0 ")


@pytest.mark.parametrize(
    ("data", "wire"),
    [
        (b"a\r\n", b"a\r\n.\r\n"),
        (b"", b".\r\n"),
        (b".starts with a dot\r\n", b"..starts with a dot\r\n.\r\n"),
        (b"x\r\n.\r\n..\r\ny", b"x\r\n..\r\n...\r\ny\r\n.\r\n"),
        (b"bare\nlf\r\n", b"bare\r\nlf\r\n.\r\n"),
    ],
)
def test_dot_stuffing_for_the_next_hop(data: bytes, wire: bytes) -> None:
    from contentfilter.relay import dot_stuffed

    assert dot_stuffed(data) == wire
