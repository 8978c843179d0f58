"""decode -> scan in parallel -> decide -> annotate -> act -> reply.

The one place a scanner error becomes a result (through the scanner's
`on_failure`), and the one place verdicts become actions. I/O comes in as objects
(scanners, next hop, cache, clock) so the pipeline runs in unit tests without
sockets.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol, TypeGuard

from contentfilter import bounce, events, headers, mime, policy, replies
from contentfilter.cache import ResultCache
from contentfilter.config import Config
from contentfilter.decode.spool import Spool
from contentfilter.decode.workers import DecoderPool, discard
from contentfilter.errors import QuarantineError, RelayError, ScannerError, ScannerTimeout
from contentfilter.faults import FaultCounter
from contentfilter.model import (
    Action,
    ContentsCategory,
    DecodedMessage,
    Destiny,
    Disposition,
    Envelope,
    FailureAction,
    Finding,
    Message,
    Outcome,
    PartsScanner,
    Recipient,
    Reply,
    Scanner,
    ScanResult,
    Verdict,
)
from contentfilter.quarantine import Entry, QuarantineStore, keep
from contentfilter.relay import Delivery, RecipientResult

if TYPE_CHECKING:  # prometheus_client is loaded only where metrics are served
    from contentfilter.metrics import Metrics

log = logging.getLogger("contentfilter")
detail_log = logging.getLogger("contentfilter.pipeline")


INLINE_DECODE_SIZE = 32 * 1024  # smaller messages are decoded on the event loop


class Deliverer(Protocol):
    """Where passed copies and our own DSNs go (contentfilter.relay.NextHop)."""

    label: str

    async def deliver(
        self,
        envelope: Envelope,
        recipients: Sequence[Recipient],
        data: bytes,
    ) -> Delivery: ...


class ScanAborted(ScannerError):
    """A scanner whose failure policy is TEMPFAIL could not answer."""


@dataclass
class Pipeline:
    config: Config
    scanners: Sequence[Scanner]
    next_hop: Deliverer
    cache: ResultCache | None = None
    clock: Callable[[], float] = time.monotonic
    decoder: DecoderPool | None = None  # None: decode in this process (tests)
    faults: FaultCounter = field(default_factory=FaultCounter)
    event_log: events.EventLog = field(default_factory=events.EventLog)
    metrics: Metrics | None = None
    quarantine: QuarantineStore | None = None  # None: nothing is kept (scan, tests)
    # Called once a message is kept, before the answer (the notices sent at once).
    on_kept: Callable[[Entry], Awaitable[None]] | None = None
    # the scanners that take the parts as they come (PartsScanner), asked once: a
    # runtime protocol check looks the members up each time (tens of microseconds)
    _parts_scanners: frozenset[int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._parts_scanners = frozenset(
            id(s) for s in self.scanners if isinstance(s, PartsScanner)
        )

    # --- scanning ----------------------------------------------------------------------

    async def scan(
        self, message: Message, stages: dict[str, float] | None = None
    ) -> tuple[ScanResult, ...]:
        """Run every scanner concurrently; ScanAborted if one must tempfail the message.
        The decoder's time goes to `stages["decode"]`."""
        cached = [self._cached(scanner, message) for scanner in self.scanners]
        pending = [(s, key) for s, (key, hit) in zip(self.scanners, cached, strict=True) if not hit]
        wants_parts = any(s.needs_parts or self._takes_parts(s) for s, _ in pending)
        spool = None
        if wants_parts and message.parts is None:  # a cache hit for all spares the decoding
            spool = Spool(self.config.decoder.temp_directory)
        aborted: BaseException | None = None
        fault: BaseException | None = None
        try:
            async with asyncio.TaskGroup() as group:
                decoding = (
                    group.create_task(self._timed_decode(message, spool, stages))
                    if wants_parts
                    else None
                )
                tasks = [
                    group.create_task(self._run(s, message, key, decoding)) for s, key in pending
                ]
        except* ScanAborted as group_error:
            # Raised outside the except* block: CPython 3.11.2 (Debian 12) wraps an
            # exception raised inside one in a new ExceptionGroup (fixed in 3.11.4).
            aborted = group_error.exceptions[0]
        except* Exception as group_error:  # the decoder's: a full disk, a bug
            fault = group_error.exceptions[0]
        finally:
            if spool is not None:  # whatever happened, the extracted files go
                await discard(spool)
        if fault is not None:  # the cause itself, not an ExceptionGroup around it
            raise fault
        if aborted is not None:
            raise aborted
        results = iter(task.result() for task in tasks)
        return tuple(hit or next(results) for _, hit in cached)

    async def _timed_decode(
        self, message: Message, spool: Spool | None, stages: dict[str, float] | None
    ) -> DecodedMessage:
        started = self.clock()
        try:
            decoded = await self.decode(message, spool)
        finally:
            if stages is not None:
                stages["decode"] = self.clock() - started
        if self.metrics is not None:
            self.metrics.decoded(decoded.problems)
        return decoded

    async def decode(self, message: Message, spool: Spool | None = None) -> DecodedMessage:
        """The message's parts, decoded in a worker process (in this one without a pool);
        with `spool`, the extracted files are written there."""
        if message.parts is not None:
            return message.parts
        if self.decoder is not None:
            return await self.decoder.decode(message.raw, spool)
        path = spool.path if spool is not None else None
        if message.size <= INLINE_DECODE_SIZE:  # cheaper than a thread hand-off
            return mime.decode(message.raw, self.config.decoder, path)
        return await asyncio.to_thread(mime.decode, message.raw, self.config.decoder, path)

    def _takes_parts(self, scanner: Scanner) -> TypeGuard[PartsScanner]:
        return id(scanner) in self._parts_scanners

    def _cached(self, scanner: Scanner, message: Message) -> tuple[str | None, ScanResult | None]:
        """The scanner's cache key for the message, and the result stored under it."""
        if self.cache is None:
            return None, None
        started = self.clock()
        key = scanner.cache_key(message)
        hit = self.cache.get(scanner.name, key) if key is not None else None
        return key, hit.with_timing(self.clock() - started, cached=True) if hit else None

    async def _run(
        self,
        scanner: Scanner,
        message: Message,
        key: str | None,
        decoding: asyncio.Task[DecodedMessage] | None,
    ) -> ScanResult:
        if decoding is not None and scanner.needs_parts:  # its timeout starts after decoding
            message = replace(message, parts=await asyncio.shield(decoding))
        started = self.clock()
        try:
            async with asyncio.timeout(scanner.timeout) as budget:
                if decoding is not None and self._takes_parts(scanner):
                    parts = _parts_later(decoding, budget, scanner.timeout)
                    result = await scanner.scan_with_parts(message, parts)
                else:
                    result = await scanner.scan(message)
        except TimeoutError:
            error: ScannerError = ScannerTimeout(scanner.name, f"no answer in {scanner.timeout:g}s")
            return self._failed(scanner, message, error, self.clock() - started)
        except ScannerError as scanner_error:
            return self._failed(scanner, message, scanner_error, self.clock() - started)
        except Exception as bug:  # a fault in an adapter is still only a failed check
            self.faults.record(f"scanner {scanner.name}", bug, message.log_id)
            error = ScannerError(scanner.name, f"internal error ({type(bug).__name__})")
            return self._failed(scanner, message, error, self.clock() - started)
        elapsed = self.clock() - started
        detail_log.debug("(%s) %s took %.1f ms", message.log_id, scanner.name, elapsed * 1000)
        if key is not None and self.cache is not None and _decoded_in_full(message, decoding):
            self.cache.put(scanner.name, key, result)
        return result.with_timing(elapsed)

    def _failed(
        self, scanner: Scanner, message: Message, error: ScannerError, elapsed: float
    ) -> ScanResult:
        action = scanner.on_failure
        log.warning(
            "(%s) %s failed: %s; on_failure=%s",
            message.log_id,
            scanner.name,
            error.reason,
            action.value,
        )
        if action is FailureAction.TEMPFAIL:
            raise ScanAborted(error.scanner, error.reason) from error
        if action is FailureAction.UNCHECKED:
            finding = Finding(
                ContentsCategory.UNCHECKED, f"{scanner.name} unavailable", scanner.name
            )
            return ScanResult(scanner.name, (finding,), elapsed=elapsed, skipped=error.reason)
        return ScanResult(scanner.name, elapsed=elapsed, skipped=f"unavailable: {error.reason}")

    # --- the whole message -------------------------------------------------------------

    async def handle(
        self, message: Message, lmtp: bool = False, received: float | None = None
    ) -> Outcome:
        """Scan, decide and act: one disposition per recipient; reply only after this.

        Without `lmtp` one SMTP reply will cover every recipient (`replies.combine`),
        so a recipient to tempfail tempfails them all, and a refused recipient next to
        delivered ones is owed a DSN from us. `received`: the seconds DATA took to
        arrive, for the event's `receive` stage.
        """
        started = self.clock()
        stages: dict[str, float] = {} if received is None else {"receive": received}
        failure = None  # why no decision was reached, for the metrics
        try:
            outcome = await self._handle(message, lmtp, stages)
        except Exception as error:  # nothing is lost: every fault is a tempfail
            if not isinstance(error, ScannerError | RelayError | QuarantineError):
                self.faults.record("pipeline", error, message.log_id)
            reply = replies.failure(message.log_id, error)
            failure = "scanner" if isinstance(error, ScannerError) else "internal"
            failure = "quarantine" if isinstance(error, QuarantineError) else failure
            failure = "disk_full" if reply.status == "4.3.1" else failure
            failed = tuple(
                Disposition(r, None, Action.TEMPFAILED, reply) for r in message.envelope.recipients
            )
            outcome = Outcome(message, (), failed)
        outcome = replace(outcome, elapsed=self.clock() - started)
        hostname = self.config.server.hostname
        event = events.from_outcome(outcome, hostname, self._bank_name(message), stages)
        self.event_log.write(event)
        if self.metrics is not None:
            self.metrics.observe(event, outcome, self.cache is not None, failure)
        return outcome

    async def _handle(self, message: Message, lmtp: bool, stages: dict[str, float]) -> Outcome:
        mark = self.clock()
        results = await self.scan(message, stages)
        stages["scan"], mark = self.clock() - mark, self.clock()
        bank = policy.choose_bank(
            message.envelope, self.config.server.listen, self.config.policy_banks
        )
        context = policy.Context(self.config.server.hostname, self.config.policy, bank)
        verdicts = policy.decide(message, results, context)
        verdicts = await self._allowed_senders(message, results, context, verdicts)
        stages["policy"], mark = self.clock() - mark, self.clock()
        for verdict in verdicts:
            detail_log.debug(
                "(%s) <%s>: %s -> %s (%s)",
                message.log_id,
                verdict.recipient.address,
                verdict.category.log_name,
                verdict.destiny.value,
                verdict.rule,
            )
        tempfail = next((v for v in verdicts if v.destiny is Destiny.TEMPFAIL), None)
        if tempfail is not None and not lmtp:
            reply = replies.tempfailed(message.log_id, tempfail)
            held = tuple(Disposition(v.recipient, v, Action.TEMPFAILED, reply) for v in verdicts)
            return Outcome(message, results, held)
        verdicts = await self._keep(message, results, verdicts)
        dispositions = await self._act(message, verdicts, lmtp)
        stages["reinject"] = self.clock() - mark
        return Outcome(message, results, dispositions)

    async def _allowed_senders(
        self,
        message: Message,
        results: Sequence[ScanResult],
        context: policy.Context,
        verdicts: tuple[Verdict, ...],
    ) -> tuple[Verdict, ...]:
        """Spam blocked for a recipient who allowed its sender ("release and allow the
        sender") is decided again as from an allowed sender (amavisd-new's per-recipient
        whitelist_sender). Asked only for blocked spam; a store that cannot answer
        leaves the verdicts as they are."""
        sender = message.envelope.mail_from
        spam = (ContentsCategory.SPAM, ContentsCategory.SPAMMY)
        blocked = [
            i
            for i, v in enumerate(verdicts)
            if v.category in spam and v.destiny is not Destiny.PASS
        ]
        if self.quarantine is None or not sender or not blocked:
            return verdicts
        allowed = replace(policy.gather(message, results, context.settings), sender_allowed=True)
        decided = list(verdicts)
        for index in blocked:
            recipient = verdicts[index].recipient
            try:
                if not await self.quarantine.allowed_sender(recipient.address, sender):
                    continue
            except QuarantineError as error:
                log.warning("(%s) allowed senders not available: %s", message.log_id, error)
                return verdicts
            decided[index] = policy.decide_recipient(recipient, allowed, context)
            detail_log.debug(
                "(%s) <%s>: sender <%s> allowed by the recipient",
                message.log_id,
                recipient.address,
                sender,
            )
        return tuple(decided)

    def _bank_name(self, message: Message) -> str | None:
        bank = policy.choose_bank(
            message.envelope, self.config.server.listen, self.config.policy_banks
        )
        return next((n for n, b in self.config.policy_banks.items() if b is bank), None)

    # --- the quarantine ----------------------------------------------------------------

    async def _keep(
        self, message: Message, results: tuple[ScanResult, ...], verdicts: tuple[Verdict, ...]
    ) -> tuple[Verdict, ...]:
        """Mark the copies the quarantine keeps and store them, one call for the message,
        before anything is answered or relayed. A store that fails tempfails the message
        (QuarantineError) unless `quarantine.on_failure` is discard-unkept."""
        settings = self.config.quarantine
        if self.quarantine is None or not settings.enabled:
            return verdicts
        verdicts = keep.mark(verdicts, results, settings, message.mail_id)
        kept = [v for v in verdicts if v.quarantined]
        if not kept:
            return verdicts
        entry = keep.entry(
            message,
            results,
            kept,
            stored=datetime.now(UTC),
            host=settings.host,
            policy_bank=self._bank_name(message),
        )
        try:
            await self.quarantine.put(entry, message.raw)
        except Exception as error:
            if not isinstance(error, QuarantineError):  # a fault in the store: still a failure
                self.faults.record("quarantine", error, message.log_id)
                error = QuarantineError(f"internal error ({type(error).__name__})")
            if self.metrics is not None:
                self.metrics.quarantine_failed()
            if settings.on_failure == "tempfail":
                log.warning("(%s) quarantine: cannot keep the message: %s", message.log_id, error)
                raise error from None
            log.warning(
                "(%s) quarantine: cannot keep the message, going on without it"
                " (on_failure: discard-unkept): %s",
                message.log_id,
                error,
            )
            return keep.unmark(verdicts, message.mail_id)
        if self.metrics is not None:
            self.metrics.quarantined(entry.category, message.size)
        await self._notify(message, entry)
        return verdicts

    async def _notify(self, message: Message, entry: Entry) -> None:
        """Tell whoever is told at once (`on_kept`); a notice never changes what happens
        to the message."""
        if self.on_kept is None:
            return
        try:
            await self.on_kept(entry)
        except Exception as error:
            self.faults.record("notices", error, message.log_id)
            log.warning("(%s) quarantine notices not sent: %s", message.log_id, error)

    async def _act(
        self, message: Message, verdicts: tuple[Verdict, ...], lmtp: bool
    ) -> tuple[Disposition, ...]:
        done: dict[int, Disposition] = {}
        for cluster in clusters(verdicts):
            relayed = await self._relay(message, [verdicts[i] for i in cluster])
            done.update(zip(cluster, relayed, strict=True))
        for index, verdict in enumerate(verdicts):
            if verdict.destiny is not Destiny.PASS:
                done[index] = await self._block(message, verdict)
        dispositions = tuple(
            _with_quarantine(done[index], message.mail_id) for index in range(len(verdicts))
        )
        if not lmtp and replies.combine(message.log_id, dispositions).is_success:
            await self._notify_refused(message, dispositions)
        return dispositions

    async def _relay(self, message: Message, cluster: Sequence[Verdict]) -> list[Disposition]:
        """One transaction for recipients whose copies need the same edits."""
        first = cluster[0]
        data = headers.apply_edits(
            message.raw,
            first.header_lines,
            first.subject_tag,
            first.remove_spam_headers,
            message.header,
        )
        label = self.next_hop.label
        try:
            delivery = await self._deliver(message.envelope, [v.recipient for v in cluster], data)
        except RelayError as error:
            log.warning("(%s) next hop: %s", message.log_id, error)
            reply = replies.next_hop_failed(message.log_id, label, error)
            action = Action.REJECTED if reply.code >= 500 else Action.TEMPFAILED
            return [Disposition(v.recipient, v, action, reply, by_next_hop=True) for v in cluster]
        return [
            _relay_disposition(message.log_id, label, verdict, answer, delivery.queue_id)
            for verdict, answer in zip(cluster, delivery.recipients, strict=True)
        ]

    async def _block(self, message: Message, verdict: Verdict) -> Disposition:
        """A recipient whose copy is not passed: its destiny, with our DSN for BOUNCE."""
        log_id, recipient = message.log_id, verdict.recipient
        if verdict.destiny is Destiny.BOUNCE:
            if not verdict.dsn.send:
                log.info("(%s) DSN suppressed: %s", log_id, verdict.dsn.reason)
                reply = replies.discarded(
                    log_id, f"{verdict.reason} (no DSN: {verdict.dsn.reason})"
                )
                return Disposition(recipient, verdict, Action.DISCARDED, reply)
            refusal = replies.rejected(log_id, verdict)
            await self._send_dsn(message, [(verdict, refusal)], verdict.reason, verdict)
            return Disposition(
                recipient, verdict, Action.BOUNCED, replies.bounced(log_id, verdict.reason)
            )
        reply = replies.for_destiny(log_id, verdict)
        return Disposition(recipient, verdict, _BLOCK_ACTIONS[verdict.destiny], reply)

    async def _notify_refused(
        self, message: Message, dispositions: tuple[Disposition, ...]
    ) -> None:
        """Mixed outcome answered 250: we owe the refused recipients' sender a DSN."""
        owed: list[tuple[Verdict, Reply]] = []
        for disposition in dispositions:
            verdict = disposition.verdict
            if disposition.action is not Action.REJECTED or verdict is None:
                continue
            if verdict.dsn.send:
                owed.append((verdict, disposition.reply))
            else:
                log.info(
                    "(%s) DSN for <%s> suppressed: %s",
                    message.log_id,
                    verdict.recipient.address,
                    verdict.dsn.reason,
                )
        if owed:
            await self._send_dsn(message, owed, owed[0][1].text)

    async def _send_dsn(
        self,
        message: Message,
        failed: Sequence[tuple[Verdict, Reply]],
        reason: str,
        blocked: Verdict | None = None,
    ) -> None:
        """Send a DSN for `failed` to the envelope sender; `blocked` names the contents."""
        dsn = bounce.build_dsn(
            original=message.raw,
            header_end=message.header_end,
            envelope_sender=message.envelope.mail_from,
            failed=[
                (v.recipient.address, v.recipient.orcpt, reply.code, reply.status, reply.text)
                for v, reply in failed
            ],
            reporting_mta=self.config.server.hostname,
            arrival_date=datetime.now(UTC),
            log_id=message.log_id,
            reason=reason,
            category=blocked.category if blocked else None,
            details=blocked.details if blocked else (),
            mail_id=message.mail_id,
            envid=message.envelope.envid,
        )
        envelope = Envelope("", (Recipient(message.envelope.mail_from),))
        await self._deliver(envelope, envelope.recipients, dsn)

    async def _deliver(
        self, envelope: Envelope, recipients: Sequence[Recipient], data: bytes
    ) -> Delivery:
        """The next hop's `deliver`, its answers counted per recipient."""
        try:
            delivery = await self.next_hop.deliver(envelope, recipients, data)
        except RelayError as error:
            if self.metrics is not None:
                for _ in recipients:
                    self.metrics.next_hop_reply(error.code)
            raise
        if self.metrics is not None:
            for answer in delivery.recipients:
                self.metrics.next_hop_reply(answer.code)
        return delivery


def _decoded_in_full(message: Message, decoding: asyncio.Task[DecodedMessage] | None) -> bool:
    """False when the parts a scanner saw were cut short by a decoder crash or time
    limit: a verdict from them holds for this delivery attempt only, not the cache."""
    parts = message.parts
    if parts is None and decoding is not None and decoding.done() and not decoding.cancelled():
        parts = decoding.result() if decoding.exception() is None else None
    return parts is None or not parts.cut_short


async def _parts_later(
    decoding: asyncio.Task[DecodedMessage], budget: asyncio.Timeout, seconds: float
) -> DecodedMessage | None:
    """The decoded parts for a scanner already at work on the raw message. Waiting for
    the decoder does not count against its timeout (its conversations keep their own);
    the timeout starts again once the parts are there. None if decoding failed (that
    fails the scan by itself)."""
    if not decoding.done():
        budget.reschedule(None)
    try:
        decoded = await asyncio.shield(decoding)
    except Exception:
        return None
    budget.reschedule(asyncio.get_running_loop().time() + seconds)
    return decoded


_BLOCK_ACTIONS = {
    Destiny.DISCARD: Action.DISCARDED,
    Destiny.REJECT: Action.REJECTED,
    Destiny.TEMPFAIL: Action.TEMPFAILED,
}


def _with_quarantine(disposition: Disposition, mail_id: str) -> Disposition:
    """A kept copy's disposition names its quarantine id; a blocked one's reply too."""
    verdict = disposition.verdict
    if verdict is None or not verdict.quarantined:
        return disposition
    reply = disposition.reply
    if verdict.destiny is not Destiny.PASS:
        reply = replies.quarantined(reply, mail_id)
    return replace(disposition, reply=reply, quarantine_id=mail_id)


def _relay_disposition(
    log_id: str, label: str, verdict: Verdict, answer: RecipientResult, queue_id: str | None
) -> Disposition:
    """What the next hop's answer for one recipient means for that recipient."""
    if answer.accepted:
        reply = replies.relayed(log_id, label, answer.code, answer.text)
        return Disposition(verdict.recipient, verdict, Action.RELAYED, reply, queue_id)
    reply = replies.next_hop_refused(log_id, label, answer.code, answer.text)
    action = Action.REJECTED if reply.code >= 500 else Action.TEMPFAILED
    return Disposition(verdict.recipient, verdict, action, reply, by_next_hop=True)


def clusters(verdicts: Sequence[Verdict]) -> list[list[int]]:
    """Indexes of passed recipients grouped by identical header edits: one transaction each."""
    groups: dict[tuple[tuple[bytes, ...], str, bool], list[int]] = {}
    for index, verdict in enumerate(verdicts):
        if verdict.destiny is Destiny.PASS:
            groups.setdefault(verdict.edits_key(), []).append(index)
    return list(groups.values())
