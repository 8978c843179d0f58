"""The pipeline hands decoded parts to the scanners that want them: no sockets.

A scanner with `needs_parts` starts once the decoder is done; a `PartsScanner`
(clamd) starts on the raw message at once and is handed the parts later, with
its timeout started again; a cache hit for every scanner that wants parts spares
the decoding.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass, field

from contentfilter import config
from contentfilter.cache import ResultCache
from contentfilter.model import (
    DecodedMessage,
    FailureAction,
    Message,
    PartsScanner,
    Scanner,
    ScanResult,
)
from contentfilter.pipeline import Pipeline
from tests.unit.test_pipeline import FakeNextHop, FakeScanner, message, smtp_reply


@dataclass
class FakeClamd:
    """Records what it was handed, and when, relative to the decoder."""

    name: str = "clamav"
    timeout: float = 5.0
    on_failure: FailureAction = FailureAction.TEMPFAIL
    needs_parts: bool = False
    events: list[str] = field(default_factory=list)
    parts_seen: list[DecodedMessage | None] = field(default_factory=list)

    def cache_key(self, message: Message) -> str:
        return "clamd:" + message.raw.hex()

    async def scan(self, message: Message) -> ScanResult:
        raise AssertionError("the pipeline hands the parts to scan_with_parts")

    async def scan_with_parts(
        self, message: Message, parts: Awaitable[DecodedMessage | None]
    ) -> ScanResult:
        self.events.append("raw scan started")
        self.parts_seen.append(await parts)
        self.events.append("parts arrived")
        return ScanResult(self.name)

    async def close(self) -> None:
        pass


class SlowDecodePipeline(Pipeline):
    """Counts decodings, and takes `delay` seconds for each."""

    delay = 0.0
    decodings = 0
    events: list[str]

    async def decode(self, message: Message, spool: object = None) -> DecodedMessage:
        self.decodings += 1
        await asyncio.sleep(self.delay)
        decoded = await super().decode(message)
        self.events.append("decoded")
        return decoded


def pipeline(*scanners: Scanner, cache: ResultCache | None = None) -> SlowDecodePipeline:
    built = SlowDecodePipeline(config.from_mapping({"scanners": {}}), list(scanners), FakeNextHop())
    built.cache = cache
    built.events = []
    return built


def test_clamd_is_a_parts_scanner_and_fakes_are_not() -> None:
    assert isinstance(FakeClamd(), PartsScanner)
    assert not isinstance(FakeScanner("spamassassin"), PartsScanner)


async def test_the_raw_scan_starts_before_the_decoder_is_done_and_gets_the_parts() -> None:
    clamd = FakeClamd()
    p = pipeline(clamd)
    clamd.events = p.events
    outcome = await p.handle(message())
    assert p.events == ["raw scan started", "decoded", "parts arrived"]
    [parts] = clamd.parts_seen
    assert parts is not None and parts.root.part_id == "p001"
    assert [r.scanner for r in outcome.results] == ["clamav"]


async def test_a_parts_scanners_timeout_starts_again_when_the_parts_arrive() -> None:
    """Decoding takes longer than clamd's timeout; clamd itself answers at once."""
    clamd = FakeClamd(timeout=0.2)
    p = pipeline(clamd)
    p.delay = 0.5
    outcome = await p.handle(message())
    assert [r.skipped for r in outcome.results] == [None]
    assert smtp_reply(outcome).code == 250


async def test_a_cache_hit_for_every_scanner_that_wants_parts_spares_the_decoding() -> None:
    cache = ResultCache(ttl=60, max_entries=10)
    banned = FakeScanner("banned", needs_parts=True)
    spamd = FakeScanner("spamassassin")
    p = pipeline(spamd, FakeClamd(), banned, cache=cache)
    await p.handle(message())
    assert p.decodings == 1
    again = await p.handle(message())
    assert p.decodings == 1
    assert [(r.scanner, r.cached) for r in again.results] == [
        ("spamassassin", True),
        ("clamav", True),
        ("banned", True),
    ]


async def test_one_miss_among_the_parts_scanners_decodes() -> None:
    cache = ResultCache(ttl=60, max_entries=10)
    banned = FakeScanner("banned", needs_parts=True)
    p = pipeline(FakeClamd(), banned, cache=cache)
    await p.handle(message())
    cache.clear()
    await p.handle(message())
    assert p.decodings == 2


async def test_no_scanner_wants_parts_no_decoding() -> None:
    p = pipeline(FakeScanner("spamassassin"))
    await p.handle(message())
    assert p.decodings == 0
