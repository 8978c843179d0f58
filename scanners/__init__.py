"""Scanner adapters, and the one table of the scanner types a config can name.

The config hands over each `scanners:` entry as written (its `type:` and the rest
of its keys); `load_settings` validates them strictly into each type's frozen
settings dataclass (a ConfigError names the key path), and `build_scanners` makes
the scanners. Each factory gets its own settings and the few things it needs
(`Needs`), never the whole configuration.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from contentfilter import schema
from contentfilter.config import ScannerSection
from contentfilter.decoder_settings import DecoderLimits
from contentfilter.errors import ConfigError
from contentfilter.model import Scanner
from scanners import banned, clamav, header_check, regex, spamassassin
from scanners.base import ScannerSettings

__all__ = ["TYPES", "Needs", "ScannerSettings", "build_scanners", "load_settings"]


@dataclass(frozen=True)
class Needs:
    """What a scanner may need beyond its own settings."""

    decoder: DecoderLimits = DecoderLimits()  # what the decoder extracts, and how


@dataclass(frozen=True)
class ScannerType:
    settings: type[ScannerSettings]
    create: Callable[[str, Any, Needs], Scanner]  # (name, its settings, needs)


TYPES: dict[str, ScannerType] = {
    "clamav": ScannerType(
        clamav.ClamAVSettings,
        lambda name, settings, needs: clamav.ClamAVScanner(name, settings, needs.decoder),
    ),
    "spamassassin": ScannerType(
        spamassassin.SpamAssassinSettings,
        lambda name, settings, _: spamassassin.SpamAssassinScanner(name, settings),
    ),
    "banned": ScannerType(
        banned.BannedSettings,
        lambda name, settings, needs: banned.BannedScanner(name, settings, needs.decoder),
    ),
    "bad_header": ScannerType(
        header_check.HeaderCheckSettings,
        lambda name, settings, _: header_check.HeaderCheckScanner(name, settings),
    ),
    "regex": ScannerType(
        regex.RegexSettings, lambda name, settings, _: regex.RegexScanner(name, settings)
    ),
}


def load_settings(sections: Mapping[str, ScannerSection]) -> dict[str, ScannerSettings]:
    """Each section validated into its type's settings (ConfigError naming the key)."""
    loaded: dict[str, ScannerSettings] = {}
    for name, section in sections.items():
        path = f"scanners.{name}"
        kind = TYPES.get(section.type)
        if kind is None:
            known = ", ".join(sorted(TYPES))
            raise ConfigError(
                f"{path}.type", f"unknown scanner type (known: {known})", section.type
            )
        options = {"enabled": section.enabled, **section.options}
        loaded[name] = schema.build(kind.settings, options, path)
    return loaded


def build_scanners(sections: Mapping[str, ScannerSection], needs: Needs = Needs()) -> list[Scanner]:
    """The enabled scanners, in the order the config lists them."""
    return [
        TYPES[sections[name].type].create(name, settings, needs)
        for name, settings in load_settings(sections).items()
        if settings.enabled
    ]
