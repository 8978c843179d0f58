"""Config validation: every error names the key, the bad value and the reason."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from contentfilter import cli, config
from contentfilter.errors import ConfigError
from contentfilter.model import Destiny, FailureAction
from scanners import ScannerSettings, load_settings

REPO = Path(__file__).resolve().parents[2]


def scanner_settings(loaded: config.Config) -> dict[str, ScannerSettings]:
    return load_settings(loaded.scanners)


def load_all(document: dict[str, object]) -> config.Config:
    """The config and its scanner sections validated, as `contentfilter` does at start-up."""
    loaded = config.from_mapping(document)
    load_settings(loaded.scanners)
    return loaded


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
    assert scanner_settings(settings)["clamav"].on_failure is FailureAction.TEMPFAIL
    assert scanner_settings(settings)["spamassassin"].on_failure is FailureAction.PASS


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
        load_all(document)
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
    assert scanner_settings(settings)["spamassassin"].server == "127.0.0.1:7830"  # type: ignore[attr-defined]


def test_shipped_config_uses_the_default_banned_rules() -> None:
    from scanners import banned

    settings = config.load(REPO / "config" / "contentfilter.yaml")
    rules = scanner_settings(settings)["banned"].rule_table  # type: ignore[attr-defined]
    assert rules == banned.DEFAULT_RULES


# --- hostile config files -------------------------------------------------------------

BILLION_LAUGHS = "a: &a ['lol','lol','lol','lol','lol','lol','lol','lol','lol']\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{','.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(8)
)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (  # a second section silently replaced the first
            "scanners:\n  clamav: {}\nserver: {}\nscanners:\n  banned: {}\n",
            "scanners: line 4: duplicate key (first on line 1)",
        ),
        (
            "next_hop:\n  max_use: 5\n  max_use: 6\n",
            "next_hop.max_use: line 3: duplicate key (first on line 2)",
        ),
        ("a: &x 1\nb: *x\n", "line 1: YAML anchors and aliases are not allowed"),
        (BILLION_LAUGHS, "line 1: YAML anchors and aliases are not allowed"),
        ("server: " + "[" * 500 + "]" * 500 + "\n", "nested deeper than 32 levels"),
        ("".join(" " * i + f"k{i}:\n" for i in range(500)), "nested deeper than 32 levels"),
        ("scanners:\n  clamav: [1, 2]\n", "scanners.clamav: expected a mapping of settings"),
        ("scanners:\n  clamav: fast\n", "scanners.clamav: expected a mapping of settings"),
        ("scanners:\n  x: {type: [clamav]}\n", "scanners.x.type: unknown scanner type"),
        ("server: {listen: [\n", "line 2, column 1: not valid YAML"),
        ("key: value\n\x00\x01binary\n", "not valid YAML"),
        ("- just\n- a list\n", "must be a mapping of sections"),
    ],
)
def test_bad_config_files_get_one_line(tmp_path: Path, text: str, words: str) -> None:
    path = tmp_path / "contentfilter.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        config.load(path)
    message = str(caught.value)
    assert words in message
    assert "\n" not in message and len(message) < 300


def test_config_that_is_not_utf8_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "contentfilter.yaml"
    path.write_bytes(b"server:\n  hostname: caf\xe9\n")
    with pytest.raises(ConfigError, match=r"line 2: not UTF-8 text \(byte 0xe9\)"):
        config.load(path)


def test_config_file_size_is_bounded(tmp_path: Path) -> None:
    path = tmp_path / "contentfilter.yaml"
    path.write_bytes(b"# " + b"x" * config.MAX_CONFIG_BYTES + b"\n")
    with pytest.raises(ConfigError, match="larger than"):
        config.load(path)


@pytest.mark.parametrize(("word", "enabled"), [("off", False), ("false", False), ("on", True)])
def test_scanner_switched_by_a_boolean(tmp_path: Path, word: str, enabled: bool) -> None:
    path = tmp_path / "contentfilter.yaml"
    path.write_text(f"scanners:\n  banned: {word}\n  clamav: {{}}\n")
    settings = config.load(path)
    assert settings.scanners["banned"].enabled is enabled
    assert ("banned" in settings.enabled_scanners()) is enabled
    assert f"banned:\n    enabled: {str(enabled).lower()}" in config.dump(settings)


@pytest.mark.parametrize(
    "text",
    [
        "scanners:\n  clamav: [1]\n",
        "scanners:\n  clamav: off\n",
        "scanners: [clamav]\n",
        "scanners:\n  other: {type: [x]}\n",
    ],
)
def test_command_line_overrides_survive_odd_scanner_sections(tmp_path: Path, text: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    arguments = cli._parser().parse_args(["serve", "-c", str(path), "--clamd", "127.0.0.1:3310"])
    try:
        cli.load_config(arguments)
    except ConfigError as error:
        assert "\n" not in str(error)


@pytest.mark.parametrize("command", ["check-config", "serve"])
@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"scanners:\n  banned: {}\nscanners:\n  clamav: {}\n", "scanners: line 3: duplicate key"),
        (b"server:\n  hostname: caf\xe9\n", "line 2: not UTF-8 text"),
        (b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)), "line 2: not UTF-8 text"),
        (b"\x00\x01\x02binary\n", "line 1: not valid YAML: character 0x00"),
        (b"a: " + b"[" * 500 + b"]" * 500 + b"\n", "nested deeper than 32 levels"),
        (BILLION_LAUGHS.encode(), "YAML anchors and aliases are not allowed"),
        (b"scanners:\n  clamav: [1]\n", "scanners.clamav: expected a mapping of settings"),
    ],
)
def test_contentfilter_refuses_a_bad_config_in_one_line(
    tmp_path: Path, command: str, content: bytes, words: str
) -> None:
    from tests.support.daemons import filter_command

    path = tmp_path / "contentfilter.yaml"
    path.write_bytes(content)
    done = subprocess.run(
        [*filter_command(), command, "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    (line,) = done.stderr.splitlines()
    assert line.startswith("contentfilter: config error: ") and words in line


def test_quarantine_defaults() -> None:
    settings = config.load(None).quarantine
    assert settings.enabled and settings.on_failure == "tempfail"
    assert settings.categories == ("virus", "banned", "spam")
    assert (settings.retention.days("spam"), settings.retention.days("virus")) == (14, 30)
    assert settings.directory == "/var/lib/contentfilter/quarantine" and not settings.database


@pytest.mark.parametrize(
    ("section", "key", "words"),
    [
        ({"categories": ["virus", "viruses"]}, "quarantine", "unknown category 'viruses'"),
        ({"on_failure": "discard"}, "quarantine.on_failure", "tempfail, discard-unkept"),
        ({"database": "mysql://x"}, "quarantine", "postgresql://"),
        ({"directory": "relative/dir"}, "quarantine", "absolute path"),
        ({"retention": {"spam": 0}}, "quarantine.retention", "spam: days must be positive"),
        ({"retention": {"virsu": 3}}, "quarantine.retention.virsu", "unknown key"),
        ({"spam_cutoff_level": "high"}, "quarantine.spam_cutoff_level", "number"),
        ({"keep": True}, "quarantine.keep", "unknown key"),
    ],
)
def test_bad_quarantine_values_name_the_key(
    section: dict[str, object], key: str, words: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        config.from_mapping({"quarantine": section})
    assert caught.value.key == key
    assert words in str(caught.value)


def test_check_config_hides_the_database_password(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "q.yaml"
    path.write_text('quarantine: {database: "postgresql://cf:s3cret@db.example/q"}\n')
    assert cli.main(["check-config", "-c", str(path)]) == 0
    out = capsys.readouterr().out
    assert "postgresql://cf:***@db.example/q" in out and "s3cret" not in out


def test_off_unquoted_switches_the_metrics_endpoint_and_the_json_log_off() -> None:
    loaded = config.from_mapping(yaml.safe_load("metrics: {listen: off}\nlog: {json: off}"))
    assert loaded.metrics.address is None
    assert loaded.log.json == "off"


@pytest.mark.parametrize("interval", [-1, 3601])
def test_a_probe_interval_out_of_range_is_refused_naming_the_key(interval: int) -> None:
    with pytest.raises(ConfigError, match="metrics: probe_interval: expected 0 to 3600"):
        config.from_mapping({"metrics": {"probe_interval": interval}})
