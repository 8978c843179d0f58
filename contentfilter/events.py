"""One event record per message, and its renderings: the amavisd-new log line, JSON.

The record is built once from the Outcome (what happened to each recipient) and
every rendering reads only the record, so the log line and the JSON object cannot
disagree. Field names follow amavisd-new's `structured_report` (the JSON it sends
to Redis) where a field of ours means the same: log_id, mail_id, queue_id,
queued_as, client_ip, client_port, policy_banks, mail_from, rcpt_to, recipients,
content_type, virusnames, banning_reason, spam_score, tests, quarantine, size,
message_id, elapsed. Pure: writing the renderings is `EventLog`'s job.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import re
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Any

from contentfilter import logline
from contentfilter.model import Action, ContentsCategory, Outcome

log = logging.getLogger("contentfilter")

LOGLINE_MAXLEN = 980  # amavisd-new's $logline_maxlen: a syslog line with its prefix < 1024


@dataclass(frozen=True, slots=True)
class RecipientEvent:
    """What happened to one recipient (structured_report's `recipients` entries)."""

    rcpt_to: str
    ccat_main: str  # the deciding category of its verdict; UNCHECKED without a verdict
    destiny: str | None  # pass, discard, bounce, reject, tempfail; None: no decision
    action: str  # Relayed, Discarded, Bounced, Rejected, TempFailed, Quarantined
    smtp_code: int
    smtp_code_enh: str
    smtp_response: str
    queued_as: str | None = None
    quarantine: str | None = None


@dataclass(frozen=True, slots=True)
class MessageEvent:
    """Everything worth logging about one message."""

    log_id: str
    mail_id: str
    time_unix: float
    host: str
    queue_id: str | None
    queued_as: tuple[str, ...]
    client_ip: str
    client_port: int | None  # only with XFORWARD ADDR and PORT: Postfix's client
    policy_banks: tuple[str, ...]
    mail_from: str
    message_id: str | None
    size: int
    passed: bool  # some recipient got the message: amavisd-new's "Passed" line
    category: ContentsCategory  # the message's category as the log line shows it
    virusnames: tuple[str, ...]
    banning_reason: str | None
    spam_score: float | None
    tests: tuple[tuple[str, float | None], ...]
    recipients: tuple[RecipientEvent, ...]
    actions: tuple[str, ...]  # the log line's {RelayedInbound,...}
    elapsed: tuple[tuple[str, float], ...]  # seconds per stage; "total" last
    cache_hits: tuple[str, ...]  # scanners whose result came from the cache

    @property
    def rcpt_to(self) -> tuple[str, ...]:
        return tuple(r.rcpt_to for r in self.recipients)

    @property
    def quarantine(self) -> str | None:
        return next((r.quarantine for r in self.recipients if r.quarantine), None)

    @property
    def elapsed_total(self) -> float:
        return dict(self.elapsed).get("total", 0.0)

    def log_line(self) -> str:
        """amavisd-new 2.13's main log line, `(log_id) ` prefix included."""
        details: Sequence[str] = ()
        if self.category is ContentsCategory.VIRUS:
            details = self.virusnames
        elif self.category is ContentsCategory.BANNED and self.banning_reason is not None:
            details = (self.banning_reason,)
        return logline.summary_line(
            log_id=self.log_id,
            passed=self.passed,
            category=self.category,
            details=details,
            actions=self.actions,
            client=f"[{self.client_ip}]" + (f":{self.client_port}" if self.client_port else ""),
            sender=self.mail_from,
            recipients=self.rcpt_to,
            queue_id=self.queue_id,
            message_id=self.message_id,
            mail_id=self.mail_id,
            hits=self.spam_score,
            size=self.size,
            queued_as=self.queued_as,
            elapsed_ms=round(self.elapsed_total * 1000),
            quarantine=(self.quarantine,) if self.quarantine else (),
        )

    def as_dict(self) -> dict[str, Any]:
        """The JSON object: structured_report's names, absent values left out."""
        report: dict[str, Any] = {
            "type": "contentfilter",
            "time_unix": round(self.time_unix, 3),
            "host": self.host,
            "log_id": self.log_id,
            "mail_id": self.mail_id,
            "queue_id": self.queue_id,
            "queued_as": list(self.queued_as),
            "client_ip": self.client_ip,
            "client_port": self.client_port,
            "policy_banks": list(self.policy_banks),
            "mail_from": self.mail_from,
            "rcpt_to": list(self.rcpt_to),
            "message_id": self.message_id,
            "size": self.size,
            "content_type": self.category.log_name,
            "action": list(self.actions),
            "virusnames": list(self.virusnames),
            "banning_reason": self.banning_reason,
            "spam_score": None if self.spam_score is None else round(self.spam_score, 3) + 0.0,
            "tests": {name: score for name, score in self.tests},
            "quarantine": self.quarantine,
            "recipients": [_plain(r) for r in self.recipients],
            "elapsed": {stage: round(seconds, 6) for stage, seconds in self.elapsed},
            "cache_hits": list(self.cache_hits),
            "message": f"{self.log_id} {'Passed' if self.passed else 'Blocked'} "
            f"{self.category.log_name}",
        }
        return {k: v for k, v in report.items() if v not in (None, [], {})}

    def json_line(self) -> str:
        return json.dumps(self.as_dict(), ensure_ascii=False, separators=(",", ":"))


def _plain(recipient: RecipientEvent) -> dict[str, Any]:
    fields = {name: getattr(recipient, name) for name in RecipientEvent.__slots__}
    return {k: v for k, v in fields.items() if v is not None}


def from_outcome(
    outcome: Outcome,
    host: str = "",
    policy_bank: str | None = None,
    stages: Mapping[str, float] | None = None,
    now: float | None = None,
) -> MessageEvent:
    """The event of one handled message. `stages` are seconds per stage (the scanners'
    own are read from their results); `policy_bank` is the bank's name, if one applied."""
    message = outcome.message
    envelope = message.envelope
    dispositions = outcome.dispositions
    passed = any(d.action is Action.RELAYED for d in dispositions)
    category = logline.main_category(outcome)
    if not outcome.verdicts:  # no decision was reached: the check did not happen
        category = ContentsCategory.UNCHECKED
    elif not passed and any(d.by_next_hop for d in dispositions):
        category = max(category, ContentsCategory.MTA)  # amavisd-new's MTA-BLOCKED
    findings = [f for r in outcome.results for f in r.findings]
    spam = next((r.spam for r in outcome.results if r.spam is not None), None)
    original = envelope.xforward_value("ADDR")
    port = envelope.xforward_value("PORT")
    elapsed = [(f"scanner_{r.scanner}", r.elapsed) for r in outcome.results]
    elapsed += [(stage, seconds) for stage, seconds in (stages or {}).items()]
    elapsed.append(("total", outcome.elapsed))
    return MessageEvent(
        log_id=message.log_id,
        mail_id=message.mail_id,
        time_unix=time.time() if now is None else now,
        host=host,
        queue_id=envelope.xforward_value("IDENT")
        or logline.queue_id_from_headers(message.raw, message.header),
        queued_as=outcome.queued_as,
        client_ip=original or envelope.client_address,
        client_port=int(port) if original and port and port.isdigit() else None,
        policy_banks=(policy_bank,) if policy_bank else (),
        mail_from=envelope.mail_from,
        message_id=logline.message_id(message.raw, message.header),
        size=message.size,
        passed=passed,
        category=category,
        virusnames=tuple(
            dict.fromkeys(f.detail for f in findings if f.category is ContentsCategory.VIRUS)
        ),
        banning_reason=next(
            (f.detail for f in findings if f.category is ContentsCategory.BANNED), None
        ),
        spam_score=spam.score if spam else None,
        tests=spam.tests if spam else (),
        recipients=tuple(
            RecipientEvent(
                rcpt_to=d.recipient.address,
                ccat_main=d.verdict.category.log_name if d.verdict else "UNCHECKED",
                destiny=d.verdict.destiny.value if d.verdict else None,
                action=d.action.value,
                smtp_code=d.reply.code,
                smtp_code_enh=d.reply.status,
                smtp_response=f"{d.reply.code} {d.reply.status} {d.reply.text}",
                queued_as=d.queue_id,
                quarantine=d.quarantine_id,
            )
            for d in dispositions
        ),
        actions=logline.action_words(dispositions),
        elapsed=tuple(elapsed),
        cache_hits=tuple(r.scanner for r in outcome.results if r.cached),
    )


def outcome_line(outcome: Outcome) -> str:
    """The amavisd-new log line of one message."""
    return from_outcome(outcome).log_line()


# --- writing ----------------------------------------------------------------------------


_LOG_ID_PREFIX = re.compile(r"\([^()\s]+\) ")


def split_line(text: str, maxlen: int = LOGLINE_MAXLEN) -> list[str]:
    """A log line cut as amavisd-new's `write_log` cuts it for syslog.

    Each piece but the last ends in `...`; each piece after the first keeps the
    `(log_id) ` prefix and continues with `...`. logwatch's amavis script joins
    them back.
    """
    maxlen = max(maxlen, 50)  # amavisd-new: "let at least something out"
    prefix_match = _LOG_ID_PREFIX.match(text)
    am_id = prefix_match.group(0) if prefix_match else ""
    rest = text[len(am_id) :]
    pre = ""
    pieces = []
    while len(am_id) + len(pre) + len(rest) > maxlen:
        avail = maxlen - len(am_id + pre + "...")
        pieces.append(am_id + pre + rest[:avail] + "...")
        pre, rest = "...", rest[avail:]
    pieces.append(am_id + pre + rest)
    return pieces


class AmavisSyslogHandler(logging.handlers.SysLogHandler):
    """Syslog as amavisd-new writes it: `ident[PID]: ` and lines cut at 980 characters."""

    def __init__(self, ident: str, address: str = "/dev/log", facility: str = "mail") -> None:
        super().__init__(address, facility=self.facility_names[facility])
        self.ident = f"{ident}[{os.getpid()}]: "

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
        except Exception:
            self.handleError(record)
            return
        for piece in split_line(text):
            piece_record = logging.makeLogRecord({**record.__dict__, "msg": piece, "args": ()})
            super().emit(piece_record)


@dataclass
class EventLog:
    """Where message events go: the log line to the `contentfilter` logger (hence to
    stderr and syslog), the JSON object to `json_stream` when one is set."""

    json_stream: IO[str] | None = None

    def write(self, event: MessageEvent) -> None:
        log.info("%s", event.log_line())
        if self.json_stream is not None:
            try:
                self.json_stream.write(event.json_line() + "\n")
                self.json_stream.flush()
            except (OSError, ValueError) as error:  # a full disk must not fail the message
                log.warning("(%s) cannot write the JSON event: %s", event.log_id, error)


def open_event_log(target: str) -> EventLog:
    """`off`, `stderr` or a file path (appended to, line-buffered)."""
    if target == "off":
        return EventLog()
    if target == "stderr":
        return EventLog(sys.stderr)
    return EventLog(open(target, "a", encoding="utf-8", buffering=1))
