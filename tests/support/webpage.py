"""`contentfilter web` as the tests run it: a subprocess on a free loopback port, and a
small cookie-keeping HTTP client for what a browser is not needed for."""

from __future__ import annotations

import http.cookiejar
import re
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import Message
from pathlib import Path

from tests.support.daemons import filter_command
from tests.support.net import free_port, stop_process, wait_until

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@dataclass
class WebProcess:
    base: str  # http://127.0.0.1:PORT
    process: subprocess.Popen[bytes]
    log: Path


@contextmanager
def start_web(
    config: Path, workdir: Path, port: int | None = None, wrapper: Sequence[str] = ()
) -> Iterator[WebProcess]:
    """Run `contentfilter web -c CONFIG` (behind `wrapper`, a command that execs its
    arguments) until the block ends."""
    port = port or free_port()
    log = workdir / f"web-{port}.log"
    argv = [
        *wrapper,
        *filter_command(),
        "web",
        "-c",
        str(config),
        "--listen",
        f"127.0.0.1:{port}",
    ]
    with open(log, "wb") as output:
        process = subprocess.Popen(argv, stdout=output, stderr=output, start_new_session=True)
    base = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        with urllib.request.urlopen(base + "/static/style.css", timeout=2) as response:
            return bool(response.status == 200)

    try:
        wait_until(answers, "contentfilter web", 30, process, log)
        yield WebProcess(base, process, log)
    finally:
        stop_process(process)


@dataclass
class Answer:
    status: int
    headers: Message
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def csrf(self) -> str:
        found = CSRF.search(self.text)
        assert found, self.text[:500]
        return found.group(1)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


@dataclass
class Client:
    """A client with its own cookie jar; `forwarded_for` plays a reverse proxy's header."""

    base: str
    forwarded_for: str = ""
    user_agent: str = "contentfilter-tests"
    jar: http.cookiejar.CookieJar = field(default_factory=http.cookiejar.CookieJar)

    def get(self, path: str, method: str = "GET") -> Answer:
        return self._send(urllib.request.Request(self.base + path, method=method))

    def post(self, path: str, form: dict[str, str] | list[tuple[str, str]]) -> Answer:
        data = urllib.parse.urlencode(form).encode()
        return self._send(urllib.request.Request(self.base + path, data=data, method="POST"))

    def _send(self, request: urllib.request.Request) -> Answer:
        request.add_header("User-Agent", self.user_agent)
        if self.forwarded_for:
            request.add_header("X-Forwarded-For", self.forwarded_for)
        opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(self.jar), _NoRedirect()
        )
        try:
            with opener.open(request, timeout=30) as response:
                return Answer(response.status, response.headers, response.read())
        except urllib.error.HTTPError as error:
            return Answer(error.code, error.headers, error.read())
