"""Unexpected exceptions: logged with their traceback where caught, and counted.

Every one is a defect (the message got a 4xx and Postfix will retry it, but a
message that causes one will cause it again). The counts, by where the exception
was caught and its type, are for the metrics export and for the tests that sweep
the filter with hostile input.
"""

from __future__ import annotations

import logging
from collections import Counter

log = logging.getLogger("contentfilter")


class FaultCounter:
    """How many unexpected exceptions were caught, by place and exception type."""

    def __init__(self) -> None:
        self.counts: Counter[tuple[str, str]] = Counter()

    def record(self, where: str, error: BaseException, log_id: str = "-") -> None:
        """Log `error` with its traceback (call from its except block) and count it."""
        log.error("(%s) internal error in %s: %r", log_id, where, error, exc_info=error)
        self.counts[(where, type(error).__name__)] += 1

    @property
    def total(self) -> int:
        return sum(self.counts.values())
