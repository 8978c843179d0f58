"""The quarantine's records and the store interface (see `contentfilter.quarantine`).

Kept apart from the package's `__init__` so the stores can import the records while
the package imports the stores (`open_store`) without an import cycle.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Protocol


class State(Enum):
    """Where one recipient's copy of a quarantined message is."""

    HELD = "held"  # kept, not delivered
    RELEASE_REQUESTED = "release-requested"  # the recipient asked; an admin decides
    RELEASING = "releasing"  # claimed by a release in progress (see QuarantineStore)
    RELEASED = "released"  # delivered to this recipient through the next hop
    DELETED = "deleted"  # removed on purpose; the body may still be kept for others
    EXPIRED = "expired"  # removed by retention


class Via(Enum):
    """How a change was made (the audit trail says it)."""

    FILTER = "filter"  # stored by the filter itself
    CLI = "cli"
    LINK = "link"  # a signed link from a notice
    WEB = "web"  # the web page, logged in
    API = "api"
    RETENTION = "retention"  # `contentfilter quarantine expire`


@dataclass(frozen=True, slots=True)
class Change:
    """One entry of the audit trail of a recipient's copy."""

    at: datetime  # UTC
    recipient: str
    old: State | None  # None for the row's creation
    new: State
    actor: str  # who: a login, "root", an address clicking a link, "contentfilter"
    via: Via
    source: str = ""  # from where: a client IP address, a host name, a tty
    note: str = ""  # e.g. "forced", "next hop said 550 5.1.1 ..."


@dataclass(frozen=True, slots=True)
class HeldRecipient:
    """One recipient of a quarantined message with its own state."""

    address: str
    state: State
    changed: datetime  # UTC, of the last change
    history: tuple[Change, ...] = ()


@dataclass(frozen=True, slots=True)
class Entry:
    """The index row of one quarantined message (the body is fetched separately)."""

    mail_id: str  # the message's mail_id: unique across hosts, in the log line
    stored: datetime  # UTC
    category: str  # contents category, config name: "virus", "banned", "spam" ...
    reason: str  # e.g. "INFECTED: Eicar-Test-Signature"
    findings: tuple[str, ...]  # scanner findings, one line each
    sender: str  # envelope sender ("" for the null sender)
    recipients: tuple[HeldRecipient, ...]
    subject: str = ""  # decoded for display, control characters removed
    from_header: str = ""
    message_id: str = ""
    size: int = 0  # bytes of the original message
    client_address: str = ""  # XFORWARD ADDR, else the peer
    policy_bank: str = ""
    host: str = ""  # the filter host that stored it
    log_id: str = ""  # amavisd-new style "12345-01" of the filter run that stored it
    queue_id: str = ""  # Postfix's queue id before the filter (XFORWARD or Received)
    spam_score: float | None = None
    body_removed: bool = False  # retention removed the body; the row stays for the audit

    def recipient(self, address: str) -> HeldRecipient | None:
        wanted = address.lower()
        return next((r for r in self.recipients if r.address.lower() == wanted), None)


@dataclass(frozen=True, slots=True)
class Query:
    """What `QuarantineStore.search` filters on; None or empty means any."""

    category: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    recipient: str | None = None  # exact address, any case
    sender: str | None = None  # exact address, any case
    state: State | None = None  # at least one recipient in this state
    subject: str | None = None  # substring, any case
    mail_id: str | None = None
    queue_id: str | None = None
    message_id: str | None = None
    limit: int = 100
    offset: int = 0


@dataclass(frozen=True, slots=True)
class Transition:
    """The result of `QuarantineStore.transition` for one recipient."""

    done: bool  # the state changed
    state: State  # the state now (the new one if done, the current one if not)


@dataclass(frozen=True, slots=True)
class Stats:
    messages: int
    by_category: dict[str, int] = field(default_factory=dict)
    by_state: dict[str, int] = field(default_factory=dict)  # recipient copies per state
    bytes_stored: int = 0
    oldest_held: datetime | None = None  # UTC: when the oldest message still held came

    def oldest_age(self, now: datetime) -> float | None:
        """Seconds since the oldest message still held (held or release requested) came."""
        if self.oldest_held is None:
            return None
        return max(0.0, (now - self.oldest_held).total_seconds())


class QuarantineStore(Protocol):
    """Where quarantined mail is kept. Every method is safe to call from several
    processes (and, for the shared store, several hosts) at once."""

    async def put(self, entry: Entry, raw: bytes) -> None:
        """Keep `raw` (the original bytes) and its index rows, every recipient HELD.

        Raises `errors.QuarantineError` if it could not be kept; nothing half-stored
        stays behind."""
        ...

    async def get(self, mail_id: str) -> Entry | None:
        """The entry with every recipient's state and history."""
        ...

    async def body(self, mail_id: str) -> bytes | None:
        """The original bytes, or None once removed (retention) or never stored."""
        ...

    async def search(self, query: Query) -> Sequence[Entry]:
        """Newest first."""
        ...

    async def transition(
        self,
        mail_id: str,
        recipient: str,
        allowed_from: frozenset[State],
        new: State,
        *,
        actor: str,
        via: Via,
        source: str = "",
        note: str = "",
    ) -> Transition:
        """Atomically move one recipient's copy to `new` if its state is in
        `allowed_from`, recording the change; else change nothing and say the state.

        Raises `errors.QuarantineError` for an unknown mail_id or recipient."""
        ...

    async def expire(self, older_than: dict[str, datetime], *, actor: str) -> int:
        """Per category, mark every copy stored before the given time EXPIRED and
        remove the bodies (the rows stay as tombstones). Returns messages affected."""
        ...

    async def drop_body(self, mail_id: str) -> bool:
        """Remove the body now if no recipient's copy is still held, release-requested or
        releasing (the rows stay); True if it was removed by this call."""
        ...

    async def migrate(self) -> int:
        """Create the schema or bring it up to date (every store also does this when it
        first connects); the schema version now."""
        ...

    async def stats(self) -> Stats: ...

    async def claim(self, key: str, expires: datetime) -> bool:
        """Record `key` as used: True the first time, False every time after, from any
        process or host. Single-use link tokens and "notify once" (a notice or digest
        item never sent twice) are built on it; rows may be dropped after `expires`."""
        ...

    async def unclaim(self, key: str) -> None:
        """Forget `key`, so the next `claim(key)` is True again: for a claimed action that
        did not happen (a notice the next hop refused, a release it tempfailed), to be
        retried. Unknown keys are ignored."""
        ...

    async def allow_sender(
        self, recipient: str, sender: str, *, actor: str, via: Via, source: str = ""
    ) -> bool:
        """Record that `recipient` accepts mail from `sender` (any case); True if new."""
        ...

    async def allowed_sender(self, recipient: str, sender: str) -> bool:
        """Whether `recipient` has allowed `sender` (any case)."""
        ...

    async def recent_changes(
        self, limit: int = 200, offset: int = 0
    ) -> Sequence[tuple[Change, Entry]]:
        """The audit trail: every change of any message, newest first, each with the
        entry it belongs to."""
        ...

    async def close(self) -> None: ...
