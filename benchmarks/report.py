"""Markdown from a benchmark's JSON results; also the one-line progress prints.

python -m benchmarks.report benchmarks/results/bench-YYYYmmdd-HHMMSS.json
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

CF, AMAVIS, DIRECT, SPAMD = "contentfilter", "amavisd-new", "direct", "spamd"
MB = 1024 * 1024
MODE_NAMES = {"a": "a: no scanners", "b": "b: ClamAV", "c": "c: ClamAV + SpamAssassin"}


def point_line(point: dict[str, Any]) -> str:
    """One progress line for a measured point."""
    replies = " ".join(f"{key}={value}" for key, value in sorted(point["replies"].items()))
    return (
        f"{point['mode']} {point['mix']:<7} c={point['concurrency']:<3} {point['filter']:<21} "
        f"{point['msgs_per_s']:>8.1f} msg/s  "
        f"p50 {point['p50_ms']:>7.1f} ms  p99 {point['p99_ms']:>8.1f} ms  "
        f"cpu {point['cpu_ms_per_msg']:>6.2f} ms/msg  rss {point['peak_rss_mb']:>6.1f} MB  "
        f"[{replies}] delivered={point['delivered']}"
    )


def extra_line(extra: dict[str, Any]) -> str:
    line = (
        f"{extra['mode']} {extra['mix']:<7} c=1   {extra['filter']:<21} "
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


FUGLU, CLAMSMTP = "fuglu", "clamsmtp"
CF_SYMBOLS = "contentfilter-symbols"  # mode c with spamassassin.rule_scores: false
COMPARED = (CF, CF_SYMBOLS, FUGLU, AMAVIS, CLAMSMTP)  # the filters, in table order


def _driven_by(points: list[dict[str, Any]], driver: str) -> list[dict[str, Any]]:
    return [p for p in points if p.get("driver", "loadgen") == driver]


def _cell(point: dict[str, Any] | None, second: str, digits: int = 0) -> str:
    """`msg/s (second)`, e.g. `357.4 (40)` for msg/s and p99 ms."""
    if point is None:
        return "-"
    return f"{_fmt(_get(point, 'msgs_per_s'))} ({_fmt(_get(point, second), digits)})"


def throughput_tables(points: list[dict[str, Any]]) -> list[str]:
    """Per mix: each filter's msg/s with its p99 latency, and the ratios."""
    lines: list[str] = []
    points = _driven_by(points, "loadgen")
    for mix in dict.fromkeys(point["mix"] for point in points):
        lines += [f"#### Mix `{mix}`: msg/s (p99 ms)", ""]
        rows = []
        for mode in ("a", "b", "c"):
            for concurrency in sorted(
                {p["concurrency"] for p in points if p["mix"] == mix and p["mode"] == mode}
            ):
                key = {"mode": mode, "mix": mix, "concurrency": concurrency}
                found = {name: _find(points, filter=name, **key) for name in COMPARED}
                direct, spamd = (
                    _find(points, filter=DIRECT, **key),
                    _find(points, filter=SPAMD, **key),
                )
                rate = {name: _get(point, "msgs_per_s") for name, point in found.items()}
                rows.append(
                    [
                        MODE_NAMES[mode],
                        str(concurrency),
                        _fmt(_get(direct, "msgs_per_s")),
                        *(_cell(found[name], "p99_ms") for name in COMPARED),
                        _fmt(_get(spamd, "msgs_per_s")),
                        _fmt(_ratio(rate[CF], rate[FUGLU]), 2, "x"),
                        _fmt(_ratio(rate[CF], rate[AMAVIS]), 2, "x"),
                        _fmt(_percent(found[CF], spamd), 0, "%"),
                    ]
                )
        lines += _table(
            [
                "mode",
                "c",
                "direct",
                *COMPARED,
                "spamd alone",
                "cf / fuglu",
                "cf / amavisd",
                "cf / spamd",
            ],
            rows,
        )
        lines.append("")
    return lines


def source_tables(points: list[dict[str, Any]]) -> list[str]:
    """smtp-source points: each filter's msg/s with its CPU ms per message."""
    lines: list[str] = []
    points = _driven_by(points, "smtp-source")
    for mix in dict.fromkeys(point["mix"] for point in points):
        lines += [f"#### smtp-source, body `{mix}`: msg/s (filter CPU ms/msg)", ""]
        rows = []
        for mode in ("a", "b", "c"):
            for concurrency in sorted(
                {p["concurrency"] for p in points if p["mix"] == mix and p["mode"] == mode}
            ):
                key = {"mode": mode, "mix": mix, "concurrency": concurrency}
                found = {name: _find(points, filter=name, **key) for name in COMPARED}
                direct = _find(points, filter=DIRECT, **key)
                rate = {name: _get(point, "msgs_per_s") for name, point in found.items()}
                rows.append(
                    [
                        MODE_NAMES[mode],
                        str(concurrency),
                        _fmt(_get(direct, "msgs_per_s")),
                        *(_cell(found[name], "cpu_ms_per_msg", 1) for name in COMPARED),
                        _fmt(_ratio(rate[CF], rate[FUGLU]), 2, "x"),
                        _fmt(_ratio(rate[CF], rate[AMAVIS]), 2, "x"),
                    ]
                )
        lines += _table(["mode", "c", "direct", *COMPARED, "cf / fuglu", "cf / amavisd"], rows)
        lines.append("")
    return lines


def worker_table(points: list[dict[str, Any]]) -> list[str]:
    """contentfilter with 1 and 2 worker processes (mode a), when measured."""
    rows = []
    for point in _driven_by(points, "loadgen"):
        if point["filter"] != f"{CF}-w1":
            continue
        key = {k: point[k] for k in ("mode", "mix", "concurrency")}
        two = _find(points, filter=f"{CF}-w2", **key)
        rows.append(
            [
                point["mode"],
                point["mix"],
                str(point["concurrency"]),
                _cell(point, "p99_ms"),
                _cell(two, "p99_ms"),
                _fmt(_ratio(_get(two, "msgs_per_s"), _get(point, "msgs_per_s")), 2, "x"),
                _fmt(_get(two, "peak_rss_mb")),
                _busiest(two),
            ]
        )
    if not rows:
        return []
    return _table(
        [
            "mode",
            "mix",
            "c",
            "1 worker msg/s (p99 ms)",
            "2 workers",
            "2 / 1",
            "2 workers RSS MB",
            "busiest worker's CPU share",
        ],
        rows,
    )


def _busiest(point: dict[str, Any] | None) -> str:
    shares = (point or {}).get("worker_cpu_shares") or []
    return f"{100 * shares[0]:.0f}%" if shares else "-"


def _replies(point: dict[str, Any]) -> str:
    """Reply classes and counts, e.g. `2xx=398 4xx=2`."""
    return " ".join(f"{key}={value}" for key, value in sorted(point["replies"].items()))


def resource_table(points: list[dict[str, Any]]) -> list[str]:
    rows = []
    for point in points:
        rows.append(
            [
                point["mode"],
                point.get("driver", "loadgen"),
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
            "driver",
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
    for point in _driven_by(points, "loadgen"):
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


Target = tuple[str, str, bool | None]


def _ratio_target(
    points: list[dict[str, Any]],
    name: str,
    key: dict[str, Any],
    other: str,
    least: float,
    ours: str = CF,
) -> list[Target]:
    ratio = _ratio(
        _get(_find(points, filter=ours, **key), "msgs_per_s"),
        _get(_find(points, filter=other, **key), "msgs_per_s"),
    )
    return [] if ratio is None else [(name, f"{ratio:.2f}x", ratio >= least)]


def _throughput_targets(points: list[dict[str, Any]], driver: str) -> list[Target]:
    results: list[Target] = []
    driven = _driven_by(points, driver)
    label = "unique mix" if driver == "loadgen" else "smtp-source"
    for mix in dict.fromkeys(p["mix"] for p in driven):
        for concurrency in sorted({p["concurrency"] for p in driven if p["mix"] == mix}):
            where = f"{label} `{mix}`, c={concurrency}"
            key_c = {"mode": "c", "mix": mix, "concurrency": concurrency}
            spamd = _find(driven, filter=SPAMD, **key_c)
            for ours, how in ((CF, ""), (CF_SYMBOLS, " (rule_scores: false)")):
                results += _ratio_target(
                    driven, f"c, {where}{how}: >= 1.0x fuglu", key_c, FUGLU, 1.0, ours
                )
                share = _percent(_find(driven, filter=ours, **key_c), spamd)
                if share is not None:
                    results.append(
                        (f"c, {where}{how}: >= 95% of spamd alone", f"{share:.0f}%", share >= 95)
                    )
            cf_p99 = _get(_find(driven, filter=CF, **key_c), "p99_ms")
            fuglu_p99 = _get(_find(driven, filter=FUGLU, **key_c), "p99_ms")
            if cf_p99 is not None and fuglu_p99 is not None and not math.isnan(cf_p99):
                results.append(
                    (
                        f"c, {where}: p99 below fuglu's",
                        f"{cf_p99:.0f} vs {fuglu_p99:.0f} ms",
                        cf_p99 < fuglu_p99,
                    )
                )
            key_b = {"mode": "b", "mix": mix, "concurrency": concurrency}
            results += _ratio_target(driven, f"b, {where}: >= 2.5x fuglu", key_b, FUGLU, 2.5)
            results += _ratio_target(driven, f"b, {where}: >= 8x amavisd-new", key_b, AMAVIS, 8.0)
    return results


def targets(points: list[dict[str, Any]], extras: Sequence[dict[str, Any]] = ()) -> list[Target]:
    """(target, measured, met) for each goal of the performance issue."""
    results = _throughput_targets(points, "loadgen") + _throughput_targets(points, "smtp-source")
    for point in _driven_by(points, "loadgen"):
        if point["filter"] == f"{CF}-w1" and point["mode"] == "a":
            key = {k: point[k] for k in ("mode", "mix", "concurrency")}
            two = _find(points, filter=f"{CF}-w2", **key)
            ratio = _ratio(_get(two, "msgs_per_s"), _get(point, "msgs_per_s"))
            if ratio is not None:
                results.append(
                    (
                        f"a, `{point['mix']}`, c={point['concurrency']}:"
                        " 2 workers >= 1.7x 1 worker",
                        f"{ratio:.2f}x",
                        ratio >= 1.7,
                    )
                )
    for point in points:
        shares = point.get("worker_cpu_shares") or []
        if point["filter"] == f"{CF}-w2" and point["concurrency"] == 16 and shares:
            results.append(
                (
                    f"a, `{point['mix']}`, c=16, 2 workers: none above 60% of the load",
                    f"busiest {100 * shares[0]:.0f}% of the workers' CPU",
                    shares[0] <= 0.6,
                )
            )
    at16 = [p for p in points if p["filter"].startswith(CF) and p["concurrency"] == 16]
    if at16:
        peak = max(at16, key=lambda p: p["peak_rss_mb"])
        results.append(
            (
                "contentfilter peak RSS, all processes, c=16: < 200 MB",
                f"{peak['peak_rss_mb']:.1f} MB ({peak['mode']}, {peak['mix']}, {peak['filter']})",
                peak["peak_rss_mb"] < 200,
            )
        )
    for extra in extras:
        if extra["filter"] == CF and extra["mix"] == "big50m" and extra.get("rss_over_baseline_mb"):
            times = extra["rss_over_baseline_mb"] * MB / extra["size"]
            results.append(
                (
                    f"{extra['mode']}: memory for one 50 MB message < 5x its size",
                    f"{times:.1f}x (+{extra['rss_over_baseline_mb']:.0f} MB)",
                    times < 5,
                )
            )
    return results


def _point_key(point: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(point.get(k) for k in ("filter", "driver", "mode", "mix", "concurrency"))


def merge_rounds(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One point per filter and point of the grid: a point measured in several rounds
    becomes the median of each number; nested figures (replies, kinds) are those of
    the round with the median throughput."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for point in points:
        groups.setdefault(_point_key(point), []).append(point)
    merged = []
    for group in groups.values():
        if len(group) == 1:
            merged.append(group[0])
            continue
        ordered = sorted(group, key=lambda p: float(p["msgs_per_s"]))
        point = dict(ordered[(len(ordered) - 1) // 2])
        for key, value in point.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "round":
                middle = statistics.median(
                    float(p[key]) for p in group if isinstance(p.get(key), (int, float))
                )
                point[key] = round(middle, 2) if isinstance(value, float) else round(middle)
        point["rounds"] = [float(p["msgs_per_s"]) for p in group]
        merged.append(point)
    return merged


def rounds_table(points: list[dict[str, Any]]) -> list[str]:
    """Each round's msg/s of the points measured more than once, to show the spread."""
    rows = []
    for point in points:
        if "rounds" not in point:
            continue
        rounds = point["rounds"]
        spread = (max(rounds) - min(rounds)) / point["msgs_per_s"] if point["msgs_per_s"] else 0
        rows.append(
            [
                point["mode"],
                point["mix"],
                str(point["concurrency"]),
                point["filter"],
                " / ".join(_fmt(r) for r in rounds),
                _fmt(point["msgs_per_s"]),
                f"{100 * spread:.0f}%",
            ]
        )
    if not rows:
        return []
    header = ["mode", "mix", "c", "target", "msg/s per round", "median", "spread"]
    return _table(header, rows)


def render(data: dict[str, Any]) -> str:
    meta, extras = data["meta"], data["extras"]
    points = merge_rounds(data["points"])
    workers_note = (
        "measured (mode a)"
        if meta.get("workers_supported")
        else "not measured: this checkout's `serve` has no --workers"
    )
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
        f"$max_servers: {settings['amavis_max_servers']}; clamd reached by"
        f" {'TCP' if settings.get('clamd_via') == 'tcp' else 'its unix socket'} (all filters)",
        f"- smtp-source points: modes {', '.join(settings.get('source_modes', [])) or 'none'},"
        f" bodies {', '.join(settings.get('source_mixes', []))},"
        f" {settings.get('source_count')} messages (mode c: {settings.get('source_count_spam')})"
        " per point, a connection per message, contentfilter's cache off",
        f"- serve --workers: {workers_note}",
        f"- rounds per mode c point: {settings.get('rounds', 1)} (medians; the filters in"
        " turn within each round)",
        f"- finished: {meta.get('finished', '?')}",
        "",
        "### Targets",
        "",
    ]
    lines += _table(
        ["target", "measured", "met"],
        [
            [name, measured, "yes" if met else "**no**"]
            for name, measured, met in targets(points, extras)
        ],
    )
    lines += ["", "### Throughput and latency (load generator, unique messages)", ""]
    lines += throughput_tables(points)
    source = source_tables(points)
    if source:
        lines += ["### Throughput with smtp-source (one repeated body)", "", *source]
    workers = worker_table(points)
    if workers:
        lines += ["### contentfilter serve --workers (mode a)", "", *workers, ""]
    rounds = rounds_table(points)
    if rounds:
        lines += ["### Rounds (the spread behind the medians)", "", *rounds, ""]
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
