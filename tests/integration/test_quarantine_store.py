"""The quarantine stores: the same tests against SQLite and a real PostgreSQL server."""

from __future__ import annotations

import asyncio
import functools
import itertools
import multiprocessing
import os
import stat
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from contentfilter.errors import QuarantineError
from contentfilter.quarantine import (
    QuarantineStore,
    Query,
    State,
    Via,
    open_store,
)
from contentfilter.quarantine.postgres import PostgresStore
from contentfilter.quarantine.settings import QuarantineSettings
from contentfilter.quarantine.sqlite import SqliteStore
from tests.support.quarantine import held

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
RAW = b"From: a@example.org\r\nSubject: hello\r\n\r\n" + b"X5O!P%@AP body line\r\n" * 200
_names = itertools.count()


# every column filled, so that a store that loses one fails the first test
entry = functools.partial(
    held,
    stored=NOW,
    findings=("clamav: Eicar-Test-Signature in p001",),
    subject="hello",
    from_header="Alice <alice@example.org>",
    message_id="<m1@example.org>",
    size=len(RAW),
    client_address="203.0.113.5",
    policy_bank="ORIGINATING",
    host="mx1.example.com",
    log_id="12345-01",
    queue_id="4AbCd1",
    spam_score=1.5,
)


async def test_a_stored_message_comes_back_with_every_field(store: QuarantineStore) -> None:
    kept = entry("AAAAbbbb0001", "bob@example.com", "Carol@Example.com")
    await store.put(kept, RAW)
    found = await store.get("AAAAbbbb0001")
    assert found is not None
    assert found.recipients[1].address == "Carol@Example.com"
    assert [r.state for r in found.recipients] == [State.HELD, State.HELD]
    created = found.recipients[0].history
    assert len(created) == 1 and created[0].old is None and created[0].new is State.HELD
    assert created[0].via is Via.FILTER and created[0].source == "mx1.example.com"
    assert replace(found, recipients=()) == replace(kept, recipients=())
    assert await store.body("AAAAbbbb0001") == RAW
    assert await store.get("AAAAbbbb9999") is None
    assert await store.body("AAAAbbbb9999") is None


async def test_an_id_is_stored_once(store: QuarantineStore) -> None:
    await store.put(entry("dup0000001"), RAW)
    with pytest.raises(QuarantineError, match="already in the quarantine"):
        await store.put(entry("dup0000001", "mallory@example.net"), b"other bytes")
    assert await store.body("dup0000001") == RAW
    found = await store.get("dup0000001")
    assert found is not None and [r.address for r in found.recipients] == ["bob@example.com"]


@pytest.mark.parametrize("bad", ["../../etc/passwd", "a b", "", "x" * 65, "ab'; DROP"])
async def test_ids_that_are_not_ours_are_refused(store: QuarantineStore, bad: str) -> None:
    with pytest.raises(QuarantineError, match="not a quarantine id"):
        await store.body(bad)
    with pytest.raises(QuarantineError, match="not a quarantine id"):
        await store.put(entry(bad), RAW)


async def test_search_filters_and_orders_newest_first(store: QuarantineStore) -> None:
    await store.put(entry("old0000001", category="spam", stored=NOW - timedelta(days=3)), RAW)
    await store.put(entry("mid0000001", "Dave@example.com", stored=NOW - timedelta(days=1)), RAW)
    await store.put(entry("new0000001", sender="eve@example.net", subject="Your Invoice"), RAW)
    ids = [e.mail_id for e in await store.search(Query())]
    assert ids == ["new0000001", "mid0000001", "old0000001"]
    assert [e.mail_id for e in await store.search(Query(category="spam"))] == ["old0000001"]
    since = await store.search(Query(since=NOW - timedelta(days=2)))
    assert [e.mail_id for e in since] == ["new0000001", "mid0000001"]
    assert [e.mail_id for e in await store.search(Query(recipient="dave@EXAMPLE.com"))] == [
        "mid0000001"
    ]
    assert [e.mail_id for e in await store.search(Query(sender="Eve@example.net"))] == [
        "new0000001"
    ]
    assert [e.mail_id for e in await store.search(Query(subject="invoice"))] == ["new0000001"]
    assert [e.mail_id for e in await store.search(Query(limit=1, offset=1))] == ["mid0000001"]
    await store.transition(
        "old0000001", "bob@example.com", frozenset({State.HELD}), State.DELETED,
        actor="root", via=Via.CLI,
    )  # fmt: skip
    deleted = await store.search(Query(state=State.DELETED))
    assert [e.mail_id for e in deleted] == ["old0000001"]
    assert len(await store.search(Query(state=State.HELD))) == 2


async def test_transition_is_a_compare_and_set_with_history(store: QuarantineStore) -> None:
    await store.put(entry("cas0000001", "bob@example.com", "carol@example.com"), RAW)
    held = frozenset({State.HELD})
    first = await store.transition(
        "cas0000001", "BOB@example.com", held, State.RELEASING,
        actor="admin", via=Via.WEB, source="192.0.2.7", note="checked",
    )  # fmt: skip
    second = await store.transition(
        "cas0000001", "bob@example.com", held, State.RELEASING, actor="admin2", via=Via.CLI
    )
    assert (first.done, first.state) == (True, State.RELEASING)
    assert (second.done, second.state) == (False, State.RELEASING)
    found = await store.get("cas0000001")
    assert found is not None
    bob = found.recipient("bob@example.com")
    assert bob is not None and bob.state is State.RELEASING
    last = bob.history[-1]
    assert (last.old, last.new, last.actor, last.via) == (
        State.HELD, State.RELEASING, "admin", Via.WEB
    )  # fmt: skip
    assert (last.source, last.note) == ("192.0.2.7", "checked")
    assert len(bob.history) == 2  # the refused attempt left no trace
    carol = found.recipient("carol@example.com")
    assert carol is not None and carol.state is State.HELD
    with pytest.raises(QuarantineError, match="no such message or recipient"):
        await store.transition(
            "cas0000001", "mallory@example.net", held, State.RELEASED, actor="x", via=Via.CLI
        )
    with pytest.raises(QuarantineError, match="no such message or recipient"):
        await store.transition(
            "nosuch0001", "bob@example.com", held, State.RELEASED, actor="x", via=Via.CLI
        )


async def test_racing_transitions_one_wins(store: QuarantineStore) -> None:
    await store.put(entry("race000001"), RAW)
    results = await asyncio.gather(
        *(
            store.transition(
                "race000001",
                "bob@example.com",
                frozenset({State.HELD}),
                State.RELEASING,
                actor=f"clicker{n}",
                via=Via.LINK,
            )
            for n in range(12)
        )
    )
    assert sum(r.done for r in results) == 1
    found = await store.get("race000001")
    assert found is not None and len(found.recipients[0].history) == 2


async def test_expire_removes_bodies_and_keeps_tombstones(store: QuarantineStore) -> None:
    await store.put(
        entry("exp0000001", "a@x.example", "b@x.example", stored=NOW - timedelta(days=40)), RAW
    )
    await store.put(entry("exp0000002", category="spam", stored=NOW - timedelta(days=20)), RAW)
    await store.put(entry("keep000001", stored=NOW - timedelta(days=10)), RAW)
    await store.transition(
        "exp0000001", "b@x.example", frozenset({State.HELD}), State.RELEASED,
        actor="root", via=Via.CLI,
    )  # fmt: skip
    cutoffs = {"virus": NOW - timedelta(days=30), "spam": NOW - timedelta(days=14)}
    assert await store.expire(cutoffs, actor="cron") == 2
    assert await store.expire(cutoffs, actor="cron") == 0
    gone = await store.get("exp0000001")
    assert gone is not None and gone.body_removed
    assert await store.body("exp0000001") is None
    a, b = gone.recipients
    assert a.state is State.EXPIRED and b.state is State.RELEASED
    assert (a.history[-1].via, a.history[-1].actor) == (Via.RETENTION, "cron")
    spam = await store.get("exp0000002")
    assert spam is not None and spam.body_removed
    assert await store.body("keep000001") == RAW
    stats = await store.stats()
    assert stats.messages == 3
    assert stats.by_state == {"expired": 2, "held": 1, "released": 1}


async def test_a_body_is_dropped_only_when_no_copy_waits(store: QuarantineStore) -> None:
    await store.put(entry("drop000001", "a@x.example", "b@x.example"), RAW)
    await store.transition(
        "drop000001", "a@x.example", frozenset({State.HELD}), State.DELETED, actor="r", via=Via.CLI
    )
    assert not await store.drop_body("drop000001")
    assert await store.body("drop000001") == RAW
    await store.transition(
        "drop000001", "b@x.example", frozenset({State.HELD}), State.DELETED, actor="r", via=Via.CLI
    )
    assert await store.drop_body("drop000001")
    assert await store.body("drop000001") is None
    assert not await store.drop_body("drop000001")


async def test_stats_count_messages_copies_and_bytes(store: QuarantineStore) -> None:
    assert (await store.stats()).messages == 0
    await store.put(entry("stat000001", "a@x.example", "b@x.example"), RAW)
    await store.put(entry("stat000002", category="banned"), RAW)
    stats = await store.stats()
    assert stats.messages == 2
    assert stats.by_category == {"banned": 1, "virus": 1}
    assert stats.by_state == {"held": 3}
    assert 0 < stats.bytes_stored < 2 * len(RAW)  # compressed
    assert stats.oldest_held == NOW and stats.oldest_age(NOW + timedelta(hours=1)) == 3600


async def test_the_oldest_held_message_is_the_oldest_not_yet_decided(
    store: QuarantineStore,
) -> None:
    assert (await store.stats()).oldest_held is None
    await store.put(entry("old0000001", stored=NOW - timedelta(days=3)), RAW)
    await store.put(entry("mid0000001", stored=NOW - timedelta(days=2)), RAW)
    await store.put(entry("new0000001", stored=NOW - timedelta(days=1)), RAW)
    await store.transition(
        "old0000001", "bob@example.com", frozenset({State.HELD}), State.RELEASED,
        actor="root", via=Via.CLI,
    )  # fmt: skip
    await store.transition(
        "mid0000001", "bob@example.com", frozenset({State.HELD}), State.RELEASE_REQUESTED,
        actor="bob@example.com", via=Via.LINK,
    )  # fmt: skip
    assert (await store.stats()).oldest_held == NOW - timedelta(days=2)


async def test_a_claim_is_granted_once(store: QuarantineStore) -> None:
    later = NOW + timedelta(days=365 * 10)
    outcomes = await asyncio.gather(*(store.claim("token:abc", later) for _ in range(8)))
    assert sorted(outcomes) == [False] * 7 + [True]
    assert await store.claim("token:other", later)
    await store.unclaim("token:abc")  # the action did not happen: it may be claimed again
    assert await store.claim("token:abc", later)
    assert not await store.claim("token:abc", later)
    await store.unclaim("token:never-claimed")


async def test_migrate_is_idempotent(store: QuarantineStore) -> None:
    assert await store.migrate() == 2
    assert await store.migrate() == 2


async def test_sqlite_files_are_private(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "q" / "quarantine")
    try:
        await store.put(entry("priv000001"), RAW)
    finally:
        await store.close()
    directory = tmp_path / "q" / "quarantine"
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    body = store.body_path("priv000001")
    assert stat.S_IMODE(body.stat().st_mode) == 0o600
    assert stat.S_IMODE(body.parent.stat().st_mode) == 0o700
    assert body.read_bytes()[:2] == b"\x1f\x8b"  # gzip: zcat reads it


NOBODY = 65534  # nobody and nogroup on Debian


def _writer_as_nobody(directory: str) -> None:
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)
    _writer(directory, 0, 2)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act for another user")
async def test_sqlite_run_as_root_leaves_its_files_to_the_directorys_owner(
    daemon_dir: Path,
) -> None:
    """`contentfilter quarantine ...` run as root while the filter (here: nobody) works in
    its directory: what root creates is nobody's, so the filter goes on writing."""
    directory = daemon_dir / f"owned-{os.getpid()}-{next(_names)}" / "quarantine"
    directory.parent.mkdir(mode=0o755)
    directory.mkdir(mode=0o700)
    os.chown(directory, NOBODY, NOBODY)
    store = SqliteStore(directory)
    try:
        await store.put(entry("w00root001"), RAW)  # bodies/w0/, where nobody writes next
        filter_user = multiprocessing.get_context("spawn").Process(
            target=_writer_as_nobody, args=(str(directory),)
        )
        filter_user.start()
        filter_user.join(120)
        assert filter_user.exitcode == 0
        await store.transition(
            "w00root001", "bob@example.com", frozenset({State.HELD}), State.DELETED,
            actor="root", via=Via.CLI,
        )  # fmt: skip
    finally:
        await store.close()
    owners = {p.relative_to(directory).as_posix(): p.stat().st_uid for p in directory.rglob("*")}
    assert owners and set(owners.values()) == {NOBODY}, owners
    assert "bodies/w0/w00root001.eml.gz" in owners and "bodies/w0/w00m0001.eml.gz" in owners


async def test_sqlite_refuses_a_schema_newer_than_the_code(tmp_path: Path) -> None:
    import sqlite3

    store = SqliteStore(tmp_path)
    await store.migrate()
    await store.close()
    with sqlite3.connect(tmp_path / "index.sqlite") as connection:
        connection.execute("INSERT INTO schema_version (version) VALUES (99)")
    again = SqliteStore(tmp_path)
    try:
        with pytest.raises(QuarantineError, match="newer than this contentfilter knows"):
            await again.migrate()
    finally:
        await again.close()


async def test_sqlite_unwritable_directory_is_a_quarantine_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    store = SqliteStore(blocker / "quarantine")
    try:
        with pytest.raises(QuarantineError):
            await store.put(entry("fail000001"), RAW)
    finally:
        await store.close()


def test_open_store_chooses_by_settings(tmp_path: Path) -> None:
    sqlite_store = open_store(QuarantineSettings(directory=str(tmp_path)))
    assert isinstance(sqlite_store, SqliteStore) and sqlite_store.directory == tmp_path
    pg = open_store(QuarantineSettings(database="postgresql://cf:secret@db.example/q"))
    assert isinstance(pg, PostgresStore)
    assert "secret" not in repr(pg)


def _writer(directory: str, worker: int, count: int) -> None:
    async def write() -> None:
        store = SqliteStore(directory)
        try:
            for n in range(count):
                mail_id = f"w{worker:02d}m{n:04d}"
                await store.put(entry(mail_id, f"r{n}@example.com"), RAW + mail_id.encode())
                await store.transition(
                    mail_id, f"r{n}@example.com", frozenset({State.HELD}),
                    State.RELEASE_REQUESTED, actor=f"w{worker}", via=Via.API,
                )  # fmt: skip
                await store.claim(f"shared:{n}", NOW + timedelta(days=3650))
        finally:
            await store.close()

    asyncio.run(write())


async def test_sqlite_directory_made_by_another_process_meanwhile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Workers of one filter open the store at once: the quarantine directory that
    another made after this one looked for it is taken, not a 451 for the message."""
    directory = tmp_path / "quarantine"
    make_directory = Path.mkdir

    def another_worker_first(path: Path, *args: Any, **kwargs: Any) -> None:
        if path == directory and not os.path.isdir(path):
            os.mkdir(path, 0o700)  # the other worker wins the race
        make_directory(path, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", another_worker_first)
    store = SqliteStore(directory)
    try:
        await store.put(entry("raced0001", "r@example.com"), RAW)
    finally:
        await store.close()
    monkeypatch.undo()
    again = SqliteStore(directory)
    try:
        assert (await again.stats()).messages == 1
    finally:
        await again.close()


async def test_sqlite_several_processes_write_at_once(tmp_path: Path) -> None:
    directory = str(tmp_path / "quarantine")
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_writer, args=(directory, w, 30)) for w in range(4)]
    for process in workers:
        process.start()
    for process in workers:
        process.join(120)
    assert [p.exitcode for p in workers] == [0, 0, 0, 0]
    store = SqliteStore(directory)
    try:
        stats = await store.stats()
        assert stats.messages == 120
        assert stats.by_state == {"release-requested": 120}
        assert await store.body("w03m0029") == RAW + b"w03m0029"
        assert not await store.claim("shared:5", NOW)  # one of the four got it
    finally:
        await store.close()


async def test_the_audit_trail_lists_every_change_newest_first(store: QuarantineStore) -> None:
    for n in range(3):
        await store.put(entry(f"aud000000{n}", stored=NOW - timedelta(days=n)), RAW)
    await store.transition(
        "aud0000002", "bob@example.com", frozenset({State.HELD}), State.RELEASED,
        actor="alice", via=Via.WEB, source="192.0.2.7",
    )  # fmt: skip
    trail = await store.recent_changes(limit=10)
    newest, newest_entry = trail[0]
    # the oldest message, changed last
    assert (newest.new, newest.actor, newest_entry.mail_id) == (
        State.RELEASED,
        "alice",
        "aud0000002",
    )
    assert newest.source == "192.0.2.7" and newest_entry.subject == "hello"
    assert len(trail) == 4  # three creations and the release
    assert [e.mail_id for _, e in await store.recent_changes(limit=2, offset=3)] == [
        trail[3][1].mail_id
    ]
