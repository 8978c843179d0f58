"""Fixtures that start real daemons for the integration tests.

Session scope: one clamd (test signatures), one spamd (-L), one Postfix stack.
Function scope: a fresh CaptureSink per test and filter processes started on
demand. A daemon that cannot start fails the tests that need it, loudly: nothing
is skipped.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `tests.support` must import under plain `pytest` too
    sys.path.insert(0, str(REPO))

from tests.support.daemons import (  # noqa: E402
    CaptureSink,
    Clamd,
    FilterFactory,
    PostfixStack,
    Spamd,
    start_clamd,
    start_filter,
    start_postfix,
    start_spamd,
)
from tests.support.net import free_port  # noqa: E402
from tests.support.postgres import PostgresServer, start_postgres  # noqa: E402

INTEGRATION_DIR = Path(__file__).parent / "integration"
# the filter's state on this machine (the default quarantine.directory lives here): a
# test never writes there, and never opens a store on it
SYSTEM_STATE = Path("/var/lib/contentfilter")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "integration: needs real clamd/spamd/postfix started by the suite"
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if INTEGRATION_DIR in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session", autouse=True)
def system_state_untouched() -> Iterator[None]:
    """Fails the run when a test opens a quarantine store under /var/lib/contentfilter
    (a config built with the default quarantine.directory) or, where the directory did
    not exist before the run, when anything creates it (subprocesses included)."""
    from contentfilter.quarantine.sqlite import SqliteStore

    existed = SYSTEM_STATE.exists()
    opened: list[str] = []
    original = SqliteStore.__init__

    def guarded(self: SqliteStore, directory: Path | str, **options: Any) -> None:
        if SYSTEM_STATE in (Path(directory), *Path(directory).parents):
            opened.append(f"{os.environ.get('PYTEST_CURRENT_TEST')}: {directory}")
            raise AssertionError(
                f"a test opened the system's quarantine {directory}: give its config a "
                "quarantine.directory in the test's tmp_path"
            )
        original(self, directory, **options)

    patch = pytest.MonkeyPatch()
    patch.setattr(SqliteStore, "__init__", guarded)
    yield
    patch.undo()
    assert not opened, f"tests opened the system's quarantine: {opened}"
    assert existed or not SYSTEM_STATE.exists(), f"the test run created {SYSTEM_STATE}"


@pytest.fixture(scope="session")
def daemon_dir() -> Iterator[Path]:
    """A scratch directory every daemon user can traverse (Postfix drops privileges)."""
    path = Path(tempfile.mkdtemp(prefix="contentfilter-tests-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def clamd(daemon_dir: Path) -> Iterator[Clamd]:
    """A private clamd: `.address` is "127.0.0.1:PORT", `.socket_path` its Unix socket."""
    with start_clamd(daemon_dir / "clamd") as daemon:
        yield daemon


@pytest.fixture(scope="session")
def spamd(daemon_dir: Path) -> Iterator[Spamd]:
    """A private `spamd -L`: `.address` is "127.0.0.1:PORT"."""
    with start_spamd(daemon_dir / "spamd") as daemon:
        yield daemon


@pytest.fixture
def sink() -> Iterator[CaptureSink]:
    """A fresh recording next hop for one test."""
    with CaptureSink() as capture:
        yield capture


@pytest.fixture
def filter_factory(tmp_path: Path, sink: CaptureSink) -> Iterator[FilterFactory]:
    """Function that starts filter processes (next hop: the `sink` fixture by default).

    Filters are stopped before the sink goes away.
    """
    factory = FilterFactory(tmp_path, sink.address)
    yield factory
    factory.stop_all()


@pytest.fixture(scope="session")
def postfix_stack(daemon_dir: Path, clamd: Clamd, spamd: Spamd) -> Iterator[PostfixStack]:
    """The whole chain of REFERENCE.md; tests call `stack.sink.clear()` first."""
    filter_port = free_port()
    with (
        CaptureSink() as final_sink,
        start_postfix(daemon_dir / "postfix", filter_port, final_sink.port) as postfix,
    ):
        process = start_filter(
            daemon_dir / "filter",
            next_hop=postfix.reinject_address,
            clamd=clamd.address,
            spamd=spamd.address,
            port=filter_port,
        )
        try:
            yield PostfixStack(postfix, process, final_sink)
        finally:
            process.stop()


@pytest.fixture
def postfix(postfix_stack: PostfixStack) -> Iterator[PostfixStack]:
    """The session's Postfix stack, its sink emptied for this test."""
    postfix_stack.sink.clear()
    yield postfix_stack


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A private PostgreSQL server (Debian's package) on a free loopback port."""
    with start_postgres() as server:
        yield server
