"""Sockets for tests: free ports, waiting for a server, servers that misbehave."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def closed_port() -> int:
    """A loopback port where connections are refused (for 'daemon down' tests)."""
    return free_port()


class StartupError(RuntimeError):
    """A daemon did not come up; the message carries the tail of its log."""


def tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


def wait_until(
    ready: Callable[[], bool],
    what: str,
    timeout: float,
    process: subprocess.Popen[bytes] | None = None,
    log: Path | None = None,
) -> None:
    """Poll `ready` until it returns True; fail loudly with the daemon's log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise StartupError(
                f"{what} exited with status {process.returncode}\n" + (tail(log) if log else "")
            )
        try:
            if ready():
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise StartupError(f"{what} not ready after {timeout}s\n" + (tail(log) if log else ""))


def read_reply(sock: socket.socket) -> bytes:
    """Read one complete (possibly multi-line) SMTP reply."""
    data = b""
    while True:
        chunk = sock.recv(4096)
        if not chunk:
            return data
        data += chunk
        lines = data.split(b"\r\n")
        complete = lines[:-1]
        if complete and len(complete[-1]) >= 4 and complete[-1][3:4] == b" ":
            return data


def smtp_greeting(host: str, port: int, timeout: float = 2.0) -> bytes:
    """The first reply of an SMTP server (b"" if it closed without one)."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        return read_reply(sock)


class _ThreadedServer:
    """A TCP server on a free loopback port that runs `serve(conn)` per client."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        self.connections = 0
        self._clients: list[socket.socket] = []
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> _ThreadedServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            self._clients.append(conn)
            threading.Thread(target=self._serve_safely, args=(conn,), daemon=True).start()

    def _serve_safely(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError):
            self.serve(conn)

    def serve(self, conn: socket.socket) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        self._stopped.set()
        self._listener.close()
        for conn in self._clients:
            with contextlib.suppress(OSError):
                conn.close()


class HangingServer(_ThreadedServer):
    """Accepts TCP connections, reads whatever comes, never answers."""

    def serve(self, conn: socket.socket) -> None:
        while not self._stopped.is_set():
            if not conn.recv(65536):
                return


class GarbageServer(_ThreadedServer):
    """Answers every read with bytes that no protocol expects, then closes."""

    def __init__(self, garbage: bytes = b"\x00\xff?!GARBAGE 999 nonsense\r\n") -> None:
        super().__init__()
        self.garbage = garbage

    def serve(self, conn: socket.socket) -> None:
        conn.settimeout(5)
        with contextlib.suppress(TimeoutError):
            conn.recv(65536)
        conn.sendall(self.garbage)
        conn.close()


def stop_process(process: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    """SIGTERM, wait, SIGKILL if it does not go."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout)


def stop_group(process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """SIGTERM to the process group of a daemon started with start_new_session (amavisd,
    fuglu: they fork helpers), wait, SIGKILL the group if it does not go."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


@dataclass
class SmtpDaemon:
    """A daemon started by `smtp_daemon`, listening on 127.0.0.1:`port`."""

    port: int
    process: subprocess.Popen[bytes]

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid


@contextlib.contextmanager
def smtp_daemon(
    name: str,
    argv: Sequence[str],
    port: int,
    log: Path,
    timeout: float,
    *,
    cwd: Path | None = None,
    forks: bool = False,
) -> Iterator[SmtpDaemon]:
    """Run `argv` in a session of its own (output in `log`) until the block ends, from
    when it greets with 220 on 127.0.0.1:`port`; a daemon that `forks` helpers is
    stopped with its whole group."""
    with open(log, "wb") as output:
        process = subprocess.Popen(
            list(argv), stdout=output, stderr=output, cwd=cwd, start_new_session=True
        )
    try:
        wait_until(
            lambda: smtp_greeting("127.0.0.1", port).startswith(b"220"), name, timeout, process, log
        )
        yield SmtpDaemon(port, process)
    finally:
        (stop_group if forks else stop_process)(process)
