"""The loop of a decoder worker process (see `contentfilter.decode.workers`).

Run as `python -m contentfilter.decode.worker_main FD`, FD being its end of a
socket to the filter: a job (`Job`, then the raw message) in, a
`DecodedMessage` (or a `Failure`) out, until the socket closes.
"""

from __future__ import annotations

import logging
import math
import signal
import sys
import traceback
from multiprocessing.connection import Connection

from contentfilter.decode import decode, walker
from contentfilter.decode.workers import READY, Failure, Job, fault_injection
from contentfilter.model import DecodedMessage


def serve(connection: Connection) -> None:
    """Decode messages from `connection` until it closes (the filter stopped)."""
    # The filter decides when a worker ends: a SIGTERM to the whole service (systemd
    # stops the control group) must not cut short the messages it is still finishing.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # libarchive-c logs a warning for every damaged member; the decoder reports it
    # as a problem of the message, and the worker's stderr is the filter's log
    logging.getLogger("libarchive").setLevel(logging.ERROR)
    walker.fault = fault_injection()
    try:
        connection.send(READY)
    except OSError:
        return
    while True:
        try:
            job: Job = connection.recv()
            raw = connection.recv_bytes()
        except (EOFError, OSError):
            return
        # should the filter itself die, a hung worker still ends (SIGALRM kills it)
        signal.alarm(math.ceil(job.limits.timeout) * 2)
        answer = _decode(raw, job)
        signal.alarm(0)
        try:
            connection.send(answer)
        except OSError:
            return


def _decode(raw: bytes, job: Job) -> DecodedMessage | Failure:
    try:
        return decode(raw, job.limits, job.spool)
    except Exception as error:  # a bug in the decoder: one message, not the worker
        number = error.errno if isinstance(error, OSError) else None
        return Failure(f"{type(error).__name__}: {error}"[:200], traceback.format_exc(), number)


if __name__ == "__main__":
    serve(Connection(int(sys.argv[1])))
