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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Protocol

from contentfilter import bounce, headers, logline, mime, policy, replies
from contentfilter.cache import ResultCache
from contentfilter.config import Config
from contentfilter.errors import RelayError, ScannerError, ScannerTimeout
from contentfilter.model import (
    ContentsCategory,
    DecodedMessage,
    Destiny,
    Envelope,
    FailureAction,
    Finding,
    Message,
    Outcome,
    Recipient,
    Reply,
    Scanner,
    ScanResult,
    Verdict,
)
from contentfilter.policy_settings import PolicyBank
from contentfilter.relay import Delivery

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

    # --- scanning ----------------------------------------------------------------------

    async def scan(self, message: Message) -> tuple[ScanResult, ...]:
        """Run every scanner concurrently; ScanAborted if one must tempfail the message."""
        on_raw = [s for s in self.scanners if not s.needs_parts]
        on_parts = [s for s in self.scanners if s.needs_parts]
        aborted: BaseException | None = None
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(self._run(s, message)) for s in on_raw]
                if on_parts:
                    message = replace(message, parts=await self.decode(message))
                    tasks += [group.create_task(self._run(s, message)) for s in on_parts]
        except* ScanAborted as group_error:
            # Raised outside the except* block: CPython 3.11.2 (Debian 12) wraps an
            # exception raised inside one in a new ExceptionGroup (fixed in 3.11.4).
            aborted = group_error.exceptions[0]
        if aborted is not None:
            raise aborted
        return tuple(task.result() for task in tasks)

    async def decode(self, message: Message) -> DecodedMessage:
        if message.parts is not None:
            return message.parts
        if message.size <= INLINE_DECODE_SIZE:  # cheaper than a thread hand-off
            return mime.decode(message.raw, self.config.decoder)
        return await asyncio.to_thread(mime.decode, message.raw, self.config.decoder)

    async def _run(self, scanner: Scanner, message: Message) -> ScanResult:
        started = self.clock()
        key = scanner.cache_key(message) if self.cache is not None else None
        if key is not None and self.cache is not None:
            hit = self.cache.get(scanner.name, key)
            if hit is not None:
                return hit.with_timing(self.clock() - started, cached=True)
        try:
            async with asyncio.timeout(scanner.timeout):
                result = await scanner.scan(message)
        except TimeoutError:
            error: ScannerError = ScannerTimeout(scanner.name, f"no answer in {scanner.timeout:g}s")
            return self._failed(scanner, message, error, self.clock() - started)
        except ScannerError as scanner_error:
            return self._failed(scanner, message, scanner_error, self.clock() - started)
        except Exception as bug:  # a fault in an adapter is still only a failed check
            detail_log.exception("(%s) scanner %s crashed", message.log_id, scanner.name)
            error = ScannerError(scanner.name, f"internal error ({type(bug).__name__})")
            return self._failed(scanner, message, error, self.clock() - started)
        elapsed = self.clock() - started
        detail_log.debug("(%s) %s took %.1f ms", message.log_id, scanner.name, elapsed * 1000)
        if key is not None and self.cache is not None:
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
        self, message: Message, bank: PolicyBank | None = None, lmtp: bool = False
    ) -> Outcome:
        """Scan, decide and act; the reply is sent only after this returns."""
        started = self.clock()
        try:
            outcome = await self._handle(message, bank, lmtp)
        except Exception as error:  # nothing is lost: every fault is a tempfail
            if not isinstance(error, ScannerError | RelayError):
                log.exception("(%s) internal error", message.log_id)
            reply = replies.failure(message.log_id, error)
            outcome = Outcome(
                message,
                (),
                (),
                reply,
                tuple(reply for _ in message.envelope.recipients),
                actions=("TempFailed",),
            )
        outcome = replace(outcome, elapsed=self.clock() - started)
        log.info("%s", summary(outcome, self.next_hop.label))
        return outcome

    async def _handle(self, message: Message, bank: PolicyBank | None, lmtp: bool) -> Outcome:
        results = await self.scan(message)
        context = policy.Context(self.config.server.hostname, self.config.policy, bank)
        verdicts = policy.decide(message, results, context)
        for verdict in verdicts:
            detail_log.debug(
                "(%s) <%s>: %s -> %s (%s)",
                message.log_id,
                verdict.recipient.address,
                verdict.category.log_name,
                verdict.destiny.value,
                verdict.rule,
            )
        if not lmtp and any(v.destiny is Destiny.TEMPFAIL for v in verdicts):
            first = next(v for v in verdicts if v.destiny is Destiny.TEMPFAIL)
            reply = replies.tempfailed(message.log_id, first)
            return Outcome(
                message,
                results,
                verdicts,
                reply,
                tuple(reply for _ in verdicts),
                actions=("TempFailed",),
            )
        return await self._act(message, results, verdicts, lmtp)

    async def _act(
        self,
        message: Message,
        results: tuple[ScanResult, ...],
        verdicts: tuple[Verdict, ...],
        lmtp: bool,
    ) -> Outcome:
        per_recipient: dict[Recipient, Reply] = {}
        queued: list[str] = []
        actions: list[str] = []
        next_hop_failed = False
        for cluster in clusters(verdicts):
            replies_for, queue_id = await self._relay(message, cluster)
            per_recipient.update(replies_for)
            if queue_id:
                queued.append(queue_id)
            actions.append(_relay_action(cluster[0], list(replies_for.values())))
            next_hop_failed |= not all(r.is_success for r in replies_for.values())
        for verdict in verdicts:
            if verdict.destiny is Destiny.PASS:
                continue
            per_recipient[verdict.recipient] = await self._block(message, results, verdict)
            actions.append(_block_action(per_recipient[verdict.recipient], verdict.destiny))
        ordered = tuple(per_recipient[v.recipient] for v in verdicts)
        reply = (
            ordered[0] if lmtp and len(ordered) == 1 else replies.combine(message.log_id, ordered)
        )
        if not lmtp and reply.is_success:
            await self._bounce_refused(message, verdicts, ordered)
        return Outcome(
            message,
            results,
            verdicts,
            reply,
            ordered,
            tuple(queued),
            actions=tuple(dict.fromkeys(actions)),
            next_hop_failed=next_hop_failed,
        )

    async def _relay(
        self, message: Message, cluster: Sequence[Verdict]
    ) -> tuple[dict[Recipient, Reply], str | None]:
        first = cluster[0]
        data = headers.apply_edits(
            message.raw, first.header_lines, first.subject_tag, first.remove_spam_headers
        )
        recipients = [v.recipient for v in cluster]
        label = self.next_hop.label
        try:
            delivery = await self.next_hop.deliver(message.envelope, recipients, data)
        except RelayError as error:
            log.warning("(%s) next hop: %s", message.log_id, error)
            reply = replies.next_hop_failed(message.log_id, label, error)
            return {r: reply for r in recipients}, None
        answers: dict[Recipient, Reply] = {}
        for result in delivery.recipients:
            if result.accepted:
                answers[result.recipient] = replies.relayed(
                    message.log_id, label, delivery.code, delivery.text
                )
            else:
                refusal = RelayError("recipient refused", result.code, result.text)
                answers[result.recipient] = replies.next_hop_failed(message.log_id, label, refusal)
        return answers, delivery.queue_id

    async def _block(
        self, message: Message, results: tuple[ScanResult, ...], verdict: Verdict
    ) -> Reply:
        if verdict.destiny is not Destiny.BOUNCE:
            return replies.for_destiny(message.log_id, verdict)
        if not verdict.dsn.send:
            log.info("(%s) DSN suppressed: %s", message.log_id, verdict.dsn.reason)
            return replies.discarded(
                message.log_id, f"{verdict.reason} (no DSN: {verdict.dsn.reason})"
            )
        reply = replies.rejected(message.log_id, verdict)
        await self._send_dsn(message, [(verdict, reply)], verdict.reason, verdict)
        return replies.bounced(message.log_id, verdict.reason)

    async def _bounce_refused(
        self,
        message: Message,
        verdicts: tuple[Verdict, ...],
        ordered: tuple[Reply, ...],
    ) -> None:
        """Mixed outcome answered 250: we owe the refused recipients' sender a DSN."""
        refused = [(v, r) for v, r in zip(verdicts, ordered, strict=True) if r.code >= 500]
        for verdict, _ in refused:
            if not verdict.dsn.send:
                log.info(
                    "(%s) DSN for <%s> suppressed: %s",
                    message.log_id,
                    verdict.recipient.address,
                    verdict.dsn.reason,
                )
        owed = [(v, r) for v, r in refused if v.dsn.send]
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
        await self.next_hop.deliver(envelope, envelope.recipients, dsn)


def _block_action(reply: Reply, destiny: Destiny) -> str:
    """The log line's word for a recipient whose copy was not passed."""
    if reply.code >= 500:
        return "Rejected"
    if reply.is_tempfail:
        return "TempFailed"
    return {
        Destiny.DISCARD: "Discarded",
        Destiny.BOUNCE: "Bounced",
        Destiny.REJECT: "Rejected",
    }.get(destiny, "TempFailed")


def _relay_action(verdict: Verdict, answers: Sequence[Reply]) -> str:
    """The log line's word for a relay attempt: what really happened to the copy."""
    if any(a.is_success for a in answers):
        return "RelayedTagged" if verdict.subject_tag else "Relayed"
    return "TempFailed" if any(a.is_tempfail for a in answers) else "Rejected"


def clusters(verdicts: Sequence[Verdict]) -> list[list[Verdict]]:
    """Passed recipients grouped by identical header edits: one transaction each."""
    groups: dict[tuple[tuple[bytes, ...], str, bool], list[Verdict]] = {}
    for verdict in verdicts:
        if verdict.destiny is Destiny.PASS:
            groups.setdefault(verdict.edits_key(), []).append(verdict)
    return list(groups.values())


def main_category(outcome: Outcome) -> ContentsCategory:
    """The highest category of the message (what the log line reports)."""
    found = [v.category for v in outcome.verdicts]
    findings = [f.category for r in outcome.results for f in r.findings]
    return max([*found, *findings], default=ContentsCategory.CLEAN)


def summary(outcome: Outcome, next_hop: str) -> str:
    """amavisd-new's one line per message."""
    message = outcome.message
    envelope = message.envelope
    category = main_category(outcome)
    if outcome.actions == ("TempFailed",) and not outcome.verdicts:
        category = ContentsCategory.UNCHECKED if outcome.reply.is_tempfail else category
    details = [f.detail for r in outcome.results for f in r.findings if f.category is category]
    spam = next((r.spam for r in outcome.results if r.spam is not None), None)
    passed = any(r.is_success and r.status.startswith("2.0") for r in outcome.recipient_replies)
    if outcome.next_hop_failed and not passed:
        category = max(category, ContentsCategory.MTA)  # amavisd-new's MTA-BLOCKED
    original = envelope.xforward_value("ADDR")
    port = envelope.xforward_value("PORT")
    client = f"[{original or envelope.client_address}]" + (f":{port}" if original and port else "")
    return logline.summary_line(
        log_id=message.log_id,
        passed=passed,
        category=category,
        details=details,
        actions=tuple(f"{a}Inbound" for a in outcome.actions),
        client=client,
        original_client=None,
        sender=envelope.mail_from,
        recipients=[r.address for r in envelope.recipients],
        queue_id=envelope.xforward_value("IDENT")
        or logline.queue_id_from_headers(message.header_bytes),
        message_id=logline.message_id(message.header_bytes),
        mail_id=message.mail_id,
        hits=spam.score if spam else None,
        size=message.size,
        queued_as=outcome.queued_as,
        elapsed_ms=round(outcome.elapsed * 1000),
    )
