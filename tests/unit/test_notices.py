"""Notices as their readers see them: the shipped templates filled in, links that work
for that recipient and action only, values from hostile mail kept in their place."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from contentfilter import config
from contentfilter.quarantine import Entry, HeldRecipient, State, notify, tokens
from tests.support.messages import parsed, text_body

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
KEY = "0123456789abcdef0123456789abcdef"


def settings(**notices: object) -> config.Config:
    links = {"public_url": "https://quarantine.example.com/", "key": KEY, "ttl": 3600}
    return config.from_mapping(
        {
            "server": {"hostname": "mx.example.com"},
            "notices": {"links": links, **notices},
        }
    )


def entry(mail_id: str = "3kQhc2Lx0a9T", category: str = "spam", **fields: object) -> Entry:
    values: dict[str, object] = {
        "mail_id": mail_id,
        "stored": NOW - timedelta(hours=1),
        "category": category,
        "reason": "SPAM: score 1000.1",
        "findings": ("spamassassin: GTUBE=1000",),
        "sender": "alice@sender.example",
        "recipients": (HeldRecipient("bob@example.com", State.HELD, NOW),),
        "subject": "Cheap watches",
        "from_header": "Alice <alice@sender.example>",
        "message_id": "<1@sender.example>",
        "size": 1234,
        "host": "mx.example.com",
    }
    values.update(fields)
    return Entry(**values)  # type: ignore[arg-type]


def links(text: str) -> list[str]:
    return re.findall(r"https://quarantine\.example\.com/t/(\S+)", text)


def test_admin_notice_names_the_quarantine_id_and_the_findings() -> None:
    virus = entry(category="virus", reason="INFECTED: Eicar-Test-Signature")
    message = parsed(notify.admin_notice(settings(), virus, ["postmaster@example.com"]))
    assert message["To"] == "postmaster@example.com"
    assert message["From"] == "postmaster@mx.example.com"
    assert message["Subject"] == "Quarantined virus: INFECTED: Eicar-Test-Signature"
    assert message["Auto-Submitted"] == "auto-generated"
    text = text_body(message)
    assert "Quarantine id: 3kQhc2Lx0a9T" in text
    assert "spamassassin: GTUBE=1000" in text
    assert "contentfilter quarantine release 3kQhc2Lx0a9T" in text


def test_recipient_notice_has_one_link_per_action_for_that_recipient() -> None:
    message = parsed(notify.recipient_notice(settings(), entry(), "bob@example.com", NOW))
    assert message["Subject"] == "A message for you was held: Cheap watches"
    text = text_body(message)
    assert "Quarantine id: 3kQhc2Lx0a9T" in text
    claims = [tokens.verify(KEY.encode(), t, now=NOW) for t in links(text)]
    assert [c.action for c in claims] == ["release", "release-allow", "delete"]
    assert {(c.mail_id, c.recipient) for c in claims} == {("3kQhc2Lx0a9T", "bob@example.com")}
    assert all(c.expires == NOW + timedelta(hours=1) for c in claims)


def test_a_virus_gets_a_request_link_not_a_release_link() -> None:
    text = text_body(
        parsed(notify.recipient_notice(settings(), entry(category="virus"), "b@x.y", NOW))
    )
    assert [tokens.verify(KEY.encode(), t, now=NOW).action for t in links(text)] == [
        "request-release",
        "delete",
    ]


def test_without_links_the_notice_says_whom_to_ask() -> None:
    plain = config.from_mapping({"server": {"hostname": "mx.example.com"}})
    text = text_body(parsed(notify.recipient_notice(plain, entry(), "bob@example.com", NOW)))
    assert "Ask your postmaster, giving the quarantine id 3kQhc2Lx0a9T." in text
    assert "/t/" not in text


def test_digest_lists_each_item_and_a_link_to_the_whole_list() -> None:
    items = [entry("AAAAAAAAAAA1", subject="First"), entry("AAAAAAAAAAA2", subject="Second")]
    message = parsed(notify.digest(settings(), "bob@example.com", items, NOW))
    assert message["Subject"] == "Held for you: 2 new message(s) in the quarantine"
    text = text_body(message)
    assert text.index("* First") < text.index("* Second")
    claims = [tokens.verify(KEY.encode(), t, now=NOW) for t in links(text)]
    assert [c.mail_id for c in claims] == ["AAAAAAAAAAA1"] * 3 + ["AAAAAAAAAAA2"] * 3 + [""]
    assert claims[-1].action == "list"


def test_hostile_values_stay_in_their_line() -> None:
    hostile = entry(subject="Hi\r\nBcc: victim@example.net\r\n\r\nfake body", sender="a\nb@x")
    raw = notify.recipient_notice(settings(), hostile, "bob@example.com", NOW)
    message = parsed(raw)
    assert message["Bcc"] is None
    assert message["Subject"] == "A message for you was held: Hi Bcc: victim@example.net fake body"
    assert "Subject:    Hi Bcc: victim@example.net fake body" not in text_body(message)
    assert b"\r\nBcc:" not in raw


def test_an_admin_template_directory_overrides_only_what_it_holds(tmp_path: Path) -> None:
    (tmp_path / "recipient.txt").write_text("Subject: Held: $subject\nId $mail_id, $unknown\n")
    custom = settings(templates=str(tmp_path))
    message = parsed(notify.recipient_notice(custom, entry(), "bob@example.com", NOW))
    assert message["Subject"] == "Held: Cheap watches"
    assert text_body(message).rstrip() == "Id 3kQhc2Lx0a9T, $unknown"
    admin = parsed(notify.admin_notice(custom, entry(), ["p@example.com"]))
    assert admin["Subject"].startswith("Quarantined spam")  # the shipped one


@pytest.mark.parametrize(
    ("recipient", "expected"),
    [
        ("ceo@example.com", "off"),
        ("CEO@Example.com", "off"),
        ("someone@lists.example.com", "weekly"),
        ("bob@example.com", "daily"),
    ],
)
def test_frequency_per_recipient_then_domain_then_default(recipient: str, expected: str) -> None:
    loaded = settings(
        recipients={
            "frequency": "daily",
            "per_recipient": {"ceo@example.com": "off", "@lists.example.com": "weekly"},
        }
    )
    assert loaded.notices.recipients.frequency_for(recipient) == expected
