"""The filter's configuration: one YAML file -> a frozen, typed tree.

Loaded and validated once at start-up; passed down explicitly. Every error names
the key path, the bad value and the reason (`next_hop.address: port out of range`).
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import yaml

from contentfilter import schema
from contentfilter.addresses import HostPort, Network
from contentfilter.decoder_settings import DecoderLimits
from contentfilter.errors import ConfigError
from contentfilter.policy_settings import PolicyBank, PolicySettings
from contentfilter.quarantine.notice_settings import NoticeSettings
from contentfilter.quarantine.settings import QuarantineSettings
from contentfilter.web.settings import WebSettings


@dataclass(frozen=True)
class Listener:
    """One address the filter accepts mail on."""

    address: HostPort
    protocol: Literal["smtp", "lmtp"] = "smtp"
    policy_bank: str | None = None  # name in `policy_banks`, e.g. ORIGINATING

    @classmethod
    def from_config(cls, value: object) -> Listener:
        if isinstance(value, str):  # "host:port", or "lmtp:host:port" for an LMTP listener
            protocol, sep, rest = value.partition(":")
            if sep and protocol.lower() in ("smtp", "lmtp"):
                return cls(HostPort.parse(rest), protocol.lower())  # type: ignore[arg-type]
            return cls(HostPort.parse(value))
        return schema.build(_ListenerSpec, value).to_listener()


@dataclass(frozen=True)
class _ListenerSpec:
    address: HostPort
    protocol: Literal["smtp", "lmtp"] = "smtp"
    policy_bank: str | None = None

    def to_listener(self) -> Listener:
        return Listener(self.address, self.protocol, self.policy_bank)


def _default_networks() -> tuple[Network, ...]:
    return (Network.from_config("127.0.0.0/8"), Network.from_config("::1/128"))


MAX_WORKERS = 64


@dataclass(frozen=True)
class ServerSettings:
    """The SMTP side that Postfix talks to."""

    listen: tuple[Listener, ...] = (Listener(HostPort("127.0.0.1", 10024)),)
    hostname: str = field(default_factory=socket.getfqdn)  # in the greeting and headers
    allowed_clients: tuple[Network, ...] = field(default_factory=_default_networks)
    message_size_limit: int = 50 * 1024 * 1024  # SIZE advertised; larger gets 552 5.3.4
    # seconds a client has for one command line, and may stay silent during DATA
    # (Postfix's smtpd_timeout); a slower client is told 421 and disconnected
    idle_timeout: float = 300.0
    # DATA may take idle_timeout plus one second per this many bytes (Postfix's
    # smtpd_min_data_rate): a client that trickles the message is disconnected
    min_data_rate: float = 500.0
    max_sessions: int = 100  # concurrent sessions, all workers together; more get 421
    # processes serving mail (`serve --workers`): None = one per core, 0 = no
    # supervisor, the filter runs in the one process started
    workers: int | None = None
    max_recipients: int = 1000  # per message; more are told 452 (smtpd_recipient_limit)

    def __post_init__(self) -> None:
        if not self.listen:
            raise ValueError("listen: at least one listener is needed")
        if self.message_size_limit < 1024:
            raise ValueError("message_size_limit must be at least 1024 bytes")
        schema.require_positive(
            self, "idle_timeout", "min_data_rate", "max_sessions", "max_recipients"
        )
        if self.workers is not None and not 0 <= self.workers <= MAX_WORKERS:
            raise ValueError(f"workers: expected 0 to {MAX_WORKERS} (got {self.workers})")


@dataclass(frozen=True)
class NextHopSettings:
    """Where passed mail goes: Postfix's reinjection listener."""

    address: HostPort = HostPort("127.0.0.1", 10025)
    connect_timeout: float = 30.0
    command_timeout: float = 300.0  # per SMTP command, as Postfix's smtp_*_timeout
    data_timeout: float = 600.0  # for the end-of-DATA reply
    max_use: int = 20  # messages per connection before it is closed (Postfix max_use)
    max_idle: float = 30.0  # seconds an idle connection is kept for reuse
    xforward: bool = True  # pass the original client on when the next hop offers XFORWARD

    def __post_init__(self) -> None:
        schema.require_positive(
            self, "connect_timeout", "command_timeout", "data_timeout", "max_idle", "max_use"
        )


@dataclass(frozen=True)
class CacheSettings:
    """Scan results cached by each scanner's own key (see contentfilter.cache)."""

    enabled: bool = True
    ttl: float = 600.0  # seconds
    max_entries: int = 10000

    def __post_init__(self) -> None:
        schema.require_positive(self, "ttl", "max_entries")


@dataclass(frozen=True)
class ScannerSection:
    """One entry under `scanners:`: its kind, whether it runs, and the rest as written.

    The scanners package validates `options` against the settings of `type`
    (`scanners.load_settings`): loading the config needs no scanner code.
    """

    type: str
    enabled: bool = True
    options: Mapping[str, Any] = field(default_factory=dict)

    def to_config(self) -> dict[str, Any]:
        return {"enabled": self.enabled, **self.options, "type": self.type}


_SYSLOG_FACILITIES = ("mail", "daemon", "user", *(f"local{n}" for n in range(8)))


@dataclass(frozen=True)
class LogSettings:
    level: Literal["debug", "info", "warning", "error"] = "info"
    json: str = "off"  # one JSON event per message: off, stderr or a file path
    syslog: bool = False  # also log to syslog as amavisd-new: `amavis[PID]: ...`
    syslog_ident: str = "amavis"  # mailgraph only reads `amavis` and `amavisd`
    syslog_facility: str = "mail"
    syslog_socket: str = "/dev/log"

    def __post_init__(self) -> None:
        if not self.json:
            raise ValueError("json: expected off, stderr or a file path")
        if not self.syslog_ident or not self.syslog_ident.isprintable() or " " in self.syslog_ident:
            raise ValueError("syslog_ident: expected a program name without spaces")
        if self.syslog_facility not in _SYSLOG_FACILITIES:
            raise ValueError(f"syslog_facility: expected one of {', '.join(_SYSLOG_FACILITIES)}")


@dataclass(frozen=True)
class MetricsSettings:
    """The Prometheus endpoint (`/metrics`, `/healthz`): HOST:PORT, or off.

    `probe_interval`: seconds between the PINGs to clamd and spamd behind
    `scanner_up` and clamd's signature age (0: only messages update them).
    """

    listen: str = "127.0.0.1:9191"
    probe_interval: float = 30.0

    def __post_init__(self) -> None:
        if self.listen != "off":
            HostPort.parse(self.listen)
        if not 0 <= self.probe_interval <= 3600:
            raise ValueError(
                f"probe_interval: expected 0 to 3600 seconds (got {self.probe_interval})"
            )

    @property
    def address(self) -> HostPort | None:
        return None if self.listen == "off" else HostPort.parse(self.listen)


@dataclass(frozen=True)
class DaemonSettings:
    """Whom `serve` runs as after binding its listeners ($daemon_user, $daemon_group)."""

    user: str = "contentfilter"
    group: str = ""  # "" = the user's own group
    allow_root: bool = False  # keep running as root when started as root (serve --allow-root)

    def __post_init__(self) -> None:
        for name in ("user", "group"):
            value = getattr(self, name)
            if (name == "user" and not value) or not (value.isprintable() and " " not in value):
                raise ValueError(f"{name}: expected a user or group name")


@dataclass(frozen=True)
class Config:
    """The whole configuration tree."""

    server: ServerSettings = ServerSettings()
    next_hop: NextHopSettings = NextHopSettings()
    decoder: DecoderLimits = DecoderLimits()
    scanners: dict[str, ScannerSection] = field(default_factory=dict)
    cache: CacheSettings = CacheSettings()
    policy: PolicySettings = PolicySettings()
    policy_banks: dict[str, PolicyBank] = field(default_factory=dict)
    log: LogSettings = LogSettings()
    metrics: MetricsSettings = MetricsSettings()
    notices: NoticeSettings = NoticeSettings()
    web: WebSettings = WebSettings()
    quarantine: QuarantineSettings = QuarantineSettings()
    daemon: DaemonSettings = DaemonSettings()

    def enabled_scanners(self) -> dict[str, ScannerSection]:
        return {name: s for name, s in self.scanners.items() if s.enabled}

    def __post_init__(self) -> None:
        for listener in self.server.listen:
            if listener.address.same_endpoint(self.next_hop.address):
                raise ConfigError(
                    "next_hop.address",
                    f"is our own listener {listener.address}: mail would loop",
                    str(self.next_hop.address),
                )
            if listener.policy_bank and listener.policy_bank not in self.policy_banks:
                raise ConfigError(
                    "server.listen.policy_bank",
                    "names an unknown policy bank",
                    listener.policy_bank,
                )


def default_scanners() -> dict[str, Any]:
    """The scanners that run when the config file does not list any."""
    return {"clamav": {}, "spamassassin": {}, "banned": {}, "bad_header": {}}


def from_mapping(data: object) -> Config:
    """Validate a parsed YAML document into a Config (ConfigError on any problem).

    The scanner sections are only checked for shape here; `scanners.load_settings`
    validates their keys.
    """
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError("", "the config file must be a mapping of sections", data)
    data = dict(data)
    scanners = _scanner_sections(data.pop("scanners", None))
    for section, key in (("metrics", "listen"), ("log", "json")):
        _switched_off(data, section, key)
    config = schema.build(Config, data)
    return replace(config, scanners=scanners)


def _switched_off(data: dict[Any, Any], section: str, key: str) -> None:
    """`listen: off` unquoted: YAML 1.1 reads off (and no) as false, meant as "off"."""
    entry = data.get(section)
    if isinstance(entry, Mapping) and entry.get(key) is False:
        data[section] = {**entry, key: "off"}


def _scanner_sections(section: object) -> dict[str, ScannerSection]:
    if section is None:
        section = default_scanners()
    if not isinstance(section, Mapping):
        raise ConfigError("scanners", "expected a mapping of scanner name to settings", section)
    return {
        str(name): _scanner_section(f"scanners.{name}", entry) for name, entry in section.items()
    }


def _scanner_section(path: str, entry: object) -> ScannerSection:
    if isinstance(entry, bool):  # `banned: off` (YAML 1.1 reads off/no as false)
        entry = {"enabled": entry}
    if entry is None:
        entry = {}
    if not isinstance(entry, Mapping):
        raise ConfigError(path, "expected a mapping of settings, or true/false", entry)
    options = dict(entry)
    type_name = options.pop("type", path.removeprefix("scanners."))
    if not isinstance(type_name, str):
        raise ConfigError(f"{path}.type", "unknown scanner type (expected a name)", type_name)
    enabled = schema.build(bool, options.pop("enabled", True), f"{path}.enabled")
    return ScannerSection(type_name, enabled, options)


MAX_CONFIG_BYTES = 1024 * 1024  # a config is a few KB; more is a wrong file
MAX_NESTING = 32  # our deepest key path is 5 levels; YAML's composer recurses per level


def read_document(path: Path | None) -> dict[str, Any]:
    """The parsed YAML file as a mapping ({} for no file); ConfigError if unreadable.

    Strict where PyYAML is lenient: a key given twice, an anchor or alias (the
    config needs none, and they make a few lines expand to gigabytes), nesting
    deeper than MAX_NESTING and files over MAX_CONFIG_BYTES are refused, each with
    one line naming the line or key.
    """
    if path is None:
        return {}
    text = _read_text(path)
    data = parse_yaml(text, str(path))
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError("", "the config file must be a mapping of sections", data)
    return data


def _read_text(path: Path) -> str:
    try:
        with path.open("rb") as file:
            raw = file.read(MAX_CONFIG_BYTES + 1)
    except OSError as error:
        raise ConfigError("", f"cannot read config file {path}: {error.strerror}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError("", f"{path} is larger than {MAX_CONFIG_BYTES} bytes: not a config file")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw.count(b"\n", 0, error.start) + 1
        raise ConfigError(
            "", f"{path}, line {line}: not UTF-8 text (byte 0x{raw[error.start]:02x})"
        ) from None


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader without anchors and aliases, with a nesting limit."""

    depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise ConfigError("", f"line {_line(event)}: YAML anchors and aliases are not allowed")
        if self.depth >= MAX_NESTING:
            raise ConfigError("", f"line {_line(event)}: nested deeper than {MAX_NESTING} levels")
        self.depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def _line(event_or_node: Any) -> int:
    return int(event_or_node.start_mark.line) + 1


def parse_yaml(text: str, source: str = "<config>") -> object:
    """One YAML document, strictly (see `read_document`); ConfigError on any problem."""
    try:
        loader = _StrictLoader(text)
    except yaml.reader.ReaderError as error:  # a control character: a binary file
        line = text.count("\n", 0, error.position) + 1
        raise ConfigError(
            "", f"{source}, line {line}: not valid YAML: character 0x{error.character:02x}"
        ) from None
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _refuse_duplicate_keys(node, "")
        return loader.construct_document(node)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        reason = error.problem or error.context or "syntax error"
        raise ConfigError("", f"{source}{where}: not valid YAML: {reason}") from None
    except yaml.YAMLError as error:
        shown = " ".join(str(error).split())
        raise ConfigError("", f"{source}: not valid YAML: {shown}") from None
    finally:
        loader.dispose()


def _refuse_duplicate_keys(node: yaml.Node, path: str) -> None:
    """PyYAML keeps the last of two equal keys; a second `scanners:` would drop the first."""
    if isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _refuse_duplicate_keys(item, f"{path}[{index}]")
    if not isinstance(node, yaml.MappingNode):
        return
    first_seen: dict[str, int] = {}
    for key_node, value_node in node.value:
        key = str(key_node.value) if isinstance(key_node, yaml.ScalarNode) else "?"
        key_path = f"{path}.{key}" if path else key
        if key in first_seen and isinstance(key_node, yaml.ScalarNode):
            raise ConfigError(
                key_path,
                f"line {_line(key_node)}: duplicate key (first on line {first_seen[key]})",
            )
        first_seen[key] = _line(key_node)
        _refuse_duplicate_keys(value_node, key_path)


def load(path: Path | None) -> Config:
    """Read and validate a config file; None means built-in defaults."""
    return from_mapping(read_document(path))


def dump(config: Config, scanners: Mapping[str, object] | None = None) -> str:
    """The effective configuration as YAML (what `check-config` prints).

    `scanners` are the validated scanner settings, shown with their defaults; without
    them the sections are shown as written.
    """
    plain = schema.to_plain(config)
    if scanners is not None and isinstance(plain, dict):
        plain["scanners"] = {
            name: {**_mapping(schema.to_plain(settings)), "type": config.scanners[name].type}
            for name, settings in scanners.items()
        }
    return yaml.safe_dump(plain, sort_keys=False, default_flow_style=False)


def _mapping(value: object) -> dict[str, Any]:
    return dict(value) if isinstance(value, dict) else {}
