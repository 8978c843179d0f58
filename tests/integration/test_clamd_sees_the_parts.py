"""What the decoder sees, clamd sees: the filter, a real clamd, SMTP in and out.

The evasion messages hide a zipped EICAR where mail clients and strict MIME
parsers disagree; clamd's own MIME parser misses some of them, our decoder
extracts the zip in every one, and clamd finds EICAR in what it extracted.
"""

from __future__ import annotations

import asyncio

import pytest

from contentfilter.model import Envelope, Recipient
from contentfilter.rfc5322 import read_message
from scanners.clamav import ClamAVScanner, ClamAVSettings
from tests.support import evasions
from tests.support import mimegen as g
from tests.support.client import send
from tests.support.daemons import Clamd, FilterFactory
from tests.support.messages import EICAR
from tests.support.sink import CaptureSink

MiB = 1024 * 1024
SENDER, RECIPIENT = "alice@sender.example", "bob@example.com"


def raw_verdict_is_clean(clamd: Clamd, raw: bytes) -> bool:
    """What clamd says of the raw message alone (no extracted files)."""
    settings = ClamAVSettings(servers=(clamd.address,), scan_parts=False)
    envelope = Envelope(SENDER, (Recipient(RECIPIENT),))
    result = asyncio.run(
        ClamAVScanner("clamav", settings).scan(read_message("1-1", "m", envelope, raw))
    )
    return not result.findings


def test_evasions_of_clamds_parser_are_infected_over_tcp_too(
    filter_factory: FilterFactory, sink: CaptureSink, clamd: Clamd
) -> None:
    """The cases clamd misses in the raw message, with the files streamed over TCP
    (test_evasions_e2e sends every case over the unix socket)."""
    missed = [e for e in evasions.ALL if raw_verdict_is_clean(clamd, e.build())]
    assert "boundary-reused-by-inner" in [e.name for e in missed]  # else this shows nothing
    # without the banned check, which would discard them for eicar.com inside
    process = filter_factory(clamd=clamd.address, config_text="scanners:\n  banned: off\n")
    answers = {e.name: send(process.address, e.build(), SENDER, [RECIPIENT]).data for e in missed}
    not_caught = {
        name: answer
        for name, answer in answers.items()
        if not (answer.startswith("250 2.7.0 Ok, discarded") and "INFECTED: Eicar" in answer)
    }
    assert not_caught == {}
    assert sink.messages == []


def big_mail(attachment: bytes) -> bytes:
    return g.with_attachments(g.attachment(attachment, "report.pdf", "application/pdf"))


@pytest.mark.parametrize("socket", ["unix", "tcp"])
def test_a_27_mb_message_is_scanned_not_unchecked(
    filter_factory: FilterFactory, sink: CaptureSink, clamd: Clamd, socket: str
) -> None:
    """Debian's clamd refuses streams over 25 MB; max_size says so here."""
    pdf = b"%PDF-1.4\n" + bytes(range(256)) * (20 * MiB // 256)
    raw = big_mail(pdf)
    assert len(raw) > 27 * MiB  # 20 MiB in base64
    server = str(clamd.socket_path) if socket == "unix" else clamd.address
    config = f"scanners:\n  clamav: {{servers: ['{server}'], max_size: {25 * MiB}}}\n"
    process = filter_factory(clamd=None, config_text=config)
    replies = send(process.address, raw, SENDER, [RECIPIENT])
    assert replies.data.startswith("250 2.0.0 Ok"), replies.data
    [arrived] = sink.wait_for(1)
    assert b"***UNCHECKED***" not in arrived.data and b"X-Amavis-Alert" not in arrived.data
    # the same with EICAR in the middle of the big attachment
    infected = big_mail(pdf[: 10 * MiB] + EICAR + pdf[10 * MiB :])
    replies = send(process.address, infected, SENDER, [RECIPIENT])
    assert "INFECTED: Eicar-Test-Signature" in replies.data, replies.data


def test_what_the_decoder_could_not_open_gets_clamds_own_recursion_budget(
    filter_factory: FilterFactory, sink: CaptureSink, clamd: Clamd
) -> None:
    """EICAR 35 zips deep: past clamd's MaxRecursion (30) in the raw message; the decoder
    stops at its depth limit (14) and hands clamd the zip it did not open."""
    data, name = EICAR, "eicar.com"
    for level in range(35):
        data, name = g.zip_archive({name: data}), f"level{level}.zip"
    raw = g.with_attachments(g.attachment(data, name, "application/zip"))
    assert raw_verdict_is_clean(clamd, raw)
    process = filter_factory(clamd=clamd.address, config_text="scanners:\n  banned: off\n")
    replies = send(process.address, raw, SENDER, [RECIPIENT])
    assert replies.data.startswith("250 2.7.0 Ok, discarded"), replies.data
    assert "INFECTED: Eicar-Test-Signature" in replies.data
    assert sink.messages == []
