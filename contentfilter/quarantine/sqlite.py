"""The embedded quarantine store: a SQLite index (WAL) and one gzip file per message.

Zero setup: the directory (mode 0700) and the database are made on first use, and
the schema is brought up to date then. Several filter processes on one host write at
once: WAL lets readers go on while one writes, each write is one short `BEGIN
IMMEDIATE` transaction, and a writer waits up to `timeout` seconds for the lock.

Bodies are files, not rows: a message is written once and read rarely, WAL would
write each body twice, and `expire` frees the space by unlinking instead of leaving
the database file as large as it ever was. A body file is complete before its rows
are committed (written, fsynced, then linked into place), so a row never points at
half a file; a file without rows (a crash between the two) is harmless.

The standard library's sqlite3 runs in one thread per store (aiosqlite does the same
thing as a dependency): SQLite calls block, and the event loop must not.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from contentfilter.errors import DISK_FULL, QuarantineError
from contentfilter.quarantine import rows as common
from contentfilter.quarantine.records import Change, Entry, Query, State, Stats, Transition, Via

T = TypeVar("T")

INDEX = "index.sqlite"
BODIES = "bodies"

# Each migration is run once, in order, in one transaction; schema_version says how far.
MIGRATIONS: tuple[tuple[int, str], ...] = (
    (
        1,
        """
        CREATE TABLE messages (
            mail_id TEXT PRIMARY KEY,
            stored TEXT NOT NULL,             -- ISO 8601 UTC, sorts as text
            category TEXT NOT NULL,
            reason TEXT NOT NULL,
            findings TEXT NOT NULL,           -- JSON list of strings
            sender TEXT NOT NULL,
            subject TEXT NOT NULL,
            from_header TEXT NOT NULL,
            message_id TEXT NOT NULL,
            size INTEGER NOT NULL,
            client_address TEXT NOT NULL,
            policy_bank TEXT NOT NULL,
            host TEXT NOT NULL,
            log_id TEXT NOT NULL,
            queue_id TEXT NOT NULL,
            spam_score REAL,
            body_bytes INTEGER NOT NULL,      -- compressed, as stored
            body_removed INTEGER NOT NULL DEFAULT 0
        );
        CREATE INDEX messages_stored ON messages (stored);
        CREATE INDEX messages_category_stored ON messages (category, stored);
        CREATE INDEX messages_sender ON messages (lower(sender));
        CREATE TABLE recipients (
            mail_id TEXT NOT NULL REFERENCES messages (mail_id) ON DELETE CASCADE,
            position INTEGER NOT NULL,
            address TEXT NOT NULL,
            address_lower TEXT NOT NULL,
            state TEXT NOT NULL,
            changed TEXT NOT NULL,
            PRIMARY KEY (mail_id, address_lower)
        );
        CREATE INDEX recipients_address ON recipients (address_lower);
        CREATE INDEX recipients_state ON recipients (state);
        CREATE TABLE changes (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            mail_id TEXT NOT NULL REFERENCES messages (mail_id) ON DELETE CASCADE,
            address_lower TEXT NOT NULL,
            recipient TEXT NOT NULL,
            at TEXT NOT NULL,
            old TEXT,
            new TEXT NOT NULL,
            actor TEXT NOT NULL,
            via TEXT NOT NULL,
            source TEXT NOT NULL,
            note TEXT NOT NULL
        );
        CREATE INDEX changes_mail_id ON changes (mail_id);
        CREATE TABLE claims (key TEXT PRIMARY KEY, expires TEXT NOT NULL);
        """,
    ),
    (
        2,
        """
        CREATE TABLE allowed_senders (
            recipient TEXT NOT NULL,          -- lower case
            sender TEXT NOT NULL,             -- lower case
            added TEXT NOT NULL,
            actor TEXT NOT NULL,
            via TEXT NOT NULL,
            source TEXT NOT NULL,
            PRIMARY KEY (recipient, sender)
        );
        """,
    ),
)
LATEST = MIGRATIONS[-1][0]


def _iso(moment: datetime) -> str:
    return common.utc(moment).isoformat(timespec="microseconds")


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _bind(values: Sequence[object]) -> list[object]:
    return [_iso(v) if isinstance(v, datetime) else v for v in values]


class SqliteStore:
    """The quarantine in `directory`: `index.sqlite` and `bodies/XY/MAILID.eml.gz`.

    Connects on first use (`migrate` does it explicitly)."""

    def __init__(self, directory: Path | str, *, timeout: float = 30.0) -> None:
        self.directory = Path(directory)
        self.database = self.directory / INDEX
        self.timeout = timeout
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="quarantine-sqlite")
        self._connection: sqlite3.Connection | None = None

    def __repr__(self) -> str:
        return f"SqliteStore({str(self.directory)!r})"

    # --- the thread that owns the connection -------------------------------------------

    async def _run(self, function: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        call = functools.partial(self._call, function, *args)
        return await loop.run_in_executor(self._executor, call)

    def _call(self, function: Callable[..., T], *args: Any) -> T:
        try:
            return function(self._connect(), *args)
        except sqlite3.Error as error:
            raise QuarantineError(f"SQLite index {self.database}: {error}") from error
        except OSError as error:
            raise _os_error(error, self.directory) from error

    def _connect(self) -> sqlite3.Connection:
        if self._connection is None:
            self._make_directory()
            connection = sqlite3.connect(
                self.database, timeout=self.timeout, isolation_level=None, check_same_thread=False
            )
            try:
                connection.row_factory = sqlite3.Row
                connection.execute("PRAGMA journal_mode=WAL")
                connection.execute("PRAGMA synchronous=FULL")  # a 250 means it is on disk
                connection.execute("PRAGMA foreign_keys=ON")
                _migrate(connection)
            except BaseException:
                connection.close()
                raise
            self._connection = connection
            for path in (self.database, *_sidecars(self.database)):
                with contextlib.suppress(OSError):
                    path.chmod(0o600)  # the directory is private already; the files too
            self._give_to_owner(self.database, *_sidecars(self.database))
        return self._connection

    def _make_directory(self) -> None:
        # exist_ok: the filter's workers may all make it at once on their first message
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        (self.directory / BODIES).mkdir(mode=0o700, exist_ok=True)
        self._give_to_owner(self.directory / BODIES)

    def _give_to_owner(self, *paths: Path) -> None:
        """Run as root (the CLI), what we create belongs to the quarantine directory's
        owner, the filter's user: else the filter could not write it afterwards."""
        if os.geteuid() != 0:
            return
        owner = self.directory.stat()
        for path in paths:
            with contextlib.suppress(FileNotFoundError):
                if path.stat().st_uid != owner.st_uid:
                    os.chown(path, owner.st_uid, owner.st_gid)

    # --- bodies ------------------------------------------------------------------------

    def body_path(self, mail_id: str) -> Path:
        common.check_mail_id(mail_id)
        return self.directory / BODIES / mail_id[:2] / f"{mail_id}.eml.gz"

    def _write_body(self, mail_id: str, data: bytes) -> Path:
        """The file in place, complete and on disk, or an error and no file."""
        path = self.body_path(mail_id)
        folder = path.parent
        if not folder.is_dir():
            with contextlib.suppress(FileExistsError):
                folder.mkdir(mode=0o700)
            self._give_to_owner(folder)
        temporary = folder / f".{mail_id}.{os.getpid()}.tmp"
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(descriptor, view) :]
                os.fsync(descriptor)
            finally:
                os.close(descriptor)
            self._give_to_owner(temporary)
            os.link(temporary, path)  # never replaces: a second put of an id fails
            _fsync_directory(folder)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
        return path

    # --- QuarantineStore ----------------------------------------------------------------

    async def migrate(self) -> int:
        """Create or bring the schema up to date; the schema version now."""
        return await self._run(lambda connection: _version(connection))

    async def put(self, entry: Entry, raw: bytes) -> None:
        data = await asyncio.to_thread(common.compress, raw)
        await self._run(self._put, entry, data)

    def _put(self, connection: sqlite3.Connection, entry: Entry, data: bytes) -> None:
        addresses = common.unique_recipients(entry)
        try:
            path = self._write_body(entry.mail_id, data)
        except FileExistsError:
            raise QuarantineError(f"{entry.mail_id} is already in the quarantine") from None
        try:
            with _transaction(connection):
                _insert(connection, entry, addresses, len(data))
        except BaseException:
            path.unlink(missing_ok=True)
            raise

    async def get(self, mail_id: str) -> Entry | None:
        common.check_mail_id(mail_id)
        found = await self._run(_entries, [mail_id])
        return found[0] if found else None

    async def body(self, mail_id: str) -> bytes | None:
        common.check_mail_id(mail_id)
        data = await self._run(self._read_body, mail_id)
        return None if data is None else await asyncio.to_thread(common.decompress, data)

    def _read_body(self, connection: sqlite3.Connection, mail_id: str) -> bytes | None:
        row = connection.execute(
            "SELECT body_removed FROM messages WHERE mail_id = ?", (mail_id,)
        ).fetchone()
        if row is None or row["body_removed"]:
            return None
        try:
            return self.body_path(mail_id).read_bytes()
        except FileNotFoundError:
            raise QuarantineError(f"{mail_id}: the body file is missing") from None

    async def search(self, query: Query) -> Sequence[Entry]:
        return await self._run(_search, query)

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
        common.check_mail_id(mail_id)
        change = (actor, via.value, source, note)
        return await self._run(_transition, mail_id, recipient, allowed_from, new, change)

    async def expire(self, older_than: dict[str, datetime], *, actor: str) -> int:
        expired = await self._run(_expire, older_than, actor)
        for mail_id in expired:
            await asyncio.to_thread(self.body_path(mail_id).unlink, missing_ok=True)
        return len(expired)

    async def drop_body(self, mail_id: str) -> bool:
        common.check_mail_id(mail_id)
        dropped = await self._run(_drop_body, mail_id)
        if dropped:
            await asyncio.to_thread(self.body_path(mail_id).unlink, missing_ok=True)
        return dropped

    async def stats(self) -> Stats:
        return await self._run(_stats)

    async def claim(self, key: str, expires: datetime) -> bool:
        return await self._run(_claim, key, expires)

    async def unclaim(self, key: str) -> None:
        await self._run(_unclaim, key)

    async def allow_sender(
        self, recipient: str, sender: str, *, actor: str, via: Via, source: str = ""
    ) -> bool:
        return await self._run(_allow_sender, recipient, sender, actor, via, source)

    async def allowed_sender(self, recipient: str, sender: str) -> bool:
        return await self._run(_allowed_sender, recipient, sender)

    async def recent_changes(
        self, limit: int = 200, offset: int = 0
    ) -> Sequence[tuple[Change, Entry]]:
        return await self._run(_recent_changes, limit, offset)

    async def close(self) -> None:
        if self._connection is not None:
            connection, self._connection = self._connection, None
            await asyncio.get_running_loop().run_in_executor(self._executor, connection.close)
        self._executor.shutdown(wait=False)
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="quarantine-sqlite")


# --- SQL, run in the store's thread --------------------------------------------------


@contextlib.contextmanager
def _transaction(connection: sqlite3.Connection) -> Iterator[None]:
    """BEGIN IMMEDIATE: take the write lock first (waiting up to the busy timeout), so
    two writers never deadlock upgrading read locks."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")


def _version(connection: sqlite3.Connection) -> int:
    row = connection.execute("SELECT max(version) FROM schema_version").fetchone()
    return int(row[0] or 0)


def _migrate(connection: sqlite3.Connection) -> None:
    with _transaction(connection):
        connection.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        current = _version(connection)
        if current > LATEST:
            raise QuarantineError(
                f"the quarantine schema is version {current}, newer than this contentfilter "
                f"knows ({LATEST}): upgrade contentfilter"
            )
        for version, script in MIGRATIONS:
            if version > current:
                for statement in script.split(";"):
                    if statement.strip():
                        connection.execute(statement)
                connection.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))


def _insert(
    connection: sqlite3.Connection, entry: Entry, addresses: list[str], body_bytes: int
) -> None:
    stored = _iso(entry.stored)
    columns = ", ".join((*common.MESSAGE_COLUMNS, "body_bytes"))
    marks = ", ".join("?" * (len(common.MESSAGE_COLUMNS) + 1))
    values = _bind(common.message_values(entry, entry.stored))
    try:
        connection.execute(
            f"INSERT INTO messages ({columns}) VALUES ({marks})", [*values, body_bytes]
        )
    except sqlite3.IntegrityError:
        raise QuarantineError(f"{entry.mail_id} is already in the quarantine") from None
    for position, address in enumerate(addresses):
        connection.execute(
            "INSERT INTO recipients (mail_id, position, address, address_lower, state, changed)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (entry.mail_id, position, address, address.lower(), State.HELD.value, stored),
        )
        connection.execute(
            "INSERT INTO changes (mail_id, address_lower, recipient, at, old, new, actor, via,"
            " source, note) VALUES (?, ?, ?, ?, NULL, ?, ?, ?, ?, '')",
            (
                entry.mail_id,
                address.lower(),
                address,
                stored,
                State.HELD.value,
                "contentfilter",
                Via.FILTER.value,
                entry.host,
            ),
        )


def _entries(connection: sqlite3.Connection, mail_ids: Sequence[str]) -> list[Entry]:
    """The entries of these ids, in this order (unknown ids left out)."""
    if not mail_ids:
        return []
    marks = ", ".join("?" * len(mail_ids))
    messages = {
        row["mail_id"]: row
        for row in connection.execute(
            f"SELECT * FROM messages WHERE mail_id IN ({marks})", list(mail_ids)
        )
    }
    recipients = common.group_by_mail_id(
        connection.execute(
            f"SELECT * FROM recipients WHERE mail_id IN ({marks}) ORDER BY mail_id, position",
            list(mail_ids),
        ).fetchall()
    )
    changes = common.group_by_mail_id(
        connection.execute(
            f"SELECT * FROM changes WHERE mail_id IN ({marks}) ORDER BY id", list(mail_ids)
        ).fetchall()
    )
    return [
        common.entry_from_rows(
            messages[mail_id], recipients.get(mail_id, []), changes.get(mail_id, []), _time
        )
        for mail_id in mail_ids
        if mail_id in messages
    ]


def _recent_changes(
    connection: sqlite3.Connection, limit: int, offset: int
) -> list[tuple[Change, Entry]]:
    rows = connection.execute(
        "SELECT * FROM changes ORDER BY at DESC, id DESC LIMIT ? OFFSET ?", (limit, offset)
    ).fetchall()
    entries = {e.mail_id: e for e in _entries(connection, list({r["mail_id"]: 0 for r in rows}))}
    return [
        (common.change_from_row(row, _time), entries[row["mail_id"]])
        for row in rows
        if row["mail_id"] in entries
    ]


def _search(connection: sqlite3.Connection, query: Query) -> list[Entry]:
    where, values = common.search_conditions(query, lambda n: "?")
    rows = connection.execute(
        f"SELECT m.mail_id FROM messages m{where} ORDER BY m.stored DESC, m.mail_id"
        " LIMIT ? OFFSET ?",
        [*_bind(values), query.limit, query.offset],
    ).fetchall()
    return _entries(connection, [row["mail_id"] for row in rows])


def _transition(
    connection: sqlite3.Connection,
    mail_id: str,
    recipient: str,
    allowed_from: frozenset[State],
    new: State,
    change: tuple[str, str, str, str],
) -> Transition:
    now = _iso(datetime.now(UTC))
    allowed = sorted(state.value for state in allowed_from)
    marks = ", ".join("?" * len(allowed))
    with _transaction(connection):
        row = connection.execute(
            "SELECT address, state FROM recipients WHERE mail_id = ? AND address_lower = ?",
            (mail_id, recipient.lower()),
        ).fetchone()
        if row is None:
            raise QuarantineError(f"{mail_id}: no such message or recipient <{recipient}>")
        updated = connection.execute(
            f"UPDATE recipients SET state = ?, changed = ? WHERE mail_id = ?"
            f" AND address_lower = ? AND state IN ({marks})",
            [new.value, now, mail_id, recipient.lower(), *allowed],
        ).rowcount
        if updated != 1:
            return Transition(False, State(row["state"]))
        connection.execute(
            "INSERT INTO changes (mail_id, address_lower, recipient, at, old, new, actor, via,"
            " source, note) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (mail_id, recipient.lower(), row["address"], now, row["state"], new.value, *change),
        )
    return Transition(True, new)


def _expire(
    connection: sqlite3.Connection, older_than: dict[str, datetime], actor: str
) -> list[str]:
    """Mark waiting copies EXPIRED and the bodies removed; the ids whose files go."""
    now = _iso(datetime.now(UTC))
    expired: list[str] = []
    waiting = sorted(state.value for state in common.WAITING)
    for category, cutoff in sorted(older_than.items()):
        rows = connection.execute(
            "SELECT mail_id FROM messages WHERE category = ? AND stored < ? AND body_removed = 0",
            (category, _iso(cutoff)),
        ).fetchall()
        for row in rows:
            with _transaction(connection):
                _expire_one(connection, row["mail_id"], waiting, now, actor)
            expired.append(row["mail_id"])
    with _transaction(connection):
        connection.execute("DELETE FROM claims WHERE expires < ?", (now,))
    return expired


def _expire_one(
    connection: sqlite3.Connection, mail_id: str, waiting: list[str], now: str, actor: str
) -> None:
    marks = ", ".join("?" * len(waiting))
    copies = connection.execute(
        f"SELECT address, address_lower, state FROM recipients WHERE mail_id = ?"
        f" AND state IN ({marks})",
        [mail_id, *waiting],
    ).fetchall()
    for copy in copies:
        connection.execute(
            "UPDATE recipients SET state = ?, changed = ? WHERE mail_id = ? AND address_lower = ?",
            (State.EXPIRED.value, now, mail_id, copy["address_lower"]),
        )
        connection.execute(
            "INSERT INTO changes (mail_id, address_lower, recipient, at, old, new, actor, via,"
            " source, note) VALUES (?, ?, ?, ?, ?, ?, ?, ?, '', 'retention')",
            (
                mail_id,
                copy["address_lower"],
                copy["address"],
                now,
                copy["state"],
                State.EXPIRED.value,
                actor,
                Via.RETENTION.value,
            ),
        )
    connection.execute("UPDATE messages SET body_removed = 1 WHERE mail_id = ?", (mail_id,))


def _drop_body(connection: sqlite3.Connection, mail_id: str) -> bool:
    still_open = sorted(state.value for state in common.OPEN)
    marks = ", ".join("?" * len(still_open))
    with _transaction(connection):
        return (
            connection.execute(
                f"UPDATE messages SET body_removed = 1 WHERE mail_id = ? AND body_removed = 0"
                f" AND NOT EXISTS (SELECT 1 FROM recipients WHERE mail_id = ?"
                f" AND state IN ({marks}))",
                [mail_id, mail_id, *still_open],
            ).rowcount
            == 1
        )


def _stats(connection: sqlite3.Connection) -> Stats:
    messages = connection.execute("SELECT count(*) FROM messages").fetchone()[0]
    by_category = dict(
        connection.execute(
            "SELECT category, count(*) FROM messages GROUP BY category ORDER BY category"
        ).fetchall()
    )
    by_state = dict(
        connection.execute(
            "SELECT state, count(*) FROM recipients GROUP BY state ORDER BY state"
        ).fetchall()
    )
    stored = connection.execute(
        "SELECT coalesce(sum(body_bytes), 0) FROM messages WHERE body_removed = 0"
    ).fetchone()[0]
    oldest = connection.execute(
        "SELECT min(stored) FROM messages WHERE mail_id IN"
        " (SELECT mail_id FROM recipients WHERE state IN ('held', 'release-requested'))"
    ).fetchone()[0]
    return Stats(
        int(messages), by_category, by_state, int(stored), _time(oldest) if oldest else None
    )


def _claim(connection: sqlite3.Connection, key: str, expires: datetime) -> bool:
    with _transaction(connection):
        cursor = connection.execute(
            "INSERT OR IGNORE INTO claims (key, expires) VALUES (?, ?)", (key, _iso(expires))
        )
        return cursor.rowcount == 1


def _allow_sender(
    connection: sqlite3.Connection, recipient: str, sender: str, actor: str, via: Via, source: str
) -> bool:
    with _transaction(connection):
        cursor = connection.execute(
            "INSERT OR IGNORE INTO allowed_senders (recipient, sender, added, actor, via, source)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (recipient.lower(), sender.lower(), _iso(datetime.now(UTC)), actor, via.value, source),
        )
        return cursor.rowcount == 1


def _allowed_sender(connection: sqlite3.Connection, recipient: str, sender: str) -> bool:
    row = connection.execute(
        "SELECT 1 FROM allowed_senders WHERE recipient = ? AND sender = ?",
        (recipient.lower(), sender.lower()),
    ).fetchone()
    return row is not None


# --- files ---------------------------------------------------------------------------


def _sidecars(database: Path) -> tuple[Path, Path]:
    return database.with_name(database.name + "-wal"), database.with_name(database.name + "-shm")


def _fsync_directory(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _os_error(error: OSError, directory: Path) -> QuarantineError:
    """A file system error as the store's error; a full disk keeps its errno for the reply."""
    reason = error.strerror or str(error)
    where = error.filename or directory
    failure = QuarantineError(f"{where}: {reason}")
    if error.errno in DISK_FULL:
        failure.errno = error.errno
    return failure


def _unclaim(connection: sqlite3.Connection, key: str) -> None:
    with _transaction(connection):
        connection.execute("DELETE FROM claims WHERE key = ?", (key,))
