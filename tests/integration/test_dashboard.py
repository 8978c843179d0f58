"""The Grafana dashboard in config/grafana/ asks only for what the filter exports.

Every PromQL expression of the dashboard (panel targets and template variables) is
taken apart into the metric names and label names it uses; each must be on the
`/metrics` page of a real filter (with real clamd and spamd) after a message and a
health check, or declared there for the metrics that count only later (quarantine,
reloads).
"""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.client import send
from tests.support.daemons import Clamd, FilterFactory, Spamd
from tests.support.messages import clean
from tests.support.net import free_port

DASHBOARD = Path(__file__).resolve().parents[2] / "config" / "grafana" / "contentfilter.json"

# PromQL's functions, aggregations and keywords: every other name is a metric
PROMQL_WORDS = {
    "sum", "avg", "min", "max", "count", "group", "stddev", "stdvar", "topk", "bottomk",
    "quantile", "count_values", "rate", "irate", "increase", "delta", "idelta", "deriv",
    "histogram_quantile", "abs", "absent", "ceil", "floor", "round", "clamp", "clamp_min",
    "clamp_max", "changes", "resets", "time", "timestamp", "vector", "scalar", "sort",
    "sort_desc", "label_replace", "label_join", "avg_over_time", "max_over_time",
    "min_over_time", "sum_over_time", "count_over_time", "last_over_time", "by", "without",
    "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool", "offset",
}  # fmt: skip
# labels Prometheus adds to every scraped series, and the histogram bucket label
SCRAPE_LABELS = {"instance", "job", "le"}
SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "gauge": ("",),
    "info": ("_info",),
}

Exported = dict[str, set[str]]  # metric name -> label names seen on it


def exported(text: str) -> Exported:
    """Every series name the page declares or shows, with the labels seen on it."""
    names: Exported = {}
    for family in text_string_to_metric_families(text):
        for suffix in SUFFIXES.get(family.type, ("",)):
            names.setdefault(family.name + suffix, set())
        for sample in family.samples:
            names.setdefault(sample.name, set()).update(sample.labels)
    return names


def selectors(expr: str) -> Iterator[tuple[str, set[str]]]:
    """Each metric named in a PromQL expression, with the labels it is matched or
    grouped on."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range selectors: [5m], [$__rate_interval]
    grouped: set[str] = set()
    for match in re.finditer(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)", expr):
        grouped.update(w.strip() for w in match.group(1).split(",") if w.strip())
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    expr = re.sub(r"\b\d+(?:\.\d+)?(?:e[+-]?\d+)?\b", "", expr)  # numbers
    for match in re.finditer(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\{[^}]*\})?", expr):
        name, matchers = match.group(1), match.group(2) or ""
        if name in PROMQL_WORDS:
            continue
        labels = set(re.findall(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)", matchers))
        yield name, labels | grouped


def expressions(dashboard: dict[str, Any]) -> list[str]:
    found = []

    def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for panel in items:
            yield panel
            yield from panels(panel.get("panels", []))

    for panel in panels(dashboard["panels"]):
        found += [t["expr"] for t in panel.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        query = variable.get("query")
        text = query.get("query", "") if isinstance(query, dict) else ""
        values = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", text)
        if values:  # the metric, grouped on the label whose values are listed
            found.append(f"count by ({values.group(2)}) ({values.group(1)})")
    return found


def problems(expr: str, names: Exported) -> list[str]:
    wrong = []
    for name, labels in selectors(expr):
        if name not in names:
            wrong.append(f"{name} is not exported")
            continue
        unknown = labels - names[name] - SCRAPE_LABELS
        if names[name] and unknown:  # labels are known once the metric has samples
            wrong.append(f"{name} has no label {', '.join(sorted(unknown))}")
    return wrong


@pytest.fixture
def metrics_page(filter_factory: FilterFactory, clamd: Clamd, spamd: Spamd) -> str:
    address = f"127.0.0.1:{free_port()}"
    process = filter_factory(
        clamd=clamd.address, spamd=spamd.address, extra_args=["--metrics", address]
    )
    assert send(process.address, clean(), "a@sender.example", ["b@rcpt.example"]).data[:3] == "250"
    with urllib.request.urlopen(f"http://{address}/healthz", timeout=60) as response:
        assert response.status == 200  # its checks fill scanner_up and clamd's version
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as response:
        return str(response.read().decode())


def test_every_dashboard_query_names_only_metrics_and_labels_the_filter_exports(
    metrics_page: str,
) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    names = exported(metrics_page)
    queries = expressions(dashboard)
    assert len(queries) > 30
    wrong = {expr: problems(expr, names) for expr in queries}
    assert {expr: found for expr, found in wrong.items() if found} == {}
    used = {name for expr in queries for name, _ in selectors(expr)}
    assert all(name.startswith("contentfilter_") for name in used), used
    assert {"contentfilter_scanner_up", "contentfilter_tempfails_total"} <= used
    assert "contentfilter_quarantine_stored_total" in used


def test_the_check_finds_a_misspelt_metric_and_a_label_the_metric_does_not_have(
    metrics_page: str,
) -> None:
    names = exported(metrics_page)
    assert problems('sum(rate(contentfilter_mesages_total{category="SPAM"}[5m]))', names) == [
        "contentfilter_mesages_total is not exported"
    ]
    assert problems("sum by (scanner) (rate(contentfilter_messages_total[5m]))", names) == [
        "contentfilter_messages_total has no label scanner"
    ]
    assert problems("histogram_quantile(0.99, sum by (le) (rate(x_bucket[1m])))", names) == [
        "x_bucket is not exported"
    ]
