"""The shared quarantine store: PostgreSQL holds the index and the bodies.

Every filter host writes to and reads from the same database, so a message stored by
host A is listed, shown, released or deleted on host B: no per-host files, no master,
no RPC between hosts. Bodies are gzip-compressed by us and kept in a `bytea` column
with STORAGE EXTERNAL (PostgreSQL does not try to compress them again).

The pool connects on first use; the schema is brought up to date then, under an
advisory lock so hosts starting together migrate once. A per-recipient change is a
row lock and a conditional UPDATE (`... WHERE state = ANY($n)`): two hosts releasing
the same copy at the same moment, one wins.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

import asyncpg

from contentfilter.errors import QuarantineError
from contentfilter.quarantine import rows as common
from contentfilter.quarantine.records import Change, Entry, Query, State, Stats, Transition, Via

T = TypeVar("T")
if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

    Connection = PoolConnectionProxy[asyncpg.Record]

MIGRATION_LOCK = 0x636F6E74  # pg_advisory_xact_lock key: "cont"

MIGRATIONS: tuple[tuple[int, str], ...] = (
    (
        1,
        """
        CREATE TABLE messages (
            mail_id text PRIMARY KEY,
            stored timestamptz NOT NULL,
            category text NOT NULL,
            reason text NOT NULL,
            findings text NOT NULL,           -- JSON list of strings
            sender text NOT NULL,
            subject text NOT NULL,
            from_header text NOT NULL,
            message_id text NOT NULL,
            size bigint NOT NULL,
            client_address text NOT NULL,
            policy_bank text NOT NULL,
            host text NOT NULL,
            log_id text NOT NULL,
            queue_id text NOT NULL,
            spam_score double precision,
            body_bytes bigint NOT NULL,       -- compressed, as stored
            body_removed boolean NOT NULL DEFAULT false,
            body bytea                        -- gzip; NULL once removed
        );
        ALTER TABLE messages ALTER COLUMN body SET STORAGE EXTERNAL;
        CREATE INDEX messages_stored ON messages (stored);
        CREATE INDEX messages_category_stored ON messages (category, stored);
        CREATE INDEX messages_sender ON messages (lower(sender));
        CREATE TABLE recipients (
            mail_id text NOT NULL REFERENCES messages (mail_id) ON DELETE CASCADE,
            position integer NOT NULL,
            address text NOT NULL,
            address_lower text NOT NULL,
            state text NOT NULL,
            changed timestamptz NOT NULL,
            PRIMARY KEY (mail_id, address_lower)
        );
        CREATE INDEX recipients_address ON recipients (address_lower);
        CREATE INDEX recipients_state ON recipients (state);
        CREATE TABLE changes (
            id bigserial PRIMARY KEY,
            mail_id text NOT NULL REFERENCES messages (mail_id) ON DELETE CASCADE,
            address_lower text NOT NULL,
            recipient text NOT NULL,
            at timestamptz NOT NULL,
            old text,
            new text NOT NULL,
            actor text NOT NULL,
            via text NOT NULL,
            source text NOT NULL,
            note text NOT NULL
        );
        CREATE INDEX changes_mail_id ON changes (mail_id);
        CREATE TABLE claims (key text PRIMARY KEY, expires timestamptz NOT NULL);
        """,
    ),
    (
        2,
        """
        CREATE TABLE allowed_senders (
            recipient text NOT NULL,
            sender text NOT NULL,
            added timestamptz NOT NULL,
            actor text NOT NULL,
            via text NOT NULL,
            source text NOT NULL,
            PRIMARY KEY (recipient, sender)
        );
        """,
    ),
)
LATEST = MIGRATIONS[-1][0]

_CHANGE = (
    "INSERT INTO changes (mail_id, address_lower, recipient, at, old, new, actor, via, source,"
    " note) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
)


def _time(value: Any) -> datetime:
    return common.utc(value)


class PostgresStore:
    """The quarantine in a PostgreSQL database (`postgresql://user@host:port/dbname`)."""

    def __init__(self, dsn: str, *, timeout: float = 30.0, pool_size: int = 4) -> None:
        self.dsn = dsn
        self.timeout = timeout
        self.pool_size = pool_size
        self._pool: asyncpg.Pool | None = None
        self._opening = asyncio.Lock()

    def __repr__(self) -> str:
        from contentfilter.quarantine.settings import hide_password

        return f"PostgresStore({hide_password(self.dsn)!r})"

    async def _connected(self) -> asyncpg.Pool:
        async with self._opening:
            if self._pool is None:
                pool = await asyncpg.create_pool(
                    self.dsn,
                    min_size=1,
                    max_size=self.pool_size,
                    timeout=self.timeout,
                    command_timeout=self.timeout,
                )
                try:
                    async with pool.acquire() as connection:
                        await _migrate(connection)
                except BaseException:
                    await pool.close()
                    raise
                self._pool = pool
            return self._pool

    async def _run(self, function: Callable[..., Awaitable[T]], *args: Any) -> T:
        """`function(connection, *args)` with a pooled connection; its errors as ours."""
        try:
            pool = await self._connected()
            async with pool.acquire() as connection:
                return await function(connection, *args)
        except QuarantineError:
            raise
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as error:
            reason = str(error) or type(error).__name__
            raise QuarantineError(f"PostgreSQL store: {reason}") from error

    # --- QuarantineStore ----------------------------------------------------------------

    async def migrate(self) -> int:
        return await self._run(_version)

    async def put(self, entry: Entry, raw: bytes) -> None:
        data = await asyncio.to_thread(common.compress, raw)
        await self._run(_put, entry, data)

    async def get(self, mail_id: str) -> Entry | None:
        common.check_mail_id(mail_id)
        found = await self._run(_entries, [mail_id])
        return found[0] if found else None

    async def body(self, mail_id: str) -> bytes | None:
        common.check_mail_id(mail_id)
        data = await self._run(_body, mail_id)
        return None if data is None else await asyncio.to_thread(common.decompress, data)

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
        return await self._run(_expire, older_than, actor)

    async def drop_body(self, mail_id: str) -> bool:
        common.check_mail_id(mail_id)
        return await self._run(_drop_body, mail_id)

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
        async with self._opening:
            if self._pool is not None:
                pool, self._pool = self._pool, None
                await pool.close()


# --- SQL ------------------------------------------------------------------------------


async def _version(connection: Connection) -> int:
    return int(await connection.fetchval("SELECT coalesce(max(version), 0) FROM schema_version"))


async def _migrate(connection: Connection) -> None:
    async with connection.transaction():
        await connection.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
        await connection.execute(
            "CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL)"
        )
        current = await _version(connection)
        if current > LATEST:
            raise QuarantineError(
                f"the quarantine schema is version {current}, newer than this contentfilter "
                f"knows ({LATEST}): upgrade contentfilter"
            )
        for version, script in MIGRATIONS:
            if version > current:
                await connection.execute(script)
                await connection.execute(
                    "INSERT INTO schema_version (version) VALUES ($1)", version
                )


async def _put(connection: Connection, entry: Entry, data: bytes) -> None:
    addresses = common.unique_recipients(entry)
    stored = common.utc(entry.stored)
    created = ("contentfilter", Via.FILTER.value, entry.host, "")
    columns = ", ".join((*common.MESSAGE_COLUMNS, "body_bytes", "body"))
    count = len(common.MESSAGE_COLUMNS) + 2
    marks = ", ".join(f"${n}" for n in range(1, count + 1))
    async with connection.transaction():
        try:
            await connection.execute(
                f"INSERT INTO messages ({columns}) VALUES ({marks})",
                *common.message_values(entry, stored),
                len(data),
                data,
            )
        except asyncpg.UniqueViolationError:
            raise QuarantineError(f"{entry.mail_id} is already in the quarantine") from None
        await connection.executemany(
            "INSERT INTO recipients (mail_id, position, address, address_lower, state, changed)"
            " VALUES ($1, $2, $3, $4, $5, $6)",
            [
                (entry.mail_id, n, a, a.lower(), State.HELD.value, stored)
                for n, a in enumerate(addresses)
            ],
        )
        await connection.executemany(
            _CHANGE,
            [
                (entry.mail_id, a.lower(), a, stored, None, State.HELD.value, *created)
                for a in addresses
            ],
        )


async def _entries(connection: Connection, mail_ids: Sequence[str]) -> list[Entry]:
    if not mail_ids:
        return []
    ids = list(mail_ids)
    messages = {
        row["mail_id"]: dict(row)
        for row in await connection.fetch(
            "SELECT mail_id, stored, category, reason, findings, sender, subject, from_header,"
            " message_id, size, client_address, policy_bank, host, log_id, queue_id,"
            " spam_score, body_removed FROM messages WHERE mail_id = ANY($1::text[])",
            ids,
        )
    }
    recipients = common.group_by_mail_id(
        [
            dict(row)
            for row in await connection.fetch(
                "SELECT * FROM recipients WHERE mail_id = ANY($1::text[])"
                " ORDER BY mail_id, position",
                ids,
            )
        ]
    )
    changes = common.group_by_mail_id(
        [
            dict(row)
            for row in await connection.fetch(
                "SELECT * FROM changes WHERE mail_id = ANY($1::text[]) ORDER BY id", ids
            )
        ]
    )
    return [
        common.entry_from_rows(
            messages[mail_id], recipients.get(mail_id, []), changes.get(mail_id, []), _time
        )
        for mail_id in ids
        if mail_id in messages
    ]


async def _body(connection: Connection, mail_id: str) -> bytes | None:
    data = await connection.fetchval("SELECT body FROM messages WHERE mail_id = $1", mail_id)
    return None if data is None else bytes(data)


async def _recent_changes(
    connection: Connection, limit: int, offset: int
) -> list[tuple[Change, Entry]]:
    rows = await connection.fetch(
        "SELECT * FROM changes ORDER BY at DESC, id DESC LIMIT $1 OFFSET $2", limit, offset
    )
    ids = list({row["mail_id"]: 0 for row in rows})
    entries = {e.mail_id: e for e in await _entries(connection, ids)}
    return [
        (common.change_from_row(dict(row), _time), entries[row["mail_id"]])
        for row in rows
        if row["mail_id"] in entries
    ]


async def _search(connection: Connection, query: Query) -> list[Entry]:
    where, values = common.search_conditions(query, lambda n: f"${n}", find="strpos")
    n = len(values)
    rows = await connection.fetch(
        f"SELECT m.mail_id FROM messages m{where} ORDER BY m.stored DESC, m.mail_id"
        f" LIMIT ${n + 1} OFFSET ${n + 2}",
        *values,
        query.limit,
        query.offset,
    )
    return await _entries(connection, [row["mail_id"] for row in rows])


async def _transition(
    connection: Connection,
    mail_id: str,
    recipient: str,
    allowed_from: frozenset[State],
    new: State,
    change: tuple[str, str, str, str],
) -> Transition:
    now = datetime.now(UTC)
    allowed = sorted(state.value for state in allowed_from)
    async with connection.transaction():
        row = await connection.fetchrow(
            "SELECT address, state FROM recipients WHERE mail_id = $1 AND address_lower = $2"
            " FOR UPDATE",
            mail_id,
            recipient.lower(),
        )
        if row is None:
            raise QuarantineError(f"{mail_id}: no such message or recipient <{recipient}>")
        updated = await connection.fetchval(
            "UPDATE recipients SET state = $1, changed = $2 WHERE mail_id = $3"
            " AND address_lower = $4 AND state = ANY($5::text[]) RETURNING state",
            new.value,
            now,
            mail_id,
            recipient.lower(),
            allowed,
        )
        if updated is None:
            return Transition(False, State(row["state"]))
        await connection.execute(
            _CHANGE, mail_id, recipient.lower(), row["address"], now, row["state"], new.value,
            *change,
        )  # fmt: skip
    return Transition(True, new)


async def _expire(connection: Connection, older_than: dict[str, datetime], actor: str) -> int:
    now = datetime.now(UTC)
    waiting = sorted(state.value for state in common.WAITING)
    how = (State.EXPIRED.value, actor, Via.RETENTION.value, "", "retention")
    count = 0
    for category, cutoff in sorted(older_than.items()):
        ids = await connection.fetch(
            "SELECT mail_id FROM messages WHERE category = $1 AND stored < $2 AND NOT body_removed",
            category,
            common.utc(cutoff),
        )
        for row in ids:
            async with connection.transaction():
                copies = await connection.fetch(
                    "UPDATE recipients r SET state = $1, changed = $2 FROM recipients old"
                    " WHERE r.mail_id = $3 AND old.mail_id = r.mail_id"
                    " AND old.address_lower = r.address_lower AND r.state = ANY($4::text[])"
                    " RETURNING r.address, r.address_lower, old.state AS old_state",
                    State.EXPIRED.value,
                    now,
                    row["mail_id"],
                    waiting,
                )
                await connection.executemany(
                    _CHANGE,
                    [
                        (
                            row["mail_id"],
                            c["address_lower"],
                            c["address"],
                            now,
                            c["old_state"],
                            *how,
                        )
                        for c in copies
                    ],
                )
                await connection.execute(
                    "UPDATE messages SET body = NULL, body_removed = true WHERE mail_id = $1",
                    row["mail_id"],
                )
            count += 1
    await connection.execute("DELETE FROM claims WHERE expires < $1", now)
    return count


async def _drop_body(connection: Connection, mail_id: str) -> bool:
    still_open = sorted(state.value for state in common.OPEN)
    async with connection.transaction():
        # the message row first: a transition that starts a release waits on the
        # recipient rows we then read, not the other way round
        await connection.execute("SELECT 1 FROM messages WHERE mail_id = $1 FOR UPDATE", mail_id)
        await connection.execute("SELECT 1 FROM recipients WHERE mail_id = $1 FOR UPDATE", mail_id)
        result = await connection.execute(
            "UPDATE messages SET body = NULL, body_removed = true WHERE mail_id = $1"
            " AND NOT body_removed AND NOT EXISTS (SELECT 1 FROM recipients"
            " WHERE mail_id = $1 AND state = ANY($2::text[]))",
            mail_id,
            still_open,
        )
    return bool(result == "UPDATE 1")


async def _stats(connection: Connection) -> Stats:
    messages = await connection.fetchval("SELECT count(*) FROM messages")
    by_category = {
        row["category"]: int(row["count"])
        for row in await connection.fetch(
            "SELECT category, count(*) FROM messages GROUP BY category ORDER BY category"
        )
    }
    by_state = {
        row["state"]: int(row["count"])
        for row in await connection.fetch(
            "SELECT state, count(*) FROM recipients GROUP BY state ORDER BY state"
        )
    }
    stored = await connection.fetchval(
        "SELECT coalesce(sum(body_bytes), 0) FROM messages WHERE NOT body_removed"
    )
    oldest = await connection.fetchval(
        "SELECT min(stored) FROM messages WHERE mail_id IN"
        " (SELECT mail_id FROM recipients WHERE state IN ('held', 'release-requested'))"
    )
    return Stats(int(messages), by_category, by_state, int(stored), oldest)


async def _claim(connection: Connection, key: str, expires: datetime) -> bool:
    result = await connection.execute(
        "INSERT INTO claims (key, expires) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
        key,
        common.utc(expires),
    )
    return bool(result == "INSERT 0 1")


async def _unclaim(connection: Connection, key: str) -> None:
    await connection.execute("DELETE FROM claims WHERE key = $1", key)


async def _allow_sender(
    connection: Connection, recipient: str, sender: str, actor: str, via: Via, source: str
) -> bool:
    result = await connection.execute(
        "INSERT INTO allowed_senders (recipient, sender, added, actor, via, source)"
        " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (recipient, sender) DO NOTHING",
        recipient.lower(),
        sender.lower(),
        datetime.now(UTC),
        actor,
        via.value,
        source,
    )
    return bool(result == "INSERT 0 1")


async def _allowed_sender(connection: Connection, recipient: str, sender: str) -> bool:
    found = await connection.fetchval(
        "SELECT 1 FROM allowed_senders WHERE recipient = $1 AND sender = $2",
        recipient.lower(),
        sender.lower(),
    )
    return found is not None
