"""Mail that hides a zipped EICAR where clients and strict parsers disagree, end to end.

Each message of `tests/support/evasions.py` goes through a filter process with
the suite's real clamd: the decoder finds the EICAR file the way a mail client
would, clamd scans what the decoder extracted, and the message is discarded as
INFECTED. For ten of them the suite's clamd (1.0), given only the raw message,
finds nothing: cte-folded-twice, base64-padding-inside, base64-begin-line,
qp-soft-break-blanks, yenc, boundary-two-fields-clients-last,
boundary-two-parameters, boundary-rfc2231-and-plain, boundary-reused-by-inner,
multipart-odd-type.
"""

from __future__ import annotations

from tests.support import evasions
from tests.support.client import send
from tests.support.daemons import Clamd, FilterFactory
from tests.support.sink import CaptureSink


def test_every_hidden_eicar_is_infected(
    filter_factory: FilterFactory, sink: CaptureSink, clamd: Clamd
) -> None:
    process = filter_factory(clamd=str(clamd.socket_path))
    passed: dict[str, str] = {}
    for case in evasions.ALL:
        reply = send(process.address, case.build(), "alice@sender.example", ["bob@example.com"])
        if not reply.data.startswith("250 2.7.0 Ok, discarded") or "INFECTED" not in reply.data:
            passed[case.name] = reply.data
    assert passed == {}
    assert sink.messages == []
