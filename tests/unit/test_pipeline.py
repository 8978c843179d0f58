"""The pipeline with injected scanners and next hop: no sockets."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import pytest

from contentfilter import config, replies
from contentfilter.errors import NextHopRefused, NextHopUnavailable, ScannerUnavailable
from contentfilter.events import outcome_line
from contentfilter.model import (
    Action,
    ContentsCategory,
    Disposition,
    Envelope,
    FailureAction,
    Finding,
    Message,
    Outcome,
    Recipient,
    Reply,
    ScanResult,
    SpamReport,
)
from contentfilter.pipeline import Pipeline
from contentfilter.relay import Delivery, RecipientResult
from contentfilter.rfc5322 import read_message

RAW = b"From: a@example.org\r\nTo: b@example.com\r\nSubject: hello\r\n\r\nbody line\r\n"


@dataclass
class FakeScanner:
    name: str
    findings: tuple[Finding, ...] = ()
    spam: SpamReport | None = None
    error: Exception | None = None
    hang: bool = False
    timeout: float = 0.2
    on_failure: FailureAction = FailureAction.TEMPFAIL
    needs_parts: bool = False
    calls: int = 0

    def cache_key(self, message: Message) -> str:
        return message.raw.hex()

    async def scan(self, message: Message) -> ScanResult:
        self.calls += 1
        if self.hang:
            await asyncio.sleep(3600)
        if self.error:
            raise self.error
        return ScanResult(self.name, self.findings, self.spam)

    async def close(self) -> None:
        pass


@dataclass
class FakeNextHop:
    label: str = "[127.0.0.1]:10025"
    sent: list[tuple[str, list[str], bytes]] = field(default_factory=list)
    error: Exception | None = None
    refuse: set[str] = field(default_factory=set)

    async def deliver(
        self,
        envelope: Envelope,
        recipients: Sequence[Recipient],
        data: bytes,
    ) -> Delivery:
        if self.error:
            raise self.error
        sender = envelope.mail_from
        results = tuple(
            RecipientResult(r, 550, "5.1.1 unknown")
            if r.address in self.refuse
            else RecipientResult(r, 250, "2.0.0 Ok: queued as QUEUE1")
            for r in recipients
        )
        if not any(r.accepted for r in results):
            return Delivery(results)
        self.sent.append((sender, [r.recipient.address for r in results if r.accepted], data))
        return Delivery(results, "QUEUE1")


def message(
    *recipients: str,
    sender: str = "a@example.org",
    raw: bytes = RAW,
    xforward: tuple[tuple[str, str], ...] = (),
) -> Message:
    envelope = Envelope(
        sender, tuple(Recipient(r) for r in recipients or ("b@example.com",)), xforward=xforward
    )
    return read_message("100-01", "mailid", envelope, raw)


def smtp_reply(outcome: Outcome) -> Reply:
    """The one reply an SMTP client gets for this outcome."""
    return replies.combine(outcome.message.log_id, outcome.dispositions)


def pipeline(
    *scanners: FakeScanner,
    next_hop: FakeNextHop | None = None,
    settings: dict[str, object] | None = None,
) -> Pipeline:
    cfg = config.from_mapping({"scanners": {}, **(settings or {})})
    return Pipeline(cfg, list(scanners), next_hop or FakeNextHop())


EICAR = Finding(ContentsCategory.VIRUS, "Eicar-Test-Signature", "clamav")


async def test_clean_mail_is_relayed_with_the_body_untouched() -> None:
    hop = FakeNextHop()
    outcome = await pipeline(FakeScanner("clamav"), next_hop=hop).handle(message())
    reply = smtp_reply(outcome)
    assert reply.code == 250
    assert "from MTA([127.0.0.1]:10025): 250 2.0.0 Ok: queued as QUEUE1" in reply.text
    [(_, rcpts, data)] = hop.sent
    assert rcpts == ["b@example.com"]
    assert data.endswith(RAW)
    assert data[: -len(RAW)].startswith(b"X-Virus-Scanned: contentfilter at ")


async def test_virus_is_discarded_by_default_and_never_relayed() -> None:
    hop = FakeNextHop()
    outcome = await pipeline(FakeScanner("clamav", (EICAR,)), next_hop=hop).handle(message())
    reply = smtp_reply(outcome)
    assert (reply.code, reply.status) == (250, "2.7.0")
    assert "discarded" in reply.text and "INFECTED: Eicar-Test-Signature" in reply.text
    assert hop.sent == []


async def test_virus_rejected_under_reject_destiny() -> None:
    hop = FakeNextHop()
    p = pipeline(
        FakeScanner("clamav", (EICAR,)),
        next_hop=hop,
        settings={"policy": {"destiny": {"virus": "reject"}}},
    )
    outcome = await p.handle(message())
    reply = smtp_reply(outcome)
    assert (reply.code, reply.status) == (554, "5.7.0")
    assert reply.text.endswith("- INFECTED: Eicar-Test-Signature")
    assert hop.sent == []


@pytest.mark.parametrize(
    ("on_failure", "code", "relayed"),
    [
        (FailureAction.TEMPFAIL, 451, False),
        (FailureAction.PASS, 250, True),
        (FailureAction.UNCHECKED, 250, True),
    ],
)
async def test_scanner_down_follows_its_failure_policy(
    on_failure: FailureAction, code: int, relayed: bool
) -> None:
    hop = FakeNextHop()
    scanner = FakeScanner(
        "clamav", error=ScannerUnavailable("clamav", "connection refused"), on_failure=on_failure
    )
    outcome = await pipeline(scanner, next_hop=hop).handle(message())
    reply = smtp_reply(outcome)
    assert reply.code == code
    assert bool(hop.sent) is relayed
    if on_failure is FailureAction.UNCHECKED:
        assert b"Subject: ***UNCHECKED*** hello" in hop.sent[0][2]


async def test_hanging_scanner_times_out_into_a_tempfail() -> None:
    hop = FakeNextHop()
    outcome = await pipeline(FakeScanner("clamav", hang=True), next_hop=hop).handle(message())
    reply = smtp_reply(outcome)
    assert reply.code == 451
    assert "clamav" in reply.text
    assert hop.sent == []


async def test_crashing_scanner_is_a_tempfail_not_a_crash() -> None:
    outcome = await pipeline(FakeScanner("clamav", error=ZeroDivisionError())).handle(message())
    reply = smtp_reply(outcome)
    assert reply.code == 451


async def test_scanners_run_concurrently() -> None:
    started: list[str] = []

    @dataclass
    class Slow(FakeScanner):
        async def scan(self, message: Message) -> ScanResult:
            started.append(self.name)
            await asyncio.sleep(0.3)
            return ScanResult(self.name)

    p = pipeline(Slow("one", timeout=1), Slow("two", timeout=1))
    task = asyncio.create_task(p.scan(message()))
    await asyncio.sleep(0.1)
    assert started == ["one", "two"]  # both began before either finished
    results = await task
    assert [r.scanner for r in results] == ["one", "two"]


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (NextHopUnavailable("connection refused"), 451),
        (NextHopRefused("x", 451, "4.3.0 try later"), 451),
        (NextHopRefused("x", 550, "5.7.1 no"), 554),
    ],
)
async def test_next_hop_trouble_reaches_upstream(error: Exception, code: int) -> None:
    outcome = await pipeline(FakeScanner("clamav"), next_hop=FakeNextHop(error=error)).handle(
        message()
    )
    reply = smtp_reply(outcome)
    assert reply.code == code
    line = outcome_line(outcome)
    assert line.startswith("(100-01) Blocked MTA-BLOCKED {")
    assert ("{TempFailedInbound}" if code == 451 else "{RejectedInbound}") in line


async def test_log_line_for_relayed_and_discarded_mail() -> None:
    relayed = await pipeline(FakeScanner("clamav")).handle(message())
    infected = await pipeline(FakeScanner("clamav", (EICAR,))).handle(message())
    assert outcome_line(relayed).startswith("(100-01) Passed CLEAN {RelayedInbound}, ")
    assert outcome_line(infected).startswith(
        "(100-01) Blocked INFECTED (Eicar-Test-Signature) {DiscardedInbound}, "
    )


async def test_partial_acceptance_answers_250_and_bounces_the_refused() -> None:
    hop = FakeNextHop(refuse={"gone@example.com"})
    outcome = await pipeline(FakeScanner("clamav"), next_hop=hop).handle(
        message("b@example.com", "gone@example.com")
    )
    reply = smtp_reply(outcome)
    assert reply.code == 250
    assert reply.text.endswith(", but 1 REJECT")
    relayed, dsn = hop.sent
    assert relayed[1] == ["b@example.com"]
    assert dsn[0] == "" and dsn[1] == ["a@example.org"]  # DSN from <> to the sender


async def test_cache_is_keyed_by_what_the_scanner_says() -> None:
    from contentfilter.cache import ResultCache

    scanner = FakeScanner("clamav")  # keyed by the whole message
    p = pipeline(scanner)
    p.cache = ResultCache(ttl=60, max_entries=10)
    await p.handle(message())
    again = await p.handle(message())
    assert (scanner.calls, again.results[0].cached) == (1, True)
    other = await p.handle(message(raw=b"Received: from x\r\n" + RAW))
    assert (scanner.calls, other.results[0].cached) == (2, False)


async def test_spam_is_tagged_for_local_recipients() -> None:
    hop = FakeNextHop()
    gtube = SpamReport(1000.0, 5.0, (("GTUBE", 1000.0),))
    outcome = await pipeline(FakeScanner("spamassassin", spam=gtube), next_hop=hop).handle(
        message()
    )
    reply = smtp_reply(outcome)
    assert reply.code == 250
    data = hop.sent[0][2]
    assert b"X-Spam-Flag: YES\r\n" in data
    assert b"Subject: ***SPAM*** hello\r\n" in data
    assert data.endswith(b"\r\n\r\nbody line\r\n")


async def test_bounce_dsn_follows_the_policy_banks_cutoff() -> None:
    """A bank's dsn_cutoff_level decides whether the bounce's DSN goes out."""
    hop = FakeNextHop()
    settings: dict[str, object] = {
        "policy": {"destiny": {"spam": "bounce"}, "defaults": {"dsn_cutoff_level": 10}},
        "policy_banks": {
            "ORIGINATING": {"clients": ["192.0.2.0/24"], "overrides": {"dsn_cutoff_level": 100}}
        },
    }
    p = pipeline(
        FakeScanner("spamassassin", spam=SpamReport(20.0, 5.0)), next_hop=hop, settings=settings
    )
    outcome = await p.handle(message(xforward=(("ADDR", "192.0.2.7"),)))
    reply = smtp_reply(outcome)
    assert (reply.code, reply.status) == (250, "2.5.0")
    [(sender, rcpts, dsn)] = hop.sent
    assert (sender, rcpts) == ("", ["a@example.org"])
    assert b"Considered UNSOLICITED BULK EMAIL" in dsn


async def test_lmtp_answers_each_recipient_with_its_own_reply_and_sends_no_dsn() -> None:
    hop = FakeNextHop(refuse={"gone@example.com"})
    outcome = await pipeline(FakeScanner("clamav"), next_hop=hop).handle(
        message("b@example.com", "gone@example.com"), lmtp=True
    )
    ok, refused = replies.per_recipient(outcome.dispositions)
    assert (ok.code, ok.status) == (250, "2.0.0")
    assert (refused.code, refused.status) == (554, "5.7.1")
    assert refused.text.endswith("550 5.1.1 unknown")
    [(sender, rcpts, _)] = hop.sent  # Postfix bounces the refused one itself
    assert (sender, rcpts) == ("a@example.org", ["b@example.com"])


async def test_each_disposition_says_what_was_done() -> None:
    hop = FakeNextHop(refuse={"gone@example.net"})
    p = pipeline(
        FakeScanner("clamav", (EICAR,)),
        next_hop=hop,
        settings={"policy": {"recipients": {"@example.net": {"virus_lover": True}}}},
    )
    outcome = await p.handle(message("b@example.com", "lover@example.net", "gone@example.net"))
    assert [d.action for d in outcome.dispositions] == [
        Action.DISCARDED,
        Action.RELAYED,
        Action.REJECTED,
    ]
    assert [d.by_next_hop for d in outcome.dispositions] == [False, False, True]
    assert outcome.queued_as == ("QUEUE1",)
    assert outcome.dispositions[1].queue_id == "QUEUE1"
    line = outcome_line(outcome)
    assert line.startswith(
        "(100-01) Passed INFECTED (Eicar-Test-Signature)"
        " {RelayedTaggedInbound,RejectedInbound,DiscardedInbound}, "
    )


async def test_a_failure_before_the_verdict_tempfails_every_recipient() -> None:
    outcome = await pipeline(FakeScanner("clamav", hang=True)).handle(
        message("b@example.com", "c@example.com")
    )
    assert [d.action for d in outcome.dispositions] == [Action.TEMPFAILED] * 2
    assert all(d.verdict is None for d in outcome.dispositions)
    assert outcome_line(outcome).startswith("(100-01) Blocked UNCHECKED {TempFailedInbound}, ")


def test_a_disposition_checks_its_reply_against_its_action() -> None:
    tempfail = Reply(451, "4.5.0", "Error in processing")
    with pytest.raises(ValueError, match="RELAYED answered 451"):
        Disposition(Recipient("b@example.com"), None, Action.RELAYED, tempfail)
    with pytest.raises(ValueError, match="queue id"):
        Disposition(Recipient("b@example.com"), None, Action.TEMPFAILED, tempfail, "Q1")


async def test_the_header_section_is_parsed_once_per_message(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from contentfilter import rfc5322
    from scanners.header_check import HeaderCheckScanner, HeaderCheckSettings
    from scanners.regex import RegexRule, RegexScanner, RegexSettings

    parsed: list[int] = []
    lines = rfc5322._lines

    def counted(raw: bytes) -> Iterator[tuple[int, int]]:
        parsed.append(len(raw))
        return lines(raw)

    monkeypatch.setattr(rfc5322, "_lines", counted)
    mail = message("b@example.com", "c@example.net", raw=b"Message-ID: <1@x>\r\n" + RAW)
    assert parsed == [len(mail.raw)]
    regex = RegexScanner("rules", RegexSettings(rules=(RegexRule("spam", "Subject", "x"),)))
    p = pipeline(
        FakeScanner("spamassassin", spam=SpamReport(7.0, 5.0)),
        regex,  # type: ignore[arg-type]
        HeaderCheckScanner("bad_header", HeaderCheckSettings()),  # type: ignore[arg-type]
        settings={"policy": {"local_domains": ["example.com"]}},  # two edits: two copies
    )
    outcome = await p.handle(mail)
    assert [d.action for d in outcome.dispositions] == [Action.RELAYED] * 2
    assert parsed == [len(mail.raw)]
