"""Closed-loop load generator for an SMTP content filter (or for spamd alone).

`--concurrency` sessions each send messages back to back, as Postfix's
smtp-amavis transport does: EHLO once, XFORWARD when offered, MAIL/RCPT/DATA
pipelined when PIPELINING is offered, up to `--max-use` messages per session
(Postfix's max_use=20), then QUIT and a new session. Messages come from
benchmarks.messages; all are built before the clock starts (or, past a memory
budget, on the fly), so generating them costs the measurement nothing.

Per message it records the time from the start of its transaction (from the
connect for a session's first message, so a filter that makes clients wait to
connect pays for it) to the final reply to DATA, with the reply code.

`--protocol spamd` instead sends each message to spamd with the spamc protocol
(CHECK SPAMC/1.5, one connection per message, as spamc does). Messages over
`--spamd-size-limit` are skipped without contacting spamd, as spamc does.

Writes one JSON document (records and timing) to --out or stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import messages

PREBUILD_BUDGET = 1536 * 1024 * 1024  # bytes of messages built before the clock starts
# A server whose listen queue overflowed leaves the client's side of the connection
# established with no server behind it (clamsmtpd listens with a backlog of 5): no
# greeting ever comes. The message fails after this long and the next one reconnects.
GREETING_TIMEOUT = 20.0


def _sent(
    index: int,
    kind: str,
    message: bytes,
    start: float,
    data_start: float,
    data_sent: float,
    code: int,
    text: str,
) -> Sent:
    """The record of one message whose final reply (or failure) was just read."""
    return Sent(
        index, kind, len(message), start, data_start, data_sent, time.monotonic(), code, text[:200]
    )


@dataclass
class Sent:
    """One message's outcome as the client saw it."""

    index: int
    kind: str
    size: int
    start: float  # monotonic; the connect, for a session's first message
    data_start: float  # the first byte of the message about to be written
    data_sent: float  # the end-of-data dot written
    done: float  # final reply read
    code: int
    reply: str

    @property
    def latency(self) -> float:
        return self.done - self.start


class SmtpError(Exception):
    """The server answered outside the 2xx/3xx range where we need them."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(f"{code} {text}")
        self.code = code
        self.text = text


class Session:
    """One SMTP client session over asyncio streams."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.extensions: set[str] = set()

    @classmethod
    async def open(cls, host: str, port: int) -> Session:
        reader, writer = await asyncio.open_connection(host, port, limit=1 << 20)
        session = cls(reader, writer)
        try:
            code, text = await asyncio.wait_for(session.read_reply(), GREETING_TIMEOUT)
        except TimeoutError:
            writer.close()
            raise ConnectionError(f"no greeting in {GREETING_TIMEOUT:g} s") from None
        if code != 220:
            raise SmtpError(code, text)
        writer.write(b"EHLO client.example.org\r\n")
        code, text = await session.read_reply()
        if code != 250:
            raise SmtpError(code, text)
        session.extensions = {line.split(" ", 1)[0].upper() for line in text.splitlines()[1:]}
        return session

    async def read_reply(self) -> tuple[int, str]:
        lines: list[str] = []
        while True:
            line = await self.reader.readline()
            if not line:
                raise ConnectionResetError("server closed the connection")
            lines.append(line[4:].decode(errors="replace").rstrip("\r\n"))
            if line[3:4] != b"-":
                return int(line[:3]), "\n".join(lines)

    async def send(self, message: bytes) -> tuple[int, str, float, float]:
        """One transaction: the final reply, when the data started and ended."""
        envelope = []
        if "XFORWARD" in self.extensions:
            envelope.append(
                b"XFORWARD NAME=client.example.org ADDR=192.0.2.10 PROTO=ESMTP "
                b"HELO=client.example.org SOURCE=REMOTE\r\n"
            )
        envelope.append(
            f"MAIL FROM:<{messages.SENDER}> SIZE={len(message)}\r\n".encode()
            if "SIZE" in self.extensions
            else f"MAIL FROM:<{messages.SENDER}>\r\n".encode()
        )
        envelope += [f"RCPT TO:<{messages.RECIPIENT}>\r\n".encode(), b"DATA\r\n"]
        if "PIPELINING" in self.extensions:
            self.writer.write(b"".join(envelope))
            replies = [await self.read_reply() for _ in envelope]
        else:
            replies = []
            for command in envelope:
                self.writer.write(command)
                replies.append(await self.read_reply())
                if replies[-1][0] >= 400:
                    break
        code, text = replies[-1]
        if code != 354:
            bad = next(reply for reply in replies if reply[0] >= 400)
            self.writer.write(b"RSET\r\n")
            await self.read_reply()
            now = time.monotonic()
            return bad[0], bad[1], now, now
        data_start = time.monotonic()
        self.writer.write(message)
        self.writer.write(b".\r\n")
        await self.writer.drain()
        data_sent = time.monotonic()
        code, text = await self.read_reply()
        return code, text, data_start, data_sent

    async def quit(self) -> None:
        try:
            self.writer.write(b"QUIT\r\n")
            await self.read_reply()
        except (ConnectionError, OSError):
            pass
        self.writer.close()


class Source:
    """Numbers and builds the messages; shared by all sessions of a run."""

    def __init__(self, mix: str, count: int | None, unique_base: int, prebuild: bool) -> None:
        self.mix = mix
        self.count = count
        self.unique_base = unique_base
        self.counter: Iterator[int] = itertools.count()
        self.built: dict[int, bytes] = {}
        if prebuild and count is not None:
            budget = PREBUILD_BUDGET
            for index in range(count):
                if budget <= 0:
                    break
                self.built[index] = self.build(index)
                budget -= len(self.built[index])
        self.deadline: float | None = None

    def build(self, index: int) -> bytes:
        return messages.build(messages.kind_for(self.mix, index), self.unique_base + index)

    def next(self) -> tuple[int, str, bytes] | None:
        if self.deadline is not None and time.monotonic() >= self.deadline:
            return None
        index = next(self.counter)
        if self.count is not None and index >= self.count:
            return None
        message = self.built.pop(index, None) or self.build(index)
        return index, messages.kind_for(self.mix, index), message


async def smtp_worker(host: str, port: int, source: Source, max_use: int, out: list[Sent]) -> None:
    session: Session | None = None
    used = 0
    while (item := source.next()) is not None:
        index, kind, message = item
        start = time.monotonic()
        try:
            if session is None or used >= max_use:
                if session is not None:
                    await session.quit()
                session = await Session.open(host, port)
                used = 0
            code, text, data_start, data_sent = await session.send(message)
            used += 1
        except SmtpError as error:
            code, text = error.code, error.text
            data_start = data_sent = time.monotonic()
            session = None
        except (ConnectionError, OSError, asyncio.IncompleteReadError) as error:
            code, text = 0, f"connection: {error!r}"
            data_start = data_sent = time.monotonic()
            session = None
        out.append(_sent(index, kind, message, start, data_start, data_sent, code, text))
    if session is not None:
        await session.quit()


async def spamd_worker(
    host: str, port: int, source: Source, size_limit: int, out: list[Sent]
) -> None:
    while (item := source.next()) is not None:
        index, kind, message = item
        start = time.monotonic()
        if len(message) > size_limit:
            # As spamc -s: not sent, passed on unscanned; the filters do the same.
            out.append(_sent(index, kind, message, start, start, start, 250, "skipped: size"))
            continue
        try:
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(f"CHECK SPAMC/1.5\r\nContent-length: {len(message)}\r\n\r\n".encode())
            data_start = time.monotonic()
            writer.write(message)
            await writer.drain()
            data_sent = time.monotonic()
            writer.write_eof()
            response = await reader.read()
            writer.close()
            status = response.split(b"\r\n", 1)[0].decode(errors="replace")
            parts = status.split()
            code = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else -1
            spam = next(
                (line for line in response.split(b"\r\n") if line.startswith(b"Spam:")), b""
            )
            text = f"{status} {spam.decode(errors='replace')}"
        except (ConnectionError, OSError) as error:
            code, text = -1, f"connection: {error!r}"
            data_start = data_sent = time.monotonic()
        # spamd's EX_OK (0) is our success; keep SMTP-like codes: 250 ok, 451 error.
        code = 250 if code == 0 else 451
        out.append(_sent(index, kind, message, start, data_start, data_sent, code, text))


async def run_phase(
    args: argparse.Namespace, count: int | None, duration: float | None, unique_base: int
) -> tuple[list[Sent], float, float]:
    host, _, port_text = args.target.rpartition(":")
    port = int(port_text)
    source = Source(args.mix, count, unique_base, prebuild=not args.no_prebuild)
    out: list[Sent] = []
    started = time.monotonic()
    if duration is not None:
        source.deadline = started + duration
    if args.protocol == "spamd":
        workers = [
            spamd_worker(host, port, source, args.spamd_size_limit, out)
            for _ in range(args.concurrency)
        ]
    else:
        workers = [
            smtp_worker(host, port, source, args.max_use, out) for _ in range(args.concurrency)
        ]
    await asyncio.gather(*workers)
    return out, started, time.monotonic()


async def main_async(args: argparse.Namespace) -> dict[str, object]:
    if args.warmup:
        await run_phase(args, args.warmup, None, args.unique_base + 900_000_000)
    if args.ready_file:
        Path(args.ready_file).write_text("measuring\n")
    records, started, ended = await run_phase(args, args.count, args.duration, args.unique_base)
    return {
        "target": args.target,
        "protocol": args.protocol,
        "mix": args.mix,
        "concurrency": args.concurrency,
        "started": started,
        "ended": ended,
        "records": [asdict(record) for record in records],
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="SMTP (or spamd) closed-loop load generator")
    parser.add_argument("--target", required=True, help="host:port of the filter (or spamd)")
    parser.add_argument("--protocol", choices=("smtp", "spamd"), default="smtp")
    parser.add_argument("--mix", default="blend", choices=(*messages.MIXES, "big50m"))
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--count", type=int, help="messages to send (after warm-up)")
    parser.add_argument("--duration", type=float, help="seconds to keep starting messages")
    parser.add_argument("--warmup", type=int, default=0, help="messages sent first and not counted")
    parser.add_argument(
        "--max-use", type=int, default=20, help="messages per session (Postfix max_use)"
    )
    parser.add_argument(
        "--unique-base", type=int, default=0, help="first unique number for message bytes"
    )
    parser.add_argument(
        "--spamd-size-limit", type=int, default=500 * 1024, help="spamc's -s (bytes)"
    )
    parser.add_argument("--no-prebuild", action="store_true", help="build messages on the fly")
    parser.add_argument("--ready-file", help="written when the measured phase starts")
    parser.add_argument("--out", help="JSON output file (default: stdout)")
    args = parser.parse_args(argv)
    if args.count is None and args.duration is None:
        parser.error("give --count or --duration (or both: whichever ends first)")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    result = asyncio.run(main_async(args))
    text = json.dumps(result, separators=(",", ":"))
    if args.out:
        Path(args.out).write_text(text)
    else:
        sys.stdout.write(text + "\n")


if __name__ == "__main__":
    main()
