"""Decoding in worker processes and the files the decoder extracts for the virus scanners."""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from contentfilter import config
from contentfilter.decode import DecoderLimits, decode
from contentfilter.decode.spool import Spool
from contentfilter.decode.wire import FAULT_VARIABLE
from contentfilter.decode.workers import DecoderPool
from contentfilter.model import ExtractedFile, FailureAction, Message, ScanResult
from contentfilter.pipeline import Pipeline
from tests.support import mimegen as g
from tests.unit.test_pipeline import FakeNextHop, FakeScanner, message, smtp_reply

EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
MARK = "HALT-THE-DECODER-HERE"
LIMITS = DecoderLimits(workers=1, timeout=10)


def zipped_eicar() -> bytes:
    archive = g.zip_archive({"docs/eicar.com": EICAR, "inner.zip": g.zip_archive({"a.txt": b"a"})})
    return g.with_attachments(g.attachment(archive, "invoice.zip"))


class PartsScanner(FakeScanner):
    """Reads every extracted file while the scan runs, as clamd would."""

    seen: dict[str, bytes]
    extracted: tuple[ExtractedFile, ...] = ()

    async def scan(self, message: Message) -> ScanResult:
        assert message.parts is not None
        self.extracted = message.parts.extracted
        self.seen = {f.part_id: Path(f.path).read_bytes() for f in self.extracted}
        return await super().scan(message)


@pytest.fixture
async def pool() -> AsyncIterator[DecoderPool]:
    workers = DecoderPool(LIMITS)
    yield workers
    await asyncio.to_thread(workers.close)


def pipeline_with(scanner: FakeScanner, decoder: DecoderPool | None, tmp_path: Path) -> Pipeline:
    settings = config.from_mapping({"scanners": {}, "decoder": {"temp_directory": str(tmp_path)}})
    return Pipeline(settings, [scanner], FakeNextHop(), decoder=decoder)


@pytest.mark.parametrize("in_worker", [True, False], ids=["worker", "in-process"])
async def test_zipped_eicar_is_an_extracted_file_and_the_spool_goes_afterwards(
    pool: DecoderPool, tmp_path: Path, in_worker: bool
) -> None:
    scanner = PartsScanner("banned", needs_parts=True)
    raw = zipped_eicar()
    outcome = await pipeline_with(scanner, pool if in_worker else None, tmp_path).handle(
        message(raw=raw)
    )
    assert outcome.queued_as == ("QUEUE1",)  # relayed
    by_reason = {(f.part_id, f.reason) for f in scanner.extracted}
    # p001 the message, p002 its text, p003 the zip, p004 eicar.com, p005 inner.zip, p006 a.txt
    assert by_reason == {("p002", "leaf"), ("p004", "leaf"), ("p006", "leaf")}
    assert scanner.seen["p004"] == EICAR
    assert scanner.seen["p006"] == b"a"
    assert [f.size for f in scanner.extracted if f.part_id == "p004"] == [len(EICAR)]
    assert list(tmp_path.iterdir()) == []  # the message's spool directory is gone


def test_spool_directory_and_files_are_private(tmp_path: Path) -> None:
    spool = Spool(str(tmp_path))
    decoded = decode(zipped_eicar(), LIMITS, spool.path)
    assert stat.S_IMODE(os.stat(spool.path).st_mode) == 0o700
    assert {stat.S_IMODE(os.stat(f.path).st_mode) for f in decoded.extracted} == {0o600}
    assert spool.listing() == decoded.extracted
    spool.remove()
    assert list(tmp_path.iterdir()) == []


def test_the_spool_directory_is_made_only_for_a_file_and_never_reused(tmp_path: Path) -> None:
    spool = Spool(str(tmp_path))
    decoded = decode(g.message(g.text("nothing to extract\r\n")), LIMITS, spool.path)
    assert decoded.extracted == ()
    assert list(tmp_path.iterdir()) == []  # no file, no directory
    assert spool.remove_few()
    os.mkdir(spool.path, 0o755)  # the name taken meanwhile, not private: never written into
    with pytest.raises(FileExistsError):
        decode(zipped_eicar(), LIMITS, spool.path)
    assert list(Path(spool.path).iterdir()) == []
    os.chmod(spool.path, 0o700)  # a private directory of ours, made by the caller: used
    assert len(decode(zipped_eicar(), LIMITS, spool.path).extracted) == 3


@pytest.mark.parametrize("files", [3, 40], ids=["few files", "many files"])
async def test_the_spool_goes_with_few_or_many_files(
    pool: DecoderPool, tmp_path: Path, files: int
) -> None:
    scanner = PartsScanner("banned", needs_parts=True)
    archive = g.zip_archive({f"{n}.txt": b"text %d" % n for n in range(files)})
    raw = g.with_attachments(g.attachment(archive, "many.zip"))
    outcome = await pipeline_with(scanner, pool, tmp_path).handle(message(raw=raw))
    assert outcome.queued_as == ("QUEUE1",)
    assert len(scanner.extracted) == files + 1  # and the text part
    assert list(tmp_path.iterdir()) == []


def test_what_the_decoder_could_not_open_is_extracted_whole(tmp_path: Path) -> None:
    inner = g.zip_archive({"deep.exe": g.tiny_pe()})
    raw = g.with_attachments(g.attachment(g.zip_archive({"inner.zip": inner}), "outer.zip"))
    spool = Spool(str(tmp_path))
    decoded = decode(raw, DecoderLimits(max_depth=2), spool.path)
    assert decoded.problems == ("Maximum decoding depth (2) exceeded: p004 (inner.zip)",)
    assert [(f.part_id, f.reason) for f in decoded.extracted] == [
        ("p002", "leaf"),
        ("p004", "undecoded"),
    ]
    assert Path(decoded.extracted[1].path).read_bytes() == inner


def test_damaged_archive_is_extracted_whole(tmp_path: Path) -> None:
    raw = (Path(__file__).parent / "decoder_cases" / "cab-invalid-cfdata.eml").read_bytes()
    spool = Spool(str(tmp_path))
    decoded = decode(raw, DecoderLimits(), spool.path)
    assert [(f.part_id, f.reason) for f in decoded.extracted] == [
        ("p002", "leaf"),
        ("p004", "undecoded"),
    ]
    assert Path(decoded.extracted[1].path).read_bytes()[:4] == b"MSCF"


def test_extracted_files_stay_within_the_quota(tmp_path: Path) -> None:
    big = bytes(range(256)) * 4096  # 1 MiB that does not compress
    raw = g.with_attachments(
        g.attachment(g.zip_archive({f"{n}.bin": big for n in range(4)}), "x.zip")
    )
    spool = Spool(str(tmp_path))
    limits = DecoderLimits(min_total_bytes=2_500_000, max_total_bytes=2_500_000)
    decoded = decode(raw, limits, spool.path)
    assert sum(f.size for f in decoded.extracted) <= 2_500_000
    assert sum(p.stat().st_size for p in Path(spool.path).iterdir()) <= 2_500_000
    assert any("Exceeded storage quota" in problem for problem in decoded.problems)


@pytest.mark.parametrize(
    ("fault", "problem"),
    [("segfault", "Decoder crashed (signal 11)"), ("hang", "Decoder killed after 1s")],
)
async def test_a_worker_that_dies_costs_one_message_and_keeps_what_it_extracted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fault: str, problem: str
) -> None:
    monkeypatch.setenv(FAULT_VARIABLE, f"{fault}:{MARK}")
    workers = DecoderPool(DecoderLimits(workers=1, timeout=1))
    try:
        spool = Spool(str(tmp_path))
        poison = g.with_attachments(g.attachment(f"{MARK}\r\n".encode(), "halt.txt"))
        decoded = await workers.decode(poison, spool)
        assert decoded.problems == (problem + ("" if fault == "segfault" else " without a result"),)
        # the text part before the marked one was extracted before the worker died
        assert [(f.part_id, f.reason) for f in decoded.extracted] == [("p002", "leaf")]
        # a fresh worker decodes the next message
        decoded = await workers.decode(zipped_eicar())
        assert decoded.problems == ()
        assert "docs/eicar.com" in {name for part in decoded.walk() for name in part.names}
    finally:
        await asyncio.to_thread(workers.close)


async def test_a_large_message_crosses_to_the_worker_whole(pool: DecoderPool) -> None:
    payload = bytes(range(256)) * 12_000  # 3 MB: sent in many pieces under flow control
    raw = g.with_attachments(g.attachment(payload, "big.bin"))
    decoded = await pool.decode(raw)
    assert decoded.problems == ()
    assert decoded == decode(raw, LIMITS)
    assert [part.size for part in decoded.walk()][-1] == len(payload)


async def test_a_message_given_up_while_decoding_costs_no_worker(pool: DecoderPool) -> None:
    await pool.start()
    (worker,) = pool._workers
    big = g.with_attachments(g.attachment(os.urandom(6_000_000), "big.bin"))
    given_up = asyncio.create_task(pool.decode(big))
    await asyncio.sleep(0.05)  # sending it, or decoding
    given_up.cancel()
    with pytest.raises(asyncio.CancelledError):
        await given_up
    # the same worker answers the next message, with its own answer
    decoded = await pool.decode(zipped_eicar())
    assert "docs/eicar.com" in {name for part in decoded.walk() for name in part.names}
    assert pool._workers == {worker}
    assert worker.process.poll() is None


async def test_more_messages_than_workers_wait_for_one(pool: DecoderPool) -> None:
    raws = [g.message(g.text(f"message {n}\r\n")) for n in range(6)]
    decoded = await asyncio.gather(*(pool.decode(raw) for raw in raws))
    assert decoded == [decode(raw, LIMITS) for raw in raws]
    assert len(pool._workers) == LIMITS.workers


async def test_spool_is_removed_when_the_scan_is_cancelled(tmp_path: Path) -> None:
    scanner = FakeScanner("banned", needs_parts=True, hang=True, timeout=3600)
    scanner.on_failure = FailureAction.TEMPFAIL
    task = asyncio.create_task(
        pipeline_with(scanner, None, tmp_path).scan(message(raw=zipped_eicar()))
    )
    while scanner.calls == 0:
        await asyncio.sleep(0.01)
    assert len(list(tmp_path.iterdir())) == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert list(tmp_path.iterdir()) == []


async def test_a_decoder_process_that_cannot_start_tempfails_the_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "executable", "/bin/false")
    workers = DecoderPool(LIMITS)
    try:
        scanner = FakeScanner("banned", needs_parts=True)
        outcome = await pipeline_with(scanner, workers, tmp_path).handle(
            message(raw=zipped_eicar())
        )
    finally:
        await asyncio.to_thread(workers.close)
    reply = smtp_reply(outcome)
    assert (reply.code, reply.status) == (451, "4.5.0")
    assert "decoder process did not start (exited (status 1))" in reply.text
    assert outcome.queued_as == ()
    assert list(tmp_path.iterdir()) == []


async def test_memory_runs_out_in_the_worker_not_in_the_filter(pool: DecoderPool) -> None:
    await pool.start()
    (worker,) = pool._workers
    pid = worker.process.pid
    assert Path(f"/proc/{pid}/oom_score_adj").read_text().strip() == "1000"
    limits = Path(f"/proc/{pid}/limits").read_text()
    address_space = next(line for line in limits.splitlines() if "address space" in line)
    assert address_space.split()[3] == str(4 * 1024**3)


@pytest.mark.parametrize(
    "scanners",
    [{"clamav": {"servers": ["/nonexistent/clamd.ctl"]}}, {"banned": {}}],
    ids=["clamd alone", "banned rules alone"],
)
def test_the_filter_decodes_in_workers_for_every_scanner_that_looks_at_parts(
    scanners: dict[str, object], tmp_path: Path
) -> None:
    from contentfilter.cli import build_pipeline

    settings = {"scanners": scanners, "quarantine": {"directory": str(tmp_path)}}
    built = build_pipeline(config.from_mapping(settings), FakeNextHop())
    assert built.decoder is not None
    assert built.decoder.limits == built.config.decoder


def test_a_decoder_process_loads_no_asyncio() -> None:
    """Every decoder process is a fresh interpreter: what it imports is resident memory
    in each of them (asyncio with ssl is several megabytes), so it keeps to the decoder
    and the conversation with the filter."""
    probe = (
        "import sys, contentfilter.decode.worker_main; "
        "print(sorted(m for m in ('asyncio', 'ssl', 'aiosmtpd', 'pydantic') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"
