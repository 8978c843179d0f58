"""`serve --workers N`: a supervisor and N worker processes on shared sockets.

Reloads (SIGHUP) under a steady stream of mail, a worker or the supervisor killed
under load, restarts: the client is a Postfix-like one that retries whatever got no
final answer (tests/support/load.py), and the sink's copies are counted by
Message-ID: nothing lost, nothing refused or reset by a reload, nothing that got a
2xx delivered twice.
"""

from __future__ import annotations

import collections
import contextlib
import os
import re
import shutil
import signal
import smtplib
import socket
from pathlib import Path

import pytest

from tests.integration.test_metrics import scrape, value
from tests.support.client import host_port, send, transaction
from tests.support.daemons import FilterFactory, FilterProcess, children
from tests.support.load import Load
from tests.support.messages import banned_exe, clean
from tests.support.net import HangingServer, free_port, smtp_greeting, wait_until
from tests.support.sink import CaptureSink

ALICE = "alice@sender.example"
BOB = "bob@recipient.example"


def worker_pids(supervisor: int) -> list[int]:
    """The supervisor's worker processes."""
    return children(supervisor, b"contentfilter.worker")


def reload(process: FilterProcess, times_before: int, word: str = "reloaded:") -> None:
    """SIGHUP, and wait until the supervisor has logged the outcome."""
    process.process.send_signal(signal.SIGHUP)
    wait_until(
        lambda: process.log_text().count(word) > times_before,
        f"reload {times_before + 1}",
        180,
        process.process,
        process.stderr_path,
    )


def served_by(process: FilterProcess) -> collections.Counter[str]:
    """Messages per worker PID, from the amavisd-new ids (`PID-NN`) in the log."""
    return collections.Counter(re.findall(r"\((\d+)-\d+\) Passed", process.log_text()))


def test_two_workers_serve_and_a_killed_one_is_replaced(
    filter_factory: FilterFactory, sink: CaptureSink
) -> None:
    process = filter_factory(extra_args=["--workers", "2"])
    first = worker_pids(process.process.pid)
    assert len(first) == 2
    os.kill(first[0], signal.SIGKILL)
    wait_until(
        lambda: len(set(worker_pids(process.process.pid)) - set(first)) == 1, "a new one", 60
    )
    assert f"worker {first[0]} was killed by signal SIGKILL; starting a new one" in (
        process.log_text()
    )
    for _ in range(4):
        assert send(process.address, clean(), ALICE, [BOB]).data.startswith("250 2.0.0 Ok")
    assert len(sink.wait_for(4)) == 4


def served_by_id(reply: str) -> str:
    """The worker PID in the id of a reply to end-of-DATA (`id=PID-NN`, the PID padded
    to five digits)."""
    found = re.search(r"\bid=(\d+)-\d+", reply)
    assert found, reply
    return str(int(found[1]))


def open_session(sock: socket.socket) -> smtplib.SMTP:
    """An SMTP client on a connection made already; returns once greeted."""
    smtp = smtplib.SMTP(local_hostname="client.test", timeout=120)
    smtp.sock = sock
    code, text = smtp.getreply()
    assert code == 220, text
    return smtp


def test_sessions_arriving_at_once_are_shared_evenly_by_two_workers(
    filter_factory: FilterFactory, sink: CaptureSink
) -> None:
    """16 connections come in while both workers are busy (stopped here), as Postfix
    opens its sessions in a burst: each worker takes about half of them, not the
    one that wakes first all of them."""
    process = filter_factory(extra_args=["--workers", "2"])
    workers = worker_pids(process.process.pid)
    for pid in workers:
        os.kill(pid, signal.SIGSTOP)
    try:
        connections = [
            socket.create_connection(host_port(process.address), timeout=120) for _ in range(16)
        ]
    finally:
        for pid in workers:
            os.kill(pid, signal.SIGCONT)
    sessions = [open_session(sock) for sock in connections]  # all open at once
    served: collections.Counter[str] = collections.Counter()
    for smtp in sessions:
        reply = transaction(smtp, clean(), ALICE, [BOB]).data
        assert reply.startswith("250 2.0.0 Ok"), reply
        served[served_by_id(reply)] += 1
    for smtp in sessions:
        smtp.quit()
    assert sorted(served) == sorted(str(pid) for pid in workers)
    assert max(served.values()) <= 9, served  # no worker above 60% (9 of 16: 56%)
    assert len(sink.wait_for(16)) == 16


def test_a_stopped_worker_leaves_no_connection_waiting(
    filter_factory: FilterFactory, sink: CaptureSink
) -> None:
    """A worker that takes no connections (stopped here; busy or hung in life): the
    other takes them although it then holds more than its share."""
    process = filter_factory(extra_args=["--workers", "2"])
    stopped, running = worker_pids(process.process.pid)
    os.kill(stopped, signal.SIGSTOP)
    try:
        with contextlib.ExitStack() as sessions:
            for _ in range(6):  # each kept open: the running worker holds them all
                sock = socket.create_connection(host_port(process.address), timeout=120)
                smtp = sessions.enter_context(open_session(sock))
                reply = transaction(smtp, clean(), ALICE, [BOB]).data
                assert reply.startswith("250 2.0.0 Ok"), reply
                assert served_by_id(reply) == str(running)
    finally:
        os.kill(stopped, signal.SIGCONT)
    assert len(sink.wait_for(6)) == 6


def test_a_worker_that_cannot_start_is_restarted_ever_more_slowly_while_the_other_serves(
    filter_factory: FilterFactory, sink: CaptureSink, tmp_path: Path
) -> None:
    events = tmp_path / "events"
    events.mkdir()
    process = filter_factory(
        config_text=f"log:\n  json: {events / 'events.jsonl'}\n", extra_args=["--workers", "2"]
    )
    victim, survivor = worker_pids(process.process.pid)
    shutil.rmtree(events)  # a new worker cannot open its event log: it exits at start

    def restarts() -> list[tuple[str, str]]:
        return re.findall(r"; starting a new one in (\d+)s \((.*)\)", process.log_text())

    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: len(restarts()) >= 3, "three restarts", 120)
    assert "cannot start: [Errno 2] No such file or directory" in process.log_text()
    first, second, third = restarts()[:3]
    assert first[0] == "1"
    assert re.fullmatch(r"it lived [\d.]+s; 1 of 2 workers accept mail", first[1])
    assert second == ("2", "it never accepted mail; 1 of 2 workers accept mail")
    assert third == ("4", "it never accepted mail; 1 of 2 workers accept mail")
    reply = send(process.address, clean(), ALICE, [BOB]).data
    assert reply.startswith("250 2.0.0 Ok") and served_by_id(reply) == str(survivor)
    events.mkdir()  # the cause is gone: the next one starts and stays
    wait_until(lambda: "2 of 2 workers accept mail" in process.log_text(), "a replacement", 120)
    assert len(worker_pids(process.process.pid)) == 2
    assert len(sink.wait_for(1)) == 1


def test_one_worker_runs_the_scanner_probes_and_another_takes_over_when_it_dies(
    filter_factory: FilterFactory,
) -> None:
    with HangingServer() as clamd:  # every probe is one connection; none is answered
        process = filter_factory(
            clamd=clamd.address,
            config_text="metrics:\n  probe_interval: 1\n",
            extra_args=["--workers", "2", "--metrics", f"127.0.0.1:{free_port()}"],
        )

        def probers() -> list[str]:
            return re.findall(r"worker (\d+) runs the scanner probes", process.log_text())

        wait_until(lambda: probers() != [], "the probes", 60)
        [prober] = probers()  # one of the two workers
        others = [str(pid) for pid in worker_pids(process.process.pid) if str(pid) != prober]
        assert len(others) == 1
        os.kill(int(prober), signal.SIGKILL)
        wait_until(lambda: len(probers()) == 2, "a worker taking over the probes", 60)
        assert probers()[1] == others[0]  # at once, not when the replacement has started
        seen = clamd.connections
        wait_until(lambda: clamd.connections > seen, "the next probe", 60)


def test_ten_reloads_under_a_steady_stream_lose_refuse_and_repeat_nothing(
    filter_factory: FilterFactory, sink: CaptureSink
) -> None:
    process = filter_factory(
        config_text="server:\n  hostname: generation0.test\n", extra_args=["--workers", "2"]
    )
    load = Load(process.address, concurrency=6).start()
    try:
        for n in range(1, 11):
            wanted = 30 * n  # messages answered before this reload
            wait_until(lambda: load.answered >= wanted, "mail between reloads", 120)  # noqa: B023
            process.write_config(f"server:\n  hostname: generation{n}.test\n")
            reload(process, n - 1)
        wait_until(lambda: load.answered >= 400, "several hundred messages", 300)
    finally:
        load.stop()
    assert load.problems() == []  # no refused or reset connection, no tempfail
    assert load.delivery_problems(sink, exactly_once=True) == []
    assert len(load.attempts) >= 400
    assert b"generation10.test" in smtp_greeting(*host_port(process.address))
    assert process.log_text().count("worker") and "Traceback" not in process.log_text()


def test_a_bad_config_is_refused_and_the_old_one_keeps_serving(
    filter_factory: FilterFactory, sink: CaptureSink
) -> None:
    process = filter_factory(
        config_text="server:\n  hostname: good.test\n", extra_args=["--workers", "2"]
    )
    before = worker_pids(process.process.pid)
    process.write_config("server:\n  hostname: bad.test\n  max_sessions: -1\n")
    reload(process, 0, "reload refused")
    assert "server: max_sessions must be" in process.log_text().split("reload refused")[1]
    assert worker_pids(process.process.pid) == before
    assert b"good.test" in smtp_greeting(*host_port(process.address))
    assert send(process.address, clean(), ALICE, [BOB]).data.startswith("250 2.0.0 Ok")


def test_a_reload_adds_and_removes_listeners(
    filter_factory: FilterFactory, sink: CaptureSink
) -> None:
    port = free_port()
    first, second = f"127.0.0.1:{port}", f"127.0.0.1:{free_port()}"
    process = filter_factory(
        config_text=f"server:\n  listen: ['{first}']\n",
        extra_args=["--workers", "1"],
        port=port,
        listen_flag=False,
    )
    process.write_config(f"server:\n  listen: ['{first}', 'lmtp:{second}']\n")
    reload(process, 0)
    assert smtp_greeting(*host_port(second)).startswith(b"220 ")
    assert send(first, clean(), ALICE, [BOB]).data.startswith("250 2.0.0 Ok")
    process.write_config(f"server:\n  listen: ['{second}']\n")
    reload(process, 1)
    with pytest.raises(ConnectionRefusedError):  # nobody listens there any more
        smtp_greeting(*host_port(first))
    assert send(second, clean(), ALICE, [BOB]).data.startswith("250 2.0.0 Ok")
    assert len(sink.wait_for(2)) == 2


def test_a_worker_killed_under_load_costs_only_its_open_sessions(
    filter_factory: FilterFactory, sink: CaptureSink
) -> None:
    process = filter_factory(extra_args=["--workers", "2"])
    load = Load(process.address, concurrency=6).start()
    try:
        wait_until(lambda: load.answered >= 50, "mail before the kill", 120)
        victim = worker_pids(process.process.pid)[0]
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: "starting a new one" in process.log_text(), "a replacement", 60)
        wait_until(lambda: load.answered >= 200, "mail after the kill", 300)
    finally:
        load.stop()
    # its sessions got no reply and were retried; nobody got a 4xx or 5xx
    assert [a for _, a in load.problems() if a.outcome not in ("no reply", "refused")] == []
    assert load.delivery_problems(sink) == []  # a copy more only where a reply was lost


def test_sigterm_of_the_supervisor_under_load_then_a_restart_delivers_each_message_once(
    filter_factory: FilterFactory, sink: CaptureSink
) -> None:
    port = free_port()
    process = filter_factory(extra_args=["--workers", "2"], port=port)
    load = Load(process.address, concurrency=6).start()
    try:
        wait_until(lambda: load.answered >= 50, "mail before the stop", 120)
        process.process.send_signal(signal.SIGTERM)
        assert process.process.wait(120) == 0
        assert worker_pids(process.process.pid) == []
        stopped_at = load.answered
        filter_factory(extra_args=["--workers", "2"], port=port)
        wait_until(lambda: load.answered >= stopped_at + 100, "mail after the restart", 300)
    finally:
        load.stop()
    # every message that reached end-of-DATA got its answer before the workers exited;
    # one that ended its DATA in the last moment got 421 and was not processed
    wrong = [a for _, a in load.problems() if a.outcome in ("4xx", "5xx")]
    assert [a for a in wrong if "421 4.3.2 Service shutting down" not in a.detail] == []
    assert load.delivery_problems(sink, exactly_once=True) == []


def test_sigkill_of_the_supervisor_under_load_then_a_restart_loses_nothing(
    filter_factory: FilterFactory, sink: CaptureSink
) -> None:
    port = free_port()
    process = filter_factory(extra_args=["--workers", "2"], port=port)
    orphans = worker_pids(process.process.pid)
    load = Load(process.address, concurrency=6).start()
    try:
        wait_until(lambda: load.answered >= 50, "mail before the kill", 120)
        process.process.kill()
        process.process.wait(60)
        # the workers see their supervisor gone: they stop accepting, answer what
        # they have, and exit
        wait_until(lambda: not any(_alive(pid) for pid in orphans), "the workers to exit", 120)
        killed_at = load.answered
        filter_factory(extra_args=["--workers", "2"], port=port)
        wait_until(lambda: load.answered >= killed_at + 100, "mail after the restart", 300)
    finally:
        load.stop()
    wrong = [a for _, a in load.problems() if a.outcome in ("4xx", "5xx")]
    assert [a for a in wrong if "421 4.3.2 Service shutting down" not in a.detail] == []
    assert load.delivery_problems(sink, exactly_once=True) == []


def test_metrics_add_up_all_workers_and_survive_a_reload(
    filter_factory: FilterFactory, sink: CaptureSink
) -> None:
    metrics = f"127.0.0.1:{free_port()}"
    process = filter_factory(
        config_text="server: {hostname: one.test}\n",
        extra_args=["--workers", "2", "--metrics", metrics],
    )
    for _ in range(6):
        assert send(process.address, clean(), ALICE, [BOB]).data.startswith("250 2.0.0 Ok")
    before = scrape(metrics)
    assert value(before, "messages_total", category="CLEAN") == 6
    assert value(before, "smtp_sessions_active") == 0
    process.write_config("server: {hostname: two.test}\n")
    reload(process, 0)
    wait_until(lambda: len(worker_pids(process.process.pid)) == 2, "the old workers gone", 120)
    assert send(process.address, clean(), ALICE, [BOB]).data.startswith("250 2.0.0 Ok")
    after = scrape(metrics)
    assert value(after, "messages_total", category="CLEAN") == 7  # the old workers' count too
    assert value(after, "config_reloads_total", result="success") == 1
    [old_hash] = [labels for name, labels in before if name == "contentfilter_build_info"]
    [new_hash] = [labels for name, labels in after if name == "contentfilter_build_info"]
    assert old_hash != new_hash


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"


def decoder_children(worker: int) -> int:
    """How many decoder processes a worker runs."""
    return len(children(worker, b"contentfilter.decode.worker_main"))


@pytest.mark.parametrize(("decoders", "each"), [(2, 1), (3, 2), (1, 1)])
def test_decoder_processes_are_split_over_the_workers(
    filter_factory: FilterFactory, decoders: int, each: int
) -> None:
    """`decoder.workers` is for the whole filter: 2 workers share it (at least one each),
    and attachments are still found."""
    process = filter_factory(
        extra_args=["--workers", "2"], config_text=f"decoder: {{workers: {decoders}}}\n"
    )
    workers = worker_pids(process.process.pid)
    assert len(workers) == 2
    assert [decoder_children(pid) for pid in workers] == [each, each]
    banned = banned_exe()
    for _ in range(4):  # over both workers' decoders
        assert "BANNED" in send(process.address, banned, ALICE, [BOB]).data
