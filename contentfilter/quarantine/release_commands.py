"""`contentfilter quarantine release` and `contentfilter quarantine digest`."""

from __future__ import annotations

import argparse
import asyncio
import os
import pwd
import socket
import sys
from collections.abc import Callable

from contentfilter.config import Config
from contentfilter.errors import ContentFilterError
from contentfilter.logline import sanitize
from contentfilter.quarantine import QuarantineStore, Via, open_store
from contentfilter.quarantine.actions import ActionResult, Actor, Result, release


def add_parsers(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    common_options: Callable[[argparse.ArgumentParser], None],
) -> None:
    """`release` and `digest` under `contentfilter quarantine`."""
    parser = commands.add_parser(
        "release",
        help="deliver a quarantined message to its recipients (once each), after a new scan",
    )
    common_options(parser)
    parser.add_argument("mail_id", metavar="ID", help="the quarantine id (mail_id)")
    parser.add_argument(
        "--rcpt",
        action="append",
        default=[],
        metavar="ADDRESS",
        help="only this original recipient (repeatable; default: every one still held)",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="release again, or even when the scanners now find a virus or cannot check",
    )
    parser.set_defaults(command_function=command_release, listen=None, next_hop=None)
    parser = commands.add_parser(
        "digest", help="send the notices that are due (run from cron or the systemd timer)"
    )
    common_options(parser)
    parser.set_defaults(command_function=command_digest, listen=None, next_hop=None)


def invoking_user() -> Actor:
    """The user running the command (their login name, also behind sudo), host and tty,
    as `quarantine delete` records them."""
    try:
        name = os.getlogin()
    except OSError:
        name = pwd.getpwuid(os.geteuid()).pw_name
    try:
        tty = os.ttyname(0)
    except OSError:
        tty = ""
    host = socket.gethostname()
    return Actor(name, Via.CLI, f"{host}:{tty}" if tty else host)


def command_release(config: Config, arguments: argparse.Namespace) -> int:
    """One line per recipient; exit 0 only when every chosen copy was released now."""
    store = open_store(config.quarantine)
    try:
        results = asyncio.run(
            _release(config, store, arguments.mail_id, arguments.rcpt, arguments.force)
        )
    except ContentFilterError as error:
        print(sanitize(f"contentfilter: {error}"), file=sys.stderr)
        return 1
    for result in results:  # stored addresses and the next hop's replies: hostile text
        print(sanitize(str(result)))
    if not results:
        print(sanitize(f"{arguments.mail_id}: no recipient to release"))
    return 0 if results and all(r.result is Result.RELEASED for r in results) else 1


async def _release(
    config: Config, store: QuarantineStore, mail_id: str, rcpts: list[str], force: bool
) -> tuple[ActionResult, ...]:
    try:
        return await release(config, store, mail_id, rcpts, actor=invoking_user(), force=force)
    finally:
        await store.close()


def command_digest(config: Config, arguments: argparse.Namespace) -> int:
    """Send due admin notices, recipient notices and digests; 1 if one could not be sent."""
    from contentfilter.addresses import HostPort
    from contentfilter.quarantine import notify
    from contentfilter.relay import NextHop

    settings = config.next_hop
    if config.notices.smtp:
        from dataclasses import replace

        settings = replace(settings, address=HostPort.parse(config.notices.smtp), xforward=False)

    async def digest() -> notify.Report:
        store = open_store(config.quarantine)
        hop = NextHop(settings, config.server.hostname)
        try:
            return await notify.run(config, store, hop)
        finally:
            await hop.close()
            await store.close()

    try:
        report = asyncio.run(digest())
    except ContentFilterError as error:
        print(f"contentfilter: {error}", file=sys.stderr)
        return 1
    print(report)
    return 1 if report.failures else 0
