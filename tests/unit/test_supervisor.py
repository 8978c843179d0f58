"""Pure parts of the process model: exit reasons, worker count, the shared session limit."""

from __future__ import annotations

import os

import pytest

from contentfilter import config as config_module
from contentfilter.errors import ConfigError
from contentfilter.server import SessionCounter
from contentfilter.sessionboard import SessionBoard
from contentfilter.supervisor import exit_reason, worker_count


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        (-9, "was killed by signal SIGKILL"),
        (-11, "was killed by signal SIGSEGV"),
        (0, "exited with status 0"),
        (2, "exited with status 2"),
    ],
)
def test_exit_reason(code: int, reason: str) -> None:
    assert exit_reason(code) == reason


def test_worker_count_defaults_to_the_cores() -> None:
    assert worker_count(None) == (os.cpu_count() or 1)
    assert worker_count(0) == 0
    assert worker_count(3) == 3


@pytest.mark.parametrize("workers", [-1, 65])
def test_workers_out_of_range_is_refused_with_its_key(workers: int) -> None:
    with pytest.raises(ConfigError, match="server: workers: expected 0 to 64"):
        config_module.from_mapping({"server": {"workers": workers}})


def test_the_session_limit_counts_every_worker_on_the_board() -> None:
    board = SessionBoard()
    first, second = SessionCounter(3, board, 0), SessionCounter(3, board, 1)
    assert first.enter() and first.enter() and second.enter()
    assert not second.enter() and not first.enter()  # 3 open in all: the limit
    first.leave()
    assert second.enter()
    assert (board.get(0), board.get(1), board.total()) == (1, 2, 3)


def test_the_board_is_shared_through_its_file_descriptor() -> None:
    board = SessionBoard()
    SessionBoard(board.fd).set(5, 7)  # another process maps the same fd
    assert board.total() == 7


def test_a_worker_holding_more_connections_than_the_average_is_over_its_share() -> None:
    board = SessionBoard()
    for slot in (0, 1, 2):
        board.accepting(slot, True)
    board.hold(0, 3)
    board.hold(1, 2)
    board.hold(2, 1)
    assert not board.within_share(0)  # 3 against an average of 2
    assert board.within_share(1) and board.within_share(2)
    board.accepting(2, False)  # retiring: its connections and itself no longer count
    assert not board.within_share(0) and board.within_share(1)
    board.clear(1)  # exited
    assert board.within_share(0)  # alone: everything is its share
