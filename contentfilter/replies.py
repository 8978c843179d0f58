"""Every SMTP reply the filter writes, built in one place.

Texts follow amavisd-new 2.13 so admins recognise them in Postfix's log. Internal
faults are always 4xx: after the queue a 5xx makes Postfix bounce the message.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import IntEnum

from contentfilter.errors import (
    DISK_FULL,
    ContentFilterError,
    QuarantineError,
    RelayError,
    ScannerError,
)
from contentfilter.model import Action, ContentsCategory, Destiny, Disposition, Reply, Verdict


class Code(IntEnum):
    """SMTP reply codes the filter uses (RFC 5321 section 4.2.3)."""

    OK = 250
    START_MAIL_INPUT = 354
    SERVICE_NOT_AVAILABLE = 421
    MAILBOX_UNAVAILABLE_TEMP = 450
    LOCAL_ERROR = 451
    INSUFFICIENT_STORAGE = 452
    SYNTAX_ERROR = 500
    SYNTAX_ERROR_IN_PARAMETERS = 501
    BAD_SEQUENCE = 503
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


def quarantined(reply: Reply, mail_id: str) -> Reply:
    """A reply for a copy kept in the quarantine: its id appended, for the admin who reads
    Postfix's log (`contentfilter quarantine show ID`)."""
    return Reply(reply.code, reply.status, f"{reply.text}, quarantine: {mail_id}")


def next_hop_refused(log_id: str, next_hop: str, code: int, text: str) -> Reply:
    """The next hop answered 4xx or 5xx for a copy: 5xx only when it said 5xx itself."""
    if 500 <= code < 600:
        return Reply(
            Code.TRANSACTION_FAILED,
            "5.7.1",
            f"Rejected by next-hop MTA on relaying, id={log_id}, "
            f"from MTA({next_hop}): {code} {text}",
        )
    return Reply(
        Code.LOCAL_ERROR,
        "4.4.0",
        f"Error in processing, id={log_id}, from MTA({next_hop}): {code} {text}",
    )


def next_hop_failed(log_id: str, next_hop: str, error: RelayError) -> Reply:
    """The next hop did not take the copy: its own reply if it gave one, else 451 4.4.1."""
    if error.code is not None:
        return next_hop_refused(log_id, next_hop, error.code, error.text)
    return Reply(
        Code.LOCAL_ERROR,
        "4.4.1",
        f"Error in processing, id={log_id}, next hop {next_hop}: {error.reason}",
    )


def failure(log_id: str, error: BaseException) -> Reply:
    """Any failure inside the filter: a tempfail with a short reason, never a 5xx."""
    if isinstance(error, OSError) and error.errno in DISK_FULL:
        # RFC 3463 4.3.1: mail system full. Postfix retries; the admin frees space.
        return Reply(
            Code.LOCAL_ERROR,
            "4.3.1",
            f"Error in processing, id={log_id}, insufficient disk space ({error.strerror})",
        )
    if isinstance(error, QuarantineError):
        # RFC 3463 4.3.1 when the disk is full, else 4.3.0: the mail system could not
        # keep the message; Postfix retries, nothing is dropped unkept
        status = "4.3.1" if error.errno in DISK_FULL else "4.3.0"
        return Reply(
            Code.LOCAL_ERROR, status, f"Error in processing, id={log_id}, quarantine: {error}"
        )
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


def combine(log_id: str, dispositions: Sequence[Disposition]) -> Reply:
    """One SMTP reply for all recipients, as amavisd-new answers.

    Any 4xx wins (Postfix retries the whole message); all refused or discarded with
    at least one 5xx -> that 5xx; all discarded -> the discard reply; otherwise the
    first relayed recipient's reply, with ", but N REJECT" when some recipients were
    refused (the pipeline sends those a DSN itself).
    """
    if not dispositions:
        raise ValueError("no recipient dispositions to combine")
    for disposition in dispositions:
        if disposition.action is Action.TEMPFAILED:
            return disposition.reply
    refused = [d.reply for d in dispositions if d.action is Action.REJECTED]
    delivered = [d.reply for d in dispositions if d.action is Action.RELAYED]
    bounced = [d.reply for d in dispositions if d.action is Action.BOUNCED]
    if not delivered:
        return refused[0] if refused and not bounced else (bounced or [dispositions[0].reply])[0]
    first = delivered[0]
    if refused:
        return Reply(first.code, first.status, f"{first.text}, but {len(refused)} REJECT")
    return first


def per_recipient(dispositions: Sequence[Disposition]) -> list[Reply]:
    """LMTP: one reply per recipient after DATA (RFC 2033 section 4.2), in RCPT order."""
    return [d.reply for d in dispositions]


# --- replies of the SMTP session itself ------------------------------------------------


def access_denied() -> Reply:
    """At connect, to a client not in server.allowed_clients."""
    return Reply(Code.TRANSACTION_FAILED, "5.7.1", "Access denied")


def too_many_sessions() -> Reply:
    """At connect, when server.max_sessions are busy: Postfix tries again later."""
    return Reply(Code.SERVICE_NOT_AVAILABLE, "4.3.2", "Too many sessions, try again later")


def shutting_down() -> Reply:
    """End-of-DATA after a stop began, too late to be answered before the exit: the
    message is not processed and Postfix sends it again (RFC 5321 section 3.8)."""
    return Reply(Code.SERVICE_NOT_AVAILABLE, "4.3.2", "Service shutting down, try again later")


def size_exceeded() -> Reply:
    """SIZE= in MAIL FROM, or the data itself, over server.message_size_limit."""
    return Reply(Code.EXCEEDED_STORAGE, "5.3.4", "Message size exceeds fixed limit")


def ok() -> Reply:
    return Reply(Code.OK, "2.0.0", "Ok")


def sender_ok() -> Reply:
    return Reply(Code.OK, "2.1.0", "Ok")  # RFC 3463: 2.1.0 other address status


def recipient_ok() -> Reply:
    return Reply(Code.OK, "2.1.5", "Ok")  # RFC 3463: 2.1.5 destination address valid


def start_data() -> Reply:
    """354 carries no enhanced status code (RFC 2034 section 3 lists it among the exceptions)."""
    return Reply(Code.START_MAIL_INPUT, "", "End data with <CR><LF>.<CR><LF>")


def syntax_error(text: str) -> Reply:
    """A command whose arguments we cannot take (`Syntax: DATA`, a bad XFORWARD name)."""
    return Reply(Code.SYNTAX_ERROR_IN_PARAMETERS, "5.5.4", text)


def bad_sequence(text: str) -> Reply:
    """A command out of order (`Error: need RCPT command`)."""
    return Reply(Code.BAD_SEQUENCE, "5.5.1", text)


# aiosmtpd's own reply lines, given the enhanced status codes we advertise (RFC 2034).
AIOSMTPD_REPLIES = {
    "552 Error: Too much mail data": size_exceeded(),
    "552 Error: message size exceeds fixed maximum message size": size_exceeded(),
    "500 Line too long (see RFC5321 4.5.3.1.6)": Reply(Code.SYNTAX_ERROR, "5.5.2", "Line too long"),
    "500 Command line too long": Reply(Code.SYNTAX_ERROR, "5.5.2", "Line too long"),
    "503 Error: need RCPT command": bad_sequence("Error: need RCPT command"),
    "503 Error: need MAIL command": bad_sequence("Error: need MAIL command"),
    "503 Error: nested MAIL command": bad_sequence("Error: nested MAIL command"),
    "250 OK": ok(),
}


def bare_line_ending() -> Reply:
    """DATA with a CR or LF outside a CRLF pair (SMTP smuggling, RFC 5321 section 2.3.8)."""
    return Reply(
        Code.TRANSACTION_FAILED,
        "5.6.0",
        "Message contains bare CR or LF (possible SMTP smuggling), rejected",
    )


# --- the SMTP session: what a client sent that cannot be taken ------------------------
# Texts follow Postfix's smtpd where it has one, so admins recognise them.


def bad_utf8() -> Reply:
    """A command argument that is not UTF-8 (Postfix with smtputf8_enable=yes)."""
    return Reply(Code.SYNTAX_ERROR, "5.5.2", "Error: bad UTF-8 syntax")


def bad_sender(reason: str) -> Reply:
    return Reply(Code.SYNTAX_ERROR_IN_PARAMETERS, "5.1.7", f"Bad sender address syntax: {reason}")


def bad_recipient(reason: str) -> Reply:
    return Reply(
        Code.SYNTAX_ERROR_IN_PARAMETERS, "5.1.3", f"Bad recipient address syntax: {reason}"
    )


def bad_parameter(name: str, reason: str) -> Reply:
    """An ESMTP parameter of MAIL or RCPT that cannot be passed on (RFC 3461 DSN ones)."""
    return Reply(Code.SYNTAX_ERROR_IN_PARAMETERS, "5.5.4", f"Bad {name} parameter syntax: {reason}")


def bad_xforward(name: str, reason: str) -> Reply:
    return Reply(Code.SYNTAX_ERROR_IN_PARAMETERS, "5.5.4", f"Bad XFORWARD {name} syntax: {reason}")


def too_many_recipients() -> Reply:
    """Postfix's smtpd_recipient_limit reply: the client sends the rest later."""
    return Reply(Code.INSUFFICIENT_STORAGE, "4.5.3", "Error: too many recipients")


def line_too_long(limit: int) -> Reply:
    """RFC 5321 section 4.5.3.1.4: a command line is 512 octets, more with extensions."""
    return Reply(
        Code.SYNTAX_ERROR, "5.5.2", f"Error: command line longer than {limit} bytes, closing"
    )


def timeout_exceeded(hostname: str) -> Reply:
    """Postfix's smtpd_timeout reply; the session is closed after it."""
    return Reply(Code.SERVICE_NOT_AVAILABLE, "4.4.2", f"{hostname} Error: timeout exceeded")


MAX_LINE = 512  # RFC 5321 section 4.5.3.1.5: reply line length, CRLF included


def render(reply: Reply) -> str:
    """The reply as it goes on the wire; long texts become continuation lines."""
    prefix = f"{reply.code} {reply.status} " if reply.status else f"{reply.code} "
    room = MAX_LINE - len(prefix) - 2
    text = reply.text.replace("\r", " ").replace("\n", " ")
    chunks = [text[i : i + room] for i in range(0, len(text), room)] or [""]
    lines = [f"{reply.code}-{prefix[4:]}{chunk}" for chunk in chunks[:-1]]
    lines.append(f"{prefix}{chunks[-1]}")
    return "\r\n".join(lines)
