"""The web application in-process, with a store that fails (fault injection): the page
says the quarantine cannot be reached (503), never shows a traceback, and refuses
bodies it will not read."""

from __future__ import annotations

from typing import Any

import pytest

from contentfilter.config import from_mapping
from contentfilter.decode.workers import DecoderPool
from contentfilter.errors import QuarantineError
from contentfilter.quarantine import tokens
from contentfilter.web.app import build_app
from contentfilter.web.context import Web
from contentfilter.web.security import COOKIE, Session

KEY = "k" * 40


class UnreachableStore:
    """Every call fails as a store that is down does."""

    def __getattr__(self, name: str) -> Any:
        async def fail(*args: object, **kwargs: object) -> None:
            raise QuarantineError("could not connect to 127.0.0.1:5432")

        return fail


async def call(
    app: Any, method: str, path: str, headers: list[tuple[bytes, bytes]]
) -> tuple[int, bytes]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": headers,
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 10080),
        "scheme": "http",
        "root_path": "",
        "http_version": "1.1",
    }
    await app(scope, receive, send)
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return sent[0]["status"], body


@pytest.fixture
def web() -> Any:
    config = from_mapping(
        {"notices": {"links": {"public_url": "https://mail.example.com/q", "key": KEY}}}
    )
    pool = DecoderPool(config.decoder)
    yield Web(config, UnreachableStore(), KEY.encode(), "https://mail.example.com/q", pool)
    pool.close()


async def test_a_link_page_says_the_store_is_unreachable(web: Web) -> None:
    token = tokens.issue(
        KEY.encode(), mail_id="m1", recipient="a@example.com", action="release", ttl=60
    )
    status, body = await call(build_app(web), "GET", f"/q/t/{token}", [])
    assert status == 503 and b"cannot be reached" in body and b"Traceback" not in body


async def test_an_admin_page_says_the_store_is_unreachable(web: Web) -> None:
    cookie = web.signer.dump(Session("s1", "postmaster", 2e9))
    headers = [(b"cookie", f"{COOKIE}={cookie}".encode())]
    status, body = await call(build_app(web), "GET", "/q/admin", headers)
    assert status == 503 and b"cannot be reached" in body


@pytest.mark.parametrize(
    ("headers", "status"),
    [([], 411), ([(b"content-length", b"x")], 411), ([(b"content-length", b"70000")], 413)],
)
async def test_bodies_without_a_length_or_too_large_are_not_read(
    web: Web, headers: list[tuple[bytes, bytes]], status: int
) -> None:
    assert (await call(build_app(web), "POST", "/q/admin/login", headers))[0] == status
