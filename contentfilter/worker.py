"""One worker process of `contentfilter serve`.

The supervisor (contentfilter.supervisor) binds the listening sockets and starts
each worker as a fresh interpreter, `python -m contentfilter.worker FD`, with the
sockets passed down (never a fork of a process with threads or an event loop).
FD is the worker's end of a control socket: the worker gets its `WorkerStart`
there, answers READY once it accepts mail, and may later be told RETIRE (a
reload: stop accepting, let the open sessions end, exit) or PROBE (run the periodic
scanner probes: one worker does, the supervisor chooses which). SIGTERM stops it as
`serve` always stopped: no new connections, the messages in progress get their
reply, exit. The supervisor's end closing (it died) counts as SIGTERM.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING

from contentfilter.config import Config
from contentfilter.supervisor import PROBE, READY, RETIRE, WorkerStart

if TYPE_CHECKING:
    from contentfilter.metrics import Metrics
    from contentfilter.pipeline import Pipeline
    from contentfilter.relay import NextHop
    from contentfilter.server import SessionCounter

log = logging.getLogger("contentfilter.worker")


def main(argv: Sequence[str]) -> int:
    from contentfilter.cli import setup_logging

    control = Connection(int(argv[1]))
    start: WorkerStart = control.recv()
    setup_logging(start.config)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # reloads go through the supervisor
    try:
        asyncio.run(run(start, control))
    except OSError as error:
        log.error("worker %d cannot start: %s", os.getpid(), error)
        return 1
    return 0


async def run(start: WorkerStart, control: Connection) -> None:
    """Serve until SIGTERM (drain) or RETIRE (let the sessions end)."""
    from contentfilter import cli, events, privileges
    from contentfilter.relay import NextHop
    from contentfilter.server import Server, SessionCounter
    from contentfilter.sessionboard import SessionBoard

    config = start.config
    sockets = {address: socket.socket(fileno=fd) for address, fd in start.listeners}
    next_hop = NextHop(config.next_hop, config.server.hostname)
    pipeline = cli.build_pipeline(config, next_hop)
    pipeline.event_log = events.open_event_log(config.log.json)
    board = SessionBoard(start.board_fd)
    sessions = SessionCounter(config.server.max_sessions, board, start.slot)
    server = Server(config, pipeline, sessions)
    metrics = _count_metrics(config, pipeline, sessions, next_hop) if start.metrics else None
    tasks: set[asyncio.Task[None]] = set()

    def probe() -> None:
        """Run the periodic scanner probes here (one worker of the filter does)."""
        if metrics is not None and config.metrics.probe_interval and not tasks:
            log.info("worker %d runs the scanner probes", os.getpid())
            tasks.add(asyncio.create_task(_probe_forever(config, metrics)))

    if start.probes:
        probe()
    privileges.drop(start.run_as)  # the supervisor bound the sockets; no mail read yet
    if start.run_as is not None:
        log.info("worker %d running as %s", os.getpid(), privileges.current())
    if pipeline.decoder is not None:
        await pipeline.decoder.start()  # as the user: the decoder processes too
    await cli.check_quarantine(pipeline)  # as the user: the files it makes are the user's
    await server.start(sockets)
    stop, retire = asyncio.Event(), asyncio.Event()
    _listen_for_orders(control, stop, retire, probe)
    control.send(READY)
    ended = [asyncio.create_task(e.wait()) for e in (stop, retire)]
    await asyncio.wait(ended, return_when=asyncio.FIRST_COMPLETED)
    if stop.is_set():
        await server.drain(cli.DRAIN_TIMEOUT)
    else:
        log.info("worker %d retiring: no new connections, open sessions finish", os.getpid())
        retiring = asyncio.create_task(server.retire(cli.DRAIN_TIMEOUT))
        await asyncio.wait([retiring, ended[0]], return_when=asyncio.FIRST_COMPLETED)
        if not retiring.done():  # SIGTERM while retiring: stop as SIGTERM does
            retiring.cancel()
            await server.drain(cli.DRAIN_TIMEOUT)
    for task in (*ended, *tasks):
        task.cancel()
    await asyncio.sleep(0.2)  # let the last replies reach the clients
    await cli.close_pipeline(pipeline)
    await next_hop.close()


def _listen_for_orders(
    control: Connection, stop: asyncio.Event, retire: asyncio.Event, probe: Callable[[], None]
) -> None:
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    def read() -> None:
        try:
            order = control.recv()
        except (EOFError, OSError):
            loop.remove_reader(control.fileno())
            if not stop.is_set():
                log.warning("the supervisor is gone: stopping")
            stop.set()
            return
        if order == RETIRE:
            retire.set()
        elif order == PROBE:
            probe()

    loop.add_reader(control.fileno(), read)


def _count_metrics(
    config: Config, pipeline: Pipeline, sessions: SessionCounter, next_hop: NextHop
) -> Metrics:
    """Counters into the supervisor's PROMETHEUS_MULTIPROC_DIR (set before start)."""
    from contentfilter import __version__
    from contentfilter import config as config_module
    from contentfilter.metrics import Metrics, config_hash

    metrics = Metrics(__version__, config_hash(config_module.dump(config).encode()))
    metrics.last_reload.set(time.time())  # this configuration was loaded now
    pipeline.metrics = metrics
    sessions.on_change = metrics.sessions_active.set
    sessions.on_refused = metrics.session_refused
    next_hop.on_connection = metrics.next_hop_connection
    return metrics


async def _probe_forever(config: Config, metrics: Metrics) -> None:
    from contentfilter import status

    await status.probe_forever(config, metrics.probed, config.metrics.probe_interval)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
