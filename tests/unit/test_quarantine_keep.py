"""Which copies the quarantine keeps (a table of rules), the entry stored, and the
pipeline storing before it answers: no sockets (a real SQLite store in tmp_path)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from contentfilter import config, replies
from contentfilter.errors import QuarantineError
from contentfilter.events import from_outcome
from contentfilter.model import (
    Action,
    ContentsCategory,
    Destiny,
    Envelope,
    Finding,
    Recipient,
    ScanResult,
    SpamReport,
    Verdict,
)
from contentfilter.pipeline import Pipeline
from contentfilter.quarantine import Entry, QuarantineStore, State, keep
from contentfilter.quarantine.settings import QuarantineSettings
from contentfilter.quarantine.sqlite import SqliteStore
from contentfilter.relay import Delivery, RecipientResult
from contentfilter.rfc5322 import read_message
from tests.unit.test_pipeline import FakeScanner

C = ContentsCategory
BOB = Recipient("bob@example.com")
RAW = (
    b"From: =?utf-8?q?J=C3=B6rg?= <j@example.org>\r\nSubject: hello\x00\x1b[31m\r\n"
    b"Message-ID: <m1@example.org>\r\n\r\nbody\r\n"
)


def verdict(category: ContentsCategory, destiny: Destiny, rule: str = "") -> Verdict:
    return Verdict(BOB, category, destiny, category.log_name, rule=rule or f"destiny.{category}")


DEFAULTS = QuarantineSettings()


@pytest.mark.parametrize(
    ("the_verdict", "score", "settings", "kept", "rule"),
    [
        (verdict(C.VIRUS, Destiny.DISCARD), None, DEFAULTS, True, "blocked"),
        (verdict(C.BANNED, Destiny.REJECT), None, DEFAULTS, True, "blocked"),
        (verdict(C.BANNED, Destiny.BOUNCE), None, DEFAULTS, True, "blocked"),
        (verdict(C.SPAM, Destiny.DISCARD), 10.0, DEFAULTS, True, "blocked"),
        (verdict(C.SPAM, Destiny.DISCARD), 25.0, DEFAULTS, False, "quarantine.spam_cutoff_level"),
        (
            verdict(C.SPAM, Destiny.DISCARD),
            1000.0,
            QuarantineSettings(spam_cutoff_level=None),
            True,
            "blocked",
        ),
        (verdict(C.VIRUS, Destiny.TEMPFAIL), None, DEFAULTS, False, "destiny tempfail"),
        (verdict(C.BAD_HEADER, Destiny.DISCARD), None, DEFAULTS, False, "quarantine.categories"),
        (
            verdict(C.BAD_HEADER, Destiny.DISCARD),
            None,
            QuarantineSettings(categories=("bad_header",)),
            True,
            "blocked",
        ),
        (verdict(C.CLEAN, Destiny.PASS), None, DEFAULTS, False, "quarantine.categories"),
        (
            verdict(C.VIRUS, Destiny.PASS, "virus_lover"),
            None,
            DEFAULTS,
            False,
            "quarantine.keep_passed",
        ),
        (
            verdict(C.VIRUS, Destiny.PASS, "virus_lover"),
            None,
            QuarantineSettings(keep_passed=True),
            True,
            "quarantine.keep_passed",
        ),
        (
            verdict(C.SPAM, Destiny.PASS, "destiny.spam"),  # spam passed by destiny, no lover
            10.0,
            QuarantineSettings(keep_passed=True),
            False,
            "quarantine.keep_passed",
        ),
        (
            verdict(C.VIRUS, Destiny.DISCARD),
            None,
            QuarantineSettings(enabled=False),
            False,
            "quarantine.enabled",
        ),
    ],
)
def test_which_copies_are_kept(
    the_verdict: Verdict, score: float | None, settings: QuarantineSettings, kept: bool, rule: str
) -> None:
    assert keep.decide(the_verdict, score, settings) == (kept, rule)


def test_a_passed_kept_copy_carries_the_id_and_unmark_takes_it_away() -> None:
    lover = verdict(C.VIRUS, Destiny.PASS, "virus_lover")
    (marked,) = keep.mark([lover], [], QuarantineSettings(keep_passed=True), "Abc123def456")
    assert marked.quarantined
    assert marked.header_lines[-1] == b"X-Quarantine-ID: <Abc123def456>\r\n"
    assert keep.unmark([marked], "Abc123def456") == (lover,)


def message(recipients: tuple[Recipient, ...] = (BOB,)) -> object:
    envelope = Envelope(
        "alice@example.org",
        recipients,
        client_address="127.0.0.1",
        xforward=(("ADDR", "203.0.113.9"), ("IDENT", "4AbCd1")),
    )
    return read_message("777-01", "Abc123def456", envelope, RAW)


def test_the_entry_is_cleaned_for_display() -> None:
    results = [
        ScanResult("clamav", (Finding(C.VIRUS, "Eicar\x1b[2J", "clamav"),)),
        ScanResult("spamassassin", spam=SpamReport(3.5, 5.0, (("GTUBE", 3.5),))),
    ]
    kept = [replace(verdict(C.VIRUS, Destiny.DISCARD), quarantined=True)]
    now = datetime(2026, 11, 30, tzinfo=UTC)
    entry = keep.entry(message(), results, kept, stored=now, host="mx", policy_bank=None)  # type: ignore[arg-type]
    assert entry.subject == "hello  [31m" and entry.from_header == "Jörg <j@example.org>"
    assert entry.findings == ("clamav: INFECTED: Eicar [2J", "spamassassin: score 3.5 [GTUBE=3.5]")
    assert (entry.client_address, entry.queue_id, entry.message_id) == (
        "203.0.113.9",
        "4AbCd1",
        "<m1@example.org>",
    )
    assert entry.category == "virus" and entry.spam_score == 3.5 and entry.size == len(RAW)


class FakeNextHop:
    label = "[127.0.0.1]:10025"

    async def deliver(self, envelope: Envelope, recipients: object, data: bytes) -> Delivery:
        return Delivery(tuple(RecipientResult(r, 250, "2.0.0 Ok") for r in recipients))  # type: ignore[attr-defined]


class BrokenStore(SqliteStore):
    async def put(self, entry: Entry, raw: bytes) -> None:
        raise QuarantineError("disk on fire")


def pipeline(store: QuarantineStore, **quarantine: object) -> Pipeline:
    settings = config.from_mapping({"quarantine": quarantine}) if quarantine else config.load(None)
    virus = FakeScanner("clamav", (Finding(C.VIRUS, "Eicar-Test-Signature", "clamav"),))
    return Pipeline(settings, [virus], FakeNextHop(), quarantine=store)


async def test_the_pipeline_keeps_before_it_answers(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path)
    two = (BOB, Recipient("carol@example.com"))
    outcome = await pipeline(store).handle(message(two))  # type: ignore[arg-type]
    try:
        entry = await store.get("Abc123def456")
    finally:
        await store.close()
    assert entry is not None and [r.state for r in entry.recipients] == [State.HELD] * 2
    reply = replies.combine("777-01", outcome.dispositions)
    assert reply.text.endswith("INFECTED: Eicar-Test-Signature, quarantine: Abc123def456")
    assert {d.quarantine_id for d in outcome.dispositions} == {"Abc123def456"}
    line = from_outcome(outcome).log_line()
    assert "{DiscardedInbound,Quarantined}" in line and "quarantine: Abc123def456," in line


async def test_a_store_failure_tempfails_or_goes_on_unkept(tmp_path: Path) -> None:
    outcome = await pipeline(BrokenStore(tmp_path)).handle(message())  # type: ignore[arg-type]
    (failed,) = outcome.dispositions
    assert failed.action is Action.TEMPFAILED
    assert failed.reply.text.endswith("quarantine: disk on fire") and failed.reply.code == 451
    unkept = pipeline(BrokenStore(tmp_path), on_failure="discard-unkept")
    outcome = await unkept.handle(message())  # type: ignore[arg-type]
    (discarded,) = outcome.dispositions
    assert discarded.action is Action.DISCARDED and discarded.quarantine_id is None
    assert "quarantine" not in discarded.reply.text


def test_findings_write_scores_as_amavisd_new_does() -> None:
    spam = SpamReport(1000.0, 5.0, (("GTUBE", 1000.0), ("NO_RELAYS", -0.0), ("X", -0.0004)))
    lines = keep.findings([ScanResult("spamassassin", spam=spam)])
    assert lines == ("spamassassin: score 1000 [GTUBE=1000, NO_RELAYS=0, X=0]",)


def test_findings_name_rules_whose_scores_spamd_did_not_give() -> None:
    spam = SpamReport(1000.0, 5.0, (("GTUBE", None), ("NO_RELAYS", None)))
    lines = keep.findings([ScanResult("spamassassin", spam=spam)])
    assert lines == ("spamassassin: score 1000 [GTUBE, NO_RELAYS]",)
