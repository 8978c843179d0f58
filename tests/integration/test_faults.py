"""Faults on either side of the filter: what Postfix is told, and that no mail is lost.

The rule (REFERENCE.md): a 4xx keeps the message in Postfix's queue and is always
safe; a 5xx makes Postfix bounce, so only a permanent refusal by the next hop may
become one; a 2xx means every recipient was delivered or deliberately handled.
"""

from __future__ import annotations

import re

import pytest

from tests.support import messages
from tests.support.client import Replies, send
from tests.support.daemons import Clamd, FilterFactory, Spamd
from tests.support.net import GarbageServer, HangingServer, closed_port
from tests.support.sink import CaptureSink

TEMPFAIL = re.compile(r"451 4\.\d\.\d ")
ALICE = messages.SENDER
BOB = messages.RECIPIENT
CAROL = "carol@recipient.example"


def send_clean(address: str, recipients: list[str] | None = None) -> Replies:
    return send(address, messages.clean(), ALICE, recipients or [BOB])


# --- the next hop (Postfix's 10025 listener) misbehaves --------------------------------


def test_next_hop_tempfail_is_passed_upstream_as_451(
    filter_factory: FilterFactory, sink: CaptureSink
) -> None:
    sink.misbehave(data_reply="451 4.3.0 Try again later (sink)")
    replies = send_clean(filter_factory().address)
    assert TEMPFAIL.match(replies.data), replies
    assert "4.3.0 Try again later (sink)" in replies.data
    assert sink.messages == []


def test_next_hop_refusing_every_recipient_gives_5xx(
    filter_factory: FilterFactory, sink: CaptureSink
) -> None:
    sink.misbehave(rcpt_reply="550 5.1.1 No such user (sink)")
    replies = send_clean(filter_factory().address)
    assert replies.data.startswith("5"), replies
    assert "5.1.1 No such user (sink)" in replies.data
    assert sink.messages == []


def test_next_hop_permanent_refusal_at_end_of_data_gives_5xx(
    filter_factory: FilterFactory, sink: CaptureSink
) -> None:
    sink.misbehave(data_reply="554 5.7.1 Refused by policy (sink)")
    replies = send_clean(filter_factory().address)
    assert replies.data.startswith("5"), replies
    assert "5.7.1 Refused by policy (sink)" in replies.data


def test_next_hop_down_gives_451(filter_factory: FilterFactory) -> None:
    process = filter_factory(next_hop=f"127.0.0.1:{closed_port()}")
    replies = send_clean(process.address)
    assert TEMPFAIL.match(replies.data), replies


@pytest.mark.parametrize("drop", ["after_354", "before_data_reply"])
def test_next_hop_dropping_the_connection_during_data_gives_451(
    filter_factory: FilterFactory, sink: CaptureSink, drop: str
) -> None:
    sink.misbehave(drop=drop)
    replies = send_clean(filter_factory().address)
    assert TEMPFAIL.match(replies.data), replies
    assert sink.messages == []


def test_next_hop_not_answering_end_of_data_gives_451(
    filter_factory: FilterFactory, sink: CaptureSink
) -> None:
    sink.misbehave(hang=True)
    process = filter_factory(config_text="next_hop: {data_timeout: 2}\n")
    replies = send_clean(process.address)
    assert TEMPFAIL.match(replies.data), replies


def test_next_hop_refusing_some_recipients_delivers_the_rest_and_bounces_them(
    filter_factory: FilterFactory, sink: CaptureSink
) -> None:
    """amavisd-new's answer: 250 for the message, a DSN to the sender for the refused.

    Postfix gets one reply for all recipients; a 250 alone would lose Carol's copy
    silently, a 5xx would make Postfix bounce Bob's delivered copy too.
    """
    sink.misbehave(rcpt_replies={CAROL: "550 5.1.1 <carol@recipient.example>: unknown"})
    replies = send_clean(filter_factory().address, [BOB, CAROL])
    assert replies.data.startswith("250 "), replies
    arrived = sink.wait_for(2)
    delivered = [t for t in arrived if t.mail_from == ALICE]
    notices = [t for t in arrived if t.mail_from == ""]
    assert [t.rcpt_tos for t in delivered] == [[BOB]]
    assert len(notices) == 1, arrived
    assert notices[0].rcpt_tos == [ALICE]
    assert b"carol@recipient.example" in notices[0].data
    assert b"5.1.1" in notices[0].data


def test_next_hop_tempfailing_some_recipients_tempfails_the_message(
    filter_factory: FilterFactory, sink: CaptureSink
) -> None:
    """One recipient deferred: 4xx for all, so Postfix retries (Bob may get a duplicate)."""
    sink.misbehave(rcpt_replies={CAROL: "450 4.2.0 <carol@recipient.example>: busy"})
    replies = send_clean(filter_factory().address, [BOB, CAROL])
    assert replies.data.startswith("4"), replies


# --- the scanners misbehave --------------------------------------------------------------


def test_clamd_unreachable_gives_451_and_relays_nothing(
    filter_factory: FilterFactory, sink: CaptureSink
) -> None:
    process = filter_factory(clamd=f"127.0.0.1:{closed_port()}")
    replies = send_clean(process.address)
    assert TEMPFAIL.match(replies.data), replies
    assert sink.attempts == []


def test_clamd_hanging_past_the_scanner_timeout_gives_451(
    filter_factory: FilterFactory, sink: CaptureSink
) -> None:
    with HangingServer() as hanging:
        process = filter_factory(
            clamd=None,
            config_text=f"scanners: {{clamav: {{servers: ['{hanging.address}'], timeout: 2}}}}\n",
        )
        replies = send_clean(process.address)
        assert hanging.connections >= 1
    assert TEMPFAIL.match(replies.data), replies
    assert sink.attempts == []


def test_clamd_answering_garbage_gives_451(
    filter_factory: FilterFactory, sink: CaptureSink
) -> None:
    with GarbageServer() as garbage:
        process = filter_factory(clamd=garbage.address)
        replies = send_clean(process.address)
    assert TEMPFAIL.match(replies.data), replies
    assert sink.attempts == []


def test_clamd_unreachable_with_on_failure_unchecked_passes_tagged(
    filter_factory: FilterFactory, sink: CaptureSink
) -> None:
    """amavisd-new's behaviour, one setting away: pass the mail as UNCHECKED."""
    down = f"127.0.0.1:{closed_port()}"
    process = filter_factory(
        clamd=None,
        config_text=f"scanners: {{clamav: {{servers: ['{down}'], on_failure: unchecked}}}}\n",
    )
    replies = send_clean(process.address)
    assert replies.data.startswith("250 "), replies
    (arrived,) = sink.wait_for(1)
    assert messages.header_value(arrived.data, "Subject") == "***UNCHECKED*** Quarterly report"


def test_spamd_down_lets_mail_pass(
    filter_factory: FilterFactory, sink: CaptureSink, clamd: Clamd
) -> None:
    process = filter_factory(clamd=clamd.address, spamd=f"127.0.0.1:{closed_port()}")
    message = messages.clean()
    replies = send(process.address, message, ALICE, [BOB])
    assert replies.data.startswith("250 2.0.0 "), replies
    (arrived,) = sink.wait_for(1)
    messages.added_headers(arrived.data, message)


def test_spamd_up_and_clamd_up_pass_a_clean_message(
    filter_factory: FilterFactory, sink: CaptureSink, clamd: Clamd, spamd: Spamd
) -> None:
    """The baseline of the fault tests: the same message with both scanners working."""
    process = filter_factory(clamd=clamd.address, spamd=spamd.address)
    message = messages.clean()
    replies = send(process.address, message, ALICE, [BOB])
    assert replies.data.startswith("250 2.0.0 "), replies
    (arrived,) = sink.wait_for(1)
    messages.added_headers(arrived.data, message)
    assert messages.header_value(arrived.data, "X-Spam-Flag") in (None, "NO")
