"""Real daemons for integration tests and benchmarks: clamd, spamd, Postfix, the filter.

Each `start_*` is a context manager that starts a private instance on free
loopback ports under `workdir`, waits until it answers, yields a handle and stops
it afterwards. None of them touches the system's daemons or configuration. A
daemon that does not come up raises `StartupError` with the tail of its log.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from tests.support.messages import EICAR
from tests.support.net import (
    GarbageServer,
    HangingServer,
    StartupError,
    closed_port,
    free_port,
    smtp_greeting,
    stop_process,
    wait_until,
)
from tests.support.postfix import Postfix, start_postfix
from tests.support.sink import CaptureSink

__all__ = [
    "CaptureSink",
    "Clamd",
    "FilterFactory",
    "FilterProcess",
    "GarbageServer",
    "HangingServer",
    "Postfix",
    "PostfixStack",
    "Spamd",
    "StartupError",
    "closed_port",
    "free_port",
    "start_clamd",
    "start_filter",
    "start_postfix",
    "start_spamd",
    "write_test_signatures",
]

CLAMAV_TEST_FILE = Path("/usr/share/clamav-testfiles/clam.exe")


def _require(program: str) -> str:
    path = shutil.which(program, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    if path is None:
        raise StartupError(f"{program} not found: run scripts/install-deps")
    return path


# --- clamd -------------------------------------------------------------------------


def write_test_signatures(database: Path) -> None:
    """The offline signature DB of REFERENCE.md: EICAR (.ndb) + clam.exe (.hdb)."""
    database.mkdir(parents=True, exist_ok=True)
    (database / "test-eicar.ndb").write_text(f"Eicar-Test-Signature:0:*:{EICAR.hex()}\n")
    digest = subprocess.run(
        [_require("sigtool"), "--md5", str(CLAMAV_TEST_FILE)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    md5, size, _name = digest.split(":", 2)
    (database / "test-clam-exe.hdb").write_text(f"{md5}:{size}:ClamAV-Test-File\n")


@dataclass
class Clamd:
    """A private clamd: `address` is its TCP endpoint, `socket_path` its Unix socket."""

    address: str
    port: int
    socket_path: Path
    log_path: Path
    process: subprocess.Popen[bytes]

    def ping(self) -> bool:
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
            sock.sendall(b"zPING\0")
            return sock.recv(64) == b"PONG\0"


@contextlib.contextmanager
def start_clamd(workdir: Path, timeout: float = 120.0) -> Iterator[Clamd]:
    """clamd in the foreground with the test signatures, TCP + Unix socket."""
    workdir.mkdir(parents=True, exist_ok=True)
    database = workdir / "db"
    write_test_signatures(database)
    (workdir / "tmp").mkdir(exist_ok=True)
    port = free_port()
    socket_path = workdir / "clamd.sock"
    log_path = workdir / "clamd.log"
    conf = workdir / "clamd.conf"
    conf.write_text(
        "\n".join(
            [
                "Foreground yes",
                f"LocalSocket {socket_path}",
                "LocalSocketMode 666",
                "FixStaleSocket yes",
                f"TCPSocket {port}",
                "TCPAddr 127.0.0.1",
                f"DatabaseDirectory {database}",
                f"TemporaryDirectory {workdir / 'tmp'}",
                f"LogFile {log_path}",
                "LogTime yes",
                f"PidFile {workdir / 'clamd.pid'}",
                "MaxThreads 10",
                "SelfCheck 0",
                "ConcurrentDatabaseReload no",
                "StreamMaxLength 60M",
                "MaxRecursion 30",
                # Running as root: no User line, so clamd does not try to switch.
                "",
            ]
        )
    )
    with open(workdir / "clamd.stderr", "wb") as stderr:
        process = subprocess.Popen(
            [_require("clamd"), "-c", str(conf)],
            stdout=stderr,
            stderr=stderr,
            start_new_session=True,
        )
    clamd = Clamd(f"127.0.0.1:{port}", port, socket_path, log_path, process)
    try:
        wait_until(clamd.ping, "clamd", timeout, process, workdir / "clamd.stderr")
        yield clamd
    finally:
        stop_process(process)


# --- spamd -------------------------------------------------------------------------


@dataclass
class Spamd:
    """A private `spamd -L` (local tests only): `address` is "127.0.0.1:PORT"."""

    address: str
    port: int
    log_path: Path
    process: subprocess.Popen[bytes]

    def ping(self) -> bool:
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
            sock.sendall(b"PING SPAMC/1.5\r\n\r\n")
            return b"PONG" in sock.recv(256)


@contextlib.contextmanager
def start_spamd(workdir: Path, timeout: float = 120.0) -> Iterator[Spamd]:
    """spamd in the foreground, no network tests, children run as nobody."""
    workdir.mkdir(parents=True, exist_ok=True)
    home = workdir / "home"
    home.mkdir(exist_ok=True)
    shutil.chown(home, "nobody", "nogroup")
    port = free_port()
    log_path = workdir / "spamd.log"
    command = [
        _require("spamd"),
        "--local",
        "--nouser-config",
        "--username=nobody",
        "--listen=127.0.0.1",
        f"--port={port}",
        "--allowed-ips=127.0.0.1",
        f"--pidfile={workdir / 'spamd.pid'}",
        f"--syslog={log_path}",
        f"--helper-home-dir={home}",
        "--max-children=3",
        "--min-children=1",
    ]
    with open(workdir / "spamd.stderr", "wb") as stderr:
        process = subprocess.Popen(
            command, stdout=stderr, stderr=stderr, start_new_session=True, cwd=home
        )
    spamd = Spamd(f"127.0.0.1:{port}", port, log_path, process)
    try:
        wait_until(spamd.ping, "spamd", timeout, process, log_path)
        yield spamd
    finally:
        stop_process(process)


# --- the filter ---------------------------------------------------------------------


def children(parent: int, command: bytes = b"") -> list[int]:
    """The PIDs of `parent`'s child processes whose command line holds `command`, from /proc."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if int(stat.rpartition(")")[2].split()[1]) == parent and command in cmdline:
            pids.append(int(entry.name))
    return sorted(pids)


def filter_command() -> list[str]:
    """The console script of the venv running the tests (or on PATH)."""
    script = Path(sys.prefix) / "bin" / "contentfilter"
    if script.exists():
        return [str(script)]
    return [_require("contentfilter")]


@dataclass
class FilterProcess:
    """A running `contentfilter serve`; `address` is the SMTP listener."""

    host: str
    port: int
    process: subprocess.Popen[bytes]
    stderr_path: Path
    argv: list[str] = field(default_factory=list)
    quarantine_directory: Path | None = None  # its private SQLite quarantine, if it has one

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def log_text(self) -> str:
        """Everything the filter wrote to stderr so far (its log)."""
        return self.stderr_path.read_text(errors="replace")

    @property
    def config(self) -> Path:
        """Its config file (`-c`)."""
        return Path(self.argv[self.argv.index("-c") + 1])

    def write_config(self, text: str) -> None:
        """Replace its config file (for a reload), its quarantine still the private one."""
        if self.quarantine_directory is not None:
            text, _ = private_quarantine(text, self.quarantine_directory)
        self.config.write_text(text)

    def stop(self) -> int:
        """SIGTERM and wait; the exit status."""
        stop_process(self.process)
        return self.process.returncode


def start_filter(
    workdir: Path,
    *,
    next_hop: str,
    clamd: str | None = None,
    spamd: str | None = None,
    config_text: str | None = None,
    extra_args: Sequence[str] = (),
    port: int | None = None,
    timeout: float = 30.0,
    environment: dict[str, str] | None = None,
    as_root: bool = True,
    wrapper: Sequence[str] = (),
    listen_flag: bool = True,
) -> FilterProcess:
    """Start `contentfilter serve` and wait until it answers; the caller stops it.

    "Answers" means any SMTP greeting: a filter that refuses our address (554 at
    connect, `server.allowed_clients`) is up too. Its stderr (the log) is kept in
    `workdir/filter-PORT.log`. `environment` adds variables (NOTIFY_SOCKET ...).

    The suite runs as root: the filter keeps root (`--allow-root`, so it reads the
    test's private files) unless `as_root` is False, and gets its own temp directory
    (`workdir/tmp-PORT`; serve empties it at start) unless the test chose one.
    `wrapper` is a command that runs the filter's command line given to it.
    Without `listen_flag` the listeners are the config file's (which must include
    127.0.0.1:`port`).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    argv = [
        *filter_command(),
        "serve",
        *(["--listen", f"127.0.0.1:{port}"] if listen_flag else []),
        "--next-hop",
        next_hop,
    ]
    for flag, value in (("--clamd", clamd), ("--spamd", spamd)):
        if value is not None:
            argv += [flag, value]
    config_text, quarantine = private_quarantine(config_text, workdir / f"quarantine-{port}")
    config = workdir / f"contentfilter-{port}.yaml"
    config.write_text(config_text)
    argv += ["-c", str(config)]
    argv += list(extra_args)
    if as_root and os.geteuid() == 0 and "--allow-root" not in argv:
        argv.append("--allow-root")
    if "temp_directory" not in (config_text or "") and "--temp-directory" not in argv:
        argv += ["--temp-directory", str(workdir / f"tmp-{port}")]
    if "--metrics" not in argv:  # many filters run at once: no shared default port
        argv += ["--metrics", "off"]
    if "--workers" not in argv:  # one worker (behind the supervisor): per-worker caches
        argv += ["--workers", "1"]  # and counts stay predictable
    stderr_path = workdir / f"filter-{port}.log"
    variables = dict(os.environ, PYTHONUNBUFFERED="1", **(environment or {}))
    with open(stderr_path, "ab") as stderr:  # a restart on the same port adds to it
        process = subprocess.Popen(
            [*wrapper, *argv], stdout=stderr, stderr=stderr, env=variables, start_new_session=True
        )
    handle = FilterProcess("127.0.0.1", port, process, stderr_path, argv, quarantine)

    def greets() -> bool:
        if "contentfilter ready" not in handle.log_text():  # all workers up
            return False
        return re.match(rb"[2-5]\d\d[ -]", smtp_greeting("127.0.0.1", port)) is not None

    try:
        wait_until(greets, "contentfilter " + " ".join(argv[1:]), timeout, process, stderr_path)
    except BaseException:
        handle.stop()
        raise
    return handle


def private_quarantine(config_text: str | None, directory: Path) -> tuple[str, Path | None]:
    """The config with its quarantine in `directory` when it names no store, so no test
    filter ever writes to the system's /var/lib/contentfilter/quarantine. A text that
    is not a YAML mapping is left as it is (the filter refuses it anyway)."""
    try:
        document = yaml.safe_load(config_text or "") or {}
    except yaml.YAMLError:
        return config_text or "", None
    if not isinstance(document, dict):
        return config_text or "", None
    section = document.setdefault("quarantine", {})
    if not isinstance(section, dict) or "directory" in section or "database" in section:
        return config_text or "", None
    section["directory"] = str(directory)
    return yaml.safe_dump(document, sort_keys=False), directory


class FilterFactory:
    """Starts `contentfilter serve` processes; all are stopped at teardown.

    `clamd`/`spamd`: an address, "off", or None to leave the flag out (the config
    file or the built-in default decides). `next_hop` defaults to the test's sink.
    """

    def __init__(self, workdir: Path, default_next_hop: str) -> None:
        self.workdir = workdir
        self.default_next_hop = default_next_hop
        self.started: list[FilterProcess] = []

    def __call__(
        self,
        *,
        next_hop: str | None = None,
        clamd: str | None = "off",
        spamd: str | None = "off",
        config_text: str | None = None,
        extra_args: Sequence[str] = (),
        port: int | None = None,
        environment: dict[str, str] | None = None,
        as_root: bool = True,
        wrapper: Sequence[str] = (),
        listen_flag: bool = True,
    ) -> FilterProcess:
        process = start_filter(
            self.workdir,
            next_hop=next_hop or self.default_next_hop,
            clamd=clamd,
            spamd=spamd,
            config_text=config_text,
            extra_args=extra_args,
            port=port,
            environment=environment,
            as_root=as_root,
            wrapper=wrapper,
            listen_flag=listen_flag,
        )
        self.started.append(process)
        return process

    def stop_all(self) -> None:
        for process in self.started:
            process.stop()
            # pytest shows captured output only for failing tests: the filter's log.
            print(f"--- filter log ({' '.join(process.argv[1:])}) ---")
            print(process.log_text())


@dataclass
class PostfixStack:
    """Postfix -> filter (real clamd, spamd) -> Postfix -> sink, all private."""

    postfix: Postfix
    filter: FilterProcess
    sink: CaptureSink
