"""`contentfilter pipe`: Postfix's pipe(8) content filter, on the same pipeline as `serve`.

Postfix runs one process per message (FILTER_README, "simple content filter"):
the message on stdin, the envelope on the command line. What passes is reinjected
with `sendmail -G -i -f SENDER -- RECIPIENTS`; the answer to Postfix is the exit
status in the sysexits convention pipe(8) understands, with the reason on stdout.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import BinaryIO

from contentfilter import replies, rfc5322
from contentfilter.errors import NextHopTimeout, NextHopUnavailable
from contentfilter.model import Disposition, Envelope, Recipient, Reply, new_mail_id
from contentfilter.pipeline import Pipeline
from contentfilter.relay import Delivery, RecipientResult

log = logging.getLogger("contentfilter")

# sysexits.h, as Postfix's pipe(8) reads them
EX_OK = 0
EX_UNAVAILABLE = 69  # Postfix bounces the message with our text
EX_TEMPFAIL = 75  # Postfix keeps the message and retries

SENDMAIL = "/usr/sbin/sendmail"
_MBOX_FROM = re.compile(rb"From ")
_RETURN_PATH = re.compile(rb"(?i)Return-Path:")
_STDERR_KEPT = 4096  # bytes of sendmail's complaint kept for the reason


@dataclass(frozen=True, slots=True)
class ExitStatus:
    """What the pipe filter tells Postfix: the exit status and the text on stdout."""

    code: int
    text: str = ""


def status_for(reply: Reply) -> ExitStatus:
    """The exit status for the one SMTP reply `serve` would have given.

    2xx -> 0; 4xx -> EX_TEMPFAIL; 5xx -> EX_UNAVAILABLE. The text starts with the
    enhanced status code, which pipe(8) takes for the delivery status (RFC 3463).
    """
    text = f"{reply.status} {reply.text}" if reply.status else reply.text
    if reply.is_success:
        return ExitStatus(EX_OK)
    if reply.is_tempfail:
        return ExitStatus(EX_TEMPFAIL, text)
    return ExitStatus(EX_UNAVAILABLE, text)


def exit_status(log_id: str, dispositions: Sequence[Disposition]) -> ExitStatus:
    """Several recipients, one answer: the rules of the SMTP reply (any tempfail wins)."""
    return status_for(replies.combine(log_id, dispositions))


def read_input(stream: BinaryIO, limit: int) -> bytes | None:
    """The message as pipe(8) writes it, with CRLF line ends; None if over `limit` bytes.

    The `F` flag's mbox From line and the `R` flag's Return-Path line, in that order,
    are Postfix's additions, not the message: they are dropped (once each). No more
    than `limit` bytes of the message are read.
    """
    data = stream.read(limit + 1)
    for added in (_MBOX_FROM, _RETURN_PATH):  # each once: the message's own lines stay
        line_end = data.find(b"\n")
        if added.match(data) and line_end >= 0:
            data = data[line_end + 1 :] + stream.read(line_end + 1)
    if len(data) > limit:
        return None
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


class Sendmail:
    """Reinjection with Postfix's sendmail: one invocation per transaction.

    Any failure of the command is a tempfail (RelayError without a code): the
    message stays in Postfix's queue.
    """

    def __init__(self, command: str, timeout: float) -> None:
        self.command = command
        self.timeout = timeout
        self.label = os.path.basename(command)

    async def deliver(
        self, envelope: Envelope, recipients: Sequence[Recipient], data: bytes
    ) -> Delivery:
        argv = [self.command, "-G", "-i", "-f", envelope.mail_from, "--"]
        argv += [r.address for r in recipients]
        try:
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as error:
            raise NextHopUnavailable(f"cannot run {self.command}: {error.strerror}") from error
        try:
            async with asyncio.timeout(self.timeout):
                _, complaint = await process.communicate(data.replace(b"\r\n", b"\n"))
        except TimeoutError as error:
            process.kill()
            await process.wait()
            raise NextHopTimeout(f"{self.command} did not finish in {self.timeout:g}s") from error
        if process.returncode != 0:
            said = complaint[:_STDERR_KEPT].decode("utf-8", "replace").strip().splitlines()
            raise NextHopUnavailable(
                f"{self.command} exited with status {process.returncode}"
                + (f": {said[-1]}" if said else "")
            )
        return Delivery(
            tuple(RecipientResult(r, 250, "2.0.0 Ok: queued by sendmail") for r in recipients)
        )


async def filter_message(
    pipeline: Pipeline, log_id: str, sender: str, recipients: Sequence[str], raw: bytes
) -> ExitStatus:
    """Run the pipeline on one message for the envelope pipe(8) gave; its exit status."""
    envelope = Envelope(sender, tuple(Recipient(a) for a in recipients), listener="pipe")
    message = rfc5322.read_message(log_id, new_mail_id(), envelope, raw)
    outcome = await pipeline.handle(message)
    return exit_status(log_id, outcome.dispositions)
