"""What both stores share: checks of ids, body compression, rows -> records, the
search filter as SQL with the store's own placeholders. Pure."""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from contentfilter.errors import QuarantineError
from contentfilter.quarantine.records import Change, Entry, HeldRecipient, Query, State, Via

_MAIL_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
COMPRESS_LEVEL = 6  # gzip: `zcat` reads a body file; level 6 is zlib's own balance
SCHEMA_VERSION = 1  # the schema this code writes; see each store's MIGRATIONS

# copies still waiting for someone: retention expires them, a body stays while one is left
WAITING = frozenset({State.HELD, State.RELEASE_REQUESTED})
OPEN = WAITING | {State.RELEASING}


def check_mail_id(mail_id: str) -> str:
    """A mail_id as the filter makes them; anything else (a path, a quote) is refused."""
    if not isinstance(mail_id, str) or not _MAIL_ID.fullmatch(mail_id):
        raise QuarantineError(f"not a quarantine id: {mail_id!r}")
    return mail_id


def compress(raw: bytes) -> bytes:
    return gzip.compress(raw, COMPRESS_LEVEL, mtime=0)


def decompress(data: bytes) -> bytes:
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, ValueError) as error:
        raise QuarantineError(f"stored body is damaged: {error}") from None


def utc(moment: datetime) -> datetime:
    """A timezone-aware UTC time (a naive one is taken as UTC)."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def unique_recipients(entry: Entry) -> list[str]:
    """The entry's recipient addresses, each once (any case)."""
    seen: dict[str, str] = {}
    for recipient in entry.recipients:
        seen.setdefault(recipient.address.lower(), recipient.address)
    if not seen:
        raise QuarantineError(f"{entry.mail_id}: a quarantined message needs a recipient")
    return list(seen.values())


def findings_text(entry: Entry) -> str:
    return json.dumps(list(entry.findings), ensure_ascii=False)


def message_values(entry: Entry, stored: datetime) -> tuple[Any, ...]:
    """The columns of MESSAGE_COLUMNS (but body_removed) for one entry."""
    return (
        check_mail_id(entry.mail_id),
        stored,
        entry.category,
        entry.reason,
        findings_text(entry),
        entry.sender,
        entry.subject,
        entry.from_header,
        entry.message_id,
        entry.size,
        entry.client_address,
        entry.policy_bank,
        entry.host,
        entry.log_id,
        entry.queue_id,
        entry.spam_score,
    )


MESSAGE_COLUMNS = (
    "mail_id",
    "stored",
    "category",
    "reason",
    "findings",
    "sender",
    "subject",
    "from_header",
    "message_id",
    "size",
    "client_address",
    "policy_bank",
    "host",
    "log_id",
    "queue_id",
    "spam_score",
)


def change_from_row(row: Mapping[str, Any], read_time: Callable[[Any], datetime]) -> Change:
    return Change(
        at=read_time(row["at"]),
        recipient=row["recipient"],
        old=State(row["old"]) if row["old"] else None,
        new=State(row["new"]),
        actor=row["actor"],
        via=Via(row["via"]),
        source=row["source"],
        note=row["note"],
    )


def entry_from_rows(
    message: Mapping[str, Any],
    recipients: Iterable[Mapping[str, Any]],
    changes: Iterable[Mapping[str, Any]],
    read_time: Callable[[Any], datetime],
) -> Entry:
    """An Entry from its message row, recipient rows (in order) and change rows (in order)."""
    history: dict[str, list[Change]] = {}
    for row in changes:
        history.setdefault(row["address_lower"], []).append(change_from_row(row, read_time))
    held = tuple(
        HeldRecipient(
            address=row["address"],
            state=State(row["state"]),
            changed=read_time(row["changed"]),
            history=tuple(history.get(row["address_lower"], ())),
        )
        for row in recipients
    )
    return Entry(
        mail_id=message["mail_id"],
        stored=read_time(message["stored"]),
        category=message["category"],
        reason=message["reason"],
        findings=tuple(json.loads(message["findings"])),
        sender=message["sender"],
        recipients=held,
        subject=message["subject"],
        from_header=message["from_header"],
        message_id=message["message_id"],
        size=message["size"],
        client_address=message["client_address"],
        policy_bank=message["policy_bank"],
        host=message["host"],
        log_id=message["log_id"],
        queue_id=message["queue_id"],
        spam_score=message["spam_score"],
        body_removed=bool(message["body_removed"]),
    )


def search_conditions(
    query: Query, placeholder: Callable[[int], str], find: str = "instr"
) -> tuple[str, list[object]]:
    """The WHERE clause of a search over `messages m` (and `recipients`), with values.

    `placeholder(n)` is the marker of the n-th value (`?` or `$3`); `find` the SQL
    function giving a substring's position (`instr` in SQLite, `strpos` in PostgreSQL)."""
    values: list[object] = []

    def mark(value: object) -> str:
        values.append(value)
        return placeholder(len(values))

    clauses: list[str] = []
    if query.mail_id:
        clauses.append(f"m.mail_id = {mark(query.mail_id)}")
    if query.category:
        clauses.append(f"m.category = {mark(query.category)}")
    if query.since is not None:
        clauses.append(f"m.stored >= {mark(utc(query.since))}")
    if query.until is not None:
        clauses.append(f"m.stored < {mark(utc(query.until))}")
    if query.sender is not None:
        clauses.append(f"lower(m.sender) = {mark(query.sender.lower())}")
    if query.queue_id:
        clauses.append(f"m.queue_id = {mark(query.queue_id)}")
    if query.message_id:
        clauses.append(f"m.message_id = {mark(query.message_id)}")
    if query.subject:
        clauses.append(f"{find}(lower(m.subject), {mark(query.subject.lower())}) > 0")
    recipient_clauses = []
    if query.recipient:
        recipient_clauses.append(f"r.address_lower = {mark(query.recipient.lower())}")
    if query.state is not None:
        recipient_clauses.append(f"r.state = {mark(query.state.value)}")
    if recipient_clauses:
        clauses.append(
            "EXISTS (SELECT 1 FROM recipients r WHERE r.mail_id = m.mail_id AND "
            + " AND ".join(recipient_clauses)
            + ")"
        )
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", values


def group_by_mail_id(rows: Sequence[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    grouped: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        grouped.setdefault(row["mail_id"], []).append(row)
    return grouped
