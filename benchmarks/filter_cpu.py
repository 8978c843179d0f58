"""Filter CPU per message, for comparing two source trees on a busy machine.

A light stand-in for `benchmarks/run` when amavisd-new, clamd and spamd are not
wanted: it starts `contentfilter serve` from the tree given (PYTHONPATH=TREE, so
any checkout of the repository can be measured with this one's tools), the
benchmark sink as next hop, and the load generator, and reads the filter's CPU
(user + system, its worker processes included) from /proc before and after the
measured messages. Only in-process scanners run (no daemons): `--scanners`
takes the YAML of the `scanners:` section.

    .venv/bin/python benchmarks/filter_cpu.py --tree /tmp/old-checkout --tree . \\
        --mix small --count 400 --rounds 5

Rounds alternate between the trees, so a load that comes and goes on the
machine spreads over both; the median of the rounds is reported.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import procmon

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_for_port(port: int, process: subprocess.Popen[bytes], seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on port {port} after {seconds:g} s")


@contextlib.contextmanager
def running(command: list[str], port: int, env: dict[str, str], cwd: Path) -> Iterator[int]:
    process = subprocess.Popen(command, env=env, cwd=cwd, stdout=subprocess.DEVNULL)
    try:
        wait_for_port(port, process)
        yield process.pid
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def send(port: int, args: argparse.Namespace, count: int, unique_base: int) -> int:
    """Send `count` messages; the number answered 2xx."""
    out = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "loadgen.py"),
            "--target",
            f"127.0.0.1:{port}",
            "--mix",
            args.mix,
            "--concurrency",
            str(args.concurrency),
            "--count",
            str(count),
            "--unique-base",
            str(unique_base),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    records = json.loads(out)["records"]
    return sum(1 for record in records if str(record.get("code", "")).startswith("2"))


def measure(tree: Path, args: argparse.Namespace, workdir: Path, round_number: int) -> float:
    """Milliseconds of filter CPU per message for one round on `tree`."""
    sink_port, filter_port = free_port(), free_port()
    config = workdir / f"contentfilter-{filter_port}.yaml"
    config.write_text(
        f"server:\n  listen: ['127.0.0.1:{filter_port}']\n  hostname: bench.example\n"
        f"next_hop:\n  address: '127.0.0.1:{sink_port}'\n"
        f"cache:\n  enabled: false\n"
        f"scanners: {args.scanners}\n"
        "log:\n  level: warning\n"
    )
    if (tree / "contentfilter" / "privileges.py").exists():  # a root start would drop privileges
        config.write_text(config.read_text() + "daemon:\n  allow_root: true\n")
    env = {**os.environ, "PYTHONPATH": str(tree)}
    sink = [sys.executable, str(REPO / "benchmarks" / "sink.py"), "--listen"]
    serve = [sys.executable, "-m", "contentfilter.cli", "serve", "-c", str(config)]
    with (
        running([*sink, f"127.0.0.1:{sink_port}"], sink_port, dict(os.environ), REPO),
        running(serve, filter_port, env, tree) as pid,
    ):
        send(filter_port, args, args.warmup, 900_000_000 + round_number * 10_000)
        before = procmon.cpu_seconds(pid)
        accepted = send(filter_port, args, args.count, round_number * 100_000)
        used = procmon.cpu_seconds(pid) - before
    if accepted != args.count:
        raise RuntimeError(f"{tree}: only {accepted} of {args.count} messages answered 2xx")
    return used * 1000 / args.count


def source_of(tree: Path) -> str:
    """Which contentfilter a tree's interpreter imports (must be the tree itself)."""
    return subprocess.run(
        [sys.executable, "-c", "import contentfilter; print(contentfilter.__file__)"],
        env={**os.environ, "PYTHONPATH": str(tree)},
        cwd=tree,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", type=Path, action="append", required=True)
    parser.add_argument("--mix", default="small")
    parser.add_argument("--count", type=int, default=400)
    parser.add_argument("--warmup", type=int, default=40)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--scanners", default="{bad_header: {}}", help="YAML of `scanners:`")
    args = parser.parse_args(argv)
    trees = [tree.resolve() for tree in args.tree]
    for tree in trees:
        imported = source_of(tree)
        if not imported.startswith(str(tree) + "/"):
            sys.exit(f"{tree}: the interpreter imports {imported} instead")
    results: dict[Path, list[float]] = {tree: [] for tree in trees}
    with tempfile.TemporaryDirectory(prefix="filter-cpu-") as workdir:
        for round_number in range(args.rounds):
            for tree in trees:
                results[tree].append(measure(tree, args, Path(workdir), round_number))
    for tree, values in results.items():
        shown = ", ".join(f"{value:.2f}" for value in values)
        print(f"{tree}: median {statistics.median(values):.2f} ms CPU/message ({shown})")


if __name__ == "__main__":
    main()
