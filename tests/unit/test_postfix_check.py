"""`check-config --postfix`: the pickup loop guard the pipe filter needs, read from postconf -M."""

from __future__ import annotations

import pytest

from contentfilter.postfix_check import Service, pipe_loop_problems

PICKUP = "pickup unix n - n 60 1 pickup"
GUARDED = PICKUP + " -o content_filter="
FILTER = (
    "filtro unix - n n - 10 pipe flags=Rq user=contentfilter"
    " argv=/usr/local/bin/contentfilter pipe -f ${sender} -- ${recipient}"
)
OTHER_PIPE = (
    "maildrop unix - n n - - pipe flags=DRXhu user=vmail argv=/usr/bin/maildrop -d ${recipient}"
)
SUBMISSION = "submission inet n - y - - smtpd -o content_filter=filtro:dummy"


def services(*lines: str) -> list[Service]:
    return [s for s in map(Service.parse, lines) if s is not None]


@pytest.mark.parametrize(
    ("content_filter", "lines", "loops"),
    [
        ("filtro:dummy", (PICKUP, FILTER), True),
        ("filtro:dummy", (GUARDED, FILTER), False),
        ("", (PICKUP, FILTER, SUBMISSION), True),  # a listener's own content_filter
        ("", (PICKUP, FILTER), False),  # the filter is not used
        ("maildrop:dummy", (PICKUP, OTHER_PIPE), False),  # not our filter
        ("smtp-amavis:[127.0.0.1]:10024", (PICKUP, FILTER), False),  # the SMTP proxy
        ("filtro:dummy", (PICKUP + " -o content_filter=filtro:dummy", FILTER), True),
    ],
)
def test_pickup_must_not_filter_what_the_pipe_filter_reinjects(
    content_filter: str, lines: tuple[str, ...], loops: bool
) -> None:
    problems = pipe_loop_problems(content_filter, services(*lines))
    assert bool(problems) is loops, problems
    if loops:
        assert "pickup has no '-o content_filter='" in problems[0]
