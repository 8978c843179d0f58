"""A counting SMTP sink for the filter's next hop.

Accepts every message with 250 and counts it; nothing is stored. It records, per
message, the monotonic time of the first DATA byte and of the end of data, so
the harness can measure time to first byte at the next hop (CLOCK_MONOTONIC is
system-wide on Linux, so the load generator's clock compares directly).

Two extra verbs, for the harness only:
    XSTATS  -> 250 {json}: counters and the records since the last XRESET
    XRESET  -> 250: zero the counters

Run: python -m benchmarks.sink --listen 127.0.0.1:10025
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import time
from collections import deque
from dataclasses import asdict, dataclass, field

_SEQ = re.compile(rb"\r\nX-Bench-Seq: (\d+)", re.IGNORECASE)
_SPAM_FLAG = re.compile(rb"\r\nX-Spam-Flag: YES", re.IGNORECASE)
_HEADER_SCAN = 64 * 1024  # how far into a message to look for the headers above


@dataclass
class Record:
    """One message as the sink saw it."""

    seq: int | None
    size: int
    first_byte: float
    end: float
    spam_flag: bool


@dataclass
class Stats:
    """Counters since the last XRESET."""

    messages: int = 0
    recipients: int = 0
    bytes: int = 0
    spam_flagged: int = 0
    sessions: int = 0
    records: deque[Record] = field(default_factory=lambda: deque(maxlen=100_000))

    def reset(self) -> None:
        self.messages = self.recipients = self.bytes = self.spam_flagged = self.sessions = 0
        self.records.clear()

    def as_json(self) -> str:
        data = asdict(self)
        data["records"] = [asdict(record) for record in self.records]
        return json.dumps(data, separators=(",", ":"))


class SinkProtocol(asyncio.Protocol):
    """A minimal ESMTP server: PIPELINING-safe, answers 250 to everything."""

    def __init__(self, stats: Stats, hostname: str) -> None:
        self.stats = stats
        self.hostname = hostname
        self.buffer = bytearray()
        self.in_data = False
        self.head = bytearray()
        self.size = 0
        self.first_byte = 0.0
        self.recipients = 0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.stats.sessions += 1
        transport.write(f"220 {self.hostname} ESMTP bench-sink\r\n".encode())

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while self.buffer:
            if self.in_data:
                if not self._take_data():
                    return
            else:
                end = self.buffer.find(b"\r\n")
                if end < 0:
                    return
                line = bytes(self.buffer[:end])
                del self.buffer[: end + 2]
                self._command(line)

    def _take_data(self) -> bool:
        """Consume message bytes; True once the terminating dot has been seen."""
        buffer = self.buffer
        if not self.first_byte:
            self.first_byte = time.monotonic()
            if len(buffer) < 3:
                return False
            if buffer.startswith(b".\r\n"):  # an empty message
                del buffer[:3]
                self._finish_message()
                return True
        end = buffer.find(b"\r\n.\r\n")
        if end < 0:
            # Keep the last bytes: the terminator may straddle two reads.
            consumed = max(0, len(buffer) - 4)
            self._account(buffer, consumed)
            del buffer[:consumed]
            return False
        self._account(buffer, end + 2)
        del buffer[: end + 5]
        self._finish_message()
        return True

    def _account(self, buffer: bytearray, length: int) -> None:
        self.size += length
        missing = _HEADER_SCAN - len(self.head)
        if missing > 0:
            self.head += buffer[: min(missing, length)]

    def _finish_message(self) -> None:
        head = b"\r\n" + bytes(self.head)
        header_end = head.find(b"\r\n\r\n")
        headers = head if header_end < 0 else head[:header_end]
        seq = _SEQ.search(headers)
        spam = bool(_SPAM_FLAG.search(headers))
        stats = self.stats
        stats.messages += 1
        stats.recipients += self.recipients
        stats.bytes += self.size
        stats.spam_flagged += spam
        stats.records.append(
            Record(
                int(seq.group(1)) if seq else None,
                self.size,
                self.first_byte,
                time.monotonic(),
                spam,
            )
        )
        self.in_data = False
        self.head = bytearray()
        self.size = 0
        self.first_byte = 0.0
        self.recipients = 0
        self._reply("250 2.0.0 Ok: queued")

    def _reply(self, line: str) -> None:
        assert self.transport is not None
        self.transport.write(line.encode() + b"\r\n")

    def _command(self, line: bytes) -> None:
        verb = line.split(b" ", 1)[0].upper()
        if verb == b"EHLO":
            self._reply(
                f"250-{self.hostname}\r\n250-PIPELINING\r\n250-SIZE 209715200\r\n"
                "250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n"
                "250-XFORWARD NAME ADDR PROTO HELO SOURCE\r\n"
                "250 SMTPUTF8"
            )
        elif verb == b"RCPT":
            self.recipients += 1
            self._reply("250 2.1.5 Ok")
        elif verb == b"DATA":
            self.in_data = True
            self._reply("354 End data with <CR><LF>.<CR><LF>")
        elif verb == b"QUIT":
            self._reply("221 2.0.0 Bye")
            assert self.transport is not None
            self.transport.close()
        elif verb == b"XSTATS":
            self._reply("250 " + self.stats.as_json())
        elif verb == b"XRESET":
            self.stats.reset()
            self._reply("250 reset")
        elif verb in (b"HELO", b"MAIL", b"RSET", b"NOOP", b"XFORWARD"):
            self._reply("250 2.0.0 Ok")
        else:
            self._reply("502 5.5.2 Error: command not recognized")


async def serve(host: str, port: int) -> None:
    """Run the sink until cancelled."""
    stats = Stats()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SinkProtocol(stats, "sink.example.com"), host, port, backlog=512
    )
    async with server:
        await server.serve_forever()


async def query(host: str, port: int, verb: str) -> str:
    """Send one harness verb (XSTATS, XRESET) to a running sink; the reply text."""
    reader, writer = await asyncio.open_connection(host, port, limit=1 << 30)
    await reader.readline()
    writer.write(verb.encode() + b"\r\nQUIT\r\n")
    await writer.drain()
    line = await reader.readline()
    writer.close()
    return line.decode().rstrip("\r\n")[4:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="127.0.0.1:10025", help="host:port")
    args = parser.parse_args()
    host, _, port = args.listen.rpartition(":")
    asyncio.run(serve(host, int(port)))


if __name__ == "__main__":
    main()
