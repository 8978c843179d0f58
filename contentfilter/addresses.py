"""Network endpoints and networks as they appear in the config."""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass


@dataclass(frozen=True)
class HostPort:
    """A TCP endpoint written `host:port` (`[::1]:10024` for IPv6)."""

    host: str
    port: int

    def __post_init__(self) -> None:
        if not 1 <= self.port <= 65535:
            raise ValueError(f"port out of range 1-65535 (got {self.port})")
        if not self.host:
            raise ValueError("host is empty")

    @classmethod
    def parse(cls, text: str) -> HostPort:
        host, sep, port = text.rpartition(":")
        if not sep or not port.isdigit():
            raise ValueError(f"expected host:port, got {text!r}")
        return cls(host.strip("[]"), int(port))

    @classmethod
    def from_config(cls, value: object) -> HostPort:
        if not isinstance(value, str):
            raise ValueError("expected a string host:port")
        return cls.parse(value)

    def to_config(self) -> str:
        return str(self)

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def same_endpoint(self, other: HostPort) -> bool:
        """True if both name the same socket (resolving names; 0.0.0.0 matches loopback)."""
        if self.port != other.port:
            return False
        mine, theirs = _addresses(self.host), _addresses(other.host)
        wildcard = {"0.0.0.0", "::"}
        return bool(mine & theirs) or bool(mine & wildcard) or bool(theirs & wildcard)


def _addresses(host: str) -> set[str]:
    try:
        return {str(ipaddress.ip_address(host))}
    except ValueError:
        pass
    try:
        return {str(info[4][0]) for info in socket.getaddrinfo(host, None)}
    except OSError:
        return {host}


@dataclass(frozen=True)
class Network:
    """An IP network in CIDR form, for the client access list."""

    network: ipaddress.IPv4Network | ipaddress.IPv6Network

    @classmethod
    def from_config(cls, value: object) -> Network:
        if not isinstance(value, str):
            raise ValueError("expected a network like 127.0.0.0/8")
        try:
            return cls(ipaddress.ip_network(value, strict=False))
        except ValueError as error:
            raise ValueError(f"not an IP network: {error}") from None

    def to_config(self) -> str:
        return str(self.network)

    def __contains__(self, address: str) -> bool:
        try:
            return ipaddress.ip_address(address.split("%")[0]) in self.network
        except ValueError:
            return False
