"""`contentfilter status`: ask every daemon the filter depends on whether it answers.

clamd: PING and VERSION (the signature database's date, hence its age); spamd: PING;
the next hop: its greeting and EHLO. One line each. A check is `critical` when the
policy cannot pass mail without it (a scanner whose `on_failure` is tempfail, the
next hop): the command exits 1 when one of those is down.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import scanners
from contentfilter.addresses import HostPort
from contentfilter.config import Config
from contentfilter.model import FailureAction
from scanners.clamav import ClamAVSettings
from scanners.clamd_wire import ClamdServer
from scanners.spamassassin import SpamAssassinSettings

TIMEOUT = 10.0  # seconds per check
MAX_REPLY = 4096


@dataclass(frozen=True)
class Check:
    name: str  # "clamd /run/clamav/clamd.ctl"
    up: bool
    detail: str
    critical: bool  # the policy depends on it: down means mail is tempfailed

    def line(self) -> str:
        state = "up" if self.up else ("DOWN" if self.critical else "down (not critical)")
        return f"{self.name}: {state}: {self.detail}"


async def _read_until(reader: asyncio.StreamReader, end: bytes) -> bytes:
    data = b""
    while end not in data and len(data) < MAX_REPLY:
        chunk = await reader.read(MAX_REPLY)
        if not chunk:
            break
        data += chunk
    return data


async def _open(server: ClamdServer) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    sock = await server.connect()
    return await asyncio.open_connection(sock=sock)


async def check_clamd(address: str, critical: bool, now: datetime | None = None) -> Check:
    name = f"clamd {address}"
    try:
        server = ClamdServer.parse(address)
        async with asyncio.timeout(TIMEOUT):
            reader, writer = await _open(server)
            writer.write(b"zPING\0")
            pong = (await _read_until(reader, b"\0")).rstrip(b"\0")
            writer.close()
            reader, writer = await _open(server)
            writer.write(b"zVERSION\0")
            version = (await _read_until(reader, b"\0")).rstrip(b"\0").decode("utf-8", "replace")
            writer.close()
    except (OSError, TimeoutError, ValueError) as error:
        return Check(name, False, _reason(error), critical)
    if pong != b"PONG":
        return Check(name, False, f"answered PING with {pong[:60]!r}", critical)
    return Check(name, True, describe_version(version, now), critical)


def describe_version(version: str, now: datetime | None = None) -> str:
    """`ClamAV 1.0.7/27470/Sat Nov 29 09:32:05 2026` -> its engine, signature version and age."""
    engine, _, rest = version.partition("/")
    signatures, _, stamp = rest.partition("/")
    if not stamp:
        return f"{engine}, signature date not reported"
    try:
        built = datetime.strptime(" ".join(stamp.split()), "%a %b %d %H:%M:%S %Y")
    except ValueError:
        return f"{engine}, signatures {signatures} ({stamp})"
    built = built.replace(tzinfo=UTC)  # clamd's local time; hours of age are what count
    age = ((now or datetime.now(UTC)) - built).total_seconds() / 3600
    return f"{engine}, signatures {signatures} from {built:%Y-%m-%d %H:%M}, {age:.0f} h old"


async def check_spamd(address: str, critical: bool) -> Check:
    name = f"spamd {address}"
    try:
        async with asyncio.timeout(TIMEOUT):
            if address.startswith("/"):
                reader, writer = await asyncio.open_unix_connection(address)
            else:
                endpoint = HostPort.parse(address)
                reader, writer = await asyncio.open_connection(endpoint.host, endpoint.port)
            writer.write(b"PING SPAMC/1.5\r\n\r\n")
            answer = (await _read_until(reader, b"\n")).decode("utf-8", "replace").strip()
            writer.close()
    except (OSError, TimeoutError, ValueError) as error:
        return Check(name, False, _reason(error), critical)
    if not answer.endswith("PONG"):
        return Check(name, False, f"answered PING with {answer[:60]!r}", critical)
    return Check(name, True, answer, critical)


async def check_next_hop(address: HostPort, hostname: str) -> Check:
    name = f"next hop {address}"
    try:
        async with asyncio.timeout(TIMEOUT):
            reader, writer = await asyncio.open_connection(address.host, address.port)
            greeting = await _smtp_reply(reader)
            writer.write(f"EHLO {hostname}\r\n".encode())
            ehlo = await _smtp_reply(reader)
            writer.write(b"QUIT\r\n")
            writer.close()
    except (OSError, TimeoutError, UnicodeError) as error:
        return Check(name, False, _reason(error), True)
    if not greeting.startswith("220") or not ehlo.startswith("250"):
        return Check(name, False, f"answered {greeting[:60]!r}, EHLO {ehlo[:60]!r}", True)
    return Check(name, True, greeting[:80], True)


async def _smtp_reply(reader: asyncio.StreamReader) -> str:
    """The last line of one (possibly multi-line) SMTP reply."""
    while True:
        line = (await reader.readline())[:512].decode("ascii", "replace").rstrip()
        if not line:
            raise OSError("connection closed")
        if line[3:4] != "-":
            return line


def _reason(error: BaseException) -> str:
    if isinstance(error, TimeoutError):
        return f"no answer in {TIMEOUT:g}s"
    if isinstance(error, OSError) and error.errno:
        return os.strerror(error.errno).lower()
    return str(error) or type(error).__name__


async def run_checks(config: Config) -> list[Check]:
    pending = []
    for settings in scanners.load_settings(config.enabled_scanners()).values():
        critical = settings.on_failure is FailureAction.TEMPFAIL
        if isinstance(settings, ClamAVSettings):
            pending += [check_clamd(server, critical) for server in settings.servers]
        elif isinstance(settings, SpamAssassinSettings):
            pending.append(check_spamd(settings.server, critical))
    pending.append(check_next_hop(config.next_hop.address, config.server.hostname))
    return list(await asyncio.gather(*pending))


def report(checks: Sequence[Check]) -> tuple[list[str], int]:
    """The lines to print and the exit status (1 when a critical check is down)."""
    status = 1 if any(c.critical and not c.up for c in checks) else 0
    return [c.line() for c in checks], status


def command(config: Config) -> int:
    lines, status = report(asyncio.run(run_checks(config)))
    for line in lines:
        print(line)
    return status
