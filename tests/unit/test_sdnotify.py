"""The sd_notify datagrams, read from a real AF_UNIX datagram socket."""

from __future__ import annotations

import os
import secrets
import socket
import time
from collections.abc import Iterator

import pytest

from contentfilter import sdnotify


@pytest.fixture
def receiver() -> Iterator[tuple[socket.socket, str]]:
    name = f"@contentfilter-unit-{secrets.token_hex(8)}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + name[1:].encode())
    sock.settimeout(10)
    yield sock, name
    sock.close()


def fields(sock: socket.socket) -> list[str]:
    return sock.recv(4096).decode().split("\n")


def test_ready_reloading_stopping_and_status_datagrams(
    receiver: tuple[socket.socket, str],
) -> None:
    sock, name = receiver
    notifier = sdnotify.Notifier.from_environment({"NOTIFY_SOCKET": name})
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert notifier.reloading("reading the\nconfiguration")
    reloading, usec, status = fields(sock)
    assert reloading == "RELOADING=1"
    assert usec.startswith("MONOTONIC_USEC=") and int(usec.split("=")[1]) >= before
    assert status == "STATUS=reading the configuration"  # one line: no field injection
    assert notifier.ready()
    assert fields(sock) == ["READY=1"]
    assert notifier.stopping("draining")
    assert fields(sock) == ["STOPPING=1", "STATUS=draining"]
    notifier.close()


def test_without_notify_socket_nothing_is_sent() -> None:
    notifier = sdnotify.Notifier.from_environment({})
    assert not notifier.enabled
    assert not notifier.ready()


def test_a_socket_that_is_gone_costs_a_warning_not_an_exception(
    caplog: pytest.LogCaptureFixture,
) -> None:
    notifier = sdnotify.Notifier(f"@contentfilter-nobody-listens-{secrets.token_hex(8)}")
    assert not notifier.ready()
    assert not notifier.watchdog()
    assert len([r for r in caplog.records if "cannot notify" in r.message]) == 1


@pytest.mark.parametrize(
    ("environ", "interval"),
    [
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval_is_half_of_watchdog_usec_for_this_process(
    environ: dict[str, str], interval: float | None
) -> None:
    assert sdnotify.watchdog_interval(environ) == interval


def test_abstract_names_start_with_a_nul_byte() -> None:
    assert sdnotify.socket_address("@name") == b"\0name"
    assert sdnotify.socket_address("/run/systemd/notify") == "/run/systemd/notify"


def test_tick_pings_only_when_half_the_interval_has_passed(
    receiver: tuple[socket.socket, str],
) -> None:
    sock, name = receiver
    notifier = sdnotify.Notifier(name, watchdog_interval=3600.0)
    notifier.tick()  # the first turn pings
    notifier.tick()  # the next ones, within the hour, do not
    assert notifier.state("RELOADING=1")
    assert fields(sock) == ["WATCHDOG=1"]
    assert fields(sock)[0] == "RELOADING=1"  # nothing in between
    notifier.close()
