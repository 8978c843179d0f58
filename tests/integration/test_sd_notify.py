"""`contentfilter serve` under a Type=notify unit: the datagrams systemd would get.

The test plays systemd's part: it binds the AF_UNIX datagram socket, starts the
real daemon with NOTIFY_SOCKET (and WATCHDOG_USEC) pointing at it, and reads what
arrives.
"""

from __future__ import annotations

import os
import secrets
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.client import send
from tests.support.daemons import FilterFactory
from tests.support.messages import clean
from tests.support.sink import CaptureSink


class NotifySocket:
    """systemd's end of $NOTIFY_SOCKET: every datagram, as a dict of its fields."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        bound = b"\0" + address[1:].encode() if address.startswith("@") else address
        self.socket.bind(bound)
        self.socket.settimeout(60)  # a deadline for a datagram that never comes

    def next(self) -> dict[str, str]:
        data = self.socket.recv(4096).decode()
        return dict(line.split("=", 1) for line in data.split("\n"))

    def until(self, field: str) -> list[dict[str, str]]:
        """The datagrams up to and including the first that carries `field`."""
        seen = [self.next()]
        while field not in seen[-1]:
            seen.append(self.next())
        return seen


@pytest.fixture(params=["abstract", "path"])
def notify_socket(request: pytest.FixtureRequest) -> Iterator[NotifySocket]:
    if request.param == "abstract":
        receiver = NotifySocket(f"@contentfilter-test-{secrets.token_hex(8)}")
        yield receiver
        receiver.socket.close()
        return
    directory = tempfile.mkdtemp(prefix="cf-notify-")  # short: sun_path holds 108 bytes
    receiver = NotifySocket(os.path.join(directory, "notify"))
    yield receiver
    receiver.socket.close()
    Path(receiver.address).unlink()
    os.rmdir(directory)


def test_ready_once_mail_is_accepted_watchdog_pings_stopping_on_sigterm(
    filter_factory: FilterFactory, sink: CaptureSink, notify_socket: NotifySocket
) -> None:
    process = filter_factory(
        environment={"NOTIFY_SOCKET": notify_socket.address, "WATCHDOG_USEC": "200000"}
    )
    [ready] = notify_socket.until("READY")
    assert ready["READY"] == "1"
    assert ready["STATUS"].startswith("accepting mail; next hop ")
    replies = send(process.address, clean(), "alice@sender.example", ["bob@example.com"])
    assert replies.data.startswith("250 2.0.0 Ok, id="), replies
    pings = [notify_socket.next() for _ in range(3)]
    assert pings == [{"WATCHDOG": "1"}] * 3
    assert process.stop() == 0
    stopping = notify_socket.until("STOPPING")[-1]
    assert stopping == {"STOPPING": "1", "STATUS": "finishing messages in progress"}
    assert len(sink.wait_for(1)) == 1


def test_no_watchdog_ping_comes_before_ready_when_workers_start_slowly(
    filter_factory: FilterFactory, notify_socket: NotifySocket, tmp_path: Path
) -> None:
    """systemd arms the watchdog with READY=1; workers that take longer to start than
    the supervisor's tick (1 s), as on a loaded machine, must not make it ping first."""
    slow_start = tmp_path / "slow-start"
    slow_start.mkdir()
    # every worker and decoder process (`python -m ...`) sleeps before it starts
    (slow_start / "sitecustomize.py").write_text(
        "import sys, time\nif sys.argv[:1] == ['-m']:\n    time.sleep(2.5)\n"
    )
    process = filter_factory(
        environment={
            "NOTIFY_SOCKET": notify_socket.address,
            "WATCHDOG_USEC": "200000",
            "PYTHONPATH": str(slow_start),
        }
    )
    [ready] = notify_socket.until("READY")
    assert ready["READY"] == "1"
    assert notify_socket.next() == {"WATCHDOG": "1"}
    assert process.stop() == 0


def test_no_watchdog_pings_when_the_watchdog_is_meant_for_another_process(
    filter_factory: FilterFactory, notify_socket: NotifySocket
) -> None:
    process = filter_factory(
        environment={
            "NOTIFY_SOCKET": notify_socket.address,
            "WATCHDOG_USEC": "200000",
            "WATCHDOG_PID": "1",  # the parent's, as a child that inherited them sees it
        }
    )
    assert "READY" in notify_socket.next()
    assert process.stop() == 0
    assert "STOPPING" in notify_socket.next()  # nothing in between: no WATCHDOG=1


def test_without_notify_socket_serve_runs_as_before(
    filter_factory: FilterFactory, sink: CaptureSink
) -> None:
    process = filter_factory(environment={"NOTIFY_SOCKET": "", "WATCHDOG_USEC": "200000"})
    replies = send(process.address, clean(), "alice@sender.example", ["bob@example.com"])
    assert replies.data.startswith("250 2.0.0 Ok, id="), replies
    assert process.stop() == 0
    assert "cannot notify systemd" not in process.log_text()
