"""`contentfilter web`: run the page with uvicorn; `contentfilter web add-admin NAME`."""

from __future__ import annotations

import asyncio
import getpass
import logging
import sys
from pathlib import Path
from typing import Any

from contentfilter.addresses import HostPort
from contentfilter.config import Config
from contentfilter.errors import ConfigError

log = logging.getLogger("contentfilter.web")


def link_settings(config: Config) -> tuple[str, bytes]:
    """The page's public URL and the key links are signed with (`notices.links`)."""
    links = config.notices.links
    if not links.enabled:
        raise ConfigError(
            "notices.links.public_url", "the web page needs its public URL and a key (or key_file)"
        )
    return links.base_url, links.secret


def serve(config: Config, listen: HostPort | None = None) -> int:
    """Run the page until SIGINT or SIGTERM (uvicorn handles both)."""
    import uvicorn

    from contentfilter.decode.workers import DecoderPool
    from contentfilter.quarantine import open_store
    from contentfilter.web import admins, imap
    from contentfilter.web.app import build_app
    from contentfilter.web.context import Web

    public_url, key = link_settings(config)
    if not admins.read_accounts(Path(config.web.admins_file)):  # ConfigError if unreadable
        log.warning(
            "no admin accounts in %s: add one with `contentfilter web add-admin NAME`",
            config.web.admins_file,
        )
    if config.web.imap.server is not None and config.web.imap.security != "plain":
        imap.tls_context(config.web.imap)  # ConfigError if web.imap.ca_file is unusable
    address = listen or config.web.listen
    store = open_store(config.quarantine)
    decoder = DecoderPool(config.decoder)
    web = Web(config, store, key, public_url, decoder)
    server = uvicorn.Server(
        uvicorn.Config(
            build_app(web),
            host=address.host,
            port=address.port,
            proxy_headers=False,  # security.client_address reads them, from trusted peers only
            server_header=False,
            access_log=False,
            log_config=None,
            lifespan="off",
        )
    )
    log.info("quarantine page on http://%s/ (public URL %s)", address, public_url)
    try:
        asyncio.run(_run(server, store))
    finally:
        decoder.close()
    return 0


async def _run(server: Any, store: Any) -> None:
    try:
        await server.serve()
    finally:
        await store.close()


def add_admin(config: Config, name: str) -> int:
    """Add an admin account or change its password (read twice from the terminal, or
    once from standard input when that is not a terminal)."""
    from contentfilter.web import admins

    if sys.stdin.isatty():
        password = getpass.getpass(f"Password for {name}: ")
        if getpass.getpass("Again: ") != password:
            print("contentfilter: the passwords differ; nothing changed", file=sys.stderr)
            return 1
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    path = Path(config.web.admins_file)
    try:
        admins.set_password(path, name, password)
    except (ValueError, OSError, ConfigError) as error:
        print(f"contentfilter: {error}", file=sys.stderr)
        return 1
    print(f"admin {name} saved in {path}")
    return 0
