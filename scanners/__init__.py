"""Scanner adapters, registered by type name so the YAML config can name them.

A scanner module defines a frozen settings dataclass (built strictly from the
`scanners.<name>` section of the YAML file by `contentfilter.schema`) and a
factory, and registers both here. Settings classes inherit `ScannerSettings` so
every scanner has `enabled`, `timeout` and `on_failure`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from contentfilter.model import FailureAction, Scanner
from contentfilter.schema import require_positive

if TYPE_CHECKING:
    from contentfilter.config import Config


@dataclass(frozen=True)
class ScannerSettings:
    """Keys every scanner section has."""

    enabled: bool = True
    timeout: float = 30.0  # seconds for the whole scan of one message
    on_failure: FailureAction = FailureAction.TEMPFAIL

    def __post_init__(self) -> None:
        require_positive(self, "timeout")


Factory = Callable[[str, Any, "Config"], Scanner]


@dataclass(frozen=True)
class ScannerType:
    settings: type[ScannerSettings]
    create: Factory


REGISTRY: dict[str, ScannerType] = {}


def register(type_name: str, settings: type[ScannerSettings], create: Factory) -> None:
    """Make a scanner type available to the `scanners:` section of the config."""
    REGISTRY[type_name] = ScannerType(settings, create)


def load_builtin() -> None:
    """Import the scanner modules shipped with the filter (each registers itself)."""
    from scanners import banned, clamav, header_check, regex, spamassassin  # noqa: F401
