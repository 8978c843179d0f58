"""`contentfilter status`: ask every daemon the filter depends on whether it answers.

clamd: PING and VERSION (the signature database's date, hence its age); spamd: PING;
the quarantine store: its counts; the next hop: its greeting and EHLO. One line each.
A check is `critical` when the policy cannot pass mail without it (a scanner whose
`on_failure` is tempfail, the quarantine store when its `on_failure` is tempfail, the
next hop): the command exits 1 when one of those is down. The same checks serve
`check-config --ping`, `/healthz` and the periodic probe behind `scanner_up`.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import scanners
from contentfilter.addresses import HostPort
from contentfilter.config import Config
from contentfilter.errors import QuarantineError
from contentfilter.model import FailureAction
from contentfilter.quarantine import State, Stats
from contentfilter.quarantine.settings import QuarantineSettings, hide_password
from contentfilter.quarantine.sqlite import INDEX
from scanners.clamav import ClamAVSettings
from scanners.clamd_wire import ClamdServer
from scanners.spamassassin import SpamAssassinSettings

log = logging.getLogger("contentfilter")

TIMEOUT = 10.0  # seconds per check
MAX_REPLY = 4096


@dataclass(frozen=True)
class Check:
    """The answer of one daemon the filter depends on."""

    name: str  # "clamd /run/clamav/clamd.ctl"
    up: bool
    detail: str
    critical: bool  # the policy depends on it: down means mail is tempfailed
    key: str = ""  # the config key naming the address: "scanners.clamav.servers[0]"
    target: str = ""  # the address as configured
    scanner: str = ""  # the scanner it serves (its config name); "" for the next hop
    version: str = ""  # clamd's VERSION reply
    stats: Stats | None = None  # the quarantine store's counts

    def line(self) -> str:
        state = "up" if self.up else ("DOWN" if self.critical else "down (not critical)")
        return f"{self.name}: {state}: {self.detail}"

    def ping_line(self) -> str:
        """`check-config --ping`'s line: `FAIL next_hop.address: 127.0.0.1:10025: ...`."""
        return f"{'OK' if self.up else 'FAIL'} {self.key}: {self.target}: {self.detail}"

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "key": self.key,
            "up": self.up,
            "critical": self.critical,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class ClamdVersion:
    """clamd's VERSION reply taken apart: `ClamAV 1.0.7/27470/Sat Nov 29 09:32:05 2026`."""

    engine: str
    signatures: str  # the database version, "" when not reported
    built: datetime | None  # the database's date (clamd's local time, read as UTC)

    @classmethod
    def parse(cls, version: str) -> ClamdVersion:
        engine, _, rest = version.strip().partition("/")
        signatures, _, stamp = rest.partition("/")
        try:
            built = datetime.strptime(" ".join(stamp.split()), "%a %b %d %H:%M:%S %Y")
        except ValueError:
            return cls(engine, signatures, None)
        return cls(engine, signatures, built.replace(tzinfo=UTC))  # hours of age are what count

    def age(self, now: datetime | None = None) -> float | None:
        """Seconds since the signature database was built."""
        if self.built is None:
            return None
        return ((now or datetime.now(UTC)) - self.built).total_seconds()


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


async def check_clamd(
    address: str,
    critical: bool,
    now: datetime | None = None,
    timeout: float = TIMEOUT,
    key: str = "",
    scanner: str = "",
) -> Check:
    name = f"clamd {address}"
    down = Check(name, False, "", critical, key, address, scanner)
    try:
        server = ClamdServer.parse(address)
        async with asyncio.timeout(timeout):
            reader, writer = await _open(server)
            writer.write(b"zPING\0")
            pong = (await _read_until(reader, b"\0")).rstrip(b"\0")
            writer.close()
            reader, writer = await _open(server)
            writer.write(b"zVERSION\0")
            version = (await _read_until(reader, b"\0")).rstrip(b"\0").decode("utf-8", "replace")
            writer.close()
    except (OSError, TimeoutError, ValueError) as error:
        return replace(down, detail=_reason(error, timeout))
    if pong != b"PONG":
        detail = f"answered PING with {pong[:60]!r}"
        return replace(down, detail=detail)
    detail = describe_version(version, now)
    return replace(down, up=True, detail=detail, version=version)


def describe_version(version: str, now: datetime | None = None) -> str:
    """`ClamAV 1.0.7/27470/Sat Nov 29 09:32:05 2026` -> its engine, signature version and age."""
    parsed = ClamdVersion.parse(version)
    stamp = version.strip().split("/", 2)[2:]
    if not stamp:
        return f"{parsed.engine}, signature date not reported"
    age = parsed.age(now)
    if parsed.built is None or age is None:
        return f"{parsed.engine}, signatures {parsed.signatures} ({stamp[0]})"
    return (
        f"{parsed.engine}, signatures {parsed.signatures} from {parsed.built:%Y-%m-%d %H:%M},"
        f" {age / 3600:.0f} h old"
    )


async def check_spamd(
    address: str, critical: bool, timeout: float = TIMEOUT, key: str = "", scanner: str = ""
) -> Check:
    name = f"spamd {address}"
    down = Check(name, False, "", critical, key, address, scanner)
    try:
        async with asyncio.timeout(timeout):
            if address.startswith("/"):
                reader, writer = await asyncio.open_unix_connection(address)
            else:
                endpoint = HostPort.parse(address)
                reader, writer = await asyncio.open_connection(endpoint.host, endpoint.port)
            writer.write(b"PING SPAMC/1.5\r\n\r\n")
            answer = (await _read_until(reader, b"\n")).decode("utf-8", "replace").strip()
            writer.close()
    except (OSError, TimeoutError, ValueError) as error:
        return replace(down, detail=_reason(error, timeout))
    if not answer.endswith("PONG"):
        detail = f"answered PING with {answer[:60]!r}"
        return replace(down, detail=detail)
    return replace(down, up=True, detail=answer)


async def check_quarantine(settings: QuarantineSettings, timeout: float = TIMEOUT) -> Check:
    """The quarantine store answers `stats` (its counts) within `timeout`. A directory
    not made yet is not made here: `status` may run as another user than the filter,
    and the store makes it, with the right owner, when the first message is kept."""
    from contentfilter.quarantine import open_store

    database = bool(settings.database)
    target = hide_password(settings.database) if database else settings.directory
    key = "quarantine.database" if database else "quarantine.directory"
    critical = settings.on_failure == "tempfail"  # else blocked mail goes on unkept
    down = Check(f"quarantine {target}", False, "", critical, key, target)
    if not database:
        try:
            os.stat(os.path.join(settings.directory, INDEX))
        except FileNotFoundError:
            return replace(down, up=True, detail="empty: made when the first message is kept")
        except OSError as error:  # not ours to read: run as the filter's user (or root)
            return replace(down, detail=_reason(error, timeout))
    store = open_store(settings)
    try:
        async with asyncio.timeout(timeout):
            try:
                stats = await store.stats()
            finally:
                await store.close()
    except (QuarantineError, OSError, TimeoutError) as error:
        return replace(down, detail=_reason(error, timeout)[:200])
    return replace(down, up=True, detail=describe_stats(stats), stats=stats)


def describe_stats(stats: Stats) -> str:
    """`12 messages (spam 2, virus 10), 11 copies held, 1.2 MB`."""
    categories = ", ".join(f"{name} {count}" for name, count in sorted(stats.by_category.items()))
    held = stats.by_state.get(State.HELD.value, 0)
    text = f"{stats.messages} messages" + (f" ({categories})" if categories else "")
    return f"{text}, {held} copies held, {stats.bytes_stored / 1e6:.1f} MB"


async def check_next_hop(address: HostPort, hostname: str, timeout: float = TIMEOUT) -> Check:
    name = f"next hop {address}"
    down = Check(name, False, "", True, "next_hop.address", str(address))
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(address.host, address.port)
            greeting = await _smtp_reply(reader)
            writer.write(f"EHLO {hostname}\r\n".encode())
            ehlo = await _smtp_reply(reader)
            writer.write(b"QUIT\r\n")
            writer.close()
    except (OSError, TimeoutError, UnicodeError) as error:
        return replace(down, detail=_reason(error, timeout))
    if not greeting.startswith("220") or not ehlo.startswith("250"):
        detail = f"answered {greeting[:60]!r}, EHLO {ehlo[:60]!r}"
        return replace(down, detail=detail)
    return replace(down, up=True, detail=greeting[:80])


async def _smtp_reply(reader: asyncio.StreamReader) -> str:
    """The last line of one (possibly multi-line) SMTP reply."""
    while True:
        line = (await reader.readline())[:512].decode("ascii", "replace").rstrip()
        if not line:
            raise OSError("connection closed")
        if line[3:4] != "-":
            return line


def _reason(error: BaseException, timeout: float = TIMEOUT) -> str:
    if isinstance(error, TimeoutError):
        return f"no answer in {timeout:g}s"
    if isinstance(error, OSError) and error.errno:
        return os.strerror(error.errno).lower()
    return str(error) or type(error).__name__


def scanner_checks(config: Config, timeout: float = TIMEOUT) -> list[Awaitable[Check]]:
    """A check for every clamd and spamd of the enabled scanners."""
    pending: list[Awaitable[Check]] = []
    for name, settings in scanners.load_settings(config.enabled_scanners()).items():
        critical = settings.on_failure is FailureAction.TEMPFAIL
        if isinstance(settings, ClamAVSettings):
            pending += [
                check_clamd(server, critical, None, timeout, f"scanners.{name}.servers[{i}]", name)
                for i, server in enumerate(settings.servers)
            ]
        elif isinstance(settings, SpamAssassinSettings):
            key = f"scanners.{name}.server"
            pending.append(check_spamd(settings.server, critical, timeout, key, name))
    return pending


async def run_checks(
    config: Config, timeout: float = TIMEOUT, next_hop: bool = True
) -> list[Check]:
    """Every check at once; each ends within `timeout` seconds."""
    pending = scanner_checks(config, timeout)
    if config.quarantine.enabled:
        pending.append(check_quarantine(config.quarantine, timeout))
    if next_hop:
        hostname = config.server.hostname
        pending.append(check_next_hop(config.next_hop.address, hostname, timeout))
    return list(await asyncio.gather(*pending))


HEALTH_TIMEOUT = 5.0  # seconds per check behind /healthz: all run at once


def health(checks: Sequence[Check]) -> tuple[bool, dict[str, object]]:
    """`/healthz`: healthy unless a critical check is down; the JSON body names what
    is broken (`status`: ok, degraded when only a non-critical check is down, down)."""
    broken = [c for c in checks if not c.up]
    healthy = not any(c.critical for c in broken)
    state = "down" if not healthy else ("degraded" if broken else "ok")
    return healthy, {
        "status": state,
        "broken": [f"{c.name}: {c.detail}" for c in broken],
        "checks": [c.as_dict() for c in checks],
    }


async def probe_forever(
    config: Config, record: Callable[[list[Check]], None], interval: float
) -> None:
    """Check every clamd and spamd and the quarantine store each `interval` seconds and
    `record` the answers."""
    timeout = min(TIMEOUT, interval)
    while True:
        try:
            checks = await asyncio.gather(*scanner_checks(config, timeout))
            if config.quarantine.enabled:
                checks.append(await check_quarantine(config.quarantine, timeout))
            record(list(checks))
        except Exception:  # a fault here costs a probe, never the filter
            log.exception("scanner probe failed")
        await asyncio.sleep(interval)


def ping_command(config: Config) -> int:
    """`check-config --ping`: an OK or FAIL line per scanner server and the next hop,
    named by its config key; 1 when one fails."""
    checks = asyncio.run(run_checks(config))
    for check in checks:
        print(check.ping_line())
    return 0 if all(c.up for c in checks) else 1


def report(checks: Sequence[Check]) -> tuple[list[str], int]:
    """The lines to print and the exit status (1 when a critical check is down)."""
    status = 1 if any(c.critical and not c.up for c in checks) else 0
    return [c.line() for c in checks], status


def command(config: Config) -> int:
    lines, status = report(asyncio.run(run_checks(config)))
    for line in lines:
        print(line)
    return status
