"""The whole chain of REFERENCE.md with a real Postfix, clamd and spamd.

    test client -> Postfix smtpd -> smtp-amavis -> contentfilter -> Postfix :10025
                -> Postfix smtp -> sink

The test client pretends to be a remote host (XFORWARD on the first smtpd), so the
sink can tell whether the original client address survived every hop.
"""

from __future__ import annotations

import re

from tests.support import messages
from tests.support.client import send
from tests.support.daemons import PostfixStack

REMOTE_CLIENT = "NAME=mail.client.example ADDR=192.0.2.55 PROTO=ESMTP HELO=client.example"


def submit(stack: PostfixStack, message: bytes) -> None:
    replies = send(
        f"127.0.0.1:{stack.postfix.smtpd_port}",
        message,
        messages.SENDER,
        [messages.RECIPIENT],
        xforward=REMOTE_CLIENT,
    )
    assert replies.data.startswith("250 2.0.0 Ok: queued as "), replies


def queue_id_of(stack: PostfixStack, message: bytes) -> str:
    """Postfix's queue id for the first pass of `message` (found by its Message-ID)."""
    message_id = messages.header_value(message, "Message-ID")
    match = stack.postfix.wait_for_log(
        rf"postfix/cleanup\[\d+\]: ([0-9A-F]+): message-id={re.escape(message_id or '')}"
    )
    return match.group(1)


def test_clean_mail_arrives_unchanged_below_added_headers(postfix: PostfixStack) -> None:
    message = messages.clean()
    submit(postfix, message)
    (arrived,) = postfix.sink.wait_for(1)
    assert arrived.mail_from == messages.SENDER
    assert arrived.rcpt_tos == [messages.RECIPIENT]
    added = messages.added_headers(arrived.data, message)
    names = messages.header_names(added)
    # Postfix's Received on the first pass is at the bottom, the 10025 one on top.
    assert names[0] == "received" and names[-1] == "received", names
    assert "x-virus-scanned" in names, names
    postfix.postfix.wait_for_empty_queue()


def test_original_client_reaches_the_sink_via_xforward(postfix: PostfixStack) -> None:
    submit(postfix, messages.clean())
    (arrived,) = postfix.sink.wait_for(1)
    assert arrived.xforward.get("ADDR") == "192.0.2.55", arrived.xforward
    assert arrived.xforward.get("NAME") == "mail.client.example", arrived.xforward
    assert arrived.xforward.get("HELO") == "client.example", arrived.xforward


def test_eicar_never_arrives_and_postfix_logs_the_verdict(postfix: PostfixStack) -> None:
    message = messages.eicar_attachment()
    submit(postfix, message)
    queue_id = queue_id_of(postfix, message)
    line = postfix.postfix.wait_for_log(
        rf"{queue_id}: to=<{re.escape(messages.RECIPIENT)}>, relay=127\.0\.0\.1\[127\.0\.0\.1\]:"
        rf"{postfix.postfix.filter_port},.*"
    ).group(0)
    assert "status=sent (250 2.7.0 Ok, discarded, id=" in line, line
    assert "INFECTED: Eicar-Test-Signature" in line, line
    postfix.postfix.wait_for_empty_queue()
    assert postfix.sink.attempts == []


def test_gtube_arrives_tagged_as_spam(postfix: PostfixStack) -> None:
    message = messages.gtube()
    submit(postfix, message)
    (arrived,) = postfix.sink.wait_for(1)
    assert messages.header_value(arrived.data, "Subject") == "***SPAM*** Test spam mail (GTUBE)"
    assert messages.header_value(arrived.data, "X-Spam-Flag") == "YES"
    status = messages.header_value(arrived.data, "X-Spam-Status") or ""
    assert status.startswith("Yes, score="), status
    assert "GTUBE=1000" in status, status
    # Apart from the Subject line, the message is the one we sent.
    retagged = message.replace(
        b"Subject: Test spam mail (GTUBE)", b"Subject: ***SPAM*** Test spam mail (GTUBE)"
    )
    messages.added_headers(arrived.data, retagged)
    postfix.postfix.wait_for_empty_queue()


def test_nothing_is_left_in_the_queue(postfix: PostfixStack) -> None:
    for message in (messages.clean(), messages.eicar_inline(), messages.gtube()):
        submit(postfix, message)
    postfix.sink.wait_for(2)  # clean + GTUBE; EICAR is discarded
    postfix.postfix.wait_for_empty_queue()
    assert postfix.postfix.queue() == []
    assert "status=deferred" not in postfix.postfix.log_text()
