"""Taking connections off listening sockets that several worker processes share.

asyncio's own server accepts up to its backlog of connections per wake-up, so the
worker that wakes first takes every connection waiting; since a client keeps its
session for many messages (Postfix's connection cache, `max_use`), one worker would
end up with most of the sessions. An `Acceptor` takes one connection per wake-up,
and none while its worker holds more connections than the average of the workers
taking new ones (the shared board, contentfilter.sessionboard): those wait in the
kernel's queue for a sibling.

A worker that holds back stops watching the sockets for `PAUSE` seconds, so it never
spins on a socket it will not accept from, then looks again. A sibling that does
not take the waiting connections (it is busy for a while, stopped, or has just
died) never leaves them waiting long: once connections have been waiting through
`PATIENCE` seconds of looks, the worker takes them after all, one per wake-up,
until the queue is empty.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import select
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from contentfilter.sessionboard import SessionBoard

log = logging.getLogger("contentfilter.server")

PAUSE = 0.005  # seconds a worker over its share does not watch the sockets
# seconds connections may wait for a sibling before we take them anyway: long enough
# for a sibling on a busy machine to get the CPU once, short for an SMTP client
PATIENCE = 0.5
RESOURCE_PAUSE = 1.0  # seconds without accepting after EMFILE and kin (as asyncio does)
_OUT_OF_RESOURCES = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


class EndingProtocol(Protocol):
    """A protocol that says when its connection is gone."""

    ended: asyncio.Event


@dataclass(frozen=True)
class Listening:
    """One shared listening socket and the protocol factory for its connections."""

    sock: socket.socket
    factory: Callable[[], asyncio.BaseProtocol]


class Acceptor:
    """Takes connections off `sockets` for one worker; `board` and `slot` say what
    every worker holds (None: this process is alone, it takes every connection)."""

    def __init__(
        self, sockets: Sequence[Listening], board: SessionBoard | None = None, slot: int = 0
    ) -> None:
        self.sockets = tuple(sockets)
        self.board = board
        self.slot = slot
        self.held = 0  # connections accepted and not yet closed
        self.taking = False  # started and not stopped
        self.watching = False  # the sockets are in the event loop's selector
        self._connecting: set[asyncio.Task[None]] = set()  # accepted, transport not made yet
        self._sessions: set[asyncio.Task[None]] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._waiting_since: float | None = None  # connections we left to siblings since
        self._poll = select.poll()
        for listening in self.sockets:
            listening.sock.setblocking(False)
            self._poll.register(listening.sock.fileno(), select.POLLIN)

    def start(self) -> None:
        self.taking = True
        if self.board is not None:
            self.board.hold(self.slot, self.held)
            self.board.accepting(self.slot, True)
        self._watch()

    async def stop(self) -> None:
        """Take no more connections and let go of the sockets (the last process to
        close a listener ends it); return once every connection taken has its
        transport and protocol (a session that will be served)."""
        self.taking = False
        self._unwatch()
        self._cancel_timer()
        if self.board is not None:
            self.board.accepting(self.slot, False)
        for listening in self.sockets:
            if listening.sock.fileno() >= 0:
                self._poll.unregister(listening.sock.fileno())
                listening.sock.close()
        if self._connecting:
            await asyncio.wait(list(self._connecting))

    # --- the decision -----------------------------------------------------------

    def _ready(self, listening: Listening) -> None:
        """A socket is readable: take one connection, or hold back for `PAUSE`."""
        if self.board is None or self.board.within_share(self.slot):
            self._waiting_since = None
            self._take(listening)
            return
        now = asyncio.get_running_loop().time()
        if self._waiting_since is None:
            self._waiting_since = now
        elif now - self._waiting_since >= PATIENCE:  # nobody else takes them
            self._take(listening)
            if not self._poll.poll(0):
                self._waiting_since = None  # the queue is empty: patience again
            return
        self._unwatch()
        self._schedule(PAUSE, self._look)

    def _look(self) -> None:
        """Watch the sockets again; connections still waiting keep the patience
        running, an empty queue (a sibling took them) starts it anew."""
        self._timer = None
        if not self._poll.poll(0):
            self._waiting_since = None
        self._watch()

    # --- accepting --------------------------------------------------------------

    def _take(self, listening: Listening) -> bool:
        """Accept one connection; False when none was waiting."""
        try:
            conn, _ = listening.sock.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return False  # a sibling was faster, or the client gave up
        except OSError as error:
            if error.errno not in _OUT_OF_RESOURCES:
                raise
            log.error("cannot accept connections for %gs: %s", RESOURCE_PAUSE, error)
            self._unwatch()
            self._schedule(RESOURCE_PAUSE, self._look)
            return False
        conn.setblocking(False)
        self._count(+1)
        task = asyncio.get_running_loop().create_task(self._serve(conn, listening))
        self._connecting.add(task)
        task.add_done_callback(self._connecting.discard)
        return True

    async def _serve(self, conn: socket.socket, listening: Listening) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, protocol = await loop.connect_accepted_socket(listening.factory, conn)
        except OSError as error:
            conn.close()
            log.info("connection lost before its session began: %s", error)
            self._count(-1)
            return
        session = loop.create_task(self._until_closed(protocol))  # type: ignore[arg-type]
        self._sessions.add(session)
        session.add_done_callback(self._sessions.discard)

    async def _until_closed(self, protocol: EndingProtocol) -> None:
        try:
            await protocol.ended.wait()
        finally:
            self._count(-1)

    def _count(self, change: int) -> None:
        self.held += change
        if self.board is not None:
            self.board.hold(self.slot, self.held)

    # --- the event loop ---------------------------------------------------------

    def _watch(self) -> None:
        if self.watching or not self.taking:
            return
        loop = asyncio.get_running_loop()
        for listening in self.sockets:
            loop.add_reader(listening.sock.fileno(), self._ready, listening)
        self.watching = True

    def _unwatch(self) -> None:
        if not self.watching:
            return
        loop = asyncio.get_running_loop()
        for listening in self.sockets:
            loop.remove_reader(listening.sock.fileno())
        self.watching = False

    def _schedule(self, delay: float, callback: Callable[[], None]) -> None:
        self._cancel_timer()
        self._timer = asyncio.get_running_loop().call_later(delay, callback)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
