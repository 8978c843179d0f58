"""Config validation: every error names the key, the bad value and the reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from contentfilter import cli, config
from contentfilter.errors import ConfigError
from contentfilter.model import Destiny, FailureAction

REPO = Path(__file__).resolve().parents[2]


def test_defaults_are_amavisd_new_defaults() -> None:
    settings = config.load(None)
    assert str(settings.server.listen[0].address) == "127.0.0.1:10024"
    assert str(settings.next_hop.address) == "127.0.0.1:10025"
    assert settings.server.message_size_limit == 50 * 1024 * 1024
    assert settings.policy.destiny.virus is Destiny.DISCARD
    assert settings.policy.destiny.banned is Destiny.DISCARD
    assert settings.policy.destiny.spam is Destiny.PASS
    assert settings.policy.destiny.oversized is Destiny.BOUNCE
    assert set(settings.enabled_scanners()) == {"clamav", "spamassassin", "banned", "bad_header"}
    assert settings.scanners["clamav"].on_failure is FailureAction.TEMPFAIL
    assert settings.scanners["spamassassin"].on_failure is FailureAction.PASS


def test_shipped_example_config_is_valid() -> None:
    settings = config.load(REPO / "config" / "contentfilter.yaml")
    assert settings.policy.subject_tags.spam == "***SPAM*** "


@pytest.mark.parametrize(
    ("document", "key", "words"),
    [
        ({"server": {"lisen": []}}, "server.lisen", "unknown key"),
        ({"next_hop": {"address": "127.0.0.1:70000"}}, "next_hop.address", "port out of range"),
        ({"next_hop": {"address": "nocolon"}}, "next_hop.address", "host:port"),
        ({"next_hop": {"max_use": "many"}}, "next_hop.max_use", "whole number"),
        ({"next_hop": {"max_use": 0}}, "next_hop", "max_use"),
        ({"server": {"message_size_limit": True}}, "server.message_size_limit", "whole number"),
        ({"server": {"allowed_clients": ["not-a-net"]}}, "server.allowed_clients[0]", "network"),
        ({"policy": {"destiny": {"virus": "explode"}}}, "policy.destiny.virus", "one of"),
        ({"policy": {"defaults": {"tag2_level": "high"}}}, "policy.defaults.tag2_level", "number"),
        ({"scanners": {"clamav": {"timeout": -1}}}, "scanners.clamav", "timeout"),
        ({"scanners": {"nosuch": {}}}, "scanners.nosuch.type", "unknown scanner type"),
        ({"next_hop": {"address": "127.0.0.1:10024"}}, "next_hop.address", "loop"),
    ],
)
def test_bad_values_name_the_key(document: dict[str, object], key: str, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        config.from_mapping(document)
    assert caught.value.key == key
    assert words in str(caught.value)


def test_destiny_accepts_amavisd_spelling() -> None:
    settings = config.from_mapping({"policy": {"destiny": {"virus": "D_REJECT"}}})
    assert settings.policy.destiny.virus is Destiny.REJECT


def test_check_config_prints_effective_policy(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["check-config"]) == 0
    out = capsys.readouterr().out
    assert "virus: discard" in out
    assert "127.0.0.1:10025" in out


def test_check_config_fails_naming_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("next_hop:\n  address: 127.0.0.1:99999\n")
    assert cli.main(["check-config", "-c", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "next_hop.address" in err and "99999" in err and "port out of range" in err


def test_check_config_unreadable_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["check-config", "-c", str(tmp_path / "missing.yaml")]) == 2
    assert "cannot read config file" in capsys.readouterr().err


def test_command_line_overrides_file(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("next_hop: {address: '127.0.0.1:2525'}\n")
    arguments = cli._parser().parse_args(
        [
            "serve",
            "-c",
            str(path),
            "--next-hop",
            "127.0.0.1:2626",
            "--clamd",
            "off",
            "--spamd",
            "127.0.0.1:7830",
            "--listen",
            "127.0.0.1:2424",
        ]
    )
    settings = cli.load_config(arguments)
    assert str(settings.next_hop.address) == "127.0.0.1:2626"
    assert str(settings.server.listen[0].address) == "127.0.0.1:2424"
    assert "clamav" not in settings.enabled_scanners()
    assert settings.scanners["spamassassin"].server == "127.0.0.1:7830"  # type: ignore[attr-defined]


def test_shipped_config_uses_the_default_banned_rules() -> None:
    from scanners import banned

    settings = config.load(REPO / "config" / "contentfilter.yaml")
    rules = settings.scanners["banned"].rule_table  # type: ignore[attr-defined]
    assert rules == banned.DEFAULT_RULES
