"""Non-delivery notifications (D_BOUNCE): RFC 3464 reports, and when not to send one. Pure.

The report is a multipart/report (RFC 6522) of three parts: a human explanation, the
machine-readable message/delivery-status, and the original header section only
(text/rfc822-headers). The body is never returned: it may carry the virus, and the
sender of a virus is usually forged (RFC 3461 section 6.2 allows headers only).
"""

from __future__ import annotations

import fnmatch
import hashlib
import quopri
import re
import textwrap
from collections.abc import Sequence
from datetime import datetime
from email.utils import format_datetime

from contentfilter.headers import CRLF, fold, format_score, header_line
from contentfilter.logline import message_id, smtp_path
from contentfilter.model import ContentsCategory
from contentfilter.rfc5322 import (
    decoded_text,
    field_value,
    header_fields,
    header_section_end,
    parse_header,
)

FailedRecipient = tuple[str, str | None, int, str, str]
"""(recipient address, ORCPT or None, SMTP code, enhanced status, diagnostic text)."""

_XTEXT = re.compile(r"\+([0-9A-Fa-f]{2})")  # RFC 3461 section 4: xtext hexchar
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_TITLES = {
    ContentsCategory.VIRUS: "VIRUS ALERT",
    ContentsCategory.BANNED: "BANNED CONTENTS ALERT",
    ContentsCategory.SPAM: "UNSOLICITED BULK EMAIL",
    ContentsCategory.SPAMMY: "UNSOLICITED BULK EMAIL",
    ContentsCategory.OVERSIZED: "OVERSIZED MESSAGE",
    ContentsCategory.BAD_HEADER: "INVALID HEADER",
}
_ADVICE = {
    ContentsCategory.VIRUS: (
        "Delivery of the email was stopped! Please check your system for viruses,"
        " or ask your system administrator to do so."
    ),
    ContentsCategory.BANNED: (
        "The message has been blocked because it contains a component (as a MIME part"
        " or nested within) with a declared name or MIME type or contents type"
        " violating our access policy."
    ),
    ContentsCategory.SPAM: (
        "The message carried your return address, so it was either a genuine mail"
        " from you, or a sender address was faked and your e-mail address abused by"
        " a third party, in which case we apologize for the undesired notification."
    ),
}
_MESSAGE_ID_PREFIXES = {  # amavisd-new's templates: <VS...>, <SS...>, <DSN...>
    ContentsCategory.VIRUS: "VS",
    ContentsCategory.BANNED: "VS",
    ContentsCategory.SPAM: "SS",
}


def dsn_subject(category: ContentsCategory | None, details: Sequence[str] = ()) -> str:
    """The Subject amavisd-new's sender-notification templates give each category."""
    listed = f" ({', '.join(details)})" if details else ""
    if category is ContentsCategory.VIRUS:
        return "VIRUS in message apparently from you" + listed
    if category is ContentsCategory.BANNED:
        return "BANNED contents from you" + (f" ({details[0]})" if details else "")
    if category is ContentsCategory.SPAM:
        return "Considered UNSOLICITED BULK EMAIL, apparently from you"
    suffixes = {
        ContentsCategory.SPAMMY: ", UNSOLICITED BULK EMAIL apparently from you",
        ContentsCategory.OVERSIZED: ", OVERSIZED message",
        ContentsCategory.BAD_HEADER: ", invalid header section",
        ContentsCategory.UNCHECKED: ", contents UNCHECKED",
        ContentsCategory.MTA: ", MTA-BLOCKED",
    }
    return "Undeliverable mail" + suffixes.get(category, "") if category else "Undeliverable mail"


def build_dsn(
    *,
    original: bytes,
    header_end: int,
    envelope_sender: str,
    failed: Sequence[FailedRecipient],
    reporting_mta: str,
    arrival_date: datetime,
    log_id: str,
    reason: str,
    from_address: str | None = None,
    category: ContentsCategory | None = None,
    details: Sequence[str] = (),
    mail_id: str | None = None,
    envid: str | None = None,
) -> bytes:
    """An RFC 3464 delivery status notification for `failed` recipients, CRLF-ended.

    `from_address` defaults to MAILER-DAEMON@<reporting_mta>. `category` and `details`
    (virus names, banned part) choose amavisd-new's Subject and explanation; `envid`
    is the DSN ENVID from MAIL FROM (RFC 3461 section 4.4), returned as
    Original-Envelope-Id. Date and Last-Attempt-Date are the arrival date, as in
    amavisd-new, which keeps this function deterministic. Only the header section of
    `original` is attached, never past the first empty line whatever `header_end` says.
    """
    if not failed:
        raise ValueError("a DSN needs at least one failed recipient")
    if envelope_sender in ("", "<>"):
        raise ValueError("never send a DSN to the null sender (RFC 5321 section 4.5.5)")
    headers = _original_headers(original, min(header_end, header_section_end(original)))
    date = format_datetime(arrival_date)
    final_log_id = f"{log_id}/{mail_id}" if mail_id else log_id
    digest = hashlib.sha256(b"\0".join([log_id.encode(), date.encode(), headers])).hexdigest()
    status = _delivery_status(reporting_mta, date, envid, failed, final_log_id)
    text = _explanation(
        headers, envelope_sender, failed, reporting_mta, reason, final_log_id, category
    )
    parts = [_text_part(text), _status_part(status), _headers_part(envelope_sender, headers)]
    boundary = _boundary(digest, parts)
    prefix = _MESSAGE_ID_PREFIXES.get(category, "DSN") if category else "DSN"
    top = [
        header_line("From", from_address or f"MAILER-DAEMON@{reporting_mta}"),
        b"To: " + smtp_path(envelope_sender).encode("utf-8") + CRLF,
        header_line("Date", date),
        header_line("Subject", dsn_subject(category, details)),
        *_in_reply_to(headers),
        header_line("Message-ID", f"<{prefix}{mail_id or digest[:24]}@{reporting_mta}>"),
        header_line("Auto-Submitted", "auto-replied"),  # RFC 3834 section 5
        header_line("MIME-Version", "1.0"),
        fold(
            f"Content-Type: multipart/report; report-type={_report_type(status)};"
            f' boundary="{boundary}"'
        ),
        header_line("Content-Transfer-Encoding", "8bit" if _is_8bit(parts) else "7bit"),
    ]
    return _assemble(top, parts, boundary)


def _original_headers(original: bytes, end: int) -> bytes:
    """The header fields, CRLF line ends, without the empty line that ends the section."""
    fields_end = header_fields(original[:end])[1]
    section = re.sub(rb"\r?\n", CRLF, original[:fields_end])
    return section if not section or section.endswith(CRLF) else section + CRLF


def _delivery_status(
    reporting_mta: str,
    date: str,
    envid: str | None,
    failed: Sequence[FailedRecipient],
    final_log_id: str,
) -> bytes:
    """RFC 3464 section 2.2 per-message fields, then a group per recipient (2.3)."""
    lines = [f"Reporting-MTA: dns; {reporting_mta}"]
    if envid:
        lines.append(f"Original-Envelope-Id: {_clean(xtext_decode(envid))}")
    lines.append(f"Arrival-Date: {date}")
    groups = [CRLF.join(_field(line) for line in lines) + CRLF]
    for address, orcpt, code, enhanced, diagnostic in failed:
        fields = []
        if orcpt:  # RFC 3464 section 2.3.1: the ORCPT, xtext decoded
            decoded = xtext_decode(orcpt)
            fields.append(
                "Original-Recipient: " + (decoded if ";" in decoded else f"rfc822;{decoded}")
            )
        fields += [
            f"Final-Recipient: rfc822; {address}",
            "Action: failed",
            f"Status: {enhanced}",
            f"Diagnostic-Code: smtp; {code} {enhanced} {diagnostic}",
            f"Last-Attempt-Date: {date}",
            f"Final-Log-ID: {final_log_id}",
        ]
        groups.append(CRLF.join(_field(line) for line in fields) + CRLF)
    return CRLF.join(groups)  # RFC 3464 section 2.1: groups separated by empty lines


def _field(line: str) -> bytes:
    return fold(_clean(line)).removesuffix(CRLF)


def _clean(text: str) -> str:
    return _CONTROL.sub("?", text)


def xtext_decode(text: str) -> str:
    """Decode RFC 3461 section 4 xtext (`+2B` is "+"), as in ORCPT and ENVID."""
    raw = _XTEXT.sub(lambda match: chr(int(match.group(1), 16)), text)
    return raw.encode("latin-1", errors="replace").decode("utf-8", errors="replace")


def _explanation(
    headers: bytes,
    sender: str,
    failed: Sequence[FailedRecipient],
    reporting_mta: str,
    reason: str,
    final_log_id: str,
    category: ContentsCategory | None,
) -> str:
    """The human-readable first part, after amavisd-new's sender-notification templates."""
    count = "recipient" if len(failed) == 1 else "recipients"
    paragraphs = [
        _TITLES.get(category, "UNDELIVERABLE MAIL") if category else "UNDELIVERABLE MAIL",
        f"This is the content filter at {reporting_mta}. Your message was not"
        f" delivered to the following {count}:",
        "\n".join(
            textwrap.fill(
                f"{smtp_path(address)}: {code} {enhanced} {text}",
                78,
                break_on_hyphens=False,
                break_long_words=False,
                initial_indent="  ",
                subsequent_indent="      ",
            )
            for address, _, code, enhanced, text in failed
        ),
        f"Reason: {reason}",
        f"Our internal reference code for your message is {final_log_id}.",
        "\n".join(f"  {name}: {value}" for name, value in _identity(headers, sender)),
    ]
    advice = _ADVICE.get(category) if category else None
    paragraphs += [advice] if advice else []
    paragraphs.append(
        "The header section of your message is attached below; its body is not returned."
    )
    return "\n\n".join(_wrap(paragraph) for paragraph in paragraphs) + "\n"


def _wrap(paragraph: str) -> str:
    if "\n" in paragraph or paragraph.startswith(" "):
        return paragraph
    return textwrap.fill(paragraph, 78, break_on_hyphens=False, break_long_words=False)


def _identity(headers: bytes, sender: str) -> list[tuple[str, str]]:
    """Return-Path, Message-ID and Subject of the original, to help the sender find it."""
    pairs = [("Return-Path", smtp_path(sender))]
    msg_id = message_id(headers)
    pairs += [("Message-ID", msg_id)] if msg_id else []
    subject = next(parse_header(headers).named(b"subject"), None)
    if subject is not None:
        pairs.append(("Subject", decoded_text(field_value(headers, subject))[:100]))
    return [(name, _clean(value)) for name, value in pairs]


def _in_reply_to(headers: bytes) -> list[bytes]:
    msg_id = message_id(headers)
    return [header_line("In-Reply-To", msg_id)] if msg_id else []


def _text_part(text: str) -> bytes:
    if text.isascii():
        head = [b"Content-Type: text/plain; charset=us-ascii", b"Content-Transfer-Encoding: 7bit"]
        body = text.replace("\n", "\r\n").encode("ascii")
    else:
        head = [
            b"Content-Type: text/plain; charset=utf-8",
            b"Content-Transfer-Encoding: quoted-printable",
        ]
        body = quopri.encodestring(text.encode("utf-8")).replace(b"\n", CRLF)
    head += [b"Content-Description: Notification", b"Content-Disposition: inline"]
    return CRLF.join(head) + CRLF + CRLF + body


def _status_part(status: bytes) -> bytes:
    # RFC 6533: a report with UTF-8 addresses is message/global-delivery-status
    subtype = _report_type(status)
    head = [
        f"Content-Type: message/{subtype}".encode(),
        b"Content-Description: Delivery error report",
        b"Content-Disposition: inline",
        b"Content-Transfer-Encoding: " + (b"7bit" if status.isascii() else b"8bit"),
    ]
    return CRLF.join(head) + CRLF + CRLF + status


def _report_type(status: bytes) -> str:
    return "delivery-status" if status.isascii() else "global-delivery-status"


def _headers_part(sender: str, headers: bytes) -> bytes:
    """The original header section, after a Return-Path line as amavisd-new writes it."""
    body = b"Return-Path: " + smtp_path(sender).encode("utf-8") + CRLF + headers
    content_type = b"text/rfc822-headers"  # RFC 6522 section 4
    if not body.isascii() and _is_utf8(body):
        content_type = b"message/global-headers"  # RFC 6533 section 3.4
    head = [
        b"Content-Type: " + content_type,
        b"Content-Description: Undelivered message headers",
        b"Content-Disposition: inline",
        b"Content-Transfer-Encoding: " + (b"7bit" if body.isascii() else b"8bit"),
    ]
    return CRLF.join(head) + CRLF + CRLF + body


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _is_8bit(parts: Sequence[bytes]) -> bool:
    return not all(part.isascii() for part in parts)


def _boundary(digest: str, parts: Sequence[bytes]) -> str:
    """A boundary that occurs in no part (RFC 2046 section 5.1.1)."""
    boundary = f"----------=_{digest[:32]}"
    while any(boundary.encode() in part for part in parts):
        boundary += "_"
    return boundary


def _assemble(top: Sequence[bytes], parts: Sequence[bytes], boundary: str) -> bytes:
    delimiter = b"--" + boundary.encode("ascii")
    output = [b"".join(top), CRLF, b"This is a multi-part message in MIME format...", CRLF]
    for part in parts:
        output += [CRLF, delimiter, CRLF, part if part.endswith(CRLF) else part + CRLF]
    output += [CRLF, delimiter, b"--", CRLF]
    return b"".join(output)


def should_send_dsn(
    envelope_sender: str,
    spam_score: float | None,
    dsn_cutoff_level: float | None,
    virus_names: Sequence[str],
    faked_sender_patterns: Sequence[str],
) -> str | None:
    """None to send the DSN, or why not to (for the log).

    In amavisd-new's order: never to the null sender (RFC 5321 section 4.5.5: no
    bounce loops); not when a virus is known to fake the sender;
    not when the spam score reaches the DSN cutoff. `faked_sender_patterns` are
    shell globs matched case-insensitively, tried in order, first match wins; a
    leading `!` makes a pattern say "this one does not fake the sender", so Debian's
    default (every virus but the EICAR test) is `["!*eicar*", "*"]`.
    """
    if envelope_sender in ("", "<>"):
        return "null sender, no DSN"
    for name in virus_names:
        pattern = _faking_pattern(name, faked_sender_patterns)
        if pattern is not None:
            return f"INFECTED, virus {name} fakes the sender address (matches {pattern})"
    if spam_score is not None and dsn_cutoff_level is not None and spam_score >= dsn_cutoff_level:
        return (
            f"spam level {format_score(spam_score)} reaches the DSN cutoff level"
            f" {format_score(dsn_cutoff_level)}"
        )
    return None


def _faking_pattern(virus_name: str, patterns: Sequence[str]) -> str | None:
    """The first pattern matching `virus_name` if it says "fakes the sender", else None."""
    for pattern in patterns:
        negated = pattern.startswith("!")
        if fnmatch.fnmatchcase(virus_name.lower(), pattern.removeprefix("!").lower()):
            return None if negated else pattern
    return None
