"""Side-by-side benchmark: contentfilter, fuglu, amavisd-new, clamsmtp and the direct path.

One run starts one clamd, one spamd (both from tests/support/daemons.py) and one
counting sink (benchmarks/sink.py) and, per mode, one contentfilter, one private
amavisd-new (benchmarks/amavis.py), one fuglu (benchmarks/fuglu.py) and, in mode
b, one clamsmtp (benchmarks/clamsmtp.py), all relaying to the sink. For each
mode x mix x concurrency it drives every filter in turn with the same message
mix (benchmarks/loadgen.py, a separate process) and records msgs/s, latency
p50/p99, the filter's CPU per message and the peak RSS of its process tree.
Then, per mode, Postfix's smtp-source sends one repeated body, one connection
per message (benchmarks/source.py), to each filter; contentfilter runs that part
with its result cache off, since the body repeats.

Modes: a = no scanners (pure relay), b = ClamAV, c = ClamAV + SpamAssassin.
"direct" is the load generator talking straight to the sink: the harness's
ceiling. In mode c, "spamd" is spamd alone driven with the spamc protocol at the
same concurrency: the physical limit for that mode.

Extras per mode: time to first byte at the next hop for a 2 MB message, and the
memory one 50 MB message costs (peak tree RSS over the idle baseline).

Results go to --results (JSON + a Markdown report). See BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks import messages, procmon, report, stats  # noqa: E402
from benchmarks import profile as profiling  # noqa: E402
from benchmarks import source as smtp_source  # noqa: E402
from benchmarks.amavis import AmavisSettings, start_amavis  # noqa: E402
from benchmarks.clamsmtp import start_clamsmtp  # noqa: E402
from benchmarks.fuglu import FugluSettings, start_fuglu  # noqa: E402
from tests.support.daemons import start_clamd, start_filter, start_spamd  # noqa: E402
from tests.support.net import free_port, smtp_greeting, wait_until  # noqa: E402

FILTERS = ("contentfilter", "fuglu", "amavisd-new", "clamsmtp", "direct")
MODES = {"a": "no scanners (pure relay)", "b": "ClamAV", "c": "ClamAV + SpamAssassin"}
CLAMSMTP_MODES = "b"  # clamsmtp has ClamAV and nothing else
# time to first byte and the 50 MB message: the filters that take any size
EXTRAS_FILTERS = ("contentfilter", "amavisd-new", "direct")
WORKER_COUNTS = (1, 2)  # contentfilter serve --workers N, in mode a, when it has the option

# contentfilter's configuration per mode; the daemons' addresses come from the
# command line (--clamd/--spamd), as an administrator would pass them.
CONTENTFILTER_CONFIG = {
    "a": "scanners: {}\n",
    "b": "scanners:\n  clamav: {}\n  banned: {}\n  bad_header: {}\n",
    "c": "scanners:\n  clamav: {}\n  spamassassin: {}\n  banned: {}\n  bad_header: {}\n",
}
NO_CACHE = "cache: {enabled: false}\n"  # for smtp-source's repeated body
# mode c with the rule names only (spamd SYMBOLS) instead of per-rule scores (REPORT)
SYMBOLS = CONTENTFILTER_CONFIG["c"].replace(
    "spamassassin: {}", "spamassassin: {rule_scores: false}"
)


@dataclass
class Target:
    """Something the load generator can drive, and the process tree to watch."""

    name: str
    address: str
    pid: int
    protocol: str = "smtp"
    max_use: int = 20  # messages per session (Postfix's max_use)


@dataclass
class Daemons:
    clamd_pid: int
    clamd_address: str
    spamd_pid: int
    spamd_address: str
    sink: Target
    clamd_socket: Path


class Bench:
    """Runs the points and keeps their results."""

    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.unique = 0
        self.points: list[dict[str, Any]] = []
        self.extras: list[dict[str, Any]] = []
        self.profiles: list[dict[str, Any]] = []
        self.workers_supported = False

    # --- load generator -------------------------------------------------------

    def loadgen(
        self,
        target: Target,
        mix: str,
        concurrency: int,
        count: int | None,
        duration: float | None,
        warmup: int = 0,
    ) -> dict[str, Any]:
        self.unique += 1_000_000
        out = self.workdir / "loadgen.json"
        command = [
            sys.executable,
            "-m",
            "benchmarks.loadgen",
            "--target",
            target.address,
            "--protocol",
            target.protocol,
            "--mix",
            mix,
            "--concurrency",
            str(concurrency),
            "--unique-base",
            str(self.unique),
            "--out",
            str(out),
            "--spamd-size-limit",
            str(self.args.spamd_size_limit),
            "--max-use",
            str(target.max_use),
        ]
        if count is not None:
            command += ["--count", str(count)]
        if duration is not None:
            command += ["--duration", str(duration)]
        if warmup:
            command += ["--warmup", str(warmup)]
        subprocess.run(command, check=True, cwd=REPO)
        result: dict[str, Any] = json.loads(out.read_text())
        return result

    # --- one measured point ---------------------------------------------------

    def measure(
        self,
        daemons: Daemons,
        target: Target,
        mode: str,
        mix: str,
        concurrency: int,
        round_: int = 1,
    ) -> dict[str, Any]:
        args = self.args
        warmup = args.warmup if args.warmup is not None else 2 * concurrency
        if warmup:
            self.loadgen(target, mix, concurrency, warmup, None)
        sink_query(daemons.sink, "XRESET")
        before = self._cpu(daemons, target)
        children_before = procmon.children_cpu_seconds(target.pid)
        with procmon.TreeSampler(target.pid) as sampler:
            result = self.loadgen(target, mix, concurrency, args.count, args.duration)
        after = self._cpu(daemons, target)
        children_after = procmon.children_cpu_seconds(target.pid)
        sink = json.loads(sink_query(daemons.sink, "XSTATS"))
        point: dict[str, Any] = {
            "filter": target.name,
            "driver": "loadgen",
            "mode": mode,
            "mix": mix,
            "concurrency": concurrency,
            "round": round_,
        }
        point |= stats.summarise(result)
        point |= _resources(before, after, sampler, sink, point["sent"])
        if target.name.startswith("contentfilter-w"):  # serve --workers: how the load spread
            point["worker_cpu_shares"] = _shares(children_before, children_after)
        self.points.append(point)
        print(report.point_line(point), flush=True)
        return point

    def measure_source(
        self, daemons: Daemons, target: Target, mode: str, mix: str, concurrency: int
    ) -> dict[str, Any]:
        """One point driven by smtp-source: the same body again and again."""
        args = self.args
        body = smtp_source.message_file(self.workdir, mix, 7_000_000)
        smtp_source.run(target.address, body, concurrency, 2 * concurrency)  # warm-up
        sink_query(daemons.sink, "XRESET")
        count = args.source_count if mode != "c" else args.source_count_spam
        before = self._cpu(daemons, target)
        with procmon.TreeSampler(target.pid) as sampler:
            run = smtp_source.run(target.address, body, concurrency, count)
        after = self._cpu(daemons, target)
        sink = json.loads(sink_query(daemons.sink, "XSTATS"))
        point: dict[str, Any] = {
            "filter": target.name,
            "driver": "smtp-source",
            "mode": mode,
            "mix": mix,
            "concurrency": concurrency,
            "sent": run.messages,
            "seconds": round(run.seconds, 3),
            # cut off: what reached the sink in the time allowed (viruses aside, all of it)
            "msgs_per_s": round(
                (run.messages if run.returncode != -9 else sink["messages"]) / run.seconds, 2
            ),
            "p50_ms": float("nan"),
            "p99_ms": float("nan"),
            "replies": {"exit": run.returncode},
            "failure_examples": [run.errors] if run.errors else [],
            "kinds": {},
        }
        point |= _resources(before, after, sampler, sink, run.messages)
        self.points.append(point)
        print(report.point_line(point), flush=True)
        return point

    def _cpu(self, daemons: Daemons, target: Target) -> dict[str, float]:
        busy, total = procmon.machine_busy()
        return {
            "filter": procmon.cpu_seconds(target.pid),
            "clamd": procmon.cpu_seconds(daemons.clamd_pid),
            "spamd": procmon.cpu_seconds(daemons.spamd_pid),
            "machine": busy,
            "total": total,
        }

    # --- extras: time to first byte, one 50 MB message -------------------------

    def first_byte(self, daemons: Daemons, target: Target, mode: str, mix: str, count: int) -> None:
        self.loadgen(target, mix, 1, 1, None)  # warm the path
        sink_query(daemons.sink, "XRESET")
        baseline = procmon.idle_rss(target.pid) if mix == "big50m" else 0
        with procmon.TreeSampler(target.pid, interval=0.02) as sampler:
            result = self.loadgen(target, mix, 1, count, None)
        sink = json.loads(sink_query(daemons.sink, "XSTATS"))
        arrivals = {record["seq"]: record for record in sink["records"]}
        from_start, from_end, latencies = [], [], []
        for index, record in enumerate(result["records"]):
            arrival = arrivals.get(result_unique(result, index, self.unique))
            latencies.append(record["done"] - record["start"])
            if arrival is not None:
                from_start.append(arrival["first_byte"] - record["data_start"])
                from_end.append(arrival["first_byte"] - record["data_sent"])
        extra = {
            "filter": target.name,
            "mode": mode,
            "mix": mix,
            "messages": len(result["records"]),
            "size": result["records"][0]["size"] if result["records"] else 0,
            "replies": stats.summarise(result)["replies"],
            "latency_ms": round(1000 * statistics.median(latencies), 1) if latencies else None,
            "first_byte_ms": _median_ms(from_start),
            "first_byte_after_data_ms": _median_ms(from_end),
        }
        if mix == "big50m":
            extra |= {
                "baseline_rss_mb": round(baseline / procmon.MB, 1),
                "peak_rss_mb": round(sampler.memory.peak_rss / procmon.MB, 1),
                "rss_over_baseline_mb": round((sampler.memory.peak_rss - baseline) / procmon.MB, 1),
            }
        self.extras.append(extra)
        print(report.extra_line(extra), flush=True)

    # --- profile: unmeasured load under py-spy ----------------------------------

    def profile(self, target: Target, mode: str, mix: str, concurrency: int) -> None:
        py_spy = profiling.find_py_spy()
        if py_spy is None:
            print("profile: py-spy not found (benchmarks/run --profile installs it)", flush=True)
            return
        raw = self.workdir / f"profile-{target.name}-{mode}-{mix}-c{concurrency}.txt"
        with profiling.recording(py_spy, target.pid, raw):
            self.loadgen(target, mix, concurrency, None, self.args.profile_seconds)
        summary = profiling.summarise(raw)
        summary |= {
            "filter": target.name,
            "mode": mode,
            "mix": mix,
            "concurrency": concurrency,
            "raw": str(raw),
        }
        self.profiles.append(summary)
        print(
            f"profile {mode} {mix} c={concurrency}: {summary['samples']} samples, top: "
            + "; ".join(f"{pct}% {frame}" for pct, frame in summary["self"][:3]),
            flush=True,
        )


def _resources(
    before: dict[str, float],
    after: dict[str, float],
    sampler: procmon.TreeSampler,
    sink: dict[str, Any],
    sent: int,
) -> dict[str, Any]:
    """CPU per message of the target, clamd and spamd; memory; what reached the sink."""
    sent = max(1, sent)
    busy = after["machine"] - before["machine"]
    return {
        "cpu_ms_per_msg": round(1000 * (after["filter"] - before["filter"]) / sent, 2),
        "clamd_cpu_ms_per_msg": round(1000 * (after["clamd"] - before["clamd"]) / sent, 2),
        "spamd_cpu_ms_per_msg": round(1000 * (after["spamd"] - before["spamd"]) / sent, 2),
        "machine_busy_pct": round(100 * busy / max(1e-9, after["total"] - before["total"]), 1),
        "peak_rss_mb": round(sampler.memory.peak_rss / procmon.MB, 1),
        "peak_pss_mb": round(sampler.memory.peak_pss / procmon.MB, 1),
        "peak_processes": sampler.memory.peak_processes,
        "delivered": sink["messages"],
        "spam_flagged": sink["spam_flagged"],
    }


def _shares(before: dict[int, float], after: dict[int, float]) -> list[float]:
    """Each child's share of the children's CPU over the point, largest first (children
    that started or ended meanwhile are left out)."""
    spent = {pid: after[pid] - before[pid] for pid in after if pid in before}
    total = sum(spent.values())
    return (
        sorted((round(value / total, 3) for value in spent.values()), reverse=True) if total else []
    )


def _median_ms(values: list[float]) -> float | None:
    return round(1000 * statistics.median(values), 1) if values else None


def result_unique(result: dict[str, Any], index: int, base: int) -> int:
    """The X-Bench-Seq the sink saw for record `index` of the last run."""
    return base + int(result["records"][index]["index"])


# --- daemons and filters --------------------------------------------------------


@contextlib.contextmanager
def start_sink(workdir: Path) -> Iterator[Target]:
    port = free_port()
    log = workdir / "sink.log"
    with open(log, "wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.sink", "--listen", f"127.0.0.1:{port}"],
            cwd=REPO,
            stdout=stderr,
            stderr=stderr,
            start_new_session=True,
        )
    try:
        wait_until(
            lambda: smtp_greeting("127.0.0.1", port).startswith(b"220"), "sink", 30, process, log
        )
        yield Target("direct", f"127.0.0.1:{port}", process.pid)
    finally:
        process.terminate()
        process.wait(10)


def sink_query(sink: Target, verb: str) -> str:
    import asyncio

    from benchmarks.sink import query

    host, _, port = sink.address.rpartition(":")
    return asyncio.run(query(host, int(port), verb))


@dataclass
class ModeTargets:
    """What one mode drives: the load generator's targets, and smtp-source's."""

    loadgen: list[Target]
    source: list[Target]


def serve_options() -> str:
    """`contentfilter serve --help`, to see which options this checkout has."""
    return _output([str(REPO / ".venv" / "bin" / "contentfilter"), "serve", "--help"])


@contextlib.contextmanager
def filters_for_mode(bench: Bench, daemons: Daemons, mode: str) -> Iterator[ModeTargets]:
    """Start the filters of this mode (each relays to the sink); stop them after."""
    args = bench.args
    loadgen: list[Target] = []
    source: list[Target] = []
    sink_port = int(daemons.sink.address.rpartition(":")[2])
    # clamd as Debian ships it (a unix socket), or its TCP port: the same for everyone
    unix = args.clamd_via == "unix"
    clamd_port = daemons.clamd_address.rpartition(":")[2]
    clamd_for_others = str(daemons.clamd_socket) if unix else clamd_port
    clamd_for_us = str(daemons.clamd_socket) if unix else daemons.clamd_address
    spamd_port = int(daemons.spamd_address.rpartition(":")[2])
    with contextlib.ExitStack() as stack:
        if "contentfilter" in args.filters:
            config = CONTENTFILTER_CONFIG[mode]
            # the product's default, one worker per core (start_filter's is one worker)
            default: tuple[str, ...] = (
                ("--workers", str(os.cpu_count() or 1)) if bench.workers_supported else ()
            )
            # (name, extra serve arguments, config, driven by smtp-source)
            variants: list[tuple[str, tuple[str, ...], str, bool]] = [
                ("contentfilter", default, config, False)
            ]
            if mode == "c" and args.symbols_variant:
                variants.append(("contentfilter-symbols", default, SYMBOLS, False))
            if mode == "a" and bench.workers_supported:
                variants += [
                    (f"contentfilter-w{n}", ("--workers", str(n)), config, False)
                    for n in WORKER_COUNTS
                ]
            if args.source:
                variants.append(("contentfilter", default, config + NO_CACHE, True))
            for name, extra, text, for_source in variants:
                handle = start_filter(
                    bench.workdir / f"contentfilter-{mode}-{name}{'-source' * for_source}",
                    next_hop=daemons.sink.address,
                    clamd=clamd_for_us if mode in "bc" else "off",
                    spamd=daemons.spamd_address if mode == "c" else "off",
                    config_text=text,
                    extra_args=extra,
                    timeout=60,
                )
                stack.callback(handle.stop)
                target = Target(name, handle.address, handle.process.pid)
                (source if for_source else loadgen).append(target)
        if "fuglu" in args.filters:
            settings = FugluSettings(mode, sink_port, clamd_for_others, spamd_port)
            fuglu = stack.enter_context(start_fuglu(bench.workdir, settings))
            # fuglu's SMTP connector ends the session after each message
            loadgen.append(Target("fuglu", fuglu.address, fuglu.pid, max_use=1))
        if "amavisd-new" in args.filters:
            amavis_settings = AmavisSettings(
                mode=mode,
                sink_port=sink_port,
                clamd=clamd_for_others,
                spamd_port=spamd_port,
                spam=args.amavis_spam,
                max_servers=args.amavis_max_servers,
            )
            amavis = stack.enter_context(start_amavis(bench.workdir, amavis_settings))
            loadgen.append(Target("amavisd-new", amavis.address, amavis.pid))
        if "clamsmtp" in args.filters and mode in CLAMSMTP_MODES:
            clamsmtp = stack.enter_context(
                start_clamsmtp(bench.workdir, sink_port, str(daemons.clamd_socket))
            )
            loadgen.append(Target("clamsmtp", clamsmtp.address, clamsmtp.pid))
        if "direct" in args.filters:
            loadgen.append(daemons.sink)
        source += [t for t in loadgen if t.name in ("fuglu", "amavisd-new", "clamsmtp", "direct")]
        if not args.source:
            source = []
        yield ModeTargets(loadgen, source)


def run(args: argparse.Namespace, workdir: Path) -> tuple[dict[str, Any], Bench]:
    bench = Bench(args, workdir)
    bench.workers_supported = "--workers" in serve_options()
    meta = describe(args, workdir)
    meta["workers_supported"] = bench.workers_supported
    print(f"workdir {workdir}", flush=True)
    with (
        start_clamd(workdir / "clamd") as clamd,
        start_spamd(workdir / "spamd") as spamd,
        start_sink(workdir) as sink,
    ):
        daemons = Daemons(
            clamd.process.pid,
            clamd.address,
            spamd.process.pid,
            spamd.address,
            sink,
            clamd.socket_path,
        )
        spamd_target = Target("spamd", spamd.address, spamd.process.pid, protocol="spamd")
        for mode in args.modes:
            with filters_for_mode(bench, daemons, mode) as targets:
                rounds = args.rounds if mode == "c" else 1
                for mix in args.mixes:
                    for concurrency in args.concurrency:
                        for round_ in range(1, rounds + 1):  # interleaved: ABC ABC
                            for target in targets.loadgen:
                                bench.measure(daemons, target, mode, mix, concurrency, round_)
                            if mode == "c" and args.spamd_alone:
                                bench.measure(daemons, spamd_target, mode, mix, concurrency, round_)
                if mode in args.source_modes:
                    for mix in args.source_mixes:
                        for concurrency in args.concurrency:
                            for target in targets.source:
                                bench.measure_source(daemons, target, mode, mix, concurrency)
                for target in targets.loadgen if args.extras else ():
                    if target.name not in EXTRAS_FILTERS:
                        continue
                    bench.first_byte(daemons, target, mode, "pdf2m", args.first_byte_count)
                    bench.first_byte(daemons, target, mode, "big50m", 1)
                for target in targets.loadgen if args.profile else ():
                    if target.name == "contentfilter":
                        for mix in args.mixes:
                            bench.profile(target, mode, mix, max(args.concurrency))
    meta["finished"] = now()
    return meta, bench


# --- description of the run ---------------------------------------------------------


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _output(command: list[str]) -> str:
    try:
        return subprocess.run(
            command, capture_output=True, text=True, cwd=REPO, check=False
        ).stdout.strip()
    except OSError:
        return ""


def fuglu_version() -> str:
    from benchmarks import fuglu

    try:
        interpreter = fuglu.python()
    except FileNotFoundError:
        return "not installed"
    return _output([str(interpreter), "-c", "import fuglu; print(fuglu.__version__)"]) or "?"


def describe(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Date, commit, machine, versions, command line."""
    cpu_model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.machine(),
    )
    memory = Path("/proc/meminfo").read_text().split("\n", 1)[0].split()[1]
    packages = {}
    for package in ("amavisd-new", "clamav-daemon", "spamd", "spamassassin", "postfix", "clamsmtp"):
        packages[package] = (
            _output(["dpkg-query", "-W", "-f=${Version}", package]) or "not installed"
        )
    packages["fuglu (PyPI)"] = fuglu_version()
    commit = _output(["git", "rev-parse", "--short", "HEAD"]) or "no commit yet"
    dirty = bool(_output(["git", "status", "--porcelain", "--untracked-files=no"]))
    return {
        "started": now(),
        "commit": commit + (" (with uncommitted changes)" if dirty else ""),
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model,
        "memory_gb": round(int(memory) / 1024 / 1024, 1),
        "kernel": platform.release(),
        "os": _output(["sh", "-c", ". /etc/os-release && echo $PRETTY_NAME"]),
        "python": platform.python_version(),
        "packages": packages,
        "command": "benchmarks/run " + " ".join(shlex.quote(arg) for arg in args.argv),
        "settings": {
            "modes": args.modes,
            "mixes": args.mixes,
            "concurrency": args.concurrency,
            "count": args.count,
            "duration": args.duration,
            "rounds": args.rounds,
            "clamd_via": args.clamd_via,
            "filters": args.filters,
            "amavis_spam": args.amavis_spam,
            "amavis_max_servers": args.amavis_max_servers or "Debian default (2)",
            "spamd_size_limit": args.spamd_size_limit,
            "source_modes": args.source_modes if args.source else [],
            "source_mixes": args.source_mixes,
            "source_count": args.source_count,
            "source_count_spam": args.source_count_spam,
        },
        "workdir": str(workdir),
    }


# --- command line -------------------------------------------------------------------


def _list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="benchmarks/run",
        description="Benchmark contentfilter against fuglu, amavisd-new, clamsmtp"
        " and the direct path.",
    )
    parser.add_argument(
        "--modes",
        type=_list,
        default=["a", "b", "c"],
        help="comma list; a = no scanners, b = ClamAV, c = ClamAV + SpamAssassin (default a,b,c)",
    )
    parser.add_argument(
        "--mixes",
        type=_list,
        default=["blend", "small"],
        help="comma list of " + ", ".join(messages.MIXES) + ", or 'all' (default blend,small)",
    )
    parser.add_argument(
        "--concurrency",
        type=lambda text: [int(item) for item in _list(text)],
        default=[4, 16],
        help="comma list of concurrent sessions (default 4,16)",
    )
    parser.add_argument(
        "--count", type=int, default=400, help="messages per point, after a warm-up (default 400)"
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=50.0,
        help="cap per point in seconds; whichever of count and duration ends first (default 50)",
    )
    parser.add_argument(
        "--warmup", type=int, help="unmeasured messages first (default 2 x concurrency)"
    )
    parser.add_argument(
        "--filters",
        type=_list,
        default=list(FILTERS),
        help="comma list of " + ", ".join(FILTERS) + " (default all)",
    )
    parser.add_argument(
        "--no-spamd-alone",
        dest="spamd_alone",
        action="store_false",
        help="skip spamd driven alone in mode c",
    )
    parser.add_argument(
        "--no-extras",
        dest="extras",
        action="store_false",
        help="skip time to first byte and the 50 MB message",
    )
    parser.add_argument(
        "--first-byte-count",
        type=int,
        default=5,
        help="2 MB messages for time to first byte (default 5)",
    )
    parser.add_argument(
        "--amavis-spam",
        choices=("spamd", "embedded"),
        default="spamd",
        help="amavisd-new's SpamAssassin: the shared spamd (default),"
        " or embedded in each child (Debian's default)",
    )
    parser.add_argument(
        "--amavis-max-servers", type=int, help="amavisd-new's $max_servers (default: Debian's, 2)"
    )
    parser.add_argument(
        "--spamd-size-limit",
        type=int,
        default=500 * 1024,
        help="spamd alone: larger messages skip spamd, as spamc -s does (default 512000)",
    )
    parser.add_argument(
        "--clamd-via",
        choices=("unix", "tcp"),
        default="unix",
        help="how every filter reaches clamd: its unix socket, as Debian's clamav-daemon"
        " ships (default), or TCP (clamsmtp always uses the socket)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="mode c: measure each load-generator point this many times, the filters in"
        " turn within each round (ABC ABC), and report the median of each figure:"
        " spamd's cost per message drifts between points (default 1)",
    )
    parser.add_argument(
        "--no-symbols-variant",
        dest="symbols_variant",
        action="store_false",
        help="mode c: skip contentfilter-symbols (spamassassin.rule_scores: false)",
    )
    parser.add_argument(
        "--no-source",
        dest="source",
        action="store_false",
        help="skip the smtp-source points (one repeated body, a connection per message)",
    )
    parser.add_argument(
        "--source-modes",
        type=_list,
        default=["b", "c"],
        help="modes with smtp-source points (default b,c)",
    )
    parser.add_argument(
        "--source-mixes",
        type=_list,
        default=["small", "zip100k"],
        help="the repeated bodies (default small,zip100k: 3 KB text, 100 KB with a zip)",
    )
    parser.add_argument(
        "--source-count",
        type=int,
        default=400,
        help="messages per smtp-source point in modes a and b (default 400)",
    )
    parser.add_argument(
        "--source-count-spam",
        type=int,
        default=200,
        help="messages per smtp-source point in mode c (default 200)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="after each mode's points, run contentfilter under py-spy (unmeasured)",
    )
    parser.add_argument(
        "--profile-seconds",
        type=float,
        default=15.0,
        help="length of each profiled run (default 15)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 30 messages per point, 15 s cap, c=4 and 16, blend only;"
        " smtp-source points of 40 (mode c: 20) messages",
    )
    parser.add_argument(
        "--results",
        type=Path,
        default=REPO / "benchmarks" / "results",
        help="directory for the JSON and Markdown results (default benchmarks/results)",
    )
    parser.add_argument(
        "--workdir", type=Path, help="keep daemons' files and logs here (default: a temp dir)"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.count, args.duration, args.mixes, args.first_byte_count = 30, 15.0, ["blend"], 2
        args.source_count, args.source_count_spam = 40, 20
    if args.mixes == ["all"]:
        args.mixes = list(messages.MIXES)
    for name, values, known in (
        ("mode", args.modes, MODES),
        ("mix", args.mixes, messages.MIXES),
        ("filter", args.filters, FILTERS),
        ("mode", args.source_modes, MODES),
        ("mix", args.source_mixes, messages.MIXES),
    ):
        for value in values:
            if value not in known:
                parser.error(f"unknown {name} {value!r}")
    args.argv = argv
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if os.geteuid() != 0:
        sys.exit("bench: run as root (amavisd-new drops to its own user; the daemons need it)")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="contentfilter-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    os.chmod(workdir, 0o755)  # amavisd-new's user must reach its $MYHOME below it
    meta, bench = run(args, workdir)
    args.results.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    data = {
        "meta": meta,
        "points": bench.points,
        "extras": bench.extras,
        "profiles": bench.profiles,
    }
    json_path = args.results / f"bench-{stamp}.json"
    json_path.write_text(json.dumps(data, indent=1))
    markdown_path = args.results / f"bench-{stamp}.md"
    markdown_path.write_text(report.render(data))
    print(f"\nresults: {json_path}\nreport:  {markdown_path}", flush=True)


if __name__ == "__main__":
    main()
