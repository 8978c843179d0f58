"""The conversation between the filter and a decoder worker process, both ends.

The worker's first frame is READY once it has its limits (our first frame). Per
message we send a frame holding a `Job` and then the message's `Job.size` bytes;
the worker answers with one frame holding a `DecodedMessage` or a `Failure`. A
frame is an 8-byte big-endian length and a pickle.

This module is all the worker process imports of the filter's side: no asyncio
(with ssl, about 9 MB of resident memory in every decoder process).
"""

from __future__ import annotations

import os
import pickle
import signal
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass

# Fault injection for tests, read only inside workers: "segfault:MARK" or "hang:MARK"
# makes a worker crash or hang when it comes to a part whose bytes contain MARK.
FAULT_VARIABLE = "CONTENTFILTER_DECODER_FAULT"

READY = "ready"  # a new worker's first words
FRAME = struct.Struct("!Q")  # the length of the pickle that follows


@dataclass(frozen=True, slots=True)
class Job:
    """What a worker gets before the raw bytes: where to spool, how many bytes follow."""

    spool: str | None
    size: int


@dataclass(frozen=True, slots=True)
class Failure:
    """A worker's answer when the decoder raised: the exception, for our log."""

    error: str
    traceback: str
    errno: int | None = None  # of an OSError: a full disk is a tempfail, not UNCHECKED


def frame(value: object) -> bytes:
    payload = pickle.dumps(value, pickle.HIGHEST_PROTOCOL)
    return FRAME.pack(len(payload)) + payload


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
