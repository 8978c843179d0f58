"""What can be done with a quarantined message: release, delete, request release, allow
the sender. The CLI, the links in notices and the web page all call these; nothing
else delivers released mail.

Release is exactly once per recipient: each copy is claimed with a compare-and-set
(HELD or RELEASE_REQUESTED -> RELEASING) before anything is sent, and becomes
RELEASED only after the next hop accepted it. A copy the next hop refuses or
tempfails goes back to the state it had, with the next hop's reply in the audit
trail and in the result.

A copy left RELEASING by a crash (or a killed command) in the middle of a release is
never released again by itself: the next hop may have taken it before the crash, and
a second delivery is what this design exists to prevent. Once it has been RELEASING
for longer than `STALE_RELEASING` (far beyond any next-hop timeout), `force` releases
it again; the admin first looks for `X-Quarantine-Released` with the mail_id in the
next hop's log.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from enum import Enum
from typing import TYPE_CHECKING, Protocol

from contentfilter import headers, rfc5322
from contentfilter.config import Config
from contentfilter.errors import QuarantineError, RelayError, ScannerError, TokenError
from contentfilter.model import ContentsCategory, Envelope, Message, Recipient, ScanResult
from contentfilter.quarantine import Entry, HeldRecipient, QuarantineStore, State, Via, tokens
from contentfilter.relay import Delivery

if TYPE_CHECKING:
    from contentfilter.metrics import Metrics

log = logging.getLogger("contentfilter.quarantine")

STALE_RELEASING = timedelta(minutes=30)
RELEASABLE = frozenset({State.HELD, State.RELEASE_REQUESTED})
RELEASED_HEADER = "X-Quarantine-Released"


class Result(Enum):
    """What happened to one recipient's copy."""

    RELEASED = "released"
    ALREADY_RELEASED = "already released"
    NOT_A_RECIPIENT = "not a recipient of this message"
    NOT_HELD = "not held"  # deleted, expired, or being released right now
    DETECTED = "now detected as a virus: not released"
    CANNOT_CHECK = "could not be checked again: not released"
    REFUSED = "refused by the next hop"  # 5xx: state unchanged
    TEMPFAILED = "not taken by the next hop"  # 4xx or no answer: state unchanged
    NO_BODY = "the message itself is no longer kept"
    DELETED = "deleted"
    REQUESTED = "release requested"
    ALLOWED = "sender allowed"


@dataclass(frozen=True, slots=True)
class ActionResult:
    """One recipient's result: what happened, why in words, and the state now."""

    recipient: str
    result: Result
    detail: str = ""  # the next hop's reply, the virus name, the state it is in
    state: State | None = None

    @property
    def ok(self) -> bool:
        return self.result in (Result.RELEASED, Result.DELETED, Result.REQUESTED, Result.ALLOWED)

    def __str__(self) -> str:
        text = f"<{self.recipient}>: {self.result.value}"
        return f"{text} ({self.detail})" if self.detail else text


@dataclass(frozen=True, slots=True)
class Actor:
    """Who acts, how and from where: what the audit trail records."""

    name: str  # a login, the Unix user, the address a link was sent to
    via: Via
    source: str = ""  # a client IP address, a tty and host

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("an action needs someone who does it")


class Deliverer(Protocol):
    """Where released mail goes (contentfilter.relay.NextHop)."""

    label: str

    async def deliver(
        self, envelope: Envelope, recipients: Sequence[Recipient], data: bytes
    ) -> Delivery: ...


class Rescanner(Protocol):
    """Checks a message again (contentfilter.pipeline.Pipeline.scan)."""

    async def scan(self, message: Message) -> tuple[ScanResult, ...]: ...


# --- release ----------------------------------------------------------------------------


async def release(
    config: Config,
    store: QuarantineStore,
    mail_id: str,
    recipients: Sequence[str] = (),
    *,
    actor: Actor,
    force: bool = False,
    deliverer: Deliverer | None = None,
    rescanner: Rescanner | None = None,
    metrics: Metrics | None = None,
) -> tuple[ActionResult, ...]:
    """Deliver the kept message to `recipients` (default: every original recipient still
    held) through the next hop, once each; one result per recipient.

    Addresses that were not recipients of the message get NOT_A_RECIPIENT and nothing.
    The message is scanned again first: a virus found now (or a scanner that cannot
    answer) stops the release unless `force`. `deliverer` and `rescanner` default to
    the next hop and the scanners of `config`, made for this call; with `metrics`, each
    result is counted in `quarantine_releases_total` (by result and channel).
    QuarantineError for an unknown mail_id or a store that cannot be reached.
    """
    results = await _release(config, store, mail_id, recipients, actor, force, deliverer, rescanner)
    if metrics is not None:
        for result in results:
            metrics.released(result.result.name.lower(), actor.via.value)
    return results


async def _release(
    config: Config,
    store: QuarantineStore,
    mail_id: str,
    recipients: Sequence[str],
    actor: Actor,
    force: bool,
    deliverer: Deliverer | None,
    rescanner: Rescanner | None,
) -> tuple[ActionResult, ...]:
    entry = await _entry(store, mail_id)
    chosen, results = _chosen(entry, recipients, actor)
    if not recipients and not force:  # every one still held, if any; else say why not
        chosen = [h for h in chosen if h.state in RELEASABLE] or chosen
    wanted = []
    for held in chosen:
        refusal = _release_refusal(held, force)
        if refusal is None:
            wanted.append(held)
        else:
            results.append(refusal)
    if not wanted:
        return tuple(results)
    raw = await store.body(mail_id)
    if raw is None:
        results.extend(ActionResult(h.address, Result.NO_BODY, state=h.state) for h in wanted)
        return tuple(results)
    problem = await _rescan(config, entry, raw, rescanner)
    if problem is not None and not force:
        results.extend(ActionResult(h.address, problem[0], problem[1], h.state) for h in wanted)
        return tuple(results)
    note = _note(force, problem)
    claimed = [c for h in wanted if (c := await _claim(store, entry, h, actor, note, results))]
    if claimed:
        results.extend(await _deliver(config, store, entry, raw, claimed, actor, deliverer))
    return tuple(results)


async def _entry(store: QuarantineStore, mail_id: str) -> Entry:
    entry = await store.get(mail_id)
    if entry is None:
        raise QuarantineError(f"no quarantined message with id {mail_id}")
    return entry


def _chosen(
    entry: Entry, recipients: Sequence[str], actor: Actor
) -> tuple[list[HeldRecipient], list[ActionResult]]:
    """The recipients' rows asked for (all without a choice), and a result for each
    address asked for that was not a recipient of the message."""
    if not recipients:
        return list(entry.recipients), []
    chosen: list[HeldRecipient] = []
    results: list[ActionResult] = []
    for address in dict.fromkeys(recipients):
        held = entry.recipient(address)
        if held is None:
            log.warning(
                "quarantine %s: %s asked for <%s>, not a recipient",
                entry.mail_id,
                actor.name,
                address,
            )
            results.append(ActionResult(address, Result.NOT_A_RECIPIENT))
        elif held not in chosen:
            chosen.append(held)
    return chosen, results


def _release_refusal(held: HeldRecipient, force: bool) -> ActionResult | None:
    """Why this copy is not to be released now (None: go on)."""
    if held.state in RELEASABLE or (force and held.state is State.RELEASED):
        return None
    if held.state is State.RELEASED:
        when = _when(held.changed)
        return ActionResult(
            held.address, Result.ALREADY_RELEASED, f"on {when}; --force sends it again", held.state
        )
    if held.state is State.RELEASING:
        if force and datetime.now(UTC) - held.changed > STALE_RELEASING:
            return None
        detail = f"a release started {_when(held.changed)} and has not finished"
        if datetime.now(UTC) - held.changed > STALE_RELEASING:
            detail += (
                f" (interrupted? look for {RELEASED_HEADER} with this id in the next hop's"
                " log, then --force)"
            )
        return ActionResult(held.address, Result.NOT_HELD, detail, held.state)
    return ActionResult(held.address, Result.NOT_HELD, held.state.value, held.state)


def _note(force: bool, problem: tuple[Result, str] | None) -> str:
    if not force:
        return ""
    return "forced" + (f": {problem[1]}" if problem else "")


async def _claim(
    store: QuarantineStore,
    entry: Entry,
    held: HeldRecipient,
    actor: Actor,
    note: str,
    results: list[ActionResult],
) -> tuple[HeldRecipient, State] | None:
    """Move one copy to RELEASING; (its row, the state to go back to) or None when
    someone else changed it first (then its result is added)."""
    allowed = set(RELEASABLE)
    if note.startswith("forced"):
        allowed.add(State.RELEASED)
        if held.state is State.RELEASING:
            # Only one forced release takes over an interrupted one: the first to claim
            # this very RELEASING (by its time) moves it back to HELD.
            key = f"stale-release:{entry.mail_id}:{held.address.lower()}:{held.changed.isoformat()}"
            if await store.claim(key, datetime.now(UTC) + timedelta(days=30)):
                await store.transition(
                    entry.mail_id,
                    held.address,
                    frozenset({State.RELEASING}),
                    State.HELD,
                    actor=actor.name,
                    via=actor.via,
                    source=actor.source,
                    note="interrupted release given up",
                )
    previous = held.state if held.state is not State.RELEASING else State.HELD
    change = await store.transition(
        entry.mail_id,
        held.address,
        frozenset(allowed),
        State.RELEASING,
        actor=actor.name,
        via=actor.via,
        source=actor.source,
        note=note,
    )
    if change.done:
        return held, previous
    refusal = _release_refusal(HeldRecipient(held.address, change.state, datetime.now(UTC)), False)
    results.append(refusal or ActionResult(held.address, Result.NOT_HELD, change.state.value))
    return None


def released_header(actor: Actor, mail_id: str, when: datetime) -> bytes:
    """`X-Quarantine-Released: by alice via cli at <date>; id=<mail_id>` (the actor's name
    sanitised: it may come from a link or a login form)."""
    name = "".join(c for c in actor.name if c.isprintable() and c not in ";")[:200]
    value = f"by {name} via {actor.via.value} at {format_datetime(when)}; id={mail_id}"
    return headers.header_line(RELEASED_HEADER, value)


async def _deliver(
    config: Config,
    store: QuarantineStore,
    entry: Entry,
    raw: bytes,
    claimed: list[tuple[HeldRecipient, State]],
    actor: Actor,
    deliverer: Deliverer | None,
) -> list[ActionResult]:
    """One transaction to the claimed recipients; each copy ends RELEASED or back where
    it was, with the next hop's reply."""
    data = headers.apply_edits(raw, [released_header(actor, entry.mail_id, _now())], "", False)
    envelope = Envelope(entry.sender, tuple(Recipient(h.address) for h, _ in claimed))
    own = deliverer is None
    hop: Deliverer = deliverer or _next_hop(config)
    try:
        delivery = await hop.deliver(envelope, envelope.recipients, data)
    except RelayError as error:
        code = f"{error.code} {error.text}".strip() if error.code else ""
        return [
            await _back(store, entry, held, previous, actor, error, code)
            for held, previous in claimed
        ]
    finally:
        if own:
            await _close(hop)
    results = []
    for (held, previous), answer in zip(claimed, delivery.recipients, strict=True):
        reply = f"{answer.code} {answer.text}"
        if answer.accepted:
            await _settle(store, entry, held, State.RELEASED, actor, f"{hop.label}: {reply}")
            results.append(ActionResult(held.address, Result.RELEASED, reply, State.RELEASED))
            log.info(
                "quarantine %s: released to <%s> by %s via %s, %s",
                entry.mail_id,
                held.address,
                actor.name,
                actor.via.value,
                reply,
            )
        else:
            kind = Result.REFUSED if answer.code >= 500 else Result.TEMPFAILED
            await _settle(store, entry, held, previous, actor, f"{hop.label} said {reply}")
            results.append(ActionResult(held.address, kind, reply, previous))
    return results


async def _back(
    store: QuarantineStore,
    entry: Entry,
    held: HeldRecipient,
    previous: State,
    actor: Actor,
    error: RelayError,
    reply: str,
) -> ActionResult:
    await _settle(store, entry, held, previous, actor, str(error))
    kind = Result.REFUSED if error.is_permanent else Result.TEMPFAILED
    return ActionResult(held.address, kind, reply or str(error), previous)


async def _settle(
    store: QuarantineStore,
    entry: Entry,
    held: HeldRecipient,
    new: State,
    actor: Actor,
    note: str,
) -> None:
    """RELEASING -> `new`. Shielded: a release cancelled after the next hop answered
    still records what happened."""
    await asyncio.shield(
        store.transition(
            entry.mail_id,
            held.address,
            frozenset({State.RELEASING}),
            new,
            actor=actor.name,
            via=actor.via,
            source=actor.source,
            note=note[:500],
        )
    )


def _next_hop(config: Config) -> Deliverer:
    from contentfilter.relay import NextHop

    return NextHop(config.next_hop, config.server.hostname)


async def _close(hop: Deliverer) -> None:
    close = getattr(hop, "close", None)
    if close is not None:
        await close()


# --- checking again ---------------------------------------------------------------------


async def _rescan(
    config: Config, entry: Entry, raw: bytes, rescanner: Rescanner | None
) -> tuple[Result, str] | None:
    """None if the current scanners find no virus; else why not to release."""
    recipients = tuple(Recipient(r.address) for r in entry.recipients)
    envelope = Envelope(entry.sender, recipients, client_address=entry.client_address)
    message = rfc5322.read_message(entry.log_id or "release", entry.mail_id, envelope, raw)
    try:
        if rescanner is not None:
            results = await rescanner.scan(message)
        else:
            results = await _scan_with_config(config, message)
    except ScannerError as error:
        return Result.CANNOT_CHECK, str(error)
    viruses = [f.detail for r in results for f in r.findings if f.category is _VIRUS]
    if viruses:
        return Result.DETECTED, "INFECTED: " + ", ".join(dict.fromkeys(viruses))
    unchecked = [f.detail for r in results for f in r.findings if f.category is _UNCHECKED]
    if unchecked:
        return Result.CANNOT_CHECK, ", ".join(unchecked)
    return None


_VIRUS = ContentsCategory.VIRUS
_UNCHECKED = ContentsCategory.UNCHECKED


async def _scan_with_config(config: Config, message: Message) -> tuple[ScanResult, ...]:
    """The scanners of `config`, as `serve` builds them, without SpamAssassin (a spam
    score does not stop a release someone asked for)."""
    import scanners
    from contentfilter.decode.workers import DecoderPool
    from contentfilter.model import PartsScanner
    from contentfilter.pipeline import Pipeline

    sections = {n: s for n, s in config.scanners.items() if s.type != "spamassassin"}
    built = scanners.build_scanners(sections, scanners.Needs(config.decoder))
    looks_at_parts = any(s.needs_parts or isinstance(s, PartsScanner) for s in built)
    decoder = DecoderPool(config.decoder) if looks_at_parts else None
    pipeline = Pipeline(config, built, _NoDelivery(), None, decoder=decoder)
    try:
        return await pipeline.scan(message)
    finally:
        for scanner in built:
            await scanner.close()
        if decoder is not None:
            await asyncio.to_thread(decoder.close)


class _NoDelivery:
    label = "none"

    async def deliver(
        self, envelope: Envelope, recipients: Sequence[Recipient], data: bytes
    ) -> Delivery:
        raise AssertionError("the rescan delivers nothing")


# --- delete, request release, allow sender ----------------------------------------------


async def delete(
    store: QuarantineStore, mail_id: str, recipients: Sequence[str] = (), *, actor: Actor
) -> tuple[ActionResult, ...]:
    """HELD or RELEASE_REQUESTED -> DELETED for each recipient (default: all)."""
    entry = await _entry(store, mail_id)
    chosen, results = _chosen(entry, recipients, actor)
    for held in chosen:
        change = await store.transition(
            mail_id,
            held.address,
            RELEASABLE,
            State.DELETED,
            actor=actor.name,
            via=actor.via,
            source=actor.source,
        )
        if change.done:
            results.append(ActionResult(held.address, Result.DELETED, state=State.DELETED))
        else:
            results.append(
                ActionResult(held.address, Result.NOT_HELD, change.state.value, change.state)
            )
    return tuple(results)


async def request_release(
    store: QuarantineStore, mail_id: str, recipient: str, *, actor: Actor
) -> ActionResult:
    """HELD -> RELEASE_REQUESTED: a recipient asks an admin to release a virus or a
    banned file to them (they cannot release it themselves)."""
    entry = await _entry(store, mail_id)
    chosen, results = _chosen(entry, [recipient], actor)
    if results:
        return results[0]
    held = chosen[0]
    change = await store.transition(
        mail_id,
        held.address,
        frozenset({State.HELD}),
        State.RELEASE_REQUESTED,
        actor=actor.name,
        via=actor.via,
        source=actor.source,
    )
    if change.done or change.state is State.RELEASE_REQUESTED:
        return ActionResult(held.address, Result.REQUESTED, state=State.RELEASE_REQUESTED)
    return ActionResult(held.address, Result.NOT_HELD, change.state.value, change.state)


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


# --- links --------------------------------------------------------------------------------

RECIPIENT_MAY = {  # what a recipient may do by link, per contents category
    "spam": ("release", "release-allow", "delete"),
    "bad_header": ("release", "release-allow", "delete"),
    "virus": ("request-release", "delete"),
    "banned": ("request-release", "delete"),
    "unchecked": ("request-release", "delete"),
}
_RETRYABLE = frozenset({Result.TEMPFAILED, Result.CANNOT_CHECK})


async def act_on_link(
    config: Config,
    store: QuarantineStore,
    claim: tokens.Claim,
    *,
    source: str,
    deliverer: Deliverer | None = None,
    rescanner: Rescanner | None = None,
    metrics: Metrics | None = None,
) -> tuple[ActionResult, ...]:
    """Carry out what a verified link token allows (the POST of its confirmation page),
    as its recipient, via LINK, from `source` (the client's address).

    The token is used up first (`tokens.redeem`: TokenError("used") the second time)
    and given back when the action could not be done for a passing reason (the next
    hop tempfailed, a scanner did not answer), so the same link works again later.
    A recipient never releases a virus or banned file by link: they may ask
    (request-release). QuarantineError for an unknown message.
    """
    if claim.action == "list":
        raise TokenError("wrong-action", "this link shows your list; it does not change anything")
    entry = await _entry(store, claim.mail_id)
    if claim.action not in RECIPIENT_MAY.get(entry.category, ("delete",)):
        raise TokenError("wrong-action", f"a {entry.category} message cannot be released by link")
    await tokens.redeem(store, claim)
    actor = Actor(claim.recipient, Via.LINK, source)
    results: tuple[ActionResult, ...]
    if claim.action in ("release", "release-allow"):
        results = await release(
            config,
            store,
            claim.mail_id,
            [claim.recipient],
            actor=actor,
            deliverer=deliverer,
            rescanner=rescanner,
            metrics=metrics,
        )
        if claim.action == "release-allow" and any(r.result is Result.RELEASED for r in results):
            results += (await allow_sender(store, claim.recipient, entry.sender, actor=actor),)
    elif claim.action == "delete":
        results = await delete(store, claim.mail_id, [claim.recipient], actor=actor)
    else:
        results = (await request_release(store, claim.mail_id, claim.recipient, actor=actor),)
    if any(r.result in _RETRYABLE for r in results):
        await store.unclaim(claim.claim_key)
    return results


async def allow_sender(
    store: QuarantineStore, recipient: str, sender: str, *, actor: Actor
) -> ActionResult:
    """Record that `recipient` wants mail from `sender` (amavisd-new's per-recipient
    whitelist_sender), in the quarantine store, shared by every filter host: the
    filter then passes spam from `sender` to `recipient` (Pipeline._allowed_senders)."""
    if not sender:
        return ActionResult(recipient, Result.NOT_HELD, "the null sender cannot be allowed")
    await store.allow_sender(
        recipient, sender, actor=actor.name, via=actor.via, source=actor.source
    )
    log.info(
        "quarantine: <%s> allowed sender <%s> (by %s via %s)",
        recipient,
        sender,
        actor.name,
        actor.via.value,
    )
    return ActionResult(recipient, Result.ALLOWED, f"<{sender}>")
