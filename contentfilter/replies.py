"""Every SMTP reply the filter writes, built in one place.

Texts follow amavisd-new 2.13 so admins recognise them in Postfix's log. Internal
faults are always 4xx: after the queue a 5xx makes Postfix bounce the message.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import IntEnum

from contentfilter.errors import (
    ContentFilterError,
    MessageRejected,
    RelayError,
    ScannerError,
)
from contentfilter.model import ContentsCategory, Destiny, Reply, Verdict


class Code(IntEnum):
    """SMTP reply codes the filter uses (RFC 5321 section 4.2.3)."""

    OK = 250
    SERVICE_NOT_AVAILABLE = 421
    MAILBOX_UNAVAILABLE_TEMP = 450
    LOCAL_ERROR = 451
    EXCEEDED_STORAGE = 552
    TRANSACTION_FAILED = 554


def relayed(log_id: str, next_hop: str, code: int, text: str) -> Reply:
    return Reply(Code.OK, "2.0.0", f"Ok, id={log_id}, from MTA({next_hop}): {code} {text}")


def discarded(log_id: str, reason: str) -> Reply:
    return Reply(Code.OK, "2.7.0", f"Ok, discarded, id={log_id} - {reason}")


def bounced(log_id: str, reason: str) -> Reply:
    return Reply(Code.OK, "2.5.0", f"Ok, id={log_id}, BOUNCE - {reason}")


_REJECT_STATUS = {
    ContentsCategory.BAD_HEADER: (Code.TRANSACTION_FAILED, "5.6.0"),
    ContentsCategory.OVERSIZED: (Code.EXCEEDED_STORAGE, "5.3.4"),
}


def rejected(log_id: str, verdict: Verdict) -> Reply:
    code, status = _REJECT_STATUS.get(verdict.category, (Code.TRANSACTION_FAILED, "5.7.0"))
    return Reply(code, status, f"Reject, id={log_id} - {verdict.reason}")


def tempfailed(log_id: str, verdict: Verdict) -> Reply:
    return Reply(
        Code.MAILBOX_UNAVAILABLE_TEMP, "4.7.0", f"Try again later, id={log_id} - {verdict.reason}"
    )


def for_destiny(log_id: str, verdict: Verdict) -> Reply:
    """The reply for a recipient whose copy is not passed."""
    if verdict.destiny is Destiny.DISCARD:
        return discarded(log_id, verdict.reason)
    if verdict.destiny is Destiny.BOUNCE:
        return bounced(log_id, verdict.reason)
    if verdict.destiny is Destiny.REJECT:
        return rejected(log_id, verdict)
    if verdict.destiny is Destiny.TEMPFAIL:
        return tempfailed(log_id, verdict)
    raise ValueError(f"a passed recipient has no destiny reply: {verdict}")


def next_hop_failed(log_id: str, next_hop: str, error: RelayError) -> Reply:
    """The next hop did not take the copy: 5xx only when it said 5xx itself."""
    if error.is_permanent and error.code is not None:
        return Reply(
            Code.TRANSACTION_FAILED,
            "5.7.1",
            f"Rejected by next-hop MTA on relaying, id={log_id}, "
            f"from MTA({next_hop}): {error.code} {error.text}",
        )
    if error.code is not None:
        return Reply(
            Code.LOCAL_ERROR,
            "4.4.0",
            f"Error in processing, id={log_id}, from MTA({next_hop}): {error.code} {error.text}",
        )
    return Reply(
        Code.LOCAL_ERROR,
        "4.4.1",
        f"Error in processing, id={log_id}, next hop {next_hop}: {error.reason}",
    )


def failure(log_id: str, error: BaseException) -> Reply:
    """Any failure inside the filter: a tempfail with a short reason, never a 5xx."""
    if isinstance(error, MessageRejected):
        return Reply(error.code, error.status, error.text)
    if isinstance(error, ScannerError):
        return Reply(
            Code.LOCAL_ERROR,
            "4.5.0",
            f"Error in processing, id={log_id}, {error.scanner}: {error.reason}",
        )
    if isinstance(error, TimeoutError):
        return Reply(Code.LOCAL_ERROR, "4.5.0", f"Error in processing, id={log_id}, timed out")
    if isinstance(error, ContentFilterError):
        return Reply(Code.LOCAL_ERROR, "4.5.0", f"Error in processing, id={log_id}, {error}")
    return Reply(
        Code.LOCAL_ERROR,
        "4.5.0",
        f"Error in processing, id={log_id}, internal error ({type(error).__name__})",
    )


def combine(log_id: str, replies: Sequence[Reply]) -> Reply:
    """One SMTP reply for all recipients, as amavisd-new answers.

    Any 4xx wins (Postfix retries the whole message); all refused or discarded with
    at least one 5xx -> that 5xx; all discarded -> the discard reply; otherwise the
    first success, with ", but N REJECT" when some recipients were refused (the
    caller bounces those itself).
    """
    if not replies:
        raise ValueError("no recipient replies to combine")
    for reply in replies:
        if reply.is_tempfail:
            return reply
    refused = [r for r in replies if r.code >= 500]
    delivered = [r for r in replies if r.is_success and r.status not in ("2.7.0", "2.5.0")]
    if refused and not delivered and not any(r.status == "2.5.0" for r in replies):
        return refused[0]
    if not delivered:
        return next((r for r in replies if r.status == "2.5.0"), replies[0])
    first = delivered[0]
    if refused:
        return Reply(first.code, first.status, f"{first.text}, but {len(refused)} REJECT")
    return first


MAX_LINE = 512  # RFC 5321 section 4.5.3.1.5: reply line length, CRLF included


def render(reply: Reply) -> str:
    """The reply as it goes on the wire; long texts become continuation lines."""
    prefix = f"{reply.code} {reply.status} "
    room = MAX_LINE - len(prefix) - 2
    text = reply.text.replace("\r", " ").replace("\n", " ")
    chunks = [text[i : i + room] for i in range(0, len(text), room)] or [""]
    lines = [f"{reply.code}-{reply.status} {chunk}" for chunk in chunks[:-1]]
    lines.append(f"{prefix}{chunks[-1]}")
    return "\r\n".join(lines)
