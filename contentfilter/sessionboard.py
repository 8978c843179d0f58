"""What every worker process holds, in shared memory: its SMTP sessions (for the
session limit) and its connections (for spreading new ones evenly).

`server.max_sessions` is a limit for the whole filter, not per worker. Each worker
owns one slot of a small shared array (an anonymous memfd the supervisor creates
and hands to every worker) and writes its own count there; a worker admits a new
session while the sum of all slots is below the limit. Nobody writes another's
slot, so no lock is needed: two workers admitting at the same instant can pass the
limit by at most the number of workers minus one, for the length of a session.

Beside the session counts, each slot has the number of connections the worker
holds (from accept to close) and whether it is taking new connections now; a
worker takes a new one only while it holds no more than its share
(contentfilter.acceptor). The supervisor clears a slot when its worker starts and
when it has exited.
"""

from __future__ import annotations

import mmap
import os

SLOTS = 256  # more than workers ever run at once, old and new during reloads
_WIDTH = 8  # bytes per count (signed 64-bit)
_SESSIONS, _HELD, _ACCEPTING = 0, 1, 2  # the arrays, one count per slot each
_ARRAYS = 3


class SessionBoard:
    """One count per worker slot; `total` is what the session limit is checked against."""

    def __init__(self, fd: int | None = None) -> None:
        if fd is None:
            fd = os.memfd_create("contentfilter-sessions")  # close-on-exec: pass_fds hands it on
            os.ftruncate(fd, _ARRAYS * SLOTS * _WIDTH)
        self.fd = fd
        self._memory = mmap.mmap(fd, _ARRAYS * SLOTS * _WIDTH)
        counts = memoryview(self._memory).cast("q")
        self._counts = counts[_SESSIONS * SLOTS : (_SESSIONS + 1) * SLOTS]
        self._held = counts[_HELD * SLOTS : (_HELD + 1) * SLOTS]
        self._accepting = counts[_ACCEPTING * SLOTS : (_ACCEPTING + 1) * SLOTS]

    def total(self) -> int:
        return sum(self._counts)

    def set(self, slot: int, count: int) -> None:
        self._counts[slot] = count

    def get(self, slot: int) -> int:
        return int(self._counts[slot])

    def clear(self, slot: int) -> None:
        """A slot whose worker is starting or has exited: nothing held, not accepting."""
        self._counts[slot] = self._held[slot] = self._accepting[slot] = 0

    def hold(self, slot: int, connections: int) -> None:
        self._held[slot] = connections

    def accepting(self, slot: int, taking: bool) -> None:
        self._accepting[slot] = int(taking)

    def share(self) -> tuple[int, int]:
        """The connections held by the workers taking new ones, and how many those are."""
        held = workers = 0
        for slot, taking in enumerate(self._accepting):
            if taking:
                held += self._held[slot]
                workers += 1
        return held, workers

    def within_share(self, slot: int) -> bool:
        """True when the worker in `slot` holds no more connections than the average of
        the workers taking new ones (itself included)."""
        held, workers = self.share()
        return self._held[slot] * max(workers, 1) <= held
