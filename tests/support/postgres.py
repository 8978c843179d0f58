"""A private PostgreSQL server for the tests, from Debian's postgresql package.

`initdb` into a temporary directory, `postgres` on a free loopback port, trust
authentication for our own user on 127.0.0.1 only. PostgreSQL refuses to run as root
(as the suite does in CI), so there it runs as the `postgres` user (`nobody` if the
package made none) through setpriv. Nothing touches the system's own cluster.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.net import StartupError, free_port, wait_until

ROLE = "contentfilter"


def postgres_bin() -> Path:
    """The newest /usr/lib/postgresql/N/bin with initdb and postgres."""
    base = Path("/usr/lib/postgresql")
    versions = sorted(
        (p for p in base.glob("*/bin") if (p / "initdb").exists()),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    if not versions:
        raise StartupError("PostgreSQL is not installed (Debian package postgresql)")
    return versions[-1]


def _server_user() -> pwd.struct_passwd | None:
    """Root cannot run PostgreSQL: an unprivileged account does; None: we are one."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise StartupError("no unprivileged user (postgres, nobody) to run PostgreSQL as")


def _as_user(user: pwd.struct_passwd | None, argv: Sequence[str]) -> list[str]:
    if user is None:
        return list(argv)
    return [
        "setpriv",
        f"--reuid={user.pw_uid}",
        f"--regid={user.pw_gid}",
        "--clear-groups",
        "--",
        *argv,
    ]


@dataclass
class PostgresServer:
    """One running private server; `dsn(name)` is the URL of one of its databases."""

    directory: Path
    port: int
    user: pwd.struct_passwd | None
    fsync: bool = False
    process: subprocess.Popen[bytes] | None = None
    databases: list[str] = field(default_factory=list)

    @property
    def data(self) -> Path:
        return self.directory / "data"

    @property
    def log(self) -> Path:
        return self.directory / "postgres.log"

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://{ROLE}@127.0.0.1:{self.port}/{database}"

    def start(self, timeout: float = 60.0) -> None:
        argv = [
            str(postgres_bin() / "postgres"),
            "-D",
            str(self.data),
            "-p",
            str(self.port),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            f"unix_socket_directories={self.directory}",
            "-c",
            f"fsync={'on' if self.fsync else 'off'}",
            "-c",
            "max_connections=200",
        ]
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                _as_user(self.user, argv), stdout=log, stderr=log, start_new_session=True
            )
        ready = [str(postgres_bin() / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)]
        wait_until(
            lambda: subprocess.run(ready, check=False).returncode == 0,
            "postgres",
            timeout,
            self.process,
            self.log,
        )

    def stop(self) -> None:
        """Fast shutdown (SIGINT): connections are dropped, as when a server goes down."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def create_database(self, name: str) -> str:
        """A new empty database owned by our role; its URL."""
        psql = [str(postgres_bin() / "psql"), "-q", "-h", "127.0.0.1", "-p", str(self.port)]
        statement = f'CREATE DATABASE "{name}"'
        subprocess.run(
            [*psql, "-U", ROLE, "-d", "postgres", "-c", statement], check=True, capture_output=True
        )
        self.databases.append(name)
        return self.dsn(name)


def _initdb(directory: Path, user: pwd.struct_passwd | None) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    if user is not None:
        os.chown(directory, user.pw_uid, user.pw_gid)
    argv = [
        str(postgres_bin() / "initdb"),
        "-D",
        str(directory / "data"),
        "-U",
        ROLE,
        "--auth=trust",
        "--encoding=UTF8",
        "--locale=C",
        "--no-sync",
    ]
    result = subprocess.run(_as_user(user, argv), capture_output=True, check=False)
    if result.returncode != 0:
        raise StartupError(f"initdb failed: {result.stderr.decode(errors='replace')}")


@contextlib.contextmanager
def start_postgres(fsync: bool = False, timeout: float = 60.0) -> Iterator[PostgresServer]:
    """A private server for the duration of the block; its files are removed after."""
    user = _server_user()
    top = Path(tempfile.mkdtemp(prefix="contentfilter-pg-"))
    top.chmod(0o755)  # the server user must reach its directory
    server = PostgresServer(top / "cluster", free_port(), user, fsync)
    try:
        _initdb(server.directory, user)
        server.start(timeout)
        yield server
    finally:
        server.stop()
        shutil.rmtree(top, ignore_errors=True)
