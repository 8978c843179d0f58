"""Daemon life cycle and scan economy: SIGTERM drains, the cache spares clamd."""

from __future__ import annotations

import base64
import signal
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from tests.support.client import Replies, send
from tests.support.daemons import Clamd, FilterFactory
from tests.support.messages import EICAR, clean, message
from tests.support.net import HangingServer, wait_until
from tests.support.sink import CaptureSink


def test_sigterm_lets_the_message_in_progress_finish_then_exits_0(
    filter_factory: FilterFactory, sink: CaptureSink
) -> None:
    config = "scanners:\n  clamav: {servers: ['%s'], timeout: 4, on_failure: unchecked}\n"
    with HangingServer() as hanging:
        process = filter_factory(clamd=None, config_text=config % hanging.address)
        answers: list[Replies] = []
        client = threading.Thread(
            target=lambda: answers.append(
                send(process.address, clean(), "alice@sender.example", ["bob@example.com"])
            )
        )
        client.start()
        wait_until(lambda: hanging.connections >= 1, "the scan to start", 30)
        process.process.send_signal(signal.SIGTERM)
        client.join(60)
        status = process.process.wait(60)
    assert answers and answers[0].data.startswith("250 2.0.0 Ok, id="), answers
    assert status == 0
    [arrived] = sink.wait_for(1)
    assert b"***UNCHECKED***" in arrived.data  # the scan timed out: passed as UNCHECKED
    assert "stopped" in process.log_text()


class CountingProxy:
    """A TCP forwarder to a real daemon that counts the connections made through it."""

    def __init__(self, target: str) -> None:
        host, _, port = target.rpartition(":")
        self.target = (host, int(port))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            upstream = socket.create_connection(self.target)
            for source, target in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, target), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
            target.shutdown(socket.SHUT_WR)
        except OSError:
            pass


@contextmanager
def counting_proxy(target: str) -> Iterator[CountingProxy]:
    proxy = CountingProxy(target)
    try:
        yield proxy
    finally:
        proxy.listener.close()


def test_second_identical_message_does_not_reach_clamd(
    filter_factory: FilterFactory, sink: CaptureSink, clamd: Clamd
) -> None:
    with counting_proxy(clamd.address) as proxy:
        process = filter_factory(clamd=proxy.address)
        message = clean()
        # Postfix hands one queued message over in several identical transactions.
        first = send(process.address, message, "alice@sender.example", ["bob@example.com"])
        second = send(process.address, message, "alice@sender.example", ["carol@example.com"])
        time.sleep(0.2)
        assert proxy.connections == 1
        # clamd reads the header too: another header is another scan
        again = b"Received: from mx (mx [192.0.2.1]) by mail.example.com\r\n" + message
        third = send(process.address, again, "alice@sender.example", ["dave@example.com"])
        time.sleep(0.2)
        assert proxy.connections == 2
    assert all(r.data.startswith("250 2.0.0") for r in (first, second, third))
    assert len(sink.wait_for(3)) == 3


def look_alike(boundary: str) -> bytes:
    """One body, two readings: with boundary AAA the EICAR part is text, with BBB a file."""
    encoded = base64.encodebytes(EICAR).replace(b"\n", b"\r\n")
    body = (
        b"--AAA\r\nContent-Type: text/plain\r\n\r\nhello\r\n"
        b"--BBB\r\nContent-Type: application/octet-stream\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n" + encoded + b"--BBB--\r\n--AAA--\r\n"
    )
    return message("look-alike", body, content_type=f"multipart/mixed; boundary={boundary}")


def test_eicar_under_another_boundary_is_not_served_a_clean_verdict(
    filter_factory: FilterFactory, sink: CaptureSink, clamd: Clamd
) -> None:
    process = filter_factory(clamd=clamd.address)
    clean_reading = send(process.address, look_alike("AAA"), "alice@sender.example", ["bob@ex.com"])
    virus_reading = send(process.address, look_alike("BBB"), "alice@sender.example", ["bob@ex.com"])
    assert clean_reading.data.startswith("250 2.0.0 Ok")
    assert virus_reading.data.startswith("250 2.7.0 Ok, discarded")
    assert "INFECTED: Eicar-Test-Signature" in virus_reading.data
    assert len(sink.wait_for(1)) == 1
    assert "Blocked INFECTED" in process.log_text()


def test_cache_off_scans_every_message(
    filter_factory: FilterFactory, sink: CaptureSink, clamd: Clamd
) -> None:
    with counting_proxy(clamd.address) as proxy:
        process = filter_factory(clamd=proxy.address, config_text="cache: {enabled: false}\n")
        for _ in range(2):
            send(process.address, clean(), "alice@sender.example", ["bob@example.com"])
        time.sleep(0.2)
        assert proxy.connections == 2
