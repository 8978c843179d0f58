"""Quarantine records for the tests: an Entry of a message held for its recipients."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from contentfilter.quarantine import Entry, HeldRecipient, State


def held(
    mail_id: str,
    *recipients: str,
    stored: datetime,
    changed: datetime | None = None,
    category: str = "virus",
    reason: str = "INFECTED: Eicar-Test-Signature",
    sender: str = "alice@example.org",
    **columns: Any,
) -> Entry:
    """The index row of a message stored at `stored`, each of `recipients` (default
    bob@example.com) HELD since `changed` (default: `stored`); `columns` sets the
    other fields of Entry (findings, subject, from_header, size ...)."""
    since = changed or stored
    return Entry(
        mail_id=mail_id,
        stored=stored,
        category=category,
        reason=reason,
        findings=columns.pop("findings", ()),
        sender=sender,
        recipients=tuple(
            HeldRecipient(address, State.HELD, since)
            for address in (recipients or ("bob@example.com",))
        ),
        **columns,
    )


QUARANTINE_ID = re.compile(r", quarantine: ([\w-]{12})$")


def kept_id(reply: str) -> str:
    """The quarantine id in the filter's reply to a message it kept."""
    found = QUARANTINE_ID.search(reply)
    assert found, reply
    return found.group(1)
