"""Fixtures shared by the quarantine's integration tests."""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from contentfilter.quarantine import QuarantineStore
from contentfilter.quarantine.postgres import PostgresStore
from contentfilter.quarantine.sqlite import SqliteStore
from tests.support.postgres import PostgresServer

_databases = itertools.count()


@pytest.fixture(params=["sqlite", "postgresql"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[QuarantineStore]:
    """An empty quarantine store, once of each kind: SQLite in the test's tmp_path, and a
    new database of the private PostgreSQL server."""
    if request.param == "sqlite":
        opened: QuarantineStore = SqliteStore(tmp_path / "quarantine")
    else:
        server: PostgresServer = request.getfixturevalue("postgres_server")
        opened = PostgresStore(server.create_database(f"store_{os.getpid()}_{next(_databases)}"))
    try:
        yield opened
    finally:
        await opened.close()
