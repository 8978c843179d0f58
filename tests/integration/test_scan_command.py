"""`contentfilter scan` as the README runs it, against real clamd and spamd."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.support.daemons import Clamd, Spamd, filter_command

SAMPLES = Path(__file__).resolve().parents[2] / "samples"


def scan(clamd: Clamd, spamd: Spamd, *arguments: str) -> str:
    completed = subprocess.run(
        [
            *filter_command(),
            "scan",
            *arguments,
            "--clamd",
            str(clamd.socket_path),
            "--spamd",
            spamd.address,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return completed.stdout


@pytest.fixture(scope="module")
def gtube_scan(clamd: Clamd, spamd: Spamd) -> str:
    return scan(clamd, spamd, str(SAMPLES / "gtube.eml"), "--to", "bob@example.com")


def test_default_sender_is_the_from_address(gtube_scan: str) -> None:
    assert "sender <alice@example.org>" in gtube_scan
    assert "HEADER_FROM_DIFFERENT_DOMAINS" not in gtube_scan


def test_no_negative_zero_scores(gtube_scan: str) -> None:
    assert "=-0," not in gtube_scan and "=-0]" not in gtube_scan and "=-0 " not in gtube_scan
    assert "GTUBE=1000" in gtube_scan


def test_says_which_required_score_decides(gtube_scan: str) -> None:
    spam_line = next(line for line in gtube_scan.splitlines() if "spam: score=" in line)
    assert "spamd's own required=5 is not used" in spam_line
    assert "required=6.31" in gtube_scan  # the policy's tag2 level, in X-Spam-Status


def test_explicit_sender_is_kept(clamd: Clamd, spamd: Spamd) -> None:
    output = scan(
        clamd, spamd, str(SAMPLES / "clean.eml"), "--from", "other@example.net", "--to", "b@x.org"
    )
    assert "sender <other@example.net>" in output
