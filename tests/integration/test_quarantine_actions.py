"""Release, delete and request release against both real stores, with a next hop that
records or refuses (fault injection) and scanners given as results; single-use tokens."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest

from contentfilter import config
from contentfilter.errors import NextHopUnavailable, QuarantineError, TokenError
from contentfilter.model import (
    ContentsCategory,
    Envelope,
    Finding,
    Message,
    Recipient,
    ScanResult,
)
from contentfilter.quarantine import (
    Entry,
    QuarantineStore,
    State,
    Via,
    actions,
    notify,
    tokens,
)
from contentfilter.quarantine.actions import Actor, Result
from contentfilter.relay import Delivery, RecipientResult
from tests.support.messages import added_headers
from tests.support.quarantine import held

NOW = datetime.now(UTC).replace(microsecond=0)
RAW = (
    b"From: Alice <alice@sender.example>\r\nTo: bob@example.com\r\nSubject: offer\r\n"
    b"Message-ID: <1@sender.example>\r\n\r\nbody line\r\n.dot line\r\n"
)
ALICE = Actor("alice", Via.CLI, "/dev/pts/1 on mx")
KEY = b"k" * 32
CONFIG = config.from_mapping({"server": {"hostname": "mx.example.com"}})


class NextHop:
    """Records what it is given; answers each RCPT with `replies` (default 250)."""

    label = "[127.0.0.1]:10025"

    def __init__(self, reply: str = "250 2.0.0 Ok: queued as ABC", fail: bool = False) -> None:
        self.reply = reply
        self.fail = fail
        self.sent: list[tuple[Envelope, bytes]] = []

    async def deliver(
        self, envelope: Envelope, recipients: Sequence[Recipient], data: bytes
    ) -> Delivery:
        if self.fail:
            raise NextHopUnavailable("cannot connect to [127.0.0.1]:10025: refused")
        self.sent.append((envelope, data))
        code, _, text = self.reply.partition(" ")
        return Delivery(tuple(RecipientResult(r, int(code), text) for r in recipients))


class Scanners:
    """The scanners' answer to the new scan."""

    def __init__(self, *findings: Finding) -> None:
        self.findings = findings
        self.scanned: list[Message] = []

    async def scan(self, message: Message) -> tuple[ScanResult, ...]:
        self.scanned.append(message)
        return (ScanResult("clamav", self.findings),)


CLEAN = Scanners()


async def kept(store: QuarantineStore, *recipients: str, mail_id: str = "relTest00001") -> Entry:
    entry = held(
        mail_id,
        *recipients,
        stored=NOW,
        category="spam",
        reason="SPAM",
        sender="alice@sender.example",
        subject="offer",
        host="mx.example.com",
    )
    await store.put(entry, RAW)
    return entry


async def release(
    store: QuarantineStore,
    hop: NextHop,
    *rcpts: str,
    scanners: Scanners = CLEAN,
    force: bool = False,
    actor: Actor = ALICE,
) -> list[str]:
    results = await actions.release(
        CONFIG,
        store,
        "relTest00001",
        rcpts,
        actor=actor,
        force=force,
        deliverer=hop,
        rescanner=scanners,
    )
    return [str(r) for r in results]


async def state(store: QuarantineStore, recipient: str = "bob@example.com") -> State:
    entry = await store.get("relTest00001")
    assert entry is not None
    held = entry.recipient(recipient)
    assert held is not None
    return held.state


async def test_release_delivers_once_with_the_header_and_the_original_bytes(
    store: QuarantineStore,
) -> None:
    await kept(store)
    hop = NextHop()
    assert await release(store, hop) == [
        "<bob@example.com>: released (250 2.0.0 Ok: queued as ABC)"
    ]
    [(envelope, data)] = hop.sent
    assert envelope.mail_from == "alice@sender.example"
    assert [r.address for r in envelope.recipients] == ["bob@example.com"]
    [header] = added_headers(data, RAW)
    unfolded = b" ".join(header.split())
    assert unfolded.startswith(b"X-Quarantine-Released: by alice via cli at ")
    assert unfolded.endswith(b"; id=relTest00001")
    assert await state(store) is State.RELEASED

    [again] = await release(store, hop)
    # The time of the release, not of the test's start (a run may cross midnight).
    assert re.fullmatch(
        r"<bob@example\.com>: already released \(on \d{4}-\d\d-\d\d \d\d:\d\d UTC;"
        r" --force sends it again\)",
        again,
    ), again
    assert len(hop.sent) == 1


async def test_only_original_recipients_get_it(store: QuarantineStore) -> None:
    await kept(store, "bob@example.com", "carol@example.com")
    hop = NextHop()
    results = await release(store, hop, "Carol@Example.com", "mallory@evil.example")
    assert results == [
        "<mallory@evil.example>: not a recipient of this message",
        "<carol@example.com>: released (250 2.0.0 Ok: queued as ABC)",
    ]
    assert [r.address for r in hop.sent[0][0].recipients] == ["carol@example.com"]
    assert await state(store) is State.HELD


async def test_a_virus_found_now_stops_the_release_unless_forced(store: QuarantineStore) -> None:
    await kept(store)
    hop = NextHop()
    virus = Scanners(Finding(ContentsCategory.VIRUS, "Eicar-Test-Signature", "clamav"))
    assert await release(store, hop, scanners=virus) == [
        "<bob@example.com>: now detected as a virus: not released (INFECTED: Eicar-Test-Signature)"
    ]
    assert hop.sent == [] and await state(store) is State.HELD
    assert (await release(store, hop, scanners=virus, force=True))[0].endswith(
        "(250 2.0.0 Ok: queued as ABC)"
    )
    entry = await store.get("relTest00001")
    assert entry is not None
    assert entry.recipients[0].history[-2].note == "forced: INFECTED: Eicar-Test-Signature"


@pytest.mark.parametrize(
    ("reply", "words"),
    [
        ("451 4.3.0 Try later", "not taken by the next hop (451 4.3.0 Try later)"),
        ("550 5.1.1 No such user", "refused by the next hop (550 5.1.1 No such user)"),
    ],
)
async def test_a_refused_release_goes_back_to_held(
    store: QuarantineStore, reply: str, words: str
) -> None:
    await kept(store)
    assert await release(store, NextHop(reply)) == [f"<bob@example.com>: {words}"]
    assert await state(store) is State.HELD
    entry = await store.get("relTest00001")
    assert entry is not None
    assert reply in entry.recipients[0].history[-1].note


async def test_an_unreachable_next_hop_changes_nothing(store: QuarantineStore) -> None:
    await kept(store)
    [result] = await release(store, NextHop(fail=True))
    assert result.startswith("<bob@example.com>: not taken by the next hop (cannot connect")
    assert await state(store) is State.HELD


async def test_two_releases_at_once_deliver_once(store: QuarantineStore) -> None:
    await kept(store)
    hop = NextHop()
    first, second = await asyncio.gather(release(store, hop), release(store, hop))
    assert sorted([first[0].split(" (")[0], second[0].split(" (")[0]]) in (
        ["<bob@example.com>: already released", "<bob@example.com>: released"],
        ["<bob@example.com>: not held", "<bob@example.com>: released"],
    )
    assert len(hop.sent) == 1


async def test_an_interrupted_release_is_not_repeated_without_force(
    store: QuarantineStore,
) -> None:
    await kept(store)
    await store.transition(
        "relTest00001",
        "bob@example.com",
        frozenset({State.HELD}),
        State.RELEASING,
        actor="crashed",
        via=Via.CLI,
    )
    hop = NextHop()
    [result] = await release(store, hop, force=True)  # not stale yet
    assert "has not finished" in result and hop.sent == []
    actions.STALE_RELEASING, saved = timedelta(0), actions.STALE_RELEASING
    try:
        [result] = await release(store, hop)
        assert "interrupted?" in result and hop.sent == []
        [result] = await release(store, hop, force=True)
    finally:
        actions.STALE_RELEASING = saved
    assert result.startswith("<bob@example.com>: released")
    assert len(hop.sent) == 1


async def test_delete_and_request_release(store: QuarantineStore) -> None:
    await kept(store, "bob@example.com", "carol@example.com")
    asked = await actions.request_release(store, "relTest00001", "carol@example.com", actor=ALICE)
    assert asked.result is Result.REQUESTED
    assert await state(store, "carol@example.com") is State.RELEASE_REQUESTED
    [deleted] = await actions.delete(store, "relTest00001", ["bob@example.com"], actor=ALICE)
    assert deleted.result is Result.DELETED
    assert await release(store, NextHop(), "bob@example.com") == [
        "<bob@example.com>: not held (deleted)"
    ]
    hop = NextHop()  # without --rcpt: every copy still held or asked for
    assert await release(store, hop) == [
        "<carol@example.com>: released (250 2.0.0 Ok: queued as ABC)"
    ]
    with pytest.raises(QuarantineError):
        await actions.delete(store, "unknown00001", actor=ALICE)


async def test_a_token_is_used_once_from_any_process(store: QuarantineStore) -> None:
    token = tokens.issue(
        KEY, mail_id="relTest00001", recipient="bob@example.com", action="release", ttl=60
    )
    claim = tokens.verify(KEY, token, action="release")
    await tokens.redeem(store, claim)
    again = tokens.verify(KEY, token, action="release")  # still a valid link to show
    with pytest.raises(TokenError) as caught:
        await tokens.redeem(store, again)
    assert caught.value.kind == "used"
    await store.unclaim(claim.claim_key)  # the release it was for did not happen
    await tokens.redeem(store, again)


def link(action: str, recipient: str = "bob@example.com") -> tokens.Claim:
    token = tokens.issue(KEY, mail_id="relTest00001", recipient=recipient, action=action, ttl=60)
    return tokens.verify(KEY, token, action=action)


async def on_link(store: QuarantineStore, claim: tokens.Claim, hop: NextHop) -> list[str]:
    results = await actions.act_on_link(
        CONFIG, store, claim, source="198.51.100.7", deliverer=hop, rescanner=CLEAN
    )
    return [str(r) for r in results]


async def test_a_release_link_works_once_as_its_recipient(store: QuarantineStore) -> None:
    await kept(store, "bob@example.com", "carol@example.com")
    hop, claim = NextHop(), link("release-allow")
    assert await on_link(store, claim, hop) == [
        "<bob@example.com>: released (250 2.0.0 Ok: queued as ABC)",
        "<bob@example.com>: sender allowed (<alice@sender.example>)",
    ]
    assert [r.address for r in hop.sent[0][0].recipients] == ["bob@example.com"]
    assert await store.allowed_sender("Bob@Example.com", "Alice@Sender.example")
    assert not await store.allowed_sender("carol@example.com", "alice@sender.example")
    with pytest.raises(TokenError) as caught:
        await on_link(store, claim, hop)
    assert caught.value.kind == "used"
    entry = await store.get("relTest00001")
    assert entry is not None
    last = entry.recipients[0].history[-1]
    assert (last.actor, last.via, last.source) == ("bob@example.com", Via.LINK, "198.51.100.7")
    assert await state(store, "carol@example.com") is State.HELD


async def test_a_link_tempfailed_by_the_next_hop_works_again(store: QuarantineStore) -> None:
    await kept(store)
    claim = link("release")
    [failed] = await on_link(store, claim, NextHop("451 4.3.0 Try later"))
    assert "not taken by the next hop" in failed
    [done] = await on_link(store, claim, NextHop())
    assert done.startswith("<bob@example.com>: released")


async def test_a_virus_is_not_released_by_link_only_asked_for(store: QuarantineStore) -> None:
    entry = held("relTest00001", stored=NOW, sender="alice@sender.example")
    await store.put(entry, RAW)
    hop = NextHop()
    with pytest.raises(TokenError) as caught:
        await on_link(store, link("release"), hop)
    assert caught.value.kind == "wrong-action" and hop.sent == []
    assert await on_link(store, link("request-release"), hop) == [
        "<bob@example.com>: release requested"
    ]
    assert await state(store) is State.RELEASE_REQUESTED


# --- notices: each item once, failures sent on the next run ---------------------------


NOTICES = config.from_mapping(
    {
        "server": {"hostname": "mx.example.com"},
        "notices": {
            "admin": {"virus": ["postmaster@example.com"]},
            "recipients": {"frequency": "immediate", "per_recipient": {"@lists.example": "daily"}},
        },
    }
)


async def test_digest_runs_send_each_item_once_and_retry_failures(store: QuarantineStore) -> None:
    for number, category in enumerate(["virus", "spam"]):
        entry = held(
            f"notice{number:06d}",
            "bob@example.com",
            "team@lists.example",
            stored=NOW - timedelta(minutes=5 - number),
            changed=NOW,
            category=category,
            reason=category.upper(),
            sender="alice@sender.example",
            subject=f"message {number}",
        )
        await store.put(entry, RAW)
    down = NextHop(fail=True)
    report = await notify.run(NOTICES, store, down, now=NOW)
    assert (report.admin_notices, report.recipient_notices, report.digests) == (0, 0, 0)
    assert len(report.failures) == 4  # admin, bob twice, the list's digest

    hop = NextHop()
    report = await notify.run(NOTICES, store, hop, now=NOW)
    assert (report.admin_notices, report.recipient_notices, report.digests) == (1, 2, 1)
    sent = [([r.address for r in envelope.recipients], data) for envelope, data in hop.sent]
    assert [to for to, _ in sent] == [
        ["postmaster@example.com"],
        ["bob@example.com"],
        ["bob@example.com"],
        ["team@lists.example"],
    ]
    assert b"message 0" in sent[3][1] and b"message 1" in sent[3][1]

    report = await notify.run(NOTICES, store, hop, now=NOW + timedelta(minutes=10))
    assert (report.admin_notices, report.recipient_notices, report.digests) == (0, 0, 0)
    assert len(hop.sent) == 4


async def test_releases_and_notices_are_counted_in_the_process_that_makes_them(
    store: QuarantineStore,
) -> None:
    from contentfilter.metrics import Metrics

    metrics = Metrics()
    await kept(store, "bob@example.com", "carol@example.com")
    for hop in (NextHop("550 5.1.1 No such user"), NextHop(), NextHop()):
        await actions.release(
            CONFIG,
            store,
            "relTest00001",
            ["bob@example.com"],
            actor=ALICE,
            deliverer=hop,
            rescanner=CLEAN,
            metrics=metrics,
        )
    report = await notify.run(NOTICES, store, NextHop(), now=NOW, metrics=metrics)
    assert report.recipient_notices == 1  # carol's copy is still held

    def count(name: str, **labels: str) -> float | None:
        return metrics.registry.get_sample_value(f"contentfilter_{name}_total", labels)

    assert count("quarantine_releases", result="refused", channel="cli") == 1
    assert count("quarantine_releases", result="released", channel="cli") == 1
    assert count("quarantine_releases", result="already_released", channel="cli") == 1
    assert count("quarantine_notifications", kind="notice", result="sent") == 1
