"""Notices and digests from mail the real filter blocked (clamd, spamd), sent by
the filter itself (admin and immediate notices) and by `contentfilter quarantine
digest` to a capture server: right content, working links, nothing twice, and what
failed is sent on the next run."""

from __future__ import annotations

import re
from email.message import EmailMessage
from pathlib import Path

from contentfilter.quarantine import tokens
from tests.integration.test_quarantine_release import banned_name, filter_config, run_quarantine
from tests.support import messages
from tests.support.client import send
from tests.support.daemons import CaptureSink, Clamd, FilterFactory, Spamd
from tests.support.messages import parsed, text_body
from tests.support.sink import Transaction

KEY = "an example link key of 32 bytes or more"
BOB, CAROL = "bob@recipient.example", "carol@recipient.example"
ADMIN = "postmaster@recipient.example"


def notices_section() -> str:
    return (
        "notices:\n"
        "  sender: quarantine@recipient.example\n"
        f"  admin: {{virus: ['{ADMIN}'], banned: ['{ADMIN}']}}\n"
        "  recipients:\n"
        "    frequency: immediate\n"
        f"    per_recipient: {{'{CAROL}': daily}}\n"
        "  links:\n"
        "    public_url: https://quarantine.recipient.example\n"
        f"    key: '{KEY}'\n"
    )


def by_recipient(arrived: list[Transaction]) -> dict[str, list[EmailMessage]]:
    found: dict[str, list[EmailMessage]] = {}
    for transaction in arrived:
        assert transaction.mail_from == "quarantine@recipient.example"
        for rcpt in transaction.rcpt_tos:
            found.setdefault(rcpt, []).append(parsed(transaction.data))
    return found


def links(body: str) -> list[tokens.Claim]:
    found = re.findall(r"https://quarantine\.recipient\.example/t/(\S+)", body)
    return [tokens.verify(KEY.encode(), token) for token in found]


def test_notices_and_digests_arrive_once_and_failures_are_sent_next_time(
    tmp_path: Path,
    sink: CaptureSink,
    clamd: Clamd,
    spamd: Spamd,
    filter_factory: FilterFactory,
) -> None:
    store = f"  directory: {tmp_path / 'quarantine'}\n"
    config_text = filter_config(store, sink, extra=notices_section())
    config_path = tmp_path / "contentfilter.yaml"
    config_path.write_text(config_text)
    process = filter_factory(clamd=clamd.address, spamd=spamd.address, config_text=config_text)
    virus, spam = messages.eicar_attachment("Invoice 42"), messages.gtube("Cheap watches")
    for message in (virus, spam):
        replies = send(process.address, message, messages.SENDER, [BOB, CAROL])
        assert replies.data_code == 250, replies
    # The admin notice and Bob's (immediate) notices went out before the answers.
    arrived = by_recipient(sink.wait_for(3))
    assert set(arrived) == {ADMIN, BOB}  # Carol gets a daily digest

    [admin] = arrived[ADMIN]
    assert admin["Subject"].startswith("Quarantined virus: INFECTED: Eicar-Test-Signature")
    admin_text = text_body(admin)
    assert "Invoice 42" in admin_text and "contentfilter quarantine release " in admin_text

    subjects = sorted(m["Subject"] for m in arrived[BOB])
    assert subjects == [
        "A message for you was held: Cheap watches",
        "A message for you was held: Invoice 42",
    ]
    for notice in arrived[BOB]:
        claims = links(text_body(notice))
        assert {c.recipient for c in claims} == {BOB}
        expected = ["release", "release-allow", "delete"]
        if "Invoice" in notice["Subject"]:
            expected = ["request-release", "delete"]
        assert [c.action for c in claims] == expected

    first = run_quarantine(config_path, "digest")
    assert first.returncode == 0, first
    assert "0 admin notice(s), 0 recipient notice(s), 1 digest(s) sent" in first.stdout
    arrived = by_recipient(sink.wait_for(4))
    [digest] = arrived[CAROL]
    assert digest["Subject"] == "Held for you: 2 new message(s) in the quarantine"
    body = text_body(digest)
    assert "* Invoice 42" in body and "* Cheap watches" in body
    claims = links(body)
    assert {c.recipient for c in claims} == {CAROL}
    assert claims[-1].action == "list"
    assert len({c.mail_id for c in claims[:-1]}) == 2

    again = run_quarantine(config_path, "digest")
    assert again.returncode == 0, again
    assert "0 admin notice(s), 0 recipient notice(s), 0 digest(s) sent" in again.stdout
    assert len(sink.attempts) == 4

    # A third blocked message while the next hop does not take notices: the message is
    # answered as always, and its notices are sent by a later digest run.
    sink.misbehave(data_reply="451 4.3.0 Try again later")
    banned = banned_name("Setup")
    assert send(process.address, banned, messages.SENDER, [BOB]).data_code == 250
    assert len(sink.messages) == 4 and len(sink.attempts) == 6
    assert "not sent (retried next run)" in process.log_text()
    failed = run_quarantine(config_path, "digest")
    assert failed.returncode == 1
    assert "2 failed (retried next run)" in failed.stdout
    assert len(sink.messages) == 4 and len(sink.attempts) == 8

    sink.clear()
    retried = run_quarantine(config_path, "digest")
    assert retried.returncode == 0, retried
    arrived = by_recipient(sink.wait_for(2))
    assert arrived[ADMIN][0]["Subject"].startswith("Quarantined banned: BANNED")
    assert arrived[BOB][0]["Subject"] == "A message for you was held: Setup"
    assert run_quarantine(config_path, "digest").returncode == 0
    assert len(sink.attempts) == 2
