"""systemd's readiness protocol (sd_notify(3)) in its few lines, and the watchdog.

Under a `Type=notify` unit systemd passes `$NOTIFY_SOCKET`, an AF_UNIX datagram
socket (a path, or an abstract name written with a leading `@`); each datagram is
newline-separated `KEY=VALUE` fields: `READY=1` once the listeners accept mail,
`RELOADING=1` (with `MONOTONIC_USEC`) while a reload is in progress, `STOPPING=1`
when the drain starts, `STATUS=...` for `systemctl status`, and `WATCHDOG=1` at
least every `$WATCHDOG_USEC` (`WatchdogSec=`), else systemd kills the service and
`Restart=on-failure` starts it again. Without those variables (the foreground, the
tests, scripts/setup without systemd) every call does nothing.

The watchdog is pinged by a task of the event loop itself, at half the interval:
a loop that is stuck (a blocking call, a busy loop) stops the pings, which is the
failure systemd is to notice.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Mapping

log = logging.getLogger("contentfilter")


class Notifier:
    """Sends state changes to systemd's notification socket; a no-op without one."""

    def __init__(self, address: str | None, watchdog_interval: float | None = None) -> None:
        self.address = address
        self.watchdog_interval = watchdog_interval  # seconds between two pings
        self._socket: socket.socket | None = None
        self._failed = False
        self._last_ping = -float("inf")

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        """The notifier systemd's variables ask for (`NOTIFY_SOCKET`, `WATCHDOG_USEC`)."""
        environ = os.environ if environ is None else environ
        address = environ.get("NOTIFY_SOCKET") or None
        return cls(address, watchdog_interval(environ))

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *fields: str) -> bool:
        """One datagram of `KEY=VALUE` fields; False if there is no socket or it failed.

        A failure is logged once and never raised: systemd's bookkeeping must not
        cost a message.
        """
        if self.address is None:
            return False
        try:
            if self._socket is None:
                self._socket = socket.socket(
                    socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC
                )
            self._socket.sendto("\n".join(fields).encode("utf-8"), socket_address(self.address))
        except OSError as error:
            if not self._failed:
                log.warning("cannot notify systemd at %s: %s", self.address, error)
            self._failed = True
            return False
        return True

    def ready(self, status: str = "") -> bool:
        """The service accepts mail (also the end of a reload)."""
        return self.send("READY=1", *_status(status))

    def reloading(self, status: str = "") -> bool:
        """A reload started; `ready()` ends it. MONOTONIC_USEC tells systemd (253 and
        later) which reload request this answers."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.send("RELOADING=1", f"MONOTONIC_USEC={usec}", *_status(status))

    def stopping(self, status: str = "") -> bool:
        """The service stops accepting and drains."""
        return self.send("STOPPING=1", *_status(status))

    def status(self, text: str) -> bool:
        """A one-line status for `systemctl status`."""
        return self.send(*_status(text))

    def watchdog(self) -> bool:
        self._last_ping = time.monotonic()
        return self.send("WATCHDOG=1")

    def tick(self) -> None:
        """For a loop that is not asyncio's (call it on every turn): ping the watchdog
        when half its interval has passed since the last ping."""
        if self.address is None or self.watchdog_interval is None:
            return
        if time.monotonic() - self._last_ping >= self.watchdog_interval:
            self.watchdog()

    def state(self, word: str) -> bool:
        """`READY=1`, `RELOADING=1` or `STOPPING=1` as a word, sent as the method for it
        sends it (RELOADING=1 with MONOTONIC_USEC)."""
        sender = {"READY=1": self.ready, "RELOADING=1": self.reloading}
        return sender.get(word, lambda: self.send(word))()

    async def keep_watchdog(self) -> None:
        """Ping the watchdog from the event loop until cancelled; returns at once
        when systemd asked for no watchdog."""
        if self.address is None or self.watchdog_interval is None:
            return
        while True:
            self.watchdog()
            await asyncio.sleep(self.watchdog_interval)

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def socket_address(address: str) -> str | bytes:
    """`$NOTIFY_SOCKET` as a socket address: `@name` is the abstract name `\\0name`."""
    if address.startswith("@"):
        return b"\0" + address[1:].encode("utf-8")
    return address


def watchdog_interval(environ: Mapping[str, str]) -> float | None:
    """Half of `$WATCHDOG_USEC` in seconds, or None when there is no watchdog for us.

    `$WATCHDOG_PID`, when set, names the process the watchdog is meant for: a child
    that inherited the variables must not ping for its parent (sd_watchdog_enabled(3)).
    """
    try:
        usec = int(environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    pid = environ.get("WATCHDOG_PID")
    if usec <= 0 or (pid is not None and pid != str(os.getpid())):
        return None
    return usec / 2 / 1_000_000


def _status(text: str) -> tuple[str, ...]:
    line = " ".join(text.split())  # one line: a newline would start a new field
    return (f"STATUS={line}",) if line else ()
