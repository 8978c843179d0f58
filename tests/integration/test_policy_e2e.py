"""Per-recipient policy end to end: real spamd/clamd, the filter, a recording next hop."""

from __future__ import annotations

import email
import email.policy

from tests.support.client import RawSession, send
from tests.support.daemons import Clamd, FilterFactory, Spamd
from tests.support.messages import eicar_inline, gtube
from tests.support.net import free_port
from tests.support.sink import CaptureSink

THREE = ("lover@example.com", "bob@example.com", "carol@elsewhere.net")

POLICY = """
policy:
  local_domains: [example.com]
  destiny: {spam: discard}
  recipients:
    lover@example.com: {spam_lover: true}
    "@elsewhere.net": {spam_lover: true}
"""


def test_three_recipients_get_their_own_copies_and_one_reply(
    filter_factory: FilterFactory, sink: CaptureSink, spamd: Spamd
) -> None:
    flt = filter_factory(spamd=spamd.address, config_text=POLICY)
    original = gtube()
    replies = send(flt.address, original, "alice@sender.example", THREE)
    # bob's copy is discarded; the others are relayed, so the reply is the relay's 250
    assert replies.data.startswith("250 2.0.0 Ok, id="), replies.data
    assert "REJECT" not in replies.data
    copies = {tuple(t.rcpt_tos): t.data for t in sink.wait_for(2)}
    assert set(copies) == {("lover@example.com",), ("carol@elsewhere.net",)}
    local, remote = copies[("lover@example.com",)], copies[("carol@elsewhere.net",)]
    assert b"\r\nSubject: ***SPAM*** Test spam mail (GTUBE)\r\n" in local
    assert b"X-Spam-Flag: YES\r\n" in local
    assert b"X-Spam-Flag" not in remote and b"***SPAM***" not in remote
    assert b"X-Virus-Scanned: contentfilter at " in remote
    body = original[original.index(b"\r\n\r\n") :]
    assert local.endswith(body) and remote.endswith(body)


def test_lmtp_answers_each_recipient(
    filter_factory: FilterFactory, sink: CaptureSink, spamd: Spamd
) -> None:
    port = free_port()
    flt = filter_factory(
        spamd=spamd.address,
        config_text=POLICY,
        port=port,
        extra_args=("--listen", f"lmtp:127.0.0.1:{port}"),
    )
    with RawSession(flt.address) as session:
        assert session.command("LHLO client.test").startswith("250")
        assert session.command("MAIL FROM:<alice@sender.example>").startswith("250")
        for recipient in THREE:
            assert session.command(f"RCPT TO:<{recipient}>").startswith("250")
        assert session.command("DATA").startswith("354")
        session.send(gtube() + b".\r\n")
        answers = [session.reply() for _ in THREE]
    lover, bob, carol = answers
    assert lover.startswith("250 2.0.0 Ok, id=") and "from MTA(" in lover
    assert bob.startswith("250 2.7.0 Ok, discarded, id=") and bob.endswith("- spam")
    assert carol.startswith("250 2.0.0 Ok, id=")
    assert len(sink.wait_for(2)) == 2


BOUNCE = "policy: {destiny: {virus: bounce}}\n"


def test_bounce_sends_a_dsn_with_headers_but_not_the_virus(
    filter_factory: FilterFactory, sink: CaptureSink, clamd: Clamd
) -> None:
    flt = filter_factory(clamd=clamd.address, config_text=BOUNCE)
    replies = send(flt.address, eicar_inline(), "alice@sender.example", ["bob@example.com"])
    assert replies.data.startswith("250 2.5.0 Ok, id="), replies.data
    assert "BOUNCE" in replies.data and "Eicar-Test-Signature" in replies.data
    [dsn] = sink.wait_for(1)
    assert dsn.mail_from == "" and dsn.rcpt_tos == ["alice@sender.example"]
    assert b"EICAR-STANDARD-ANTIVIRUS-TEST-FILE" not in dsn.data
    report = email.message_from_bytes(dsn.data, policy=email.policy.default)
    assert report.get_content_type() == "multipart/report"
    assert report.get_param("report-type") == "delivery-status"
    kinds = [part.get_content_type() for part in report.iter_parts()]
    assert kinds == ["text/plain", "message/delivery-status", "text/rfc822-headers"]
    status = dsn.data.decode("utf-8", "replace")
    assert "Final-Recipient: rfc822; bob@example.com" in status
    assert "Action: failed" in status
    assert "Subject: EICAR test" in status  # the original headers are there


def test_no_dsn_to_the_null_sender(
    filter_factory: FilterFactory, sink: CaptureSink, clamd: Clamd
) -> None:
    flt = filter_factory(clamd=clamd.address, config_text=BOUNCE)
    replies = send(flt.address, eicar_inline(), "", ["bob@example.com"])
    assert replies.data.startswith("250 2.7.0 Ok, discarded"), replies.data
    assert sink.attempts == []
