"""Which recipients' copies the filter keeps, and the index entry it stores. Pure.

The decision is an ordered table of small named rules, as the policy's: the first
rule that answers decides, and the log says which. The pipeline marks the verdicts
(`Verdict.quarantined`), stores one entry per message for all of them before it
answers, and then acts on the destinies as usual.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime

from contentfilter import headers, logline
from contentfilter.model import ContentsCategory, Destiny, Message, ScanResult, Verdict
from contentfilter.quarantine.records import Entry, HeldRecipient, State
from contentfilter.quarantine.settings import QuarantineSettings
from contentfilter.rfc5322 import decoded_text, field_value

LOVER_RULES = frozenset(
    {"virus_lover", "banned_files_lover", "unchecked_lover", "spam_lover", "bad_header_lover"}
)
HEADER = "X-Quarantine-ID"
MAX_TEXT = 998  # a displayed Subject or From is at most one header line long

# a rule: (verdict, spam score, settings) -> True keep, False do not keep, None next rule
KeepRule = Callable[[Verdict, float | None, QuarantineSettings], bool | None]


def _switched_off(
    verdict: Verdict, score: float | None, settings: QuarantineSettings
) -> bool | None:
    return False if not settings.enabled else None


def _retried(verdict: Verdict, score: float | None, settings: QuarantineSettings) -> bool | None:
    # a tempfailed copy comes back from Postfix: keeping it would keep it twice
    return False if verdict.destiny is Destiny.TEMPFAIL else None


def _category_not_kept(
    verdict: Verdict, score: float | None, settings: QuarantineSettings
) -> bool | None:
    return False if verdict.category.config_name not in settings.categories else None


def _spam_over_cutoff(
    verdict: Verdict, score: float | None, settings: QuarantineSettings
) -> bool | None:
    cutoff = settings.spam_cutoff_level
    if verdict.category is ContentsCategory.SPAM and cutoff is not None and score is not None:
        return False if score >= cutoff else None
    return None


def _passed_to_lover(
    verdict: Verdict, score: float | None, settings: QuarantineSettings
) -> bool | None:
    if verdict.destiny is Destiny.PASS:
        return settings.keep_passed and verdict.rule in LOVER_RULES
    return None


def _blocked(verdict: Verdict, score: float | None, settings: QuarantineSettings) -> bool | None:
    return True  # discard, reject or bounce of a kept category


KEEP_RULES: tuple[tuple[str, KeepRule], ...] = (
    ("quarantine.enabled", _switched_off),
    ("destiny tempfail", _retried),
    ("quarantine.categories", _category_not_kept),
    ("quarantine.spam_cutoff_level", _spam_over_cutoff),
    ("quarantine.keep_passed", _passed_to_lover),
    ("blocked", _blocked),
)


def decide(verdict: Verdict, score: float | None, settings: QuarantineSettings) -> tuple[bool, str]:
    """Whether this recipient's copy is kept, and the rule that decided."""
    for name, rule in KEEP_RULES:
        answer = rule(verdict, score, settings)
        if answer is not None:
            return answer, name
    raise AssertionError("the last rule always answers")


def mark(
    verdicts: Sequence[Verdict],
    results: Sequence[ScanResult],
    settings: QuarantineSettings,
    mail_id: str,
) -> tuple[Verdict, ...]:
    """The verdicts with `quarantined` set where a copy is kept; a kept copy that is
    passed carries `X-Quarantine-ID: <mail_id>`."""
    score = spam_score(results)
    marked = []
    for verdict in verdicts:
        kept, _rule = decide(verdict, score, settings)
        if kept:
            verdict = replace(verdict, quarantined=True)
            if verdict.destiny is Destiny.PASS:
                line = headers.header_line(HEADER, f"<{mail_id}>")
                verdict = replace(verdict, header_lines=(*verdict.header_lines, line))
        marked.append(verdict)
    return tuple(marked)


def unmark(verdicts: Sequence[Verdict], mail_id: str) -> tuple[Verdict, ...]:
    """The verdicts as if nothing were kept (the store failed, `discard-unkept`)."""
    line = headers.header_line(HEADER, f"<{mail_id}>")
    return tuple(
        replace(
            verdict,
            quarantined=False,
            header_lines=tuple(h for h in verdict.header_lines if h != line),
        )
        for verdict in verdicts
    )


def spam_score(results: Sequence[ScanResult]) -> float | None:
    return next((r.spam.score for r in results if r.spam is not None), None)


def entry(
    message: Message,
    results: Sequence[ScanResult],
    kept: Sequence[Verdict],
    *,
    stored: datetime,
    host: str,
    policy_bank: str | None,
) -> Entry:
    """The index entry of a message whose `kept` verdicts' copies are stored."""
    if not kept:
        raise ValueError("an entry needs a kept recipient")
    main = max(kept, key=lambda v: v.category)
    envelope = message.envelope
    return Entry(
        mail_id=message.mail_id,
        stored=stored,
        category=main.category.config_name,
        reason=_displayable(main.reason),
        findings=findings(results),
        sender=_storable(envelope.mail_from),
        recipients=tuple(
            HeldRecipient(_storable(v.recipient.address), State.HELD, stored) for v in kept
        ),
        subject=header_text(message, b"subject"),
        from_header=header_text(message, b"from"),
        message_id=_displayable(logline.message_id(message.raw, message.header) or ""),
        size=message.size,
        client_address=_displayable(envelope.original_client),
        policy_bank=_displayable(policy_bank or ""),
        host=_displayable(host),
        log_id=_displayable(message.log_id),
        queue_id=_displayable(
            envelope.xforward_value("IDENT")
            or logline.queue_id_from_headers(message.raw, message.header)
            or ""
        ),
        spam_score=spam_score(results),
    )


def findings(results: Sequence[ScanResult]) -> tuple[str, ...]:
    """One line per finding and per scanner that did not look: `clamav: INFECTED: ...`."""
    lines = []
    for result in results:
        for finding in result.findings:
            lines.append(f"{result.scanner}: {finding.category.log_name}: {finding.detail}")
        spam = result.spam
        if spam is not None:
            score = headers.format_score
            tests = ", ".join(  # a rule's score is None when spamd was not asked for it
                name if value is None else f"{name}={score(value)}" for name, value in spam.tests
            )
            lines.append(f"{result.scanner}: score {score(spam.score)} [{tests}]")
        if result.skipped:
            lines.append(f"{result.scanner}: skipped ({result.skipped})")
    return tuple(_displayable(line) for line in lines)


def header_text(message: Message, name: bytes) -> str:
    """The first field `name` decoded for display, control characters removed."""
    field = next(message.header.named(name), None)
    if field is None:
        return ""
    return _displayable(decoded_text(field_value(message.raw, field)))


def _storable(address: str) -> str:
    """An address as both stores can keep it: valid UTF-8 (pipe(8)'s argv may carry other
    bytes as surrogates) and no NUL (PostgreSQL's text refuses it). Either would fail
    the message on every retry; the address the server took is already both."""
    return address.encode("utf-8", "replace").decode("utf-8").replace("\0", "\ufffd")


def _displayable(text: str) -> str:
    """No control or format characters (a bidi override, a NUL): shown in terminals and
    web pages."""
    text = text.encode("utf-8", "replace").decode("utf-8")
    cleaned = "".join(
        " " if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp", "Cs") else c for c in text
    )
    return cleaned[:MAX_TEXT]
