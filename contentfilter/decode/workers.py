"""Decoding in worker processes, so that a crash costs one message and not the filter.

Everything the decoder does is fed by hostile bytes, and some of it runs in C
(libarchive, libmagic). A segfault, an out-of-memory kill or a hang there must
not take down the process that holds every SMTP session. So messages are
decoded in a small pool of long-lived worker processes: per message the cost is
one round trip over a pipe, not a process start.

Workers are fresh interpreters (`python -m contentfilter.decode.worker_main`),
never forks of the asyncio daemon (whose threads and event loop a fork would
copy in an undefined state); starting one takes a few hundred milliseconds,
which is paid at start-up and after a crash only. Each worker belongs
to one thread of a dedicated thread pool, which sends it one message at a time
and waits for the answer, the worker's death, or the time limit. A worker that
dies or runs out of time is replaced by a fresh one; its message gets a
`DecodedMessage` whose problem says what happened ("decoder crashed (signal
11)"), which makes the message UNCHECKED, with what the worker had already
written to the message's spool directory.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from multiprocessing.connection import Connection

from contentfilter.decode.spool import Spool
from contentfilter.decoder_settings import DecoderLimits
from contentfilter.errors import DISK_FULL, DecoderUnavailable
from contentfilter.model import DecodedMessage, Part

log = logging.getLogger("contentfilter.decode")

# Fault injection for tests, read only inside workers: "segfault:MARK" or "hang:MARK"
# makes a worker crash or hang when it comes to a part whose bytes contain MARK.
FAULT_VARIABLE = "CONTENTFILTER_DECODER_FAULT"


START_TIMEOUT = 60.0  # seconds a new worker may take to import the decoder
READY = "ready"  # a new worker's first words


@dataclass(frozen=True, slots=True)
class Job:
    """What a worker gets besides the raw bytes."""

    limits: DecoderLimits
    spool: str | None


@dataclass(frozen=True, slots=True)
class Failure:
    """A worker's answer when the decoder raised: the exception, for our log."""

    error: str
    traceback: str
    errno: int | None = None  # of an OSError: a full disk is a tempfail, not UNCHECKED


class _Worker:
    """One worker process (`python -m contentfilter.decode.worker_main`) and our end of
    its socket."""

    def __init__(self) -> None:
        ours, theirs = socket.socketpair()
        try:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-P",
                    "-m",
                    "contentfilter.decode.worker_main",
                    str(theirs.fileno()),
                ],
                stdin=subprocess.DEVNULL,
                pass_fds=(theirs.fileno(),),
            )
        except OSError as error:
            ours.close()
            raise DecoderUnavailable(f"decoder process could not start: {error}") from error
        finally:
            theirs.close()
        self.connection = Connection(ours.detach())
        # its start-up (imports) must not count against the first message's time limit
        try:
            ready = self.connection.poll(START_TIMEOUT) and self.connection.recv() == READY
        except (EOFError, OSError):
            ready = False
        if not ready:
            self.stop()
            raise DecoderUnavailable(f"decoder process did not start ({self.gone()})")

    def exchange(self, raw: bytes, job: Job, timeout: float) -> DecodedMessage | Failure | str:
        """The worker's answer, or why there is none ("crashed (signal 11)")."""
        try:
            self.connection.send(job)
            self.connection.send_bytes(raw)
            if not self.connection.poll(timeout):
                self.stop()
                return f"killed after {timeout:g}s without a result"
            answer: DecodedMessage | Failure = self.connection.recv()
        except (EOFError, OSError):
            return self.gone()
        return answer

    def gone(self) -> str:
        """The worker died: reap it and say how."""
        self.stop()
        code = self.process.returncode
        if code is not None and code < 0:
            return f"crashed (signal {-code})"
        return f"exited (status {code})"

    @property
    def alive(self) -> bool:
        return self.process.poll() is None and not self.connection.closed

    def stop(self) -> None:
        self.connection.close()
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


class DecoderPool:
    """`limits.workers` worker processes that decode messages, one message each at a time."""

    def __init__(self, limits: DecoderLimits) -> None:
        self.limits = limits
        self._threads = ThreadPoolExecutor(limits.workers, thread_name_prefix="decoder")
        self._local = threading.local()
        self._workers: set[_Worker] = set()
        self._lock = threading.Lock()
        atexit.register(self.close)  # before multiprocessing's own exit handler joins them

    async def start(self) -> None:
        """Start every worker now, so that the first messages do not wait for them."""
        barrier = threading.Barrier(self.limits.workers)

        def warm_up() -> None:
            self._decode(b"", None)  # the worker is up once it has answered
            barrier.wait(120)  # each thread starts its own worker: hold them all until done

        loop = asyncio.get_running_loop()
        starts = [loop.run_in_executor(self._threads, warm_up) for _ in range(self.limits.workers)]
        await asyncio.gather(*starts)

    async def decode(self, raw: bytes, spool: Spool | None = None) -> DecodedMessage:
        """The decoded message; a crash or hang of the worker is a problem in it, not an error."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._threads, self._decode, raw, spool)

    def _decode(self, raw: bytes, spool: Spool | None) -> DecodedMessage:
        job = Job(self.limits, spool.path if spool is not None else None)
        worker = self._worker()
        answer = worker.exchange(raw, job, self.limits.timeout)
        if spool is not None and spool.removed:  # the message was given up meanwhile
            spool.remove()
        if isinstance(answer, DecodedMessage):
            return answer
        if isinstance(answer, Failure) and answer.errno in DISK_FULL:
            raise OSError(answer.errno, os.strerror(answer.errno))
        if isinstance(answer, Failure):
            log.error("decoder error: %s\n%s", answer.error, answer.traceback)
            return failed(f"Decoder error ({answer.error})", spool)
        self._forget(worker)
        log.error("decoder worker %s; the message is UNCHECKED", answer)
        return failed(f"Decoder {answer}", spool)

    def _worker(self) -> _Worker:
        """This thread's worker process, started if it has none or it died."""
        worker: _Worker | None = getattr(self._local, "worker", None)
        if worker is not None and worker.alive:
            return worker
        if worker is not None:
            self._forget(worker)
        worker = _Worker()
        with self._lock:
            self._workers.add(worker)
        self._local.worker = worker
        return worker

    def _forget(self, worker: _Worker) -> None:
        worker.stop()
        with self._lock:
            self._workers.discard(worker)
        if getattr(self._local, "worker", None) is worker:
            self._local.worker = None

    def close(self) -> None:
        """Stop the workers; a message still being decoded gets a failed decode."""
        with self._lock:
            workers = list(self._workers)
            self._workers.clear()
        for worker in workers:
            worker.stop()
        self._threads.shutdown(wait=True, cancel_futures=True)
        atexit.unregister(self.close)


def failed(problem: str, spool: Spool | None) -> DecodedMessage:
    """The result for a message whose decoding was cut short: UNCHECKED, with what was
    extracted until then."""
    extracted = spool.listing() if spool is not None else ()
    return DecodedMessage(Part("p001", (1,)), (problem,), extracted, cut_short=True)


def fault_injection() -> Callable[[bytes], None] | None:
    """What FAULT_VARIABLE asks for (tests only; never set in production)."""
    kind, _, mark = os.environ.get(FAULT_VARIABLE, "").partition(":")
    if not mark:
        return None
    marked = mark.encode()

    def fault(data: bytes) -> None:
        if marked not in data:
            return
        if kind == "segfault":
            os.kill(os.getpid(), signal.SIGSEGV)
        elif kind == "hang":
            threading.Event().wait()

    return fault
