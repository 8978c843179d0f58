"""contentfilter.metrics: what one message adds, tempfails by reason (no sockets)."""

from __future__ import annotations

from contentfilter import config
from contentfilter.errors import NextHopUnavailable, ScannerUnavailable
from contentfilter.metrics import Metrics
from contentfilter.model import FailureAction
from contentfilter.pipeline import Pipeline
from tests.unit.test_pipeline import FakeNextHop, FakeScanner, message


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    found = metrics.registry.get_sample_value(f"contentfilter_{name}", labels)
    return 0.0 if found is None else found


def counting(*scanners: FakeScanner, hop: FakeNextHop | None = None) -> tuple[Pipeline, Metrics]:
    metrics = Metrics()
    cfg = config.from_mapping({"scanners": {}})
    pipeline = Pipeline(cfg, list(scanners), hop or FakeNextHop(), metrics=metrics)
    return pipeline, metrics


async def test_a_scanner_that_must_tempfail_counts_as_a_scanner_tempfail() -> None:
    down = FakeScanner("clamav", error=ScannerUnavailable("clamav", "connection refused"))
    pipeline, metrics = counting(down)
    await pipeline.handle(message())
    assert sample(metrics, "tempfails_total", reason="scanner") == 1
    assert sample(metrics, "messages_total", category="UNCHECKED") == 1
    assert (
        sample(
            metrics, "recipients_total", category="UNCHECKED", destiny="none", action="TempFailed"
        )
        == 1
    )


async def test_a_failed_scanner_that_passes_mail_is_down_and_counted_failed() -> None:
    down = FakeScanner(
        "spamassassin",
        error=ScannerUnavailable("spamassassin", "refused"),
        on_failure=FailureAction.PASS,
    )
    pipeline, metrics = counting(down, FakeScanner("clamav"))
    await pipeline.handle(message())
    assert sample(metrics, "scanner_requests_total", scanner="spamassassin", result="failed") == 1
    assert sample(metrics, "scanner_up", scanner="spamassassin") == 0
    assert sample(metrics, "scanner_up", scanner="clamav") == 1
    assert sample(metrics, "tempfails_total", reason="scanner") == 0


async def test_the_next_hop_down_is_a_next_hop_tempfail() -> None:
    pipeline, metrics = counting(hop=FakeNextHop(error=NextHopUnavailable("refused")))
    await pipeline.handle(message())
    assert sample(metrics, "tempfails_total", reason="next_hop") == 1
    assert sample(metrics, "stage_duration_seconds_count", stage="reinject") == 1
