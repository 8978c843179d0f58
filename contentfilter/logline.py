"""amavisd-new's one summary log line per message: an interface. Pure.

Mailgraph, pflogsumm-style scripts and admins' greps read this line, so it follows
amavisd-new 2.13's `$log_short_templ` field by field:

    (12345-01) Passed CLEAN {RelayedInbound}, [203.0.113.5]:44556 <a@x> -> <b@y>,
    Queue-ID: ABC, Message-ID: <m@x>, mail_id: xyz, Hits: -, size: 1234, queued_as: DEF, 345 ms

(one line; wrapped here). Mailgraph only counts lines logged under the syslog
program name `amavis` (or `amavisd`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from contentfilter.model import (
    Action,
    ContentsCategory,
    Destiny,
    Disposition,
    HeaderSection,
    Outcome,
)
from contentfilter.rfc5322 import field_value, parse_header

# RFC 5321 section 4.1.2: Atom / Dot-string; RFC 6531 section 3.3 adds UTF-8 to atext
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~\-\u0080-\U0010ffff]+"
_DOT_ATOM = re.compile(rf"{_ATEXT}(?:\.{_ATEXT})*")
_CONTROL_OR_BACKSLASH = re.compile(r"[\x00-\x1f\x7f\\]")
_ESCAPES = {"\r": "\\r", "\n": "\\n", "\t": "\\t", "\\": "\\\\"}
_COMMENT = re.compile(rb"\((?:\\.|[^()\\])*\)")  # RFC 5322 section 3.2.2, one level
_RECEIVED_ID = re.compile(rb"(?:^|[ \t])id[ \t]+<?([0-9A-Za-z]+)>?(?=[ \t;]|$)")
_MSG_ID = re.compile(rb"<[^<>]*>")


def summary_line(
    *,
    log_id: str,
    passed: bool,
    category: ContentsCategory,
    details: Sequence[str],
    actions: Sequence[str],
    client: str,
    sender: str,
    recipients: Sequence[str],
    queue_id: str | None,
    message_id: str | None,
    mail_id: str,
    hits: float | None,
    size: int,
    queued_as: Sequence[str],
    elapsed_ms: int,
    minor: int = 0,
    quarantine: Sequence[str] = (),
) -> str:
    """amavisd-new 2.13's main log entry for one message, with its `(log_id) ` prefix.

    `passed` chooses the `Passed` form (recipients that got the message; `queued_as`
    is shown) or the `Blocked` form (the others; `queued_as` is not shown). A message
    passed for some recipients and blocked for others gets two lines, as in amavisd-new.
    `details` are virus names for VIRUS, the banned part description for BANNED (only
    the first is shown); `minor` is amavisd-new's minor category (BAD-HEADER-<minor>,
    UNCHECKED-ENCRYPTED for 1). Addresses are bare (`a@x`, `""` for the null sender)
    or already in angle brackets. Controls and backslashes are escaped, so header
    contents can never break the line.
    """
    fields = [
        f"({log_id}) {'Passed' if passed else 'Blocked'} "
        f"{category_text(category, details, minor)} {{{','.join(actions)}}}",
        _route(client, sender, recipients),
    ]
    fields += [f"quarantine: {', '.join(quarantine)}"] if quarantine else []
    fields += [f"Queue-ID: {queue_id}"] if queue_id else []
    fields += [f"Message-ID: {message_id}"] if message_id else []
    fields += [f"mail_id: {mail_id}"] if mail_id else []
    fields += [f"Hits: {log_score(hits)}", f"size: {size}"]
    if passed and queued_as:
        fields.append(f"queued_as: {'/'.join(queued_as)}")
    fields.append(f"{elapsed_ms} ms")
    return sanitize(", ".join(fields))


def main_category(outcome: Outcome) -> ContentsCategory:
    """The highest category of the message: of the verdicts and of every finding."""
    found = [v.category for v in outcome.verdicts]
    findings = [f.category for r in outcome.results for f in r.findings]
    return max([*found, *findings], default=ContentsCategory.CLEAN)


def action_words(dispositions: Sequence[Disposition]) -> tuple[str, ...]:
    """`RelayedInbound`, `DiscardedInbound`...: relay attempts first, each word once."""
    attempted = sorted(dispositions, key=lambda d: not _relay_attempt(d))
    words = [f"{_action_word(d)}Inbound" for d in attempted]
    if any(d.quarantine_id for d in dispositions):  # amavisd-new: {DiscardedInbound,Quarantined}
        words.append("Quarantined")
    return tuple(dict.fromkeys(words))


def _relay_attempt(disposition: Disposition) -> bool:
    verdict = disposition.verdict
    return verdict is not None and verdict.destiny is Destiny.PASS


def _action_word(disposition: Disposition) -> str:
    verdict = disposition.verdict
    if disposition.action is Action.RELAYED and verdict is not None and verdict.subject_tag:
        return "RelayedTagged"
    return disposition.action.value


def category_text(category: ContentsCategory, details: Sequence[str], minor: int = 0) -> str:
    """The category word(s) of the log line: `CLEAN`, `INFECTED (name, name)`, ..."""
    if category is ContentsCategory.VIRUS:
        return f"INFECTED ({', '.join(dict.fromkeys(details))})"
    if category is ContentsCategory.BANNED:
        return f"BANNED ({details[0] if details else ''})"
    if category is ContentsCategory.BAD_HEADER:
        return f"BAD-HEADER-{minor}"
    if category is ContentsCategory.UNCHECKED and minor == 1:
        return "UNCHECKED-ENCRYPTED"
    return category.log_name


def _route(client: str, sender: str, recipients: Sequence[str]) -> str:
    # amavisd-new: ",[ %p][ [:client_addr_port]][ [%e]] %s -> %D" (the "," joins fields);
    # `client` is already the original client (XFORWARD ADDR), so no [%e] follows it
    parts = [client] if client else []
    parts += [smtp_path(sender), "->", ",".join(smtp_path(rcpt) for rcpt in recipients)]
    return " ".join(parts)


def log_score(hits: float | None) -> str:
    """amavisd-new's [:SCORE] macro: `-` when there was no spam check, else `%.3f` trimmed.

    A score that rounds to zero is `0`, never `-0`: spamd reports one decimal, so a
    `-0.0` from it says nothing about the sign.
    """
    if hits is None:
        return "-"
    text = f"{hits:.3f}"
    if float(text) == 0:
        return "0"
    return text.rstrip("0").rstrip(".") if "." in text else text


def smtp_path(address: str) -> str:
    """An address in angle brackets, its local part quoted when RFC 5321 requires it."""
    if address.startswith("<") and address.endswith(">"):
        return address
    if not address:
        return "<>"
    local, at, domain = address.rpartition("@")
    if not at:
        local, domain = address, ""
    if not _DOT_ATOM.fullmatch(local):
        local = '"' + local.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return f"<{local}{at}{domain}>"


def sanitize(text: str) -> str:
    """amavisd-new's `sanitize_str`: controls and backslashes as `\\n`, `\\x01`, `\\\\`."""
    return _CONTROL_OR_BACKSLASH.sub(
        lambda match: _ESCAPES.get(match.group(0), f"\\x{ord(match.group(0)):02X}"), text
    )


def queue_id_from_headers(raw: bytes, section: HeaderSection | None = None) -> str | None:
    """Postfix's queue id from the top Received field (`... with ESMTP id 4Xyz12AbC ...`).

    Comments are removed first so an `id` inside parentheses is not taken. Prefer
    XFORWARD IDENT when Postfix sent it: that is where amavisd-new takes %Q from.
    `section` is `raw`'s header section when already parsed.
    """
    field = next((section or parse_header(raw)).named(b"received"), None)
    if field is None:
        return None
    text = _COMMENT.sub(b" ", field_value(raw, field))
    match = _RECEIVED_ID.search(text.split(b";", 1)[0])
    return match.group(1).decode("ascii") if match else None


def message_id(raw: bytes, section: HeaderSection | None = None) -> str | None:
    """The first Message-ID field's msg-id, `<...>` included, comments dropped.

    A value without angle brackets is wrapped in them, as amavisd-new does with such
    "garbage"; no field or an empty one gives None. `section` is `raw`'s header
    section when already parsed.
    """
    field = next((section or parse_header(raw)).named(b"message-id"), None)
    if field is None:
        return None
    value = _COMMENT.sub(b" ", field_value(raw, field)).strip(b" \t")
    match = _MSG_ID.search(value)
    if match:
        return match.group(0).decode("utf-8", errors="replace")
    if not value:
        return None
    inner = value.removeprefix(b"<").removesuffix(b">").replace(b">", b"_")
    return "<" + inner.decode("utf-8", errors="replace") + ">"
