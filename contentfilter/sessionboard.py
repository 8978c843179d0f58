"""The SMTP sessions open in all worker processes together, in shared memory.

`server.max_sessions` is a limit for the whole filter, not per worker. Each worker
owns one slot of a small shared array (an anonymous memfd the supervisor creates
and hands to every worker) and writes its own count there; a worker admits a new
session while the sum of all slots is below the limit. Nobody writes another's
slot, so no lock is needed: two workers admitting at the same instant can pass the
limit by at most the number of workers minus one, for the length of a session.
"""

from __future__ import annotations

import mmap
import os

SLOTS = 256  # more than workers ever run at once, old and new during reloads
_WIDTH = 8  # bytes per slot (a signed 64-bit count)


class SessionBoard:
    """One count per worker slot; `total` is what the session limit is checked against."""

    def __init__(self, fd: int | None = None) -> None:
        if fd is None:
            fd = os.memfd_create("contentfilter-sessions")  # close-on-exec: pass_fds hands it on
            os.ftruncate(fd, SLOTS * _WIDTH)
        self.fd = fd
        self._memory = mmap.mmap(fd, SLOTS * _WIDTH)
        self._counts = memoryview(self._memory).cast("q")

    def total(self) -> int:
        return sum(self._counts)

    def set(self, slot: int, count: int) -> None:
        self._counts[slot] = count

    def get(self, slot: int) -> int:
        return int(self._counts[slot])
