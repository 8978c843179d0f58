"""Markdown from a benchmark's JSON results; also the one-line progress prints.

python -m benchmarks.report benchmarks/results/bench-YYYYmmdd-HHMMSS.json
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

CF, AMAVIS, DIRECT, SPAMD = "contentfilter", "amavisd-new", "direct", "spamd"
MODE_NAMES = {"a": "a: no scanners", "b": "b: ClamAV", "c": "c: ClamAV + SpamAssassin"}


def point_line(point: dict[str, Any]) -> str:
    """One progress line for a measured point."""
    replies = " ".join(f"{key}={value}" for key, value in sorted(point["replies"].items()))
    return (
        f"{point['mode']} {point['mix']:<7} c={point['concurrency']:<3} {point['filter']:<13} "
        f"{point['msgs_per_s']:>8.1f} msg/s  "
        f"p50 {point['p50_ms']:>7.1f} ms  p99 {point['p99_ms']:>8.1f} ms  "
        f"cpu {point['cpu_ms_per_msg']:>6.2f} ms/msg  rss {point['peak_rss_mb']:>6.1f} MB  "
        f"[{replies}] delivered={point['delivered']}"
    )


def extra_line(extra: dict[str, Any]) -> str:
    line = (
        f"{extra['mode']} {extra['mix']:<7} c=1   {extra['filter']:<13} "
        f"latency {extra['latency_ms']} ms, "
        f"first byte at next hop {extra['first_byte_ms']} ms after the client's first "
        f"({extra['first_byte_after_data_ms']} ms after its last)"
    )
    if "rss_over_baseline_mb" in extra:
        line += (
            f", peak RSS {extra['peak_rss_mb']} MB"
            f" = baseline {extra['baseline_rss_mb']} + {extra['rss_over_baseline_mb']} MB"
        )
    return line


def _find(points: Iterable[dict[str, Any]], **keys: Any) -> dict[str, Any] | None:
    for point in points:
        if all(point.get(key) == value for key, value in keys.items()):
            return point
    return None


def _get(point: dict[str, Any] | None, key: str) -> float | None:
    return None if point is None else float(point[key])


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if not numerator or not denominator or math.isnan(numerator) or math.isnan(denominator):
        return None
    return numerator / denominator


def _percent(part: dict[str, Any] | None, whole: dict[str, Any] | None) -> float | None:
    share = _ratio(_get(part, "msgs_per_s"), _get(whole, "msgs_per_s"))
    return None if share is None else 100 * share


def _fmt(value: float | None, digits: int = 1, suffix: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}{suffix}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def throughput_tables(points: list[dict[str, Any]]) -> list[str]:
    lines: list[str] = []
    mixes = list(dict.fromkeys(point["mix"] for point in points))
    for mix in mixes:
        lines += [f"#### Mix `{mix}`", ""]
        rows = []
        for mode in ("a", "b", "c"):
            for concurrency in sorted(
                {p["concurrency"] for p in points if p["mix"] == mix and p["mode"] == mode}
            ):
                key = {"mode": mode, "mix": mix, "concurrency": concurrency}
                cf, am = _find(points, filter=CF, **key), _find(points, filter=AMAVIS, **key)
                direct, spamd = (
                    _find(points, filter=DIRECT, **key),
                    _find(points, filter=SPAMD, **key),
                )
                rows.append(
                    [
                        MODE_NAMES[mode],
                        str(concurrency),
                        _fmt(_get(direct, "msgs_per_s")),
                        _fmt(_get(cf, "msgs_per_s")),
                        _fmt(_get(cf, "p50_ms"), 0),
                        _fmt(_get(cf, "p99_ms"), 0),
                        _fmt(_get(am, "msgs_per_s")),
                        _fmt(_get(am, "p50_ms"), 0),
                        _fmt(_get(am, "p99_ms"), 0),
                        _fmt(_ratio(_get(cf, "msgs_per_s"), _get(am, "msgs_per_s")), 2, "x"),
                        _fmt(_get(spamd, "msgs_per_s")),
                        _fmt(_percent(cf, spamd), 0, "%"),
                    ]
                )
        lines += _table(
            [
                "mode",
                "c",
                "direct msg/s",
                "contentfilter msg/s",
                "p50 ms",
                "p99 ms",
                "amavisd-new msg/s",
                "p50 ms",
                "p99 ms",
                "cf / amavisd",
                "spamd alone msg/s",
                "cf / spamd",
            ],
            rows,
        )
        lines.append("")
    return lines


def _replies(point: dict[str, Any]) -> str:
    """Reply classes and counts, e.g. `2xx=398 4xx=2`."""
    return " ".join(f"{key}={value}" for key, value in sorted(point["replies"].items()))


def resource_table(points: list[dict[str, Any]]) -> list[str]:
    rows = []
    for point in points:
        rows.append(
            [
                point["mode"],
                point["mix"],
                str(point["concurrency"]),
                point["filter"],
                str(point["sent"]),
                _fmt(point["seconds"]),
                _replies(point),
                str(point["delivered"]),
                str(point["spam_flagged"]),
                _fmt(point["cpu_ms_per_msg"], 2),
                _fmt(point["clamd_cpu_ms_per_msg"], 1),
                _fmt(point["spamd_cpu_ms_per_msg"], 1),
                _fmt(point["machine_busy_pct"], 0, "%"),
                _fmt(point["peak_rss_mb"]),
                _fmt(point["peak_pss_mb"]),
                str(point["peak_processes"]),
            ]
        )
    return _table(
        [
            "mode",
            "mix",
            "c",
            "target",
            "sent",
            "s",
            "replies",
            "at sink",
            "spam-tagged",
            "target CPU ms/msg",
            "clamd CPU ms/msg",
            "spamd CPU ms/msg",
            "machine busy",
            "peak RSS MB",
            "peak PSS MB",
            "procs",
        ],
        rows,
    )


def kind_table(points: list[dict[str, Any]]) -> list[str]:
    kinds = ["small", "zip100k", "pdf2m", "gtube", "eicar"]
    rows = []
    for point in points:
        if point["mix"] != "blend":
            continue
        cells = []
        for kind in kinds:
            entry = point["kinds"].get(kind)
            cells.append(
                f"{_fmt(entry['p50_ms'], 0)} / {_fmt(entry['p99_ms'], 0)} ({entry['sent']})"
                if entry
                else "-"
            )
        rows.append([point["mode"], str(point["concurrency"]), point["filter"], *cells])
    return _table(["mode", "c", "target", *[f"{kind} p50/p99 ms (n)" for kind in kinds]], rows)


def extras_table(extras: list[dict[str, Any]]) -> list[str]:
    rows = []
    for extra in extras:
        rows.append(
            [
                extra["mode"],
                extra["mix"],
                extra["filter"],
                str(extra["messages"]),
                f"{extra['size'] / 1e6:.1f}",
                _replies(extra),
                _fmt(extra["latency_ms"], 0),
                _fmt(extra["first_byte_ms"], 0),
                _fmt(extra["first_byte_after_data_ms"], 0),
                _fmt(extra.get("baseline_rss_mb")),
                _fmt(extra.get("peak_rss_mb")),
                _fmt(extra.get("rss_over_baseline_mb")),
            ]
        )
    return _table(
        [
            "mode",
            "message",
            "target",
            "n",
            "MB",
            "replies",
            "latency ms (median)",
            "TTFB at next hop, ms from client's first DATA byte",
            "ms from client's end of DATA",
            "baseline RSS MB",
            "peak RSS MB",
            "over baseline MB",
        ],
        rows,
    )


def targets(points: list[dict[str, Any]]) -> list[tuple[str, str, bool | None]]:
    """(target, measured, met) for each goal of the performance issue."""
    results: list[tuple[str, str, bool | None]] = []
    for concurrency in (4, 16):
        for mix in ("blend", "small"):
            key = {"mode": "c", "mix": mix, "concurrency": concurrency}
            cf, am, spamd = (_find(points, filter=name, **key) for name in (CF, AMAVIS, SPAMD))
            ratio = _ratio(_get(cf, "msgs_per_s"), _get(am, "msgs_per_s"))
            if ratio is not None:
                results.append(
                    (
                        f"mode c, {mix}, c={concurrency}: >= 1.25x amavisd-new",
                        f"{ratio:.2f}x",
                        ratio >= 1.25,
                    )
                )
            share = _ratio(_get(cf, "msgs_per_s"), _get(spamd, "msgs_per_s"))
            if share is not None:
                results.append(
                    (
                        f"mode c, {mix}, c={concurrency}: >= 90% of spamd alone",
                        f"{100 * share:.0f}%",
                        share >= 0.9,
                    )
                )
            key_b = {"mode": "b", "mix": mix, "concurrency": concurrency}
            ratio_b = _ratio(
                *(
                    _get(p, "msgs_per_s")
                    for p in (
                        _find(points, filter=CF, **key_b),
                        _find(points, filter=AMAVIS, **key_b),
                    )
                )
            )
            if ratio_b is not None:
                results.append(
                    (
                        f"mode b, {mix}, c={concurrency}: >= 5x amavisd-new",
                        f"{ratio_b:.2f}x",
                        ratio_b >= 5,
                    )
                )
    for mode in ("a", "b", "c"):
        small = [
            p for p in points if p["filter"] == CF and p["mix"] == "small" and p["mode"] == mode
        ]
        if small:
            worst = max(p["cpu_ms_per_msg"] for p in small)
            results.append(
                (
                    f"mode {mode}: filter CPU per small message < 3 ms",
                    f"{worst:.2f} ms (worst c)",
                    worst < 3,
                )
            )
    at16 = [p for p in points if p["filter"] == CF and p["concurrency"] == 16]
    if at16:
        peak = max(at16, key=lambda p: p["peak_rss_mb"])
        results.append(
            (
                "peak RSS < 150 MB at c=16",
                f"{peak['peak_rss_mb']:.1f} MB ({peak['mode']}, {peak['mix']})",
                peak["peak_rss_mb"] < 150,
            )
        )
    return results


def render(data: dict[str, Any]) -> str:
    meta, points, extras = data["meta"], data["points"], data["extras"]
    settings = meta["settings"]
    lines = [
        f"## Run of {meta['started']}",
        "",
        f"- commit: `{meta['commit']}`",
        f"- machine: {meta['cpus']} CPUs ({meta['cpu_model']}), {meta['memory_gb']} GB RAM, "
        f"{meta['os']}, kernel {meta['kernel']}, Python {meta['python']}",
        "- packages: "
        + ", ".join(f"{name} {version}" for name, version in meta["packages"].items()),
        f"- command: `{meta['command']}`",
        f"- per point: {settings['count']} messages or {settings['duration']} s,"
        " whichever ends first, "
        f"after a warm-up; amavisd-new SpamAssassin: {settings['amavis_spam']}, "
        f"$max_servers: {settings['amavis_max_servers']}",
        f"- finished: {meta.get('finished', '?')}",
        "",
        "### Targets",
        "",
    ]
    lines += _table(
        ["target", "measured", "met"],
        [[name, measured, "yes" if met else "**no**"] for name, measured, met in targets(points)],
    )
    lines += ["", "### Throughput and latency", ""]
    lines += throughput_tables(points)
    lines += ["### Resources per point", ""]
    lines += resource_table(points)
    lines += ["", "### Latency by message kind in the blend", ""]
    lines += kind_table(points)
    if extras:
        lines += ["", "### Large messages (one at a time)", ""]
        lines += extras_table(extras)
    for summary in data.get("profiles", []):
        lines += [
            "",
            f"### Profile: {summary['filter']}, mode {summary['mode']}, mix `{summary['mix']}`, "
            f"c={summary['concurrency']} ({summary['samples']} py-spy samples)",
            "",
        ]
        rows = [[f"{pct}%", f"`{frame}`"] for pct, frame in summary["self"]]
        lines += ["Top of stack (self):", "", *_table(["share", "frame"], rows), ""]
        rows = [[f"{pct}%", f"`{frame}`"] for pct, frame in summary["inclusive"]]
        lines += ["On the stack (inclusive):", "", *_table(["share", "frame"], rows)]
    return "\n".join(lines) + "\n"


def main() -> None:
    data = json.loads(Path(sys.argv[1]).read_text())
    sys.stdout.write(render(data))


if __name__ == "__main__":
    main()
