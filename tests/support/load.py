"""A stream of unique messages sent as Postfix's smtp client sends them.

Several sessions at once, several messages per session (Postfix's `max_use`), and
every message retried until it gets a final answer: a refused or dropped
connection, a missing reply or a 4xx puts it back in line. Each attempt is
recorded, so a test can tell what a client saw and, with the sink's copies, check
that nothing was lost or delivered twice.
"""

from __future__ import annotations

import collections
import re
import smtplib
import threading
import time
from dataclasses import dataclass, field

from tests.support.client import host_port, transaction
from tests.support.messages import clean
from tests.support.sink import CaptureSink

MESSAGE_ID = re.compile(rb"^Message-ID: <([^>]+)>", re.MULTILINE | re.IGNORECASE)


@dataclass(frozen=True)
class Attempt:
    outcome: str  # 2xx, 4xx, 5xx, refused (no session), no reply (the session broke)
    detail: str


@dataclass
class Load:
    """Run with `start()`; `stop()` lets every message already taken get its final
    answer, then returns. `attempts` maps each Message-ID to what its tries got."""

    address: str
    concurrency: int = 4
    per_session: int = 5
    retry_pause: float = 0.2
    sender: str = "alice@sender.example"
    recipient: str = "bob@recipient.example"
    attempts: dict[str, list[Attempt]] = field(default_factory=dict)
    _retry: collections.deque[tuple[str, bytes]] = field(default_factory=collections.deque)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stopping: bool = False
    _threads: list[threading.Thread] = field(default_factory=list)
    answered: int = 0  # messages with a final (2xx or 5xx) answer

    def start(self) -> Load:
        for _ in range(self.concurrency):
            thread = threading.Thread(target=self._client, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self, timeout: float = 600.0) -> None:
        self._stopping = True
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        assert not any(t.is_alive() for t in self._threads), "the load did not finish"

    def problems(self) -> list[tuple[str, Attempt]]:
        """Every attempt that did not end in a 2xx."""
        return [(i, a) for i, tries in self.attempts.items() for a in tries if a.outcome != "2xx"]

    def delivery_problems(self, sink: CaptureSink, exactly_once: bool = False) -> list[str]:
        """Messages missing at the sink, or there more often than a reply went missing
        (a worker killed after relaying, before replying); with `exactly_once`, any
        message there twice."""
        copies = collections.Counter(
            match.group(1).decode()
            for transaction in sink.messages
            if (match := MESSAGE_ID.search(transaction.data))
        )
        problems = []
        for message_id, tries in self.attempts.items():
            unanswered = 0 if exactly_once else sum(a.outcome == "no reply" for a in tries)
            if copies[message_id] < 1:
                problems.append(f"{message_id}: lost ({tries})")
            elif copies[message_id] > 1 + unanswered:
                problems.append(f"{message_id}: {copies[message_id]} copies ({tries})")
        problems += [f"{i}: not ours" for i in copies if i not in self.attempts]
        return problems

    def _take(self) -> tuple[str, bytes] | None:
        with self._lock:
            if self._retry:
                return self._retry.popleft()
            if self._stopping:
                return None
            data = clean(f"load message {len(self.attempts) + 1}")
            match = MESSAGE_ID.search(data)
            assert match is not None
            message_id = match.group(1).decode()
            self.attempts[message_id] = []
            return message_id, data

    def _record(self, message_id: str, attempt: Attempt, retry: bytes | None) -> None:
        with self._lock:
            self.attempts[message_id].append(attempt)
            if retry is not None:
                self._retry.append((message_id, retry))
            else:
                self.answered += 1

    def _client(self) -> None:
        while True:
            batch = [m for m in (self._take() for _ in range(self.per_session)) if m]
            if not batch:
                if self._pending():
                    time.sleep(self.retry_pause)
                    continue
                return
            if not self._session(batch):
                time.sleep(self.retry_pause)

    def _pending(self) -> bool:
        with self._lock:
            return self.answered < len(self.attempts)

    def _session(self, batch: list[tuple[str, bytes]]) -> bool:
        """Send the batch in one session; False if something went wrong."""
        try:
            smtp = smtplib.SMTP(*host_port(self.address), local_hostname="client.test", timeout=120)
        except (OSError, smtplib.SMTPException) as error:
            for message_id, data in batch:
                self._record(message_id, Attempt("refused", repr(error)), data)
            return False
        for index, (message_id, data) in enumerate(batch):
            try:
                replies = transaction(smtp, data, self.sender, [self.recipient])
            except (OSError, smtplib.SMTPException) as error:
                self._record(message_id, Attempt("no reply", repr(error)), data)
                for other_id, other in batch[index + 1 :]:
                    self._record(other_id, Attempt("refused", "session broke before"), other)
                smtp.close()
                return False
            reply = replies.data or replies.mail
            code = reply[:1]
            outcome = {"2": "2xx", "5": "5xx"}.get(code, "4xx")
            self._record(message_id, Attempt(outcome, reply), data if outcome == "4xx" else None)
        try:
            smtp.quit()
        except (OSError, smtplib.SMTPException):
            smtp.close()
        return True
