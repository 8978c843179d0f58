"""Numbers from one measured run: throughput, latency percentiles, per kind."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (no interpolation): p99 of 400 is the 396th value."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def summarise(loadgen: dict[str, Any]) -> dict[str, Any]:
    """Throughput and latency of a load generator's JSON output."""
    records = loadgen["records"]
    seconds = loadgen["ended"] - loadgen["started"]
    latencies = [record["done"] - record["start"] for record in records]
    codes = Counter(_code_class(record["code"]) for record in records)
    by_kind: dict[str, list[float]] = defaultdict(list)
    for record, latency in zip(records, latencies, strict=True):
        by_kind[record["kind"]].append(latency)
    failures = [record["reply"] for record in records if not 200 <= record["code"] < 300]
    return {
        "sent": len(records),
        "seconds": round(seconds, 3),
        "msgs_per_s": round(len(records) / seconds, 2) if seconds > 0 else math.nan,
        "bytes_per_s": round(sum(record["size"] for record in records) / seconds)
        if seconds > 0
        else 0,
        "p50_ms": _ms(percentile(latencies, 0.50)),
        "p99_ms": _ms(percentile(latencies, 0.99)),
        "mean_ms": _ms(sum(latencies) / len(latencies)) if latencies else math.nan,
        "max_ms": _ms(max(latencies)) if latencies else math.nan,
        "replies": dict(codes),
        "failure_examples": sorted(set(failures))[:5],
        "kinds": {
            kind: {
                "sent": len(values),
                "p50_ms": _ms(percentile(values, 0.50)),
                "p99_ms": _ms(percentile(values, 0.99)),
            }
            for kind, values in sorted(by_kind.items())
        },
    }


def _code_class(code: int) -> str:
    if 200 <= code < 300:
        return "2xx"
    if 400 <= code < 500:
        return "4xx"
    if 500 <= code < 600:
        return "5xx"
    return "error"


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)
