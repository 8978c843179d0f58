"""`contentfilter serve | check-config | scan`: the one place objects are wired together."""

from __future__ import annotations

import argparse
import asyncio
import email.utils
import logging
import os
import signal
import socket
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import scanners
from contentfilter import config as config_module
from contentfilter import events, headers, privileges, replies, rfc5322, sdnotify
from contentfilter.cache import ResultCache
from contentfilter.config import Config
from contentfilter.decode.spool import Spool
from contentfilter.decode.workers import DecoderPool
from contentfilter.errors import ConfigError, QuarantineError
from contentfilter.model import Destiny, Envelope, Message, PartsScanner, Recipient, new_mail_id
from contentfilter.pipeline import Pipeline
from contentfilter.quarantine import open_store
from contentfilter.quarantine.cli import add_commands as add_quarantine_commands
from contentfilter.relay import Delivery, NextHop

log = logging.getLogger("contentfilter")

DRAIN_TIMEOUT = 600.0  # seconds SIGTERM waits for messages in progress
PIPE_TEMPFAIL = 75  # sysexits.h EX_TEMPFAIL (contentfilter.pipe, not imported for speed)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    words = list(sys.argv[1:] if argv is None else argv)
    # Under pipe(8) any other failure status bounces the mail: a mistake in master.cf
    # or the config file must keep it queued (EX_TEMPFAIL) until the admin fixes it.
    failed = PIPE_TEMPFAIL if words[:1] == ["pipe"] else 2
    try:
        arguments = parser.parse_args(words)
    except SystemExit as stop:
        if stop.code:
            return failed
        raise
    try:
        config = load_config(arguments)
        scanners.load_settings(config.scanners)  # validated before anything starts
    except ConfigError as error:
        print(f"contentfilter: config error: {error}", file=sys.stderr)
        return failed
    command: Any = arguments.command_function
    result: int = command(config, arguments)
    return result


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="contentfilter", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the filter daemon in the foreground")
    _common_options(serve)
    serve.add_argument(
        "--listen",
        help="HOST:PORT to accept mail on (default 127.0.0.1:10024); lmtp:HOST:PORT for LMTP",
    )
    serve.add_argument("--next-hop", help="HOST:PORT to relay to (default 127.0.0.1:10025)")
    serve.add_argument(
        "--metrics",
        metavar="HOST:PORT|off",
        help="Prometheus /metrics and /healthz (metrics.listen, default 127.0.0.1:9191)",
    )
    serve.add_argument(
        "--log-json", metavar="PATH|stderr", help="one JSON event per message (log.json)"
    )
    serve.add_argument(
        "--allow-root",
        action="store_true",
        help="started as root, keep running as root (daemon.allow_root)",
    )
    serve.add_argument(
        "--temp-directory",
        metavar="DIR",
        help="private directory for extracted parts, emptied at start (decoder.temp_directory)",
    )
    serve.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="worker processes (server.workers, default: one per core); 0: one process,"
        " no supervisor",
    )
    serve.set_defaults(command_function=command_serve)
    status = commands.add_parser(
        "status", help="ask clamd, spamd and the next hop whether they answer; 1 if one is down"
    )
    _common_options(status)
    status.add_argument("--next-hop", help="HOST:PORT of the next hop (default 127.0.0.1:10025)")
    status.set_defaults(command_function=command_status)
    check = commands.add_parser("check-config", help="validate a config, print the effective one")
    _common_options(check, scanners=False)
    check.add_argument(
        "--postfix",
        nargs="?",
        const="",
        metavar="CONFIG_DIR",
        help="also check Postfix's settings (postconf; default directory: Postfix's own)",
    )
    check.add_argument(
        "--ping",
        action="store_true",
        help="also ask every configured clamd, spamd and the next hop; 1 if one fails",
    )
    check.set_defaults(command_function=command_check_config)
    scan = commands.add_parser("scan", help="run the pipeline offline on one message")
    _common_options(scan)
    scan.add_argument("file", type=Path, help="the message (.eml)")
    scan.add_argument(
        "--from",
        dest="sender",
        help="envelope sender (default: the address in the message's From, else <>)",
    )
    scan.add_argument("--to", dest="recipients", action="append")
    scan.set_defaults(command_function=command_scan, listen=None, next_hop=None)
    pipe = commands.add_parser(
        "pipe", help="filter one message on stdin, reinject with sendmail (Postfix pipe(8))"
    )
    _common_options(pipe)
    pipe.add_argument("--sendmail", default=None, help="reinjection command (/usr/sbin/sendmail)")
    pipe.add_argument("--log-file", type=Path, help="append the log here (default: syslog)")
    pipe.add_argument("-f", dest="sender", required=True, help="envelope sender ('' for <>)")
    pipe.add_argument("recipients", nargs="+", help="envelope recipients (after --)")
    pipe.set_defaults(command_function=command_pipe, listen=None, next_hop=None)
    spawn = commands.add_parser(
        "spawn", help="serve one SMTP/LMTP session on stdin/stdout (Postfix spawn(8))"
    )
    _common_options(spawn)
    spawn.add_argument("--next-hop", help="HOST:PORT to relay to (default 127.0.0.1:10025)")
    spawn.add_argument(
        "--protocol", choices=("smtp", "lmtp"), help="default: the matching listener's"
    )
    spawn.add_argument("--log-file", type=Path, help="append the log here (default: syslog)")
    spawn.set_defaults(command_function=command_spawn, listen=None)
    add_quarantine_commands(commands, _common_options)
    _web_parser(commands)
    return parser


def _web_parser(commands: Any) -> None:
    web = commands.add_parser("web", help="run the quarantine web page (loopback, behind a proxy)")
    _common_options(web, scanners=False)
    web.add_argument("--listen", dest="web_listen", help="HOST:PORT (web.listen, 127.0.0.1:10080)")
    web.set_defaults(command_function=command_web, listen=None, next_hop=None)
    actions = web.add_subparsers(dest="web_command")
    add_admin = actions.add_parser(
        "add-admin", help="add an admin account or set its password (web.admins_file)"
    )
    _common_options(add_admin, scanners=False)
    add_admin.add_argument("name")
    add_admin.set_defaults(command_function=command_web)


def _common_options(parser: argparse.ArgumentParser, scanners: bool = True) -> None:
    parser.add_argument("-c", "--config", type=Path, help="YAML config file")
    if scanners:
        parser.add_argument("--clamd", help="clamd socket path or HOST:PORT, or 'off'")
        parser.add_argument("--spamd", help="spamd HOST:PORT or socket path, or 'off'")


# --- configuration --------------------------------------------------------------------


def load_config(arguments: argparse.Namespace) -> Config:
    """The config file (or defaults) with the command-line overrides applied."""
    data = config_module.read_document(arguments.config)
    if getattr(arguments, "listen", None):
        data.setdefault("server", {})["listen"] = [arguments.listen]
    if getattr(arguments, "next_hop", None):
        data.setdefault("next_hop", {})["address"] = arguments.next_hop
    if getattr(arguments, "metrics", None):
        _section(data, "metrics")["listen"] = arguments.metrics
    if getattr(arguments, "log_json", None):
        _section(data, "log")["json"] = arguments.log_json
    if getattr(arguments, "allow_root", False):
        _section(data, "daemon")["allow_root"] = True
    if getattr(arguments, "temp_directory", None):
        _section(data, "decoder")["temp_directory"] = arguments.temp_directory
    if getattr(arguments, "workers", None) is not None:
        _section(data, "server")["workers"] = arguments.workers
    _override_scanner(data, "clamav", getattr(arguments, "clamd", None), "servers")
    _override_scanner(data, "spamassassin", getattr(arguments, "spamd", None), "server")
    return config_module.from_mapping(data)


def _section(data: dict[str, Any], name: str) -> dict[str, Any]:
    """The config section `name` to override a key in (replaced if not a mapping:
    the override is what counts)."""
    section = data.get(name)
    if not isinstance(section, dict):
        section = data[name] = {}
    return section


def _override_scanner(data: dict[str, Any], type_name: str, value: str | None, key: str) -> None:
    if value is None:
        return
    section = data.get("scanners")
    if section is None:
        section = data["scanners"] = config_module.default_scanners()
    if not isinstance(section, dict):
        return  # validation reports it
    names = [
        n
        for n, s in section.items()
        if n == type_name or (isinstance(s, dict) and s.get("type") == type_name)
    ]
    for name in names or [type_name]:
        entry = section.get(name)
        if isinstance(entry, bool):
            entry = {"enabled": entry}
        if entry is not None and not isinstance(entry, dict):
            continue  # validation reports it
        entry = dict(entry or {})
        if value == "off":
            entry["enabled"] = False
        else:
            entry["enabled"] = True
            entry[key] = [value] if key == "servers" else value
        section[name] = entry


def build_pipeline(
    config: Config, next_hop: Any, one_shot: bool = False, keep: bool = True
) -> Pipeline:
    """The pipeline with its scanners, decoder pool and (unless `keep` is False, as for
    `scan`) the quarantine store the config names; `one_shot` (pipe, spawn: one message
    or session at a time) gets one decoder worker, started when first needed."""
    cache = None
    if config.cache.enabled:
        cache = ResultCache(ttl=config.cache.ttl, max_entries=config.cache.max_entries)
    built = scanners.build_scanners(config.scanners, scanners.Needs(config.decoder))
    looks_at_parts = any(s.needs_parts or isinstance(s, PartsScanner) for s in built)
    decoder = None  # a crash costs one message: decoding happens in worker processes
    if looks_at_parts:
        decoder = DecoderPool(replace(config.decoder, workers=1) if one_shot else config.decoder)
    store = open_store(config.quarantine) if keep and config.quarantine.enabled else None
    pipeline = Pipeline(config, built, next_hop, cache, decoder=decoder, quarantine=store)
    if store is not None:
        from contentfilter.quarantine.notify import AtOnce

        if AtOnce.wanted(config):
            pipeline.on_kept = AtOnce(config, store, next_hop, lambda: pipeline.metrics)
    return pipeline


async def close_pipeline(pipeline: Pipeline) -> None:
    for scanner in pipeline.scanners:
        await scanner.close()
    if pipeline.decoder is not None:
        await asyncio.to_thread(pipeline.decoder.close)
    if pipeline.on_kept is not None and hasattr(pipeline.on_kept, "close"):
        await pipeline.on_kept.close()
    if pipeline.quarantine is not None:
        await pipeline.quarantine.close()


def setup_logging(config: Config) -> None:
    level = getattr(logging, config.log.level.upper())
    under_systemd = "JOURNAL_STREAM" in os.environ
    style = "%(message)s" if under_systemd else "%(asctime)s %(levelname)s %(message)s"
    logging.basicConfig(level=level, format=style, stream=sys.stderr)
    for noisy in ("mail.log", "aiosmtpd", "asyncio"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    if config.log.syslog:  # OSError without a syslog socket: the caller reports it
        handler = events.AmavisSyslogHandler(
            config.log.syslog_ident, config.log.syslog_socket, config.log.syslog_facility
        )
        handler.setFormatter(logging.Formatter("%(message)s"))
        logging.getLogger().addHandler(handler)


# --- serve ----------------------------------------------------------------------------


def command_serve(config: Config, arguments: argparse.Namespace) -> int:
    from contentfilter.supervisor import Supervisor, worker_count

    try:
        setup_logging(config)
        if worker_count(config.server.workers) == 0:
            asyncio.run(serve(config))
            return 0
        start = privileges.prepare(config)  # the user and the temp directory, before binding
    except ConfigError as error:  # the user, group or temp directory
        print(f"contentfilter: config error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        log.error("cannot start: %s", error)
        return 1
    log.info(
        "temp directory %s (%d leftovers removed)",
        start.config.decoder.temp_directory,
        start.leftovers,
    )
    supervisor = Supervisor(
        start.config,
        lambda: reload_config(arguments, start.config),
        run_as=start.run_as,
        notifier=sdnotify.Notifier.from_environment(),
        health_checks=_health,
        drain_timeout=DRAIN_TIMEOUT,
    )
    return supervisor.run()


def reload_config(arguments: argparse.Namespace, running: Config) -> Config:
    """The configuration as `serve` would start with it now (ConfigError if bad).

    Whom the workers run as and their temp directory (emptied at start, in use by
    the old workers) change only with a restart."""
    config = privileges.with_temp_directory(load_config(arguments))
    scanners.load_settings(config.scanners)
    if config.daemon != running.daemon:
        raise ConfigError("daemon", "changes only with a restart, not with a reload")
    if config.decoder.temp_directory != running.decoder.temp_directory:
        raise ConfigError("decoder.temp_directory", "changes only with a restart")
    return config


async def serve(config: Config) -> None:
    from contentfilter.server import Server

    start = privileges.prepare(config)  # the user and the temp directory, before binding
    config = start.config
    next_hop = NextHop(config.next_hop, config.server.hostname)
    pipeline = build_pipeline(config, next_hop)
    pipeline.event_log = events.open_event_log(config.log.json)
    server = Server(config, pipeline)
    exporter = None
    tasks: set[asyncio.Task[None]] = set()
    if config.metrics.address is not None:
        from contentfilter import __version__, status
        from contentfilter.metrics import Metrics, MetricsServer, config_hash

        metrics = Metrics(__version__, config_hash(config_module.dump(config).encode()))
        pipeline.metrics = metrics
        metrics.sessions_active.set_function(lambda: server.sessions.active)
        server.sessions.on_refused = metrics.session_refused
        next_hop.on_connection = metrics.next_hop_connection
        address = config.metrics.address
        exporter = MetricsServer(metrics, address.host, address.port, _health(config, metrics))
        exporter.start()
        if config.metrics.probe_interval:
            probe = status.probe_forever(config, metrics.probed, config.metrics.probe_interval)
            tasks.add(asyncio.create_task(probe))
        log.info("metrics on http://%s/metrics", address)
    stop = asyncio.Event()  # a SIGTERM while starting stops the filter once it is up
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(
        signal.SIGHUP, lambda: log.warning("SIGHUP ignored: reloading needs workers (1 or more)")
    )
    await server.start(accepting=False)
    start.drop()  # after binding (ports below 1024), before any mail is read
    if pipeline.decoder is not None:
        await pipeline.decoder.start()  # as the user: the decoder processes too
    await check_quarantine(pipeline)  # as the user: the files it makes are the user's
    await server.accept()
    scanner_names = ", ".join(s.name for s in pipeline.scanners) or "none"
    log.info(
        "contentfilter ready: next hop %s, scanners: %s", config.next_hop.address, scanner_names
    )
    notifier = sdnotify.Notifier.from_environment()
    watchdog = asyncio.create_task(notifier.keep_watchdog())
    notifier.ready(f"accepting mail; next hop {config.next_hop.address}; scanners: {scanner_names}")
    await stop.wait()
    for task in tasks:
        task.cancel()
    log.info("stopping: finishing messages in progress")
    notifier.stopping("finishing messages in progress")
    await server.drain(DRAIN_TIMEOUT)
    await asyncio.sleep(0.2)  # let the last replies reach the clients
    await close_pipeline(pipeline)
    await next_hop.close()
    if exporter is not None:
        exporter.close()
    watchdog.cancel()
    notifier.close()
    log.info("stopped")


def _health(config: Config, metrics: Any) -> Any:
    """`/healthz`: the checks of `status` (a few seconds at most), run in the HTTP
    server's thread; their answers update `scanner_up` too."""
    from contentfilter import status

    def health() -> tuple[bool, dict[str, object]]:
        checks = asyncio.run(status.run_checks(config, status.HEALTH_TIMEOUT))
        metrics.probed(checks)
        return status.health(checks)

    return health


async def check_quarantine(pipeline: Pipeline) -> None:
    """Open the quarantine store now (its schema brought up to date), so a store that is
    down is in the log at start-up, not first at the next virus. The filter starts
    anyway: only the messages to keep are tempfailed until the store is back."""
    if pipeline.quarantine is None:
        return
    try:
        version = await pipeline.quarantine.migrate()
    except QuarantineError as error:
        log.warning("quarantine: store not available (blocked mail will be tempfailed): %s", error)
        return
    log.info("quarantine: %r, schema version %d", pipeline.quarantine, version)


# --- pipe and spawn: one process per message or session ------------------------------


def setup_oneshot_logging(config: Config, log_file: Path | None) -> None:
    """Log to `log_file`, else to syslog as `amavis` (facility mail), as `serve` does under
    systemd. Never to stdout or stderr: pipe(8) takes them for the bounce or defer
    reason, and under spawn(8) they may be the SMTP session itself. A log that cannot
    be opened costs the log, not the mail."""
    import logging.handlers

    level = getattr(logging, config.log.level.upper())
    handler: logging.Handler = logging.NullHandler()
    try:
        if log_file is not None:
            handler = logging.FileHandler(log_file)
            style = f"%(asctime)s {os.getpid()} %(levelname)s %(message)s"
        else:
            handler = logging.handlers.SysLogHandler(
                "/dev/log", logging.handlers.SysLogHandler.LOG_MAIL
            )
            style = f"amavis[{os.getpid()}]: %(message)s"
        handler.setFormatter(logging.Formatter(style))
    except OSError:
        handler = logging.NullHandler()
    logging.basicConfig(level=level, handlers=[handler])
    for noisy in ("mail.log", "aiosmtpd", "asyncio"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


def command_pipe(config: Config, arguments: argparse.Namespace) -> int:
    from contentfilter import pipe

    log_id = f"{os.getpid():05d}-01"
    try:
        setup_oneshot_logging(config, arguments.log_file)
        raw = pipe.read_input(sys.stdin.buffer, config.server.message_size_limit)
        if raw is None:
            status = pipe.status_for(replies.size_exceeded())
        else:
            sendmail = arguments.sendmail or pipe.SENDMAIL
            deliverer = pipe.Sendmail(sendmail, config.next_hop.data_timeout)
            status = asyncio.run(_pipe(config, deliverer, log_id, arguments, raw))
    except Exception as error:  # nothing is lost: any fault keeps the mail in Postfix's queue
        log.exception("(%s) pipe filter failed", log_id)
        status = pipe.status_for(replies.failure(log_id, error))
    if status.text:
        print(status.text)
    return status.code


async def _pipe(
    config: Config, deliverer: Any, log_id: str, arguments: argparse.Namespace, raw: bytes
) -> Any:
    from contentfilter import pipe

    pipeline = build_pipeline(config, deliverer, one_shot=True)
    try:
        return await pipe.filter_message(
            pipeline, log_id, arguments.sender, arguments.recipients, raw
        )
    finally:
        await close_pipeline(pipeline)


def command_spawn(config: Config, arguments: argparse.Namespace) -> int:
    setup_oneshot_logging(config, arguments.log_file)
    try:
        connection = socket.socket(fileno=0)  # spawn(8): stdin and stdout are the client
    except OSError as error:
        log.error("spawn: stdin is not a socket (%s)", error.strerror)
        return 1
    try:
        asyncio.run(_spawn(config, connection, arguments.protocol))
    except Exception:
        log.exception("spawn: session failed")  # Postfix sees the connection drop: a retry
        return 1
    return 0


async def _spawn(config: Config, connection: socket.socket, protocol: str | None) -> None:
    from contentfilter.server import Server

    listener = _spawn_listener(config, connection, protocol)
    next_hop = NextHop(config.next_hop, config.server.hostname)
    pipeline = build_pipeline(config, next_hop, one_shot=True)  # its decoder starts when needed
    try:
        await Server(config, pipeline).serve_connection(connection, listener)
    finally:
        await close_pipeline(pipeline)
        await next_hop.close()


def _spawn_listener(
    config: Config, connection: socket.socket, protocol: str | None
) -> config_module.Listener:
    """The configured listener for the address Postfix accepted on (its policy bank and
    protocol), else the first one; `--protocol` overrides the protocol."""
    try:
        local = connection.getsockname()
    except OSError:
        local = None
    chosen = config.server.listen[0]
    if isinstance(local, tuple):
        for listener in config.server.listen:
            if (listener.address.host, listener.address.port) == local[:2]:
                chosen = listener
    if protocol == "lmtp":
        return replace(chosen, protocol="lmtp")
    return replace(chosen, protocol="smtp") if protocol == "smtp" else chosen


# --- status ---------------------------------------------------------------------------


def command_status(config: Config, arguments: argparse.Namespace) -> int:
    from contentfilter import status

    return status.command(config)


# --- check-config ---------------------------------------------------------------------


def command_check_config(config: Config, arguments: argparse.Namespace) -> int:
    source = arguments.config or "built-in defaults"
    print(f"# {source}: OK. Effective configuration:")
    print(config_module.dump(config, scanners.load_settings(config.scanners)), end="")
    failed = 0
    if arguments.ping:
        from contentfilter import status

        failed = status.ping_command(config)
    if arguments.postfix is None:
        return failed
    from contentfilter import postfix_check

    problems = postfix_check.check(arguments.postfix or None)
    for problem in problems:
        print(f"contentfilter: Postfix: {problem}", file=sys.stderr)
    if not problems:
        print(f"# Postfix ({arguments.postfix or 'default configuration'}): OK")
    return 1 if problems or failed else 0


# --- scan -----------------------------------------------------------------------------


class _DryRun:
    """Next hop for `scan`: accepts everything, sends nothing."""

    label = "dry-run"

    async def deliver(
        self,
        envelope: Envelope,
        recipients: Sequence[Recipient],
        data: bytes,
    ) -> Delivery:
        from contentfilter.relay import RecipientResult

        return Delivery(
            tuple(RecipientResult(r, 250, "2.0.0 Ok: not sent (dry run)") for r in recipients)
        )


def command_scan(config: Config, arguments: argparse.Namespace) -> int:
    setup_logging(config)
    try:
        raw = arguments.file.read_bytes()
    except OSError as error:
        print(f"contentfilter: cannot read {arguments.file}: {error.strerror}", file=sys.stderr)
        return 2
    raw = _crlf(raw)
    recipients = tuple(Recipient(a) for a in (arguments.recipients or ["recipient@example.com"]))
    sender = arguments.sender if arguments.sender is not None else _from_address(raw)
    envelope = Envelope(sender, recipients, client_address="127.0.0.1")
    message = rfc5322.read_message("scan-01", new_mail_id(), envelope, raw)
    for line in asyncio.run(_scan(config, message)):
        print(line)
    return 0


def _from_address(raw: bytes) -> str:
    """The one address of the From field, as the default envelope sender of `scan`.

    A made-up sender would add SpamAssassin's HEADER_FROM_DIFFERENT_DOMAINS to every
    score; without a single plain address in From the sender is null (<>).
    """
    values = [
        raw[field.start : field.end].split(b":", 1)[1].decode("utf-8", "replace")
        for field in rfc5322.parse_header(raw).named(b"from")
    ]
    if len(values) != 1:
        return ""
    addresses = email.utils.getaddresses([" ".join(values[0].split())])
    if len(addresses) != 1:
        return ""
    address = addresses[0][1]
    if address.count("@") != 1 or not address.isprintable() or " " in address:
        return ""
    return address


def _crlf(raw: bytes) -> bytes:
    """Files on disk usually have LF endings; SMTP carries CRLF."""
    return raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


async def _scan(config: Config, message: Message) -> list[str]:
    from contentfilter import mime, policy

    pipeline = build_pipeline(config, _DryRun(), keep=False)
    lines = [f"message: {message.size} bytes, sender <{message.envelope.mail_from}>"]
    spool = Spool(config.decoder.temp_directory)  # what clamd is to see of the parts
    try:
        decoded = await pipeline.decode(message, spool)
        message = replace(message, parts=decoded)  # decoded once: the scanners reuse it
        lines.append("parts:")
        lines.extend("  " + line for line in mime.format_tree(decoded))
        lines.extend(f"  problem: {problem}" for problem in decoded.problems)
        lines.extend(_banned_lines(config, decoded))
        results = await pipeline.scan(message)
    except Exception as error:
        lines.append(f"reply: {replies.render(replies.failure(message.log_id, error))}")
        return lines
    finally:
        spool.remove()
        await close_pipeline(pipeline)
    lines.extend(_result_lines(results))
    bank = policy.choose_bank(message.envelope, config.server.listen, config.policy_banks)
    context = policy.Context(config.server.hostname, config.policy, bank)
    for verdict in policy.decide(message, results, context):
        lines.extend(_verdict_lines(message, verdict))
    return lines


def _banned_lines(config: Config, decoded: Any) -> list[str]:
    from scanners import banned

    lines = []
    for name, settings in scanners.load_settings(config.scanners).items():
        if settings.enabled and isinstance(settings, banned.BannedSettings):
            lines.append(f"banned-file rules ({name}):")
            lines.extend("  " + line for line in banned.explain(decoded, settings.rule_table))
    return lines


def _result_lines(results: Sequence[Any]) -> list[str]:
    lines = []
    for result in results:
        state = f"skipped ({result.skipped})" if result.skipped else "ok"
        lines.append(
            f"scanner {result.scanner}: {state}, {result.elapsed * 1000:.1f} ms"
            + (" (cached)" if result.cached else "")
        )
        for finding in result.findings:
            lines.append(f"  finding: {finding.category.log_name}: {finding.detail}")
        if result.spam is not None:
            tests = ", ".join(headers.test_text(name, score) for name, score in result.spam.tests)
            lines.append(
                f"  spam: score={headers.format_score(result.spam.score)} tests=[{tests}]"
                f" (spamd's own required={headers.perl_number(result.spam.required)} is not"
                " used: the policy's tag levels below decide)"
            )
    return lines


def _verdict_lines(message: Message, verdict: Any) -> list[str]:
    lines = [
        f"recipient <{verdict.recipient.address}>:",
        f"  contents category: {verdict.category.log_name}",
        f"  verdict: {verdict.destiny.name} ({verdict.reason}; rule {verdict.rule})",
    ]
    if verdict.destiny is not Destiny.PASS:
        lines.append(f"  reply: {replies.render(replies.for_destiny(message.log_id, verdict))}")
        return lines
    for header in verdict.header_lines:
        lines.append(
            "  " + header.decode("utf-8", "replace").rstrip("\r\n").replace("\r\n", "\n  ")
        )
    edited = headers.apply_edits(
        message.raw, verdict.header_lines, verdict.subject_tag, verdict.remove_spam_headers
    )
    subject = _subject_field(edited)
    lines.append(
        "  " + (subject.rstrip("\r\n").replace("\r\n", "\n  ") if subject else "(no Subject)")
    )
    return lines


def _subject_field(raw: bytes) -> str | None:
    """The Subject field of a message as it stands, continuation lines included."""
    field = next(rfc5322.parse_header(raw).named(b"subject"), None)
    return None if field is None else raw[field.start : field.end].decode("utf-8", "replace")


def command_web(config: Config, arguments: argparse.Namespace) -> int:
    from contentfilter.addresses import HostPort
    from contentfilter.web import server

    setup_logging(config)
    if getattr(arguments, "web_command", None) == "add-admin":
        return server.add_admin(config, arguments.name)
    listen = HostPort.parse(arguments.web_listen) if arguments.web_listen else None
    try:
        return server.serve(config, listen)
    except ConfigError as error:
        print(f"contentfilter: config error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
