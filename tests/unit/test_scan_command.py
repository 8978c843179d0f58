"""`contentfilter scan`: the offline pipeline, decoding the message once."""

from __future__ import annotations

from pathlib import Path

import pytest

from contentfilter import cli
from contentfilter.decode.spool import Spool
from contentfilter.decode.workers import DecoderPool
from contentfilter.model import DecodedMessage

REPO = Path(__file__).resolve().parents[2]


def test_scan_decodes_the_message_once(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    decoded: list[int] = []
    decode = DecoderPool.decode

    async def counted(self: DecoderPool, raw: bytes, spool: Spool | None = None) -> DecodedMessage:
        decoded.append(len(raw))
        return await decode(self, raw, spool)

    monkeypatch.setattr(DecoderPool, "decode", counted)
    sample = REPO / "samples" / "banned-exe.eml"
    assert cli.main(["scan", str(sample), "--clamd", "off", "--spamd", "off"]) == 0
    out = capsys.readouterr().out
    assert "parts:" in out and "verdict: DISCARD" in out
    assert len(decoded) == 1
