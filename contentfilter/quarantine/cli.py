"""`contentfilter quarantine list | show | delete | expire | stats | migrate`.

Every command reads the same config file as `serve` (`-c FILE`) and so finds the same
store. What it prints comes from stored, hostile text: control characters are shown
as escapes, never sent to the terminal.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pwd
import re
import socket
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from contentfilter.config import Config
from contentfilter.errors import QuarantineError
from contentfilter.logline import sanitize
from contentfilter.quarantine import (
    Change,
    Entry,
    QuarantineStore,
    Query,
    State,
    Via,
    open_store,
)
from contentfilter.quarantine.settings import DAY, KEEPABLE

Options = Callable[..., None]  # the main parser's common options (-c FILE)
Command = Callable[[Config, argparse.Namespace, QuarantineStore], Awaitable[int]]

# a copy that may still be deleted: not delivered, not already gone
DELETABLE = frozenset({State.HELD, State.RELEASE_REQUESTED})
_RELATIVE = re.compile(r"(\d+)\s*([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def add_commands(commands: Any, common_options: Options) -> None:
    """The `quarantine` command and its subcommands, on the main parser."""
    quarantine = commands.add_parser(
        "quarantine", help="find, show, delete and expire quarantined mail"
    )
    actions = quarantine.add_subparsers(dest="quarantine_command", required=True)

    def action(name: str, function: Command, text: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = actions.add_parser(name, help=text)
        common_options(parser, scanners=False)
        parser.set_defaults(command_function=run, quarantine_function=function)
        return parser

    listing = action("list", command_list, "list quarantined messages, newest first")
    listing.add_argument("--category", choices=KEEPABLE)
    listing.add_argument("--since", type=moment, help="ISO date/time (UTC), or 2d, 12h, 30m ago")
    listing.add_argument("--rcpt", help="a recipient address")
    listing.add_argument("--sender", help="the envelope sender")
    listing.add_argument(
        "--state", choices=[state.value for state in State], help="a recipient's state"
    )
    listing.add_argument("--limit", type=int, default=100, help="at most this many (100)")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    show = action("show", command_show, "headers, findings, parts and recipients of one")
    show.add_argument("mail_id")
    show.add_argument("--json", action="store_true", help="the index entry as JSON")
    delete = action("delete", command_delete, "delete held copies (all recipients, or --rcpt)")
    delete.add_argument("mail_id")
    delete.add_argument("--rcpt", action="append", help="only this recipient (repeatable)")
    action("expire", command_expire, "remove bodies past quarantine.retention (for cron)")
    stats = action("stats", command_stats, "counts by category and state, bytes stored")
    stats.add_argument("--json", action="store_true")
    action("migrate", command_migrate, "create or upgrade the store's schema")
    from contentfilter.quarantine import release_commands

    release_commands.add_parsers(actions, common_options)


def run(config: Config, arguments: argparse.Namespace) -> int:
    """Open the store the config names, run one subcommand, close the store."""
    function: Command = arguments.quarantine_function

    async def main() -> int:
        store = open_store(config.quarantine)
        try:
            return await function(config, arguments, store)
        finally:
            await store.close()

    try:
        return asyncio.run(main())
    except QuarantineError as error:
        print(f"contentfilter: quarantine: {error}", file=sys.stderr)
        return 1


def moment(text: str) -> datetime:
    """`--since`: an ISO 8601 date or time (UTC unless it says), or `2d` for two days ago."""
    relative = _RELATIVE.fullmatch(text.strip())
    if relative:
        seconds = int(relative.group(1)) * _UNITS[relative.group(2)]
        return datetime.now(UTC) - timedelta(seconds=seconds)
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a time: {text!r} (2026-11-30, 2026-11-30T08:00, 2d, 12h, 30m)"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


# --- list ---------------------------------------------------------------------------


async def command_list(config: Config, arguments: argparse.Namespace, store: Any) -> int:
    query = Query(
        category=arguments.category,
        since=arguments.since,
        recipient=arguments.rcpt,
        sender=arguments.sender,
        state=State(arguments.state) if arguments.state else None,
        limit=max(1, arguments.limit),
    )
    entries = await store.search(query)
    if arguments.json:
        for entry in entries:
            print(json.dumps(entry_as_dict(entry), ensure_ascii=False))
        return 0
    if not entries:
        print("no messages")
        return 0
    print(
        f"{'mail_id':<14}{'stored (UTC)':<18}{'category':<11}sender -> recipients (state)  subject"
    )
    for entry in entries:
        print(list_line(entry))
    return 0


def list_line(entry: Entry) -> str:
    recipients = ", ".join(f"{r.address} ({r.state.value})" for r in entry.recipients)
    stored = entry.stored.astimezone(UTC).strftime("%Y-%m-%d %H:%M")
    sender = f"<{entry.sender}>"
    subject = entry.subject[:60] + ("..." if len(entry.subject) > 60 else "")
    line = f"{entry.mail_id:<14}{stored:<18}{entry.category:<11}{sender} -> {recipients}  {subject}"
    return sanitize(line)


def entry_as_dict(entry: Entry) -> dict[str, Any]:
    """The index entry as plain JSON values (times in ISO 8601 UTC)."""
    return {
        "mail_id": entry.mail_id,
        "stored": _iso(entry.stored),
        "category": entry.category,
        "reason": entry.reason,
        "findings": list(entry.findings),
        "sender": entry.sender,
        "recipients": [
            {
                "address": r.address,
                "state": r.state.value,
                "changed": _iso(r.changed),
                "history": [_change_as_dict(c) for c in r.history],
            }
            for r in entry.recipients
        ],
        "subject": entry.subject,
        "from": entry.from_header,
        "message_id": entry.message_id,
        "size": entry.size,
        "client_address": entry.client_address,
        "policy_bank": entry.policy_bank,
        "host": entry.host,
        "log_id": entry.log_id,
        "queue_id": entry.queue_id,
        "spam_score": entry.spam_score,
        "body_removed": entry.body_removed,
    }


def _change_as_dict(change: Change) -> dict[str, Any]:
    return {
        "at": _iso(change.at),
        "old": change.old.value if change.old else None,
        "new": change.new.value,
        "actor": change.actor,
        "via": change.via.value,
        "source": change.source,
        "note": change.note,
    }


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds")


# --- show ---------------------------------------------------------------------------


async def command_show(config: Config, arguments: argparse.Namespace, store: Any) -> int:
    entry = await store.get(arguments.mail_id)
    if entry is None:
        print(f"contentfilter: no message {arguments.mail_id} in the quarantine", file=sys.stderr)
        return 1
    if arguments.json:
        print(json.dumps(entry_as_dict(entry), ensure_ascii=False, indent=2))
        return 0
    for line in describe(entry):
        print(sanitize(line))
    raw = None if entry.body_removed else await store.body(entry.mail_id)
    if raw is None:
        print("body: removed (retention or deletion); the index rows are kept")
        return 0
    print("header:")
    for line in header_lines(raw):
        print("  " + sanitize(line))
    print("parts:")
    for line in await part_tree(config, raw):
        print("  " + sanitize(line))
    return 0


def describe(entry: Entry) -> list[str]:
    """What the index knows of one message, line by line (not yet sanitized)."""
    lines = [
        f"mail_id: {entry.mail_id}",
        f"stored: {_iso(entry.stored)} on {entry.host or '?'}"
        f" (log id {entry.log_id or '-'}, Queue-ID {entry.queue_id or '-'})",
        f"category: {entry.category}",
        f"reason: {entry.reason}",
        f"sender: <{entry.sender}>",
        f"client: {entry.client_address or '-'}"
        + (f", policy bank {entry.policy_bank}" if entry.policy_bank else ""),
        f"From: {entry.from_header}",
        f"Subject: {entry.subject}",
        f"Message-ID: {entry.message_id}",
        f"size: {entry.size} bytes"
        + ("" if entry.spam_score is None else f", spam score {entry.spam_score:g}"),
        "findings:",
        *(f"  {finding}" for finding in entry.findings),
        "recipients:",
    ]
    for recipient in entry.recipients:
        lines.append(
            f"  {recipient.address}: {recipient.state.value} since {_iso(recipient.changed)}"
        )
        for change in recipient.history:
            old = change.old.value if change.old else "new"
            source = f" from {change.source}" if change.source else ""
            note = f" ({change.note})" if change.note else ""
            lines.append(
                f"    {_iso(change.at)} {old} -> {change.new.value} by {change.actor}"
                f" via {change.via.value}{source}{note}"
            )
    return lines


def header_lines(raw: bytes) -> list[str]:
    """The stored message's header section, one physical line each."""
    from contentfilter.rfc5322 import header_section_end

    end = header_section_end(raw)
    text = raw[:end].decode("utf-8", errors="replace")
    return [line for line in text.replace("\r\n", "\n").split("\n") if line]


async def part_tree(config: Config, raw: bytes) -> list[str]:
    """The part tree as `scan` prints it, decoded in a worker process: the stored body
    is hostile, and a crash of the C decoders then costs that process only."""
    from contentfilter.decode import format_tree
    from contentfilter.decode.workers import DecoderPool

    pool = DecoderPool(config.decoder)
    try:
        decoded = await pool.decode(raw)
    finally:
        await asyncio.to_thread(pool.close)
    return format_tree(decoded) + [f"problem: {problem}" for problem in decoded.problems]


# --- delete -------------------------------------------------------------------------


@dataclass(frozen=True)
class Who:
    """Who runs the command and from where, for the audit trail."""

    actor: str
    source: str

    @classmethod
    def here(cls) -> Who:
        try:
            actor = os.getlogin()
        except OSError:
            actor = pwd.getpwuid(os.geteuid()).pw_name
        try:
            tty = os.ttyname(0)
        except OSError:
            tty = ""
        host = socket.gethostname()
        return cls(actor, f"{host}:{tty}" if tty else host)


async def command_delete(config: Config, arguments: argparse.Namespace, store: Any) -> int:
    entry = await store.get(arguments.mail_id)
    if entry is None:
        print(f"contentfilter: no message {arguments.mail_id} in the quarantine", file=sys.stderr)
        return 1
    wanted = _chosen_recipients(entry, arguments.rcpt)
    if wanted is None:
        return 1
    who = Who.here()
    failed = False
    for address in wanted:
        result = await store.transition(
            entry.mail_id,
            address,
            DELETABLE,
            State.DELETED,
            actor=who.actor,
            via=Via.CLI,
            source=who.source,
        )
        if result.done:
            print(sanitize(f"{address}: deleted"))
        elif result.state is State.DELETED:
            print(sanitize(f"{address}: already deleted"))
        else:
            print(sanitize(f"{address}: not deleted, it is {result.state.value}"))
            failed = True
    if await store.drop_body(entry.mail_id):
        print("no copy is held any more: the body is removed, the index rows are kept")
    return 1 if failed else 0


def _chosen_recipients(entry: Entry, chosen: Sequence[str] | None) -> list[str] | None:
    """The recipients named with --rcpt (each must be one of the message's), else all."""
    if not chosen:
        return [r.address for r in entry.recipients]
    unknown = [a for a in chosen if entry.recipient(a) is None]
    if unknown:
        print(
            sanitize(f"contentfilter: <{unknown[0]}> is not a recipient of {entry.mail_id}"),
            file=sys.stderr,
        )
        return None
    return [a for a in dict.fromkeys(chosen)]


# --- expire, stats, migrate -------------------------------------------------------------


async def command_expire(config: Config, arguments: argparse.Namespace, store: Any) -> int:
    now = datetime.now(UTC)
    retention = config.quarantine.retention
    older_than = {c: now - timedelta(seconds=retention.days(c) * DAY) for c in KEEPABLE}
    count = await store.expire(older_than, actor=Who.here().actor)
    print(f"expired {count} message{'s' if count != 1 else ''}")
    return 0


async def command_stats(config: Config, arguments: argparse.Namespace, store: Any) -> int:
    stats = await store.stats()
    if arguments.json:
        print(
            json.dumps(
                {
                    "messages": stats.messages,
                    "by_category": stats.by_category,
                    "by_state": stats.by_state,
                    "bytes_stored": stats.bytes_stored,
                }
            )
        )
        return 0
    print(f"messages: {stats.messages}")
    print("by category: " + _counts(stats.by_category))
    print("recipient copies by state: " + _counts(stats.by_state))
    print(f"bodies stored: {stats.bytes_stored} bytes (compressed)")
    return 0


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{name} {count}" for name, count in sorted(counts.items())) or "none"


async def command_migrate(config: Config, arguments: argparse.Namespace, store: Any) -> int:
    version = await store.migrate()
    print(f"quarantine schema at version {version}: {store!r}")
    return 0
