"""The loop of a decoder worker process (see `contentfilter.decode.workers`).

Run as `python -m contentfilter.decode.worker_main FD`, FD being its end of a
socket to the filter: its limits in, READY out, then per message a `Job` and the
raw message in, a `DecodedMessage` (or a `Failure`) out, until the socket closes.
Here the socket is blocking: one message at a time is all a worker does.
"""

from __future__ import annotations

import contextlib
import logging
import math
import pickle
import resource
import signal
import socket
import sys
import traceback

from contentfilter.decode import decode, walker
from contentfilter.decode.wire import FRAME, READY, Failure, Job, fault_injection, frame
from contentfilter.decoder_settings import DecoderLimits
from contentfilter.model import DecodedMessage

# a worker's whole address space: the decoder's quota (500 MiB at most) plus the
# message, its copies and the libraries, with room to spare
ADDRESS_SPACE = 4 * 1024**3


def serve(connection: socket.socket) -> None:
    """Decode messages from `connection` until it closes (the filter stopped)."""
    # The filter decides when a worker ends: a SIGTERM to the whole service (systemd
    # stops the control group) must not cut short the messages it is still finishing.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # libarchive-c logs a warning for every damaged member; the decoder reports it
    # as a problem of the message, and the worker's stderr is the filter's log
    logging.getLogger("libarchive").setLevel(logging.ERROR)
    _bound_memory()
    walker.fault = fault_injection()
    try:
        limits: DecoderLimits = pickle.loads(_read_frame(connection))
        connection.sendall(frame(READY))
    except (EOFError, OSError):
        return
    while True:
        try:
            job: Job = pickle.loads(_read_frame(connection))
            raw = _read_exactly(connection, job.size)
        except (EOFError, OSError):
            return
        # should the filter itself die, a hung worker still ends (SIGALRM kills it)
        signal.alarm(math.ceil(limits.timeout) * 2)
        answer = _decode(raw, limits, job)
        del raw
        signal.alarm(0)
        try:
            connection.sendall(frame(answer))
        except OSError:
            return


def _read_frame(connection: socket.socket) -> bytes:
    (size,) = FRAME.unpack(_read_exactly(connection, FRAME.size))
    return _read_exactly(connection, size)


def _read_exactly(connection: socket.socket, size: int) -> bytes:
    """`size` bytes, in one buffer of that size as a rule (no copies of a large message)."""
    data = connection.recv(size, socket.MSG_WAITALL) if size else b""
    if len(data) == size:
        return data
    pieces, got = [data], len(data)
    while got < size:  # a signal cut the wait short
        piece = connection.recv(size - got, socket.MSG_WAITALL)
        if not piece:
            raise EOFError
        pieces.append(piece)
        got += len(piece)
    return b"".join(pieces)


def _bound_memory() -> None:
    """Let memory run out here rather than in the filter.

    The kernel's OOM killer picks this process first, and past ADDRESS_SPACE an
    allocation fails (a C library reports a damaged archive, Python a MemoryError:
    the message is UNCHECKED) instead of taking memory the machine does not have.
    """
    with contextlib.suppress(OSError), open("/proc/self/oom_score_adj", "w") as adjust:
        adjust.write("1000")
    _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = ADDRESS_SPACE if hard == resource.RLIM_INFINITY else min(ADDRESS_SPACE, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def _decode(raw: bytes, limits: DecoderLimits, job: Job) -> DecodedMessage | Failure:
    try:
        return decode(raw, limits, job.spool)
    except Exception as error:  # a bug in the decoder: one message, not the worker
        number = error.errno if isinstance(error, OSError) else None
        return Failure(f"{type(error).__name__}: {error}"[:200], traceback.format_exc(), number)


if __name__ == "__main__":
    serve(socket.socket(fileno=int(sys.argv[1])))
