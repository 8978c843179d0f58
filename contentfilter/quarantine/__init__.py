"""The quarantine: blocked mail kept with an index row per message and per recipient.

The records and the store interface every part of the product uses (defined in
`records`, imported from here: the filter storing, the CLI, notices, the web page),
and `open_store`, which opens the store a config names. Stores live in
`contentfilter.quarantine.sqlite` (the embedded default) and
`contentfilter.quarantine.postgres` (shared by several filter hosts); both pass the
same tests.

Every per-recipient change goes through `QuarantineStore.transition`, an atomic
compare-and-set: that is what makes a release happen once when two people (or two
hosts) click at the same moment.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from contentfilter.quarantine.records import (
    Change,
    Entry,
    HeldRecipient,
    QuarantineStore,
    Query,
    State,
    Stats,
    Transition,
    Via,
)

if TYPE_CHECKING:
    from contentfilter.quarantine.settings import QuarantineSettings

__all__ = [
    "Change",
    "Entry",
    "HeldRecipient",
    "QuarantineStore",
    "Query",
    "State",
    "Stats",
    "Transition",
    "Via",
    "open_store",
]


def open_store(settings: QuarantineSettings) -> QuarantineStore:
    """The store the `quarantine:` section names: PostgreSQL with `database`, else SQLite
    in `directory`. Nothing is opened yet: the store connects (and brings its schema up
    to date) on first use, so a store that is down costs only the messages to be kept."""
    if settings.database:
        from contentfilter.quarantine.postgres import PostgresStore

        return PostgresStore(settings.database, timeout=settings.timeout)
    from contentfilter.quarantine.sqlite import SqliteStore

    return SqliteStore(settings.directory, timeout=settings.timeout)
