"""Decoding in worker processes, so that a crash costs one message and not the filter.

Everything the decoder does is fed by hostile bytes, and some of it runs in C
(libarchive, libmagic). A segfault, an out-of-memory kill or a hang there must
not take down the process that holds every SMTP session. So messages are
decoded in a small pool of long-lived worker processes: per message the cost is
one round trip over a socket, not a process start.

Workers are fresh interpreters (`python -m contentfilter.decode.worker_main`),
never forks of the asyncio daemon (whose threads and event loop a fork would
copy in an undefined state); starting one takes a few hundred milliseconds,
which is paid at start-up and after a crash only. The event loop drives our end
of each worker's socket itself: a message waits for a free worker, goes out in
pieces under flow control (a large message is never copied whole into a buffer),
and the answer comes back as one length-prefixed frame. No thread is involved. A
worker that dies (its socket ends) or runs out of time is replaced by a fresh one
for the next message; its message gets a `DecodedMessage` whose problem says what
happened ("decoder crashed (signal 11)"), which makes the message UNCHECKED, with
what the worker had already written to the message's spool directory.

The conversation, both ends of it, is `contentfilter.decode.wire`.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import pickle
import socket
import subprocess
import sys
import threading

from contentfilter.decode.spool import Spool
from contentfilter.decode.wire import FRAME, READY, Failure, Job, frame
from contentfilter.decoder_settings import DecoderLimits
from contentfilter.errors import DISK_FULL, DecoderUnavailable
from contentfilter.model import DecodedMessage, Part

log = logging.getLogger("contentfilter.decode")

START_TIMEOUT = 60.0  # seconds a new worker may take to import the decoder
MAX_ANSWER = 256 * 1024 * 1024  # a longer frame from a worker is a broken worker
PIECE = 256 * 1024  # a message goes to a worker in pieces of this size
EXIT_WAIT = 1.0  # seconds a worker whose socket ended may take to exit before a kill


def _unpickled(payload: bytes) -> object:
    """A worker's frame; None for one that does not unpickle (a broken worker)."""
    try:
        return pickle.loads(payload)
    except Exception:
        return None


class _Worker:
    """One worker process (`python -m contentfilter.decode.worker_main`) and our end of
    its socket."""

    def __init__(
        self,
        process: subprocess.Popen[bytes],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.process = process
        self.reader = reader
        self.writer = writer

    @classmethod
    async def start(cls, limits: DecoderLimits) -> _Worker:
        """A worker that has loaded the decoder and has its limits."""
        ours, theirs = socket.socketpair()
        command = [
            sys.executable,
            "-P",
            "-m",
            "contentfilter.decode.worker_main",
            str(theirs.fileno()),
        ]
        try:  # fork and exec of a large process: off the event loop
            process = await asyncio.to_thread(
                subprocess.Popen, command, stdin=subprocess.DEVNULL, pass_fds=(theirs.fileno(),)
            )
        except OSError as error:
            ours.close()
            raise DecoderUnavailable(f"decoder process could not start: {error}") from error
        except BaseException:  # cancelled: a worker that did start sees its socket end
            ours.close()
            raise
        finally:
            theirs.close()
        try:
            reader, writer = await asyncio.open_unix_connection(sock=ours, limit=PIECE)
        except BaseException:
            ours.close()
            process.kill()
            await asyncio.to_thread(process.wait)
            raise
        worker = cls(process, reader, writer)
        # its start-up (imports) must not count against the first message's time limit
        try:
            async with asyncio.timeout(START_TIMEOUT):
                await worker.send(frame(limits))
                ready = _unpickled(await worker.receive()) == READY
        except (TimeoutError, EOFError, OSError):
            ready = False
        if not ready:
            raise DecoderUnavailable(f"decoder process did not start ({await worker.gone()})")
        return worker

    async def exchange(
        self, raw: bytes, job: Job, timeout: float
    ) -> DecodedMessage | Failure | str:
        """The worker's answer, or why there is none ("crashed (signal 11)")."""
        header = frame(job)
        try:
            async with asyncio.timeout(timeout):
                if len(raw) <= PIECE:
                    await self.send(header + raw)
                else:
                    view = memoryview(raw)
                    pieces = (view[start : start + PIECE] for start in range(0, len(raw), PIECE))
                    await self.send(header, *pieces)
                answer = _unpickled(await self.receive())
        except TimeoutError:
            self.kill()
            await self.gone()
            return f"killed after {timeout:g}s without a result"
        except (EOFError, OSError):
            return await self.gone()
        if not isinstance(answer, DecodedMessage | Failure):
            return await self.gone()
        return answer

    async def send(self, *pieces: bytes | memoryview) -> None:
        """Write the pieces, each once the worker has taken most of the one before
        (the transport holds one piece beyond its high-water mark, not the message)."""
        for piece in pieces:
            if self.writer.is_closing():
                raise EOFError
            self.writer.write(piece)
            await self.writer.drain()

    async def receive(self) -> bytes:
        """The next frame's payload; EOFError once the worker's end is closed or it
        announces a frame no answer can need (a broken worker)."""
        (size,) = FRAME.unpack(await self.reader.readexactly(FRAME.size))
        if size > MAX_ANSWER:
            raise EOFError
        return await self.reader.readexactly(size)

    def kill(self) -> None:
        self.writer.transport.abort()
        if self.process.poll() is None:
            self.process.kill()

    async def gone(self) -> str:
        """The worker ended (or is to): reap it and say how."""
        self.writer.transport.abort()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + EXIT_WAIT
        while self.process.poll() is None and loop.time() < deadline:
            await asyncio.sleep(0.01)  # exiting after a crash: its status says how
        if self.process.poll() is None:
            self.process.kill()
            await asyncio.to_thread(self.process.wait)
        code = self.process.returncode
        if code is not None and code < 0:
            return f"crashed (signal {-code})"
        return f"exited (status {code})"

    def stop(self) -> None:
        """Kill and reap (from any thread: nothing here touches the event loop)."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


class DecoderPool:
    """`limits.workers` worker processes that decode messages, one message each at a time."""

    def __init__(self, limits: DecoderLimits) -> None:
        self.limits = limits
        self._workers: set[_Worker] = set()  # every worker process not yet reaped
        self._idle: list[_Worker] = []  # started and waiting for a message
        self._slots = asyncio.Semaphore(limits.workers)  # messages being decoded at most
        self._exchanges: set[asyncio.Task[DecodedMessage]] = set()
        self._lock = threading.Lock()  # `close` may run in another thread
        self._closed = False
        atexit.register(self.close)

    async def start(self) -> None:
        """Start every worker now, so that the first messages do not wait for them."""
        missing = self.limits.workers - len(self._workers)
        started = await asyncio.gather(
            *(self._start_worker() for _ in range(missing)), return_exceptions=True
        )
        for worker in started:
            if isinstance(worker, BaseException):
                raise worker
            self._idle.append(worker)

    async def decode(self, raw: bytes, spool: Spool | None = None) -> DecodedMessage:
        """The decoded message; a crash or hang of the worker is a problem in it, not an error.

        Should the caller give up waiting (cancellation), the worker still finishes the
        message (and any spool directory the caller removed meanwhile goes again) before
        it takes the next: a worker is never left with a half-read conversation."""
        if self._closed:
            raise DecoderUnavailable("decoder stopped")
        await self._slots.acquire()
        try:
            exchange = asyncio.ensure_future(self._decode(raw, spool))
        except BaseException:
            self._slots.release()
            raise
        self._exchanges.add(exchange)
        exchange.add_done_callback(self._finished)
        return await asyncio.shield(exchange)

    def _finished(self, exchange: asyncio.Task[DecodedMessage]) -> None:
        self._exchanges.discard(exchange)
        self._slots.release()
        if not exchange.cancelled():
            exchange.exception()  # retrieved: the caller may have stopped waiting

    async def _decode(self, raw: bytes, spool: Spool | None) -> DecodedMessage:
        worker = self._idle.pop() if self._idle else await self._start_worker()
        job = Job(spool.path if spool is not None else None, len(raw))
        answer = await worker.exchange(raw, job, self.limits.timeout)
        if spool is not None and spool.removed:  # the message was given up meanwhile
            await discard(spool)
        if isinstance(answer, DecodedMessage | Failure):
            self._idle.append(worker)
        else:
            self._forget(worker)
        if isinstance(answer, DecodedMessage):
            return answer
        if isinstance(answer, Failure) and answer.errno in DISK_FULL:
            raise OSError(answer.errno, os.strerror(answer.errno))
        if isinstance(answer, Failure):
            log.error("decoder error: %s\n%s", answer.error, answer.traceback)
            return failed(f"Decoder error ({answer.error})", spool)
        log.error("decoder worker %s; the message is UNCHECKED", answer)
        return failed(f"Decoder {answer}", spool)

    async def _start_worker(self) -> _Worker:
        if self._closed:
            raise DecoderUnavailable("decoder stopped")
        worker = await _Worker.start(self.limits)
        with self._lock:
            self._workers.add(worker)
            closed = self._closed
        if closed:  # stopped while it started
            worker.stop()
            raise DecoderUnavailable("decoder stopped")
        return worker

    def _forget(self, worker: _Worker) -> None:
        with self._lock:
            self._workers.discard(worker)
        if worker in self._idle:
            self._idle.remove(worker)

    def close(self) -> None:
        """Stop the workers; a message still being decoded gets a failed decode.

        Safe from any thread, and after the event loop has ended."""
        with self._lock:
            self._closed = True
            workers = list(self._workers)
            self._workers.clear()
        for worker in workers:
            worker.stop()
        atexit.unregister(self.close)


async def discard(spool: Spool) -> None:
    """Remove a message's spool directory: on the event loop when it holds a few files
    (a system call or two), in a thread when it holds thousands."""
    if not spool.remove_few():
        await asyncio.to_thread(spool.remove)


def failed(problem: str, spool: Spool | None) -> DecodedMessage:
    """The result for a message whose decoding was cut short: UNCHECKED, with what was
    extracted until then."""
    extracted = spool.listing() if spool is not None else ()
    return DecodedMessage(Part("p001", (1,)), (problem,), extracted, cut_short=True)
