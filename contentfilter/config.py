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
from contentfilter.errors import ConfigError
from contentfilter.mime import DecoderLimits
from contentfilter.policy_settings import PolicyBank, PolicySettings
from scanners import REGISTRY, ScannerSettings, load_builtin

DEFAULT_CONFIG_PATHS = (Path("/etc/contentfilter/contentfilter.yaml"),)


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


@dataclass(frozen=True)
class ServerSettings:
    """The SMTP side that Postfix talks to."""

    listen: tuple[Listener, ...] = (Listener(HostPort("127.0.0.1", 10024)),)
    hostname: str = field(default_factory=socket.getfqdn)  # in the greeting and headers
    allowed_clients: tuple[Network, ...] = field(default_factory=_default_networks)
    message_size_limit: int = 50 * 1024 * 1024  # SIZE advertised; larger gets 552 5.3.4
    idle_timeout: float = 300.0  # seconds a client may stay silent between commands
    max_sessions: int = 100  # concurrent sessions; more are told 421 and retried

    def __post_init__(self) -> None:
        if not self.listen:
            raise ValueError("listen: at least one listener is needed")
        if self.message_size_limit < 1024:
            raise ValueError("message_size_limit must be at least 1024 bytes")
        schema.require_positive(self, "idle_timeout", "max_sessions")


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
class LogSettings:
    level: Literal["debug", "info", "warning", "error"] = "info"


@dataclass(frozen=True)
class Config:
    """The whole configuration tree."""

    server: ServerSettings = ServerSettings()
    next_hop: NextHopSettings = NextHopSettings()
    decoder: DecoderLimits = DecoderLimits()
    scanners: dict[str, ScannerSettings] = field(default_factory=dict)
    cache: CacheSettings = CacheSettings()
    policy: PolicySettings = PolicySettings()
    policy_banks: dict[str, PolicyBank] = field(default_factory=dict)
    log: LogSettings = LogSettings()

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

    def enabled_scanners(self) -> dict[str, ScannerSettings]:
        return {name: s for name, s in self.scanners.items() if s.enabled}


def default_scanners() -> dict[str, Any]:
    """The scanners that run when the config file does not list any."""
    return {"clamav": {}, "spamassassin": {}, "banned": {}, "bad_header": {}}


def from_mapping(data: object) -> Config:
    """Validate a parsed YAML document into a Config (ConfigError on any problem)."""
    load_builtin()
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError("", "the config file must be a mapping of sections", data)
    data = dict(data)
    scanners = _build_scanners(data.pop("scanners", None))
    config = schema.build(Config, data)
    return replace(config, scanners=scanners)


def _build_scanners(section: object) -> dict[str, ScannerSettings]:
    if section is None:
        section = default_scanners()
    if not isinstance(section, Mapping):
        raise ConfigError("scanners", "expected a mapping of scanner name to settings", section)
    built: dict[str, ScannerSettings] = {}
    for name, entry in section.items():
        path = f"scanners.{name}"
        entry = dict(entry or {})
        type_name = entry.pop("type", name)
        if type_name not in REGISTRY:
            known = ", ".join(sorted(REGISTRY))
            raise ConfigError(f"{path}.type", f"unknown scanner type (known: {known})", type_name)
        built[str(name)] = schema.build(REGISTRY[type_name].settings, entry, path)
    return built


def scanner_type(config: Config, name: str) -> str:
    """The registered type of the scanner configured under `name`."""
    settings = config.scanners[name]
    for type_name, entry in REGISTRY.items():
        if type(settings) is entry.settings:
            return type_name
    raise KeyError(name)


def read_document(path: Path | None) -> dict[str, Any]:
    """The parsed YAML file as a mapping ({} for no file); ConfigError if unreadable."""
    if path is None:
        return {}
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError("", f"cannot read config file {path}: {error.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError("", f"{path} is not valid YAML: {error}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError("", "the config file must be a mapping of sections", data)
    return data


def load(path: Path | None) -> Config:
    """Read and validate a config file; None means built-in defaults."""
    return from_mapping(read_document(path))


def dump(config: Config) -> str:
    """The effective configuration as YAML (what `check-config` prints)."""
    plain = schema.to_plain(config)
    return yaml.safe_dump(plain, sort_keys=False, default_flow_style=False)
