"""`contentfilter serve` with workers: one supervisor, N worker processes.

The supervisor binds every listener once (before any privileges are dropped) and
starts N workers (contentfilter.worker) that accept on the same sockets, each
taking new connections while it holds no more than its share of the open ones
(contentfilter.acceptor). It never touches mail itself: it replaces a
worker that dies (and logs how it died), serves /metrics for all of them, and on
SIGHUP reloads:

1. the configuration is read and validated again; if it is bad, the error is
   logged and the running workers keep serving with the old one;
2. listeners that are new are bound; N new workers start with the new
   configuration, on the same sockets the old workers still accept on;
3. once all new workers accept mail, the old ones are told to retire: they stop
   accepting, finish their open sessions and exit; listeners no longer configured
   are closed.

The sockets stay open in the supervisor the whole time, so a connection is never
refused or reset by a reload: it waits in the kernel's queue for whichever worker
accepts next. SIGTERM stops every worker as `serve` always stopped (the messages in
progress get their reply) and then the supervisor.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection

from contentfilter.addresses import HostPort
from contentfilter.config import Config
from contentfilter.errors import ConfigError
from contentfilter.metrics import CollectedMetrics, Health, Metrics, MetricsServer
from contentfilter.privileges import Identity
from contentfilter.sdnotify import Notifier
from contentfilter.sessionboard import SLOTS, SessionBoard

log = logging.getLogger("contentfilter.supervisor")

START_TIMEOUT = 60.0  # seconds a new worker may take until it accepts mail
RESTART_DELAY = 1.0  # seconds before replacing a worker that died young; doubles each time
RESTART_DELAY_MAX = 60.0  # seconds: the longest wait for a replacement
STEADY = 60.0  # seconds a worker lived: replaced at once, and the delay starts anew
BIND_PATIENCE = 10.0  # seconds to wait at start for a port the last instance still holds
TICK = 1.0  # seconds between checks (and watchdog pings) when nothing happens
LISTEN_BACKLOG = 1024

READY = "ready"  # worker -> supervisor: accepting mail
RETIRE = "retire"  # supervisor -> worker: a reload, finish the open sessions and exit
PROBE = "probe"  # supervisor -> worker: run the periodic scanner probes (one worker does)


@dataclass(frozen=True)
class WorkerStart:
    """What a worker is given: its configuration and the shared sockets."""

    config: Config
    listeners: tuple[tuple[HostPort, int], ...]  # each listener's address and socket fd
    board_fd: int  # the shared session counts (contentfilter.sessionboard)
    slot: int  # this worker's place on the board
    metrics: bool  # count into the supervisor's multiprocess metrics directory
    run_as: Identity | None  # whom to become once the sockets are taken over
    probes: bool = False  # run the periodic scanner probes (the supervisor picks one worker)


def worker_count(setting: int | None) -> int:
    """`server.workers`: None means one per core."""
    return (os.cpu_count() or 1) if setting is None else setting


def worker_config(config: Config) -> Config:
    """A worker's share of the configuration: `decoder.workers` is the number of decoder
    processes of the whole filter, split over the workers (at least one each)."""
    workers = max(1, worker_count(config.server.workers))
    share = max(1, -(-config.decoder.workers // workers))
    return replace(config, decoder=replace(config.decoder, workers=share))


def exit_reason(code: int) -> str:
    """How a process ended, from its return code, in the words of a log line."""
    if code < 0:
        try:
            return f"was killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


def bind(address: HostPort) -> socket.socket:
    """A listening TCP socket on `address`, as asyncio's create_server would bind it."""
    family, _, _, _, sockaddr = socket.getaddrinfo(
        address.host, address.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    return socket.create_server(sockaddr, family=family, backlog=LISTEN_BACKLOG)


@dataclass
class Worker:
    """One worker process as the supervisor sees it."""

    process: subprocess.Popen[bytes]
    connection: Connection
    generation: int
    slot: int
    started: float
    probes: bool = False  # it runs the scanner probes
    replacement: bool = False  # for one that died
    state: str = "starting"  # starting, ready, retiring, stopping

    @property
    def pid(self) -> int:
        return self.process.pid


@dataclass
class Reload:
    """A reload in progress: the new workers are starting."""

    config: Config
    generation: int
    since: float
    added: list[HostPort] = field(default_factory=list)  # listeners bound for it


class Supervisor:
    """Runs the workers; `run` returns the exit status of `serve`.

    `load` reads and validates the configuration again (SIGHUP); `health_checks`
    gives /healthz's checks for a configuration. `notifier` tells systemd READY,
    RELOADING and STOPPING, and pings its watchdog from the supervisor's loop.
    """

    def __init__(
        self,
        config: Config,
        load: Callable[[], Config],
        *,
        run_as: Identity | None = None,
        notifier: Notifier | None = None,
        health_checks: Callable[[Config, Metrics], Health] = lambda config, metrics: _healthy,
        drain_timeout: float = 600.0,
    ) -> None:
        self.config = config
        self.load = load
        self.run_as = run_as  # whom the workers become once they have the sockets
        self.notifier = notifier
        self.last_ping = 0.0
        self.drain_timeout = drain_timeout
        self.sockets: dict[HostPort, socket.socket] = {}
        self.workers: list[Worker] = []
        self.generation = 0  # the newest generation of workers started
        self.current = 0  # the generation serving with `self.config`
        self.reload: Reload | None = None
        self.stopping_since: float | None = None
        self.restarts_due: list[float] = []
        self.restart_delay = RESTART_DELAY  # for the next worker that dies young
        self.last_start = 0.0
        self.free_slots = list(range(SLOTS - 1, -1, -1))
        self.board = SessionBoard()
        self.selector = selectors.DefaultSelector()
        self.metrics_dir = ""
        self.exporter: MetricsServer | None = None
        self.exporter_address: HostPort | None = None
        self.health_checks = health_checks
        self.collected: CollectedMetrics | None = None
        self.worker_environment = dict(os.environ)
        self.ready_once = False

    # --- the loop ---------------------------------------------------------------

    def run(self) -> int:
        self._catch_signals()
        try:
            for listener in self.config.server.listen:
                self.sockets[listener.address] = self._bind_patiently(listener.address)
        except OSError as error:
            log.error("cannot start: %s", error)
            return 1
        self._prepare_metrics()
        self._start_generation(self.config)
        try:
            while self.workers or self.stopping_since is None:
                for key, _ in self.selector.select(self._timeout()):
                    key.data()
                if not self._reap() and not self.ready_once:
                    return 1
                self._progress()
                self._watchdog()
        finally:
            self._clean_up()
        log.info("stopped")
        return 0

    def _notify(self, state: str, status: str = "") -> None:
        if self.notifier is None:
            return
        calls = {
            "READY": self.notifier.ready,
            "RELOADING": self.notifier.reloading,
            "STOPPING": self.notifier.stopping,
        }
        calls[state](status)

    def _watchdog(self) -> None:
        # systemd arms the watchdog once start-up is complete (READY=1); until then
        # TimeoutStartSec bounds the start, and a ping would only come before READY
        if not self.ready_once:
            return
        interval = self.notifier and self.notifier.watchdog_interval
        if self.notifier is not None and interval and time.monotonic() - self.last_ping >= interval:
            self.notifier.watchdog()
            self.last_ping = time.monotonic()

    def _timeout(self) -> float:
        if self.restarts_due:
            return max(0.0, min(TICK, min(self.restarts_due) - time.monotonic()))
        return TICK

    def _catch_signals(self) -> None:
        reader, writer = socket.socketpair()
        reader.setblocking(False)
        writer.setblocking(False)
        self._signal_pipe = (reader, writer)
        signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
            signal.signal(signum, lambda number, frame: None)  # the wakeup fd says which
        self.selector.register(reader, selectors.EVENT_READ, self._on_signals)

    def _on_signals(self) -> None:
        reader = self._signal_pipe[0]
        try:
            numbers = reader.recv(4096)
        except BlockingIOError:
            return
        for number in numbers:
            if number in (signal.SIGTERM, signal.SIGINT):
                self._stop()
            elif number == signal.SIGHUP:
                self._reload()

    # --- workers ----------------------------------------------------------------

    def _start_generation(self, config: Config) -> None:
        self.generation += 1
        self.current = self.generation
        for _ in range(worker_count(config.server.workers)):
            self._spawn(config, self.generation)

    def _spawn(self, config: Config, generation: int) -> Worker:
        slot = self.free_slots.pop()
        self.board.clear(slot)
        ours, theirs = socket.socketpair()
        listeners = tuple(
            (listener.address, self.sockets[listener.address].fileno())
            for listener in config.server.listen
        )
        try:
            process = subprocess.Popen(
                [sys.executable, "-P", "-m", "contentfilter.worker", str(theirs.fileno())],
                stdin=subprocess.DEVNULL,
                env=self.worker_environment,
                pass_fds=(theirs.fileno(), self.board.fd, *(fd for _, fd in listeners)),
            )
        except OSError:
            self.free_slots.append(slot)
            ours.close()
            raise
        finally:
            theirs.close()
        connection = Connection(ours.detach())
        metrics = config.metrics.address is not None
        probes = self._prober(generation) is None
        start = WorkerStart(
            worker_config(config), listeners, self.board.fd, slot, metrics, self.run_as, probes
        )
        connection.send(start)
        worker = Worker(process, connection, generation, slot, time.monotonic(), probes)
        self.workers.append(worker)
        self.selector.register(
            connection.fileno(), selectors.EVENT_READ, lambda: self._hear(worker)
        )
        self.last_start = time.monotonic()
        return worker

    def _prober(self, generation: int) -> Worker | None:
        """The worker of `generation` that runs the scanner probes, if one does."""
        for worker in self.workers:
            serving = worker.state in ("starting", "ready")
            if worker.generation == generation and worker.probes and serving:
                return worker
        return None

    def _hand_probes_over(self, generation: int) -> None:
        """The worker running the probes is gone: another of its generation takes
        them over now (else its replacement will)."""
        if self._prober(generation) is not None:
            return
        for worker in self.workers:
            if worker.generation == generation and worker.state == "ready":
                with contextlib.suppress(OSError):  # exiting: _reap sees it
                    worker.connection.send(PROBE)
                    worker.probes = True
                    return

    def _hear(self, worker: Worker) -> None:
        try:
            message = worker.connection.recv()
        except (EOFError, OSError):
            self._forget_connection(worker)
            return
        if message == READY and worker.state == "starting":
            worker.state = "ready"
            if worker.replacement:
                log.info("worker %d accepts mail (%s)", worker.pid, self._serving())

    def _serving(self) -> str:
        serving = sum(w.state == "ready" and w.generation == self.current for w in self.workers)
        return f"{serving} of {worker_count(self.config.server.workers)} workers accept mail"

    def _forget_connection(self, worker: Worker) -> None:
        if worker.connection.closed:
            return
        self.selector.unregister(worker.connection.fileno())
        worker.connection.close()

    def _reap(self) -> bool:
        """Collect exited workers; False when the first ones died before serving."""
        for worker in [w for w in self.workers if w.process.poll() is not None]:
            self.workers.remove(worker)
            self._forget_connection(worker)
            self.board.clear(worker.slot)
            self.free_slots.append(worker.slot)
            self._mark_dead(worker.pid)
            reason = exit_reason(worker.process.returncode)
            if worker.state in ("retiring", "stopping"):
                log.info("worker %d %s (%s)", worker.pid, reason, worker.state)
                continue
            if not self.ready_once:
                log.error("worker %d %s before it served: cannot start", worker.pid, reason)
                self._stop()
                return False
            if self.reload is not None and worker.generation == self.reload.generation:
                self._abort_reload(f"a new worker {reason} before it served")
                continue
            self._replace(worker, reason)
        return True

    def _replace(self, worker: Worker, reason: str) -> None:
        """Start a new worker for one that died: at once if it had served a while,
        else after a delay that doubles with every worker in a row that dies young
        (one that cannot start, or crashes on every message)."""
        now = time.monotonic()
        lived = now - worker.started
        if lived >= STEADY:
            self.restart_delay = RESTART_DELAY
            self.restarts_due.append(max(now, self.last_start + RESTART_DELAY))
            log.warning("worker %d %s; starting a new one", worker.pid, reason)
        else:
            delay = self.restart_delay
            self.restart_delay = min(2 * delay, RESTART_DELAY_MAX)
            self.restarts_due.append(now + delay)
            young = worker.state == "starting"
            how = "it never accepted mail" if young else f"it lived {lived:.1f}s"
            log.log(
                logging.ERROR if young else logging.WARNING,
                "worker %d %s; starting a new one in %gs (%s; %s)",
                worker.pid,
                reason,
                delay,
                how,
                self._serving(),
            )
        if worker.probes:
            self._hand_probes_over(worker.generation)

    def _progress(self) -> None:
        now = time.monotonic()
        while self.stopping_since is None and self.restarts_due and min(self.restarts_due) <= now:
            self.restarts_due.remove(min(self.restarts_due))
            try:
                self._spawn(self.config, self.current).replacement = True
            except OSError as error:  # out of processes or file descriptors: try again
                log.error("cannot start a worker: %s", error)
                self.restarts_due.append(now + RESTART_DELAY)
                break
        if self.stopping_since is not None:
            if now - self.stopping_since > self.drain_timeout + 30:
                for worker in self.workers:
                    log.error("worker %d did not stop: killing it", worker.pid)
                    worker.process.kill()
            return
        if not self.ready_once and self._all_ready(self.generation):
            self.ready_once = True
            self._announce_ready("contentfilter ready")
        if self.reload is not None:
            if self._all_ready(self.reload.generation):
                self._commit_reload()
            elif now - self.reload.since > START_TIMEOUT:
                self._abort_reload(f"the new workers did not start in {START_TIMEOUT:g}s")

    def _all_ready(self, generation: int) -> bool:
        mine = [w for w in self.workers if w.generation == generation]
        return bool(mine) and all(w.state == "ready" for w in mine)

    def _announce_ready(self, what: str) -> None:
        scanners = ", ".join(n for n, s in self.config.scanners.items() if s.enabled)
        workers = [w.pid for w in self.workers if w.state == "ready"]
        log.info(
            "%s: %d worker(s) (%s), next hop %s, scanners: %s",
            what,
            len(workers),
            " ".join(map(str, workers)),
            self.config.next_hop.address,
            scanners or "none",
        )
        next_hop = self.config.next_hop.address
        self._notify("READY", f"accepting mail; next hop {next_hop}; scanners: {scanners}")

    # --- reload -----------------------------------------------------------------

    def _reload(self) -> None:
        if self.stopping_since is not None or not self.ready_once:
            log.warning("SIGHUP ignored: not serving yet, or stopping")
            return
        log.info("reloading the configuration")
        self._notify("RELOADING")
        try:
            config = self.load()
        except ConfigError as error:
            log.error("reload refused, still serving the old configuration: %s", error)
            self._reloaded(False)
            return
        if self.reload is not None:
            self._abort_reload("a newer reload came")
        if len(self.free_slots) < worker_count(config.server.workers):
            log.error("reload refused: too many workers of earlier reloads still finishing")
            self._reloaded(False)
            return
        added: list[HostPort] = []
        try:
            for listener in config.server.listen:
                if listener.address not in self.sockets:
                    self.sockets[listener.address] = bind(listener.address)
                    added.append(listener.address)
        except OSError as error:
            self._close_listeners(added)
            log.error("reload refused, still serving the old configuration: %s", error)
            self._reloaded(False)
            return
        self.generation += 1
        self.reload = Reload(config, self.generation, time.monotonic(), added)
        try:
            for _ in range(worker_count(config.server.workers)):
                self._spawn(config, self.generation)
        except OSError as error:
            self._abort_reload(f"cannot start a worker: {error}")

    def _commit_reload(self) -> None:
        assert self.reload is not None
        new = self.reload
        self.reload = None
        for worker in self.workers:
            if worker.generation < new.generation and worker.state in ("starting", "ready"):
                worker.state = "retiring"
                with contextlib.suppress(OSError):  # it is exiting anyway: _reap sees it
                    worker.connection.send(RETIRE)
        self.restarts_due.clear()  # replacements for old workers are not needed now
        self.restart_delay = RESTART_DELAY  # a new configuration: no failures yet
        wanted = {listener.address for listener in new.config.server.listen}
        self._close_listeners([a for a in self.sockets if a not in wanted])
        self.config = new.config
        self.current = new.generation
        self._update_metrics()
        self.own_metrics.reloaded(True, self._config_hash())
        self._announce_ready("reloaded")

    def _reloaded(self, ok: bool) -> None:
        """The end of a reload that changed nothing."""
        self.own_metrics.reloaded(ok)
        self._notify("READY")

    def _abort_reload(self, why: str) -> None:
        assert self.reload is not None
        failed = self.reload
        self.reload = None
        for worker in self.workers:
            if worker.generation == failed.generation:
                worker.state = "stopping"
                worker.process.terminate()
        self._close_listeners(failed.added)
        log.error("reload failed, still serving the old configuration: %s", why)
        self._reloaded(False)

    def _close_listeners(self, addresses: Iterable[HostPort]) -> None:
        for address in list(addresses):
            sock = self.sockets.pop(address, None)
            if sock is not None:
                sock.close()
                log.info("no longer listening on %s", address)

    # --- stop -------------------------------------------------------------------

    def _stop(self) -> None:
        if self.stopping_since is not None:
            return
        self.stopping_since = time.monotonic()
        self._notify("STOPPING", "finishing messages in progress")
        log.info("stopping: finishing messages in progress")
        self.restarts_due.clear()
        for worker in self.workers:
            worker.state = "stopping"
            worker.process.terminate()

    def _bind_patiently(self, address: HostPort) -> socket.socket:
        """Bind, waiting a little while the workers of a killed supervisor let go."""
        deadline = time.monotonic() + BIND_PATIENCE
        while True:
            try:
                return bind(address)
            except OSError as error:
                if error.errno != 98 or time.monotonic() > deadline:  # EADDRINUSE
                    raise OSError(error.errno, f"{address}: {error.strerror}") from None
            time.sleep(0.2)

    # --- metrics ----------------------------------------------------------------

    def _prepare_metrics(self) -> None:
        """A fresh private directory the workers count into (prometheus-client's
        multiprocess mode, set in their environment only); /metrics here adds up
        all of them."""
        from contentfilter import __version__
        from contentfilter.metrics import Metrics

        runtime = os.environ.get("RUNTIME_DIRECTORY", "").split(":")[0] or None
        self.metrics_dir = tempfile.mkdtemp(prefix="contentfilter-metrics-", dir=runtime)
        if self.run_as is not None:  # the workers write there after dropping privileges
            os.chown(self.metrics_dir, self.run_as.uid, self.run_as.gid)
        self.worker_environment = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=self.metrics_dir)
        self.own_metrics = Metrics(__version__, self._config_hash())
        self._update_metrics()

    def _config_hash(self) -> str:
        from contentfilter import config as config_module
        from contentfilter.metrics import config_hash

        return config_hash(config_module.dump(self.config).encode())

    def _update_metrics(self) -> None:
        """Serve /metrics where the configuration says (again, after a reload)."""
        self.checks = self.health_checks(self.config, self.own_metrics)
        address = self.config.metrics.address
        if self.exporter is not None and self.exporter_address == address:
            return
        if self.exporter is not None:
            self.exporter.close()
            self.exporter = None
        self.exporter_address = address
        if address is None:
            return
        self.collected = CollectedMetrics(self.metrics_dir, self.own_metrics)
        self.exporter = MetricsServer(self.collected, address.host, address.port, self._health)
        self.exporter.start()
        log.info("metrics on http://%s/metrics", address)

    def _health(self) -> tuple[bool, dict[str, object]]:
        """`/healthz`: the checks of `status`, and at least one worker accepting mail."""
        ok, body = self.checks()
        if self.collected is not None:
            self.collected.probed = True  # the checks updated our own scanner gauges
        if not any(w.state == "ready" for w in self.workers):
            broken = [*_strings(body.get("broken")), "no worker accepts mail"]
            ok, body = False, {**body, "status": "down", "broken": broken}
        return ok, body

    def _mark_dead(self, pid: int) -> None:
        if self.metrics_dir:
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(pid, self.metrics_dir)  # type: ignore[no-untyped-call]

    def _clean_up(self) -> None:
        for worker in self.workers:
            worker.process.kill()
            worker.process.wait()
        self._close_listeners(list(self.sockets))
        if self.exporter is not None:
            self.exporter.close()
        if self.metrics_dir:
            shutil.rmtree(self.metrics_dir, ignore_errors=True)
        signal.set_wakeup_fd(-1)


def _healthy() -> tuple[bool, dict[str, object]]:
    return True, {"status": "ok", "broken": [], "checks": []}


def _strings(value: object) -> list[str]:
    return [str(item) for item in value] if isinstance(value, list) else []
