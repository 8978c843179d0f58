"""Scan results remembered by body digest, so a message seen again is not rescanned.

amavisd-new does the same: mailing-list traffic and spam runs deliver one body
many times within minutes, and each clamd/spamd call costs tens of milliseconds
to seconds. The cache is bounded (least recently used entries go first) and
entries expire after `ttl` seconds, so a signature update reaches old bodies.

What goes in is the caller's decision (`contentfilter.pipeline`): only results a
scanner actually returned, for scanners with `cacheable=True`. A result built
from a scanner *failure* (down, timeout) must never be stored, or the failure
would outlive the outage; `put` refuses results with `skipped` set for that
reason (a skip costs nothing to recompute anyway).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace

from contentfilter.model import ScanResult


@dataclass(frozen=True, slots=True)
class CacheStats:
    """Counters since start-up, for logs and metrics."""

    hits: int
    misses: int
    expired: int  # misses because the entry was older than the TTL (also in `misses`)
    evicted: int  # entries pushed out by `max_entries`
    entries: int


class ResultCache:
    """A bounded, expiring map (scanner name, body digest) -> ScanResult.

    `clock` returns seconds; it is injected so tests control time.
    """

    def __init__(
        self,
        ttl: float,
        max_entries: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl <= 0:
            raise ValueError(f"ttl must be positive (got {ttl})")
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1 (got {max_entries})")
        self.ttl = ttl
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[tuple[str, str], tuple[float, ScanResult]] = OrderedDict()
        self.hits = 0
        self.misses = 0
        self.expired = 0
        self.evicted = 0

    def get(self, scanner: str, digest: str) -> ScanResult | None:
        """The stored result, marked `cached=True`; None if absent or expired."""
        key = (scanner, digest)
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        expires_at, result = entry
        if self._clock() >= expires_at:
            del self._entries[key]
            self.misses += 1
            self.expired += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return replace(result, cached=True)

    def put(self, scanner: str, digest: str, result: ScanResult) -> None:
        """Remember `result`; the least recently used entry goes if the cache is full."""
        if result.skipped is not None:
            return
        key = (scanner, digest)
        self._entries[key] = (self._clock() + self.ttl, result)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
            self.evicted += 1

    def clear(self) -> None:
        """Forget every entry (e.g. after a signature reload); counters are kept."""
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def stats(self) -> CacheStats:
        return CacheStats(self.hits, self.misses, self.expired, self.evicted, len(self))
