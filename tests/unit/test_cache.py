"""ResultCache: TTL expiry and LRU eviction, driven by an injected clock."""

from __future__ import annotations

import pytest

from contentfilter.cache import CacheStats, ResultCache
from contentfilter.model import ContentsCategory, Finding, ScanResult

VIRUS = ScanResult("clamav", (Finding(ContentsCategory.VIRUS, "Eicar-Test-Signature"),))
CLEAN = ScanResult("clamav")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_a_stored_result_comes_back_marked_cached(clock: Clock) -> None:
    cache = ResultCache(ttl=60, max_entries=10, clock=clock)
    assert cache.get("clamav", "d1") is None
    cache.put("clamav", "d1", VIRUS)
    hit = cache.get("clamav", "d1")
    assert hit is not None
    assert hit.findings == VIRUS.findings
    assert hit.cached
    assert cache.stats == CacheStats(hits=1, misses=1, expired=0, evicted=0, entries=1)


def test_entries_are_per_scanner(clock: Clock) -> None:
    cache = ResultCache(ttl=60, max_entries=10, clock=clock)
    cache.put("clamav", "d1", VIRUS)
    assert cache.get("spamassassin", "d1") is None


@pytest.mark.parametrize(
    ("age", "found"),
    [(0.0, True), (59.9, True), (60.0, False), (3600.0, False)],
)
def test_entries_expire_after_the_ttl(clock: Clock, age: float, found: bool) -> None:
    cache = ResultCache(ttl=60, max_entries=10, clock=clock)
    cache.put("clamav", "d1", CLEAN)
    clock.now += age
    assert (cache.get("clamav", "d1") is not None) is found
    assert cache.stats.expired == (0 if found else 1)
    assert len(cache) == (1 if found else 0)


def test_putting_again_restarts_the_ttl(clock: Clock) -> None:
    cache = ResultCache(ttl=60, max_entries=10, clock=clock)
    cache.put("clamav", "d1", CLEAN)
    clock.now += 50
    cache.put("clamav", "d1", VIRUS)
    clock.now += 50
    hit = cache.get("clamav", "d1")
    assert hit is not None and hit.findings == VIRUS.findings


def test_the_least_recently_used_entry_goes_first(clock: Clock) -> None:
    cache = ResultCache(ttl=60, max_entries=2, clock=clock)
    cache.put("clamav", "a", CLEAN)
    cache.put("clamav", "b", CLEAN)
    assert cache.get("clamav", "a") is not None  # "a" is now the most recently used
    cache.put("clamav", "c", CLEAN)
    assert cache.get("clamav", "b") is None
    assert cache.get("clamav", "a") is not None
    assert cache.get("clamav", "c") is not None
    assert cache.stats.evicted == 1
    assert len(cache) == 2


def test_skipped_results_are_not_stored(clock: Clock) -> None:
    """A skip may stand for a scanner outage: it must not outlive it."""
    cache = ResultCache(ttl=60, max_entries=10, clock=clock)
    cache.put("spamassassin", "d1", ScanResult("spamassassin", skipped="unavailable: down"))
    assert cache.get("spamassassin", "d1") is None
    assert len(cache) == 0


def test_clear_forgets_entries_but_keeps_counters(clock: Clock) -> None:
    cache = ResultCache(ttl=60, max_entries=10, clock=clock)
    cache.put("clamav", "d1", CLEAN)
    cache.get("clamav", "d1")
    cache.clear()
    assert cache.get("clamav", "d1") is None
    assert (cache.stats.hits, cache.stats.misses, cache.stats.entries) == (1, 1, 0)


@pytest.mark.parametrize(("ttl", "max_entries"), [(0, 10), (-1, 10), (60, 0)])
def test_nonsense_limits_are_refused(ttl: float, max_entries: int) -> None:
    with pytest.raises(ValueError):
        ResultCache(ttl=ttl, max_entries=max_entries)
