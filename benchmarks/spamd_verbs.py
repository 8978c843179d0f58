"""spamd's CPU per message for each request verb a filter could send.

    .venv/bin/python -m benchmarks.spamd_verbs [--messages 60] [--rounds 3] [--mix small]

Starts a private spamd (tests/support/daemons.start_spamd: `--local`, 3 children),
then sends the same unique messages with each verb in turn, one connection per
message and one at a time, as spamc does: CHECK (score only), SYMBOLS (score and
the names of the rules that hit), REPORT (score and the report with the per-rule
table), HEADERS and PROCESS (score and the message's new header section, or the
whole rewritten message). Rounds alternate the verbs so that drift spreads evenly;
the figure is the median over the rounds of spamd's CPU (its whole process tree,
utime + stime) per message.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import messages, procmon
from tests.support.daemons import start_spamd

VERBS = ("CHECK", "SYMBOLS", "REPORT", "HEADERS", "PROCESS")


def request(address: tuple[str, int], verb: str, body: bytes) -> bytes:
    """One spamc-style request; spamd's whole answer."""
    head = f"{verb} SPAMC/1.5\r\nContent-length: {len(body)}\r\n\r\n".encode()
    with socket.create_connection(address, timeout=60) as connection:
        connection.sendall(head + body)
        connection.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := connection.recv(65536):
            chunks.append(chunk)
    answer = b"".join(chunks)
    if not answer.startswith(b"SPAMD/1.") or b" 0 EX_OK" not in answer.split(b"\r\n", 1)[0]:
        raise RuntimeError(f"spamd answered {answer[:80]!r}")
    return answer


def measure(address: tuple[str, int], pid: int, verb: str, bodies: list[bytes]) -> float:
    """spamd's CPU milliseconds per message for `verb`."""
    before = procmon.cpu_seconds(pid)
    for body in bodies:
        request(address, verb, body)
    time.sleep(0.2)  # let the children's accounting settle
    return 1000 * (procmon.cpu_seconds(pid) - before) / len(bodies)


def bodies_for(mix: str, count: int, unique: int) -> list[bytes]:
    """`count` messages of `mix`, unique to `unique`, under spamc's size limit."""
    bodies = [messages.build(messages.kind_for(mix, n), unique + n) for n in range(count)]
    return [body for body in bodies if len(body) <= 512_000]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--mix", default="small", choices=sorted(messages.MIXES))
    parser.add_argument("--verbs", default=",".join(VERBS))
    arguments = parser.parse_args()
    verbs = [verb.strip().upper() for verb in arguments.verbs.split(",")]
    figures: dict[str, list[float]] = {verb: [] for verb in verbs}
    with tempfile.TemporaryDirectory() as scratch, start_spamd(Path(scratch)) as spamd:
        host, _, port = spamd.address.rpartition(":")
        address = (host, int(port))
        unique = 0
        warm = bodies_for(arguments.mix, 6, 10**9)
        for verb in verbs:  # every child loads its rules before the clock starts
            for body in warm:
                request(address, verb, body)
        for round_number in range(arguments.rounds):
            order = verbs if round_number % 2 == 0 else list(reversed(verbs))
            for verb in order:
                unique += 1_000_000
                bodies = bodies_for(arguments.mix, arguments.messages, unique)
                figures[verb].append(measure(address, spamd.process.pid, verb, bodies))
    base = statistics.median(figures["CHECK"]) if "CHECK" in figures else None
    for verb in verbs:
        value = statistics.median(figures[verb])
        versus = f" ({value / base:.2f}x CHECK)" if base else ""
        rounds = ", ".join(f"{v:.1f}" for v in figures[verb])
        print(f"{verb:8} {value:6.1f} ms spamd CPU per message{versus}  [rounds: {rounds}]")


if __name__ == "__main__":
    main()
