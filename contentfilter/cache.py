"""Scan results remembered by what they depend on, so a message seen again is not rescanned.

Postfix hands one queued message to the filter in several transactions when it
has many recipients, and spam runs deliver one message many times within
minutes; each clamd/spamd call costs tens of milliseconds to seconds. The cache
is bounded (least recently used entries go first) and entries expire after
`ttl` seconds, so a signature update reaches old messages.

Each scanner names its own key (`Scanner.cache_key`): a digest of every input
its verdict depends on and a fingerprint of its settings, built with `key`.
A key that leaves out an input lets one message inherit another's verdict (a
body digest alone let an .exe inherit the verdict of the same bytes named
.pdf); a key without the settings would serve a verdict of rules no longer in
force. A scanner whose result is cheaper to compute than to look up says None.

What goes in is the caller's decision (`contentfilter.pipeline`): only results a
scanner actually returned. A result built from a scanner *failure* (down,
timeout) must never be stored, or the failure would outlive the outage; `put`
refuses results with `skipped` set for that reason (a skip costs nothing to
recompute anyway).
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace

from contentfilter.model import ScanResult


def key(*inputs: bytes | memoryview | str) -> str:
    """A digest of the inputs as a sequence: ("ab", "c") and ("a", "bc") differ.

    BLAKE2b, not amavisd-new's MD5: with a forged collision a virus could inherit
    the verdict of a clean message.
    """
    digest = hashlib.blake2b(digest_size=32)
    for item in inputs:
        data = item.encode("utf-8", "surrogateescape") if isinstance(item, str) else item
        digest.update(len(data).to_bytes(8, "big"))  # memoryviews here are of bytes
        digest.update(data)
    return digest.hexdigest()


def fingerprint(*settings: object) -> str:
    """A digest of settings records (frozen dataclasses: their repr names every field).

    Part of every cache key, so a changed rule or limit never meets a verdict of the old one.
    """
    return key(*(repr(item) for item in settings))


@dataclass(frozen=True, slots=True)
class CacheStats:
    """Counters since start-up, for logs and metrics."""

    hits: int
    misses: int
    expired: int  # misses because the entry was older than the TTL (also in `misses`)
    evicted: int  # entries pushed out by `max_entries`
    entries: int


class ResultCache:
    """A bounded, expiring map (scanner name, the scanner's cache key) -> ScanResult.

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

    def get(self, scanner: str, cache_key: str) -> ScanResult | None:
        """The stored result, marked `cached=True`; None if absent or expired."""
        entry_key = (scanner, cache_key)
        entry = self._entries.get(entry_key)
        if entry is None:
            self.misses += 1
            return None
        expires_at, result = entry
        if self._clock() >= expires_at:
            del self._entries[entry_key]
            self.misses += 1
            self.expired += 1
            return None
        self._entries.move_to_end(entry_key)
        self.hits += 1
        return replace(result, cached=True)

    def put(self, scanner: str, cache_key: str, result: ScanResult) -> None:
        """Remember `result`; the least recently used entry goes if the cache is full."""
        if result.skipped is not None:
            return
        entry_key = (scanner, cache_key)
        self._entries[entry_key] = (self._clock() + self.ttl, result)
        self._entries.move_to_end(entry_key)
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
