"""Property: any config file gets a Config or one ConfigError line, never a traceback."""

from __future__ import annotations

import dataclasses
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contentfilter import config
from contentfilter.errors import ConfigError

SECTION_NAMES = [f.name for f in dataclasses.fields(config.Config)]
KEYS = st.sampled_from(
    [
        *SECTION_NAMES,
        "listen",
        "address",
        "hostname",
        "allowed_clients",
        "message_size_limit",
        "idle_timeout",
        "max_sessions",
        "clamav",
        "spamassassin",
        "banned",
        "bad_header",
        "type",
        "enabled",
        "timeout",
        "on_failure",
        "rules",
        "destiny",
        "virus",
        "defaults",
        "tag2_level",
        "protocol",
        "policy_bank",
        "clients",
    ]
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True),
    st.text(max_size=20),
    st.sampled_from(["127.0.0.1:10025", "lmtp:[::1]:24", "off", "D_PASS", "0/0", "::/0"]),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(KEYS, st.text(max_size=8)), inner, max_size=4),
    ),
    max_leaves=20,
)
DOCUMENTS = st.dictionaries(st.one_of(KEYS, st.text(max_size=8)), VALUES, max_size=5)


def _outcome(document: Any) -> None:
    try:
        config.from_mapping(document)
    except ConfigError as error:
        assert "\n" not in str(error)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(DOCUMENTS)
def test_any_document_is_a_config_or_one_config_error(document: dict[Any, Any]) -> None:
    _outcome(document)
    text = yaml.safe_dump(document, allow_unicode=True)
    try:
        parsed = config.parse_yaml(text)
    except ConfigError as error:  # a document with two keys that print the same
        assert "duplicate key" in str(error)
        return
    _outcome(parsed)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=400))
def test_any_bytes_are_a_config_or_one_config_error(tmp_path_factory: Any, data: bytes) -> None:
    path = tmp_path_factory.mktemp("config") / "contentfilter.yaml"
    path.write_bytes(data)
    try:
        config.load(path)
    except ConfigError as error:
        assert "\n" not in str(error)
