"""The `quarantine:` section: what is kept, for how long, and where.

Each key carries amavisd-new's name in a comment so admins can map what they know.
Loading it imports no store code (no sqlite3, no asyncpg).
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Literal

# Contents categories (their config names) whose blocked copies may be kept.
KEEPABLE = ("virus", "banned", "unchecked", "spam", "bad_header")
DAY = 86400.0


@dataclass(frozen=True)
class Retention:
    """Days a quarantined message is kept, per contents category (then `expire` removes
    its body and keeps the index rows as a tombstone). amavisd-new has no expiry."""

    virus: float = 30.0
    banned: float = 30.0
    unchecked: float = 30.0
    spam: float = 14.0
    bad_header: float = 14.0

    def __post_init__(self) -> None:
        for name in KEEPABLE:
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}: days must be positive (got {getattr(self, name)})")

    def days(self, category: str) -> float:
        return float(getattr(self, category, self.virus))


@dataclass(frozen=True)
class QuarantineSettings:
    """The `quarantine:` section."""

    enabled: bool = True
    # which categories are kept when their destiny blocks a copy: amavisd-new's
    # $virus_quarantine_to, $banned_quarantine_to, $unchecked_quarantine_to,
    # $spam_quarantine_to, $bad_header_quarantine_to (undef there = not listed here)
    categories: tuple[str, ...] = ("virus", "banned", "spam")
    # spam at or above this score is not kept ($sa_quarantine_cutoff_level; null: keep all)
    spam_cutoff_level: float | None = 25.0
    # also keep a copy of blocked content passed to a lover (virus_lovers, spam_lovers...);
    # the passed copy then carries X-Quarantine-ID
    keep_passed: bool = False
    retention: Retention = Retention()
    # the embedded store (SQLite index + one compressed file per message), owned by the
    # filter's user; ignored when `database` is set
    directory: str = "/var/lib/contentfilter/quarantine"
    # the shared store of several filter hosts: postgresql://user@host/dbname ("" = none)
    database: str = ""
    # when storing fails: tempfail (451, Postfix retries) or discard-unkept (go on with
    # the destiny, the copy is not kept; logged and counted)
    on_failure: Literal["tempfail", "discard-unkept"] = "tempfail"
    # the name stored with each message as the host that kept it ("" = this host's name)
    host_name: str = ""
    # seconds to wait for the store (SQLite's busy timeout, PostgreSQL's connect timeout)
    timeout: float = 30.0

    def __post_init__(self) -> None:
        unknown = [c for c in self.categories if c not in KEEPABLE]
        if unknown:
            raise ValueError(
                f"categories: unknown category {unknown[0]!r} (known: {', '.join(KEEPABLE)})"
            )
        if self.database and not self.database.startswith(("postgresql://", "postgres://")):
            raise ValueError("database: expected a postgresql://... URL (or empty for SQLite)")
        if not self.database and not self.directory.startswith("/"):
            raise ValueError(f"directory: expected an absolute path (got {self.directory!r})")
        if self.timeout <= 0:
            raise ValueError(f"timeout must be positive (got {self.timeout})")
        if self.host_name and not self.host_name.isprintable():
            raise ValueError("host_name: expected a printable host name")

    @property
    def host(self) -> str:
        """The host name stored with each message."""
        return self.host_name or socket.gethostname()

    def to_config(self) -> dict[str, object]:
        """As `check-config` prints it (the password of a database URL hidden)."""
        return {
            "enabled": self.enabled,
            "categories": list(self.categories),
            "spam_cutoff_level": self.spam_cutoff_level,
            "keep_passed": self.keep_passed,
            "retention": {name: self.retention.days(name) for name in KEEPABLE},
            "directory": self.directory,
            "database": hide_password(self.database),
            "on_failure": self.on_failure,
            "host_name": self.host_name,
            "timeout": self.timeout,
        }


def hide_password(url: str) -> str:
    """postgresql://user:secret@host/db -> postgresql://user:***@host/db."""
    scheme, sep, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not sep or not at or ":" not in credentials:
        return url
    return f"{scheme}://{credentials.split(':', 1)[0]}:***@{host}"
