"""The quarantine web page in a real browser: headless Chromium (Debian's packages)
against a running `contentfilter web`, a real SQLite quarantine holding mail the filter
itself blocked (with a real clamd and spamd), and a capture server as the next hop for
released mail.

The page runs under a path prefix (`/quarantine`, from notices.links.public_url) as it
does behind a reverse proxy, and sees the clients' addresses in X-Forwarded-For from
loopback, as from a proxy. Screenshots of the main pages are taken on the way
(`CONTENTFILTER_SCREENSHOTS=docs/screenshots` puts them where the README shows them).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from contentfilter.config import load
from contentfilter.quarantine import (
    Entry,
    State,
    open_store,
    tokens,
)
from tests.support.browser import chromium, requested_urls
from tests.support.client import send
from tests.support.daemons import CaptureSink, Clamd, Spamd, filter_command, start_filter
from tests.support.dovecot import Dovecot, start_dovecot
from tests.support.net import free_port
from tests.support.quarantine import kept_id
from tests.support.sandbox import WITHOUT_WRITE_EXECUTE
from tests.support.webpage import Client, WebProcess, start_web

REPO = Path(__file__).resolve().parents[2]
# where the screenshots go: CONTENTFILTER_SCREENSHOTS=docs/screenshots refreshes the
# README's; by default a scratch directory, so a test run leaves the checkout unchanged
SCREENSHOTS = Path(
    os.environ.get("CONTENTFILTER_SCREENSHOTS")
    or tempfile.mkdtemp(prefix="contentfilter-screenshots-")
)
KEY = "k" * 40
PREFIX = "/quarantine"
ADMIN, PASSWORD = "postmaster", "a long admin password"
IMAP_USERS = {"boss@example.com": "imap password", "clerk@example.com": "clerk password"}

HTML_SPAM = (
    "From: Prize Team <win@spam.example>\r\n"
    "To: carol@example.com\r\n"
    "Subject: You won a prize\r\n"
    "Message-ID: <prize-1@spam.example>\r\n"
    "MIME-Version: 1.0\r\n"
    'Content-Type: multipart/alternative; boundary="sep"\r\n\r\n'
    "--sep\r\nContent-Type: text/plain\r\n\r\nClaim your prize now.\r\n"
    "--sep\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
    "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X\r\n"
    "<html><head><script>document.title='script ran'</script>"
    '<link rel="stylesheet" href="http://198.51.100.7/track.css">'
    "<style>body{background:url(http://198.51.100.7/bg.png)}</style></head>"
    "<body onload=\"document.title='onload ran'\">"
    '<h2>Congratulations!</h2><p>You <b>won</b>. <img src="http://198.51.100.7/pixel.gif">'
    '<img src="https://tracker.example/open?id=1" width="1">'
    '<a href="http://phish.example/claim">Claim here</a></p>'
    '<iframe src="http://198.51.100.7/frame"></iframe>'
    '<svg><script>document.title="svg script ran"</script></svg>'
    "</body></html>\r\n--sep--\r\n"
)


@dataclass
class Site:
    """The running page and the filter that fills its quarantine. Each test holds the
    mail it needs (`hold`) for recipients of its own (`people`), so it passes alone."""

    web: WebProcess
    config: Path
    sink: CaptureSink
    filter_address: str

    @property
    def base(self) -> str:
        return self.web.base + PREFIX

    def hold(self, source: str, *recipients: str) -> str:
        """The quarantine id of a message (a sample file or text) the filter blocked."""
        message = _message(f"m{next(_serial)}", source)
        replies = send(self.filter_address, message, "sender@example.org", list(recipients))
        assert replies.data_code == 250 and "discarded" in replies.data, replies
        return kept_id(replies.data)

    def link(self, mail_id: str, recipient: str, action: str, **options: Any) -> str:
        token = tokens.issue(
            KEY.encode(), mail_id=mail_id, recipient=recipient, action=action, ttl=3600, **options
        )
        return f"{PREFIX}/t/{token}"

    def use_link(self, mail_id: str, recipient: str, action: str) -> None:
        """What a recipient does with a notice's link: open it, confirm."""
        link = self.link(mail_id, recipient, action)
        client = Client(self.web.base)
        answer = client.post(link, {"csrf": client.get(link).csrf(), "action": action})
        assert answer.status == 200, answer.text

    def arrived(self, *recipients: str) -> list[list[str]]:
        """The envelope recipients of the released mail that went to any of these."""
        return [m.rcpt_tos for m in self.sink.messages if set(m.rcpt_tos) & set(recipients)]

    def states(self, mail_id: str) -> dict[str, State]:
        entry = _run(self._get(mail_id))
        assert entry is not None
        return {r.address: r.state for r in entry.recipients}

    async def _get(self, mail_id: str) -> Entry | None:
        store = open_store(load(self.config).quarantine)
        try:
            return await store.get(mail_id)
        finally:
            await store.close()


@dataclass(frozen=True)
class People:
    """Recipients no other test uses: what a test finds is its own."""

    alice: str
    bob: str
    carol: str


_serial = itertools.count(1)


@pytest.fixture
def people() -> People:
    n = next(_serial)
    return People(*(f"{name}.{n}@example.com" for name in ("alice", "bob", "carol")))


def _run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


def _message(name: str, source: str) -> bytes:
    """The message in CRLF lines with a Message-ID of its own."""
    raw = source.encode() if "\r\n" in source else (REPO / "samples" / source).read_bytes()
    head, _, body = raw.replace(b"\r\n", b"\n").partition(b"\n\n")
    lines = [line for line in head.split(b"\n") if not line.lower().startswith(b"message-id:")]
    lines.append(f"Message-ID: <{name}@web.test>".encode())
    return b"\r\n".join(lines) + b"\r\n\r\n" + body.replace(b"\n", b"\r\n")


def _store_setting(request: pytest.FixtureRequest, directory: Path) -> str:
    """The `quarantine:` keys of the store under test (the embedded or the shared one)."""
    if request.param == "sqlite":
        return f'directory: "{directory / "quarantine"}"'
    server = request.getfixturevalue("postgres_server")
    return f'database: "{server.create_database("web_" + directory.name.lower())}"'


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def site(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    clamd: Clamd,
    spamd: Spamd,
    dovecot: Dovecot,
) -> Iterator[Site]:
    directory = tmp_path_factory.mktemp("web")
    store = _store_setting(request, directory)
    port = free_port()
    with CaptureSink() as sink:
        config = directory / "contentfilter.yaml"
        config.write_text(
            f"""
next_hop: {{address: "{sink.address}"}}
scanners:
  clamav: {{servers: ["{clamd.address}"]}}
  spamassassin: {{server: "{spamd.address}"}}
policy: {{destiny: {{spam: discard}}}}
quarantine: {{{store}, spam_cutoff_level: null}}
notices:
  links: {{public_url: "http://127.0.0.1:{port}{PREFIX}/", key: "{KEY}"}}
web:
  admins_file: "{directory / "admins"}"
  secure_cookies: false
  login_attempts: 5
  token_requests: 1000
  imap: {{server: "{dovecot.address}", security: plain, admins: [boss@example.com]}}
"""
        )
        added = subprocess.run(
            [*filter_command(), "web", "add-admin", "-c", str(config), ADMIN],
            input=PASSWORD + "\n",
            capture_output=True,
            text=True,
            check=False,
        )
        assert added.returncode == 0, added.stderr
        smtp = start_filter(
            directory / "filter", next_hop=sink.address, config_text=config.read_text()
        )
        try:
            with start_web(config, directory, port) as web:
                yield Site(web, config, sink, f"127.0.0.1:{smtp.port}")
        finally:
            smtp.stop()


@pytest.fixture(scope="module")
def dovecot() -> Iterator[Dovecot]:
    with start_dovecot(IMAP_USERS) as server:
        yield server


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as driver:
        yield driver


def _shot(driver: Any, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(SCREENSHOTS / f"{name}.png"))


def _text(driver: Any) -> str:
    return str(driver.find_element("tag name", "body").text)


def _arrived(driver: Any, css: str) -> Any:
    """The element of the page a button led to (a click does not wait for the navigation
    it starts: this waits for the new page to be there; the limit is only a backstop)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.wait import WebDriverWait

    located = expected_conditions.presence_of_element_located((By.CSS_SELECTOR, css))
    return WebDriverWait(driver, 60).until(located)


def _outcomes(driver: Any) -> str:
    return str(_arrived(driver, "#outcomes").text)


def _click(driver: Any, element_id: str) -> None:
    driver.find_element("id", element_id).click()


# --- recipients -------------------------------------------------------------------------


def test_recipient_releases_from_a_notice_link_once(
    site: Site, browser: Any, people: People
) -> None:
    gtube = site.hold("gtube.eml", people.alice, people.bob)
    link = site.link(gtube, people.alice, "release")
    browser.get(site.web.base + link)
    page = _text(browser)
    assert "Test spam mail (GTUBE)" in page
    copies = browser.find_element("css selector", "table.copies").text
    assert people.alice in copies and people.bob not in copies  # only the link's own copy
    assert "XJS*C4JDBQADN1" in page  # the text part, shown as text
    _shot(browser, "recipient-confirm")
    assert site.arrived(people.alice, people.bob) == []  # showing the page did nothing
    _click(browser, "do-release")
    assert "released" in _outcomes(browser)
    _shot(browser, "recipient-done")
    assert site.arrived(people.alice, people.bob) == [[people.alice]]
    [released] = [m for m in site.sink.messages if m.rcpt_tos == [people.alice]]
    assert b"X-Quarantine-Released" in released.data
    assert site.states(gtube) == {people.alice: State.RELEASED, people.bob: State.HELD}

    browser.get(site.web.base + link)  # the same link again
    assert "already" in browser.find_element("id", "nothing-to-do").text
    assert site.arrived(people.alice, people.bob) == [[people.alice]]


def test_a_used_link_says_so_and_sends_nothing_again(site: Site, people: People) -> None:
    link = site.link(site.hold("gtube.eml", people.alice), people.alice, "release")
    client = Client(site.web.base)
    form = client.get(link).csrf()
    first = client.post(link, {"csrf": form, "action": "release"})
    assert first.status == 200 and "released" in first.text
    again = client.post(link, {"csrf": form, "action": "release"})
    assert again.status == 410 and "used already" in again.text
    assert site.arrived(people.alice) == [[people.alice]]


def test_an_expired_link_is_refused(site: Site, people: People) -> None:
    expiring = site.hold("gtube.eml", people.alice)
    past = datetime.now(UTC) - timedelta(hours=2)
    link = site.link(expiring, people.alice, "release", now=past)
    client = Client(site.web.base)
    answer = client.get(link)
    assert answer.status == 410 and "expired" in answer.text
    assert "csrf" not in answer.text  # no form to act with
    assert site.states(expiring) == {people.alice: State.HELD}


def test_a_link_previewer_fetching_with_get_releases_nothing(site: Site, people: People) -> None:
    previewed = site.hold("gtube.eml", people.alice)
    link = site.link(previewed, people.alice, "release")
    for agent in ("Slackbot-LinkExpanding 1.0", "Microsoft Office/16.0 (SafeLinks)", "curl/8"):
        previewer = Client(site.web.base, user_agent=agent)
        assert previewer.get(link).status == 200
        assert previewer.get(link, method="HEAD").status in (200, 405)
    assert site.arrived(people.alice) == []
    assert site.states(previewed) == {people.alice: State.HELD}


def test_a_post_without_the_pages_csrf_token_does_nothing(site: Site, people: People) -> None:
    held = site.hold("gtube.eml", people.alice)
    link = site.link(held, people.alice, "release")
    client = Client(site.web.base)
    client.get(link)
    for form in ({"action": "release"}, {"action": "release", "csrf": "forged"}):
        assert client.post(link, form).status == 403
    other_session = Client(site.web.base)  # a token from someone else's page
    assert (
        other_session.post(link, {"action": "release", "csrf": client.get(link).csrf()}).status
        == 403
    )
    assert site.states(held) == {people.alice: State.HELD}


def test_one_recipients_link_cannot_reach_another_recipients_copy(
    site: Site, people: People
) -> None:
    bobs, alices_virus = site.hold("gtube.eml", people.bob), site.hold("eicar.eml", people.alice)
    bob_list = site.link("", people.bob, "list")
    client = Client(site.web.base)
    listing = client.get(bob_list)
    assert listing.status == 200 and people.bob in listing.text
    assert bobs in listing.text and alices_virus not in listing.text
    # alice's virus, through bob's list: the same answer as for no message at all
    answer = client.get(f"{bob_list}/m/{alices_virus}")
    assert answer.status == 404 and "EICAR" not in answer.text.upper()
    nothing = client.get(f"{bob_list}/m/no-such-id")
    assert nothing.status == 404
    # a token whose payload was edited to name bob is not ours any more
    token = site.link(alices_virus, people.alice, "delete").split("/")[-1]
    version, payload, signature = token.split(".")
    forged = Client(site.web.base).get(f"{PREFIX}/t/{version}.{payload[:-4]}AAAA.{signature}")
    assert forged.status == 403


def test_a_virus_can_only_be_requested(site: Site, browser: Any, people: People) -> None:
    eicar = site.hold("eicar.eml", people.alice)
    browser.get(site.web.base + site.link("", people.alice, "list"))
    assert "Your held mail" in _text(browser)
    _shot(browser, "recipient-list")
    browser.get(site.web.base + site.link("", people.alice, "list") + f"/m/{eicar}")
    buttons = [b.text for b in browser.find_elements("css selector", "#actions button")]
    assert buttons == ["Ask an admin to release it", "Delete"]
    _click(browser, "do-request-release")
    assert "release requested" in _outcomes(browser)
    assert site.states(eicar) == {people.alice: State.RELEASE_REQUESTED}
    assert site.arrived(people.alice) == []


# --- the HTML preview ---------------------------------------------------------------------


def test_html_spam_runs_no_script_and_loads_nothing_remote(
    site: Site, browser: Any, people: People
) -> None:
    html = site.hold(HTML_SPAM, people.carol)
    browser.get_log("performance")  # start from an empty network log
    browser.get(site.web.base + site.link(html, people.carol, "delete"))
    preview = browser.find_element("id", "html-preview")
    assert "Congratulations!" in preview.text and "won" in preview.text
    assert preview.find_elements("css selector", "script, img, iframe, a, link, style") == []
    assert "script ran" not in browser.title and "onload ran" not in browser.title
    assert "http://phish.example/claim" in _text(browser)  # the link, as text
    browser.execute_script("arguments[0].scrollIntoView()", preview)
    _shot(browser, "preview-html")
    # a fresh browser also asks for the site's /favicon.ico once: its own request
    urls = [url for url in requested_urls(browser) if url != site.web.base + "/favicon.ico"]
    assert urls, "the network log is empty: it would prove nothing"
    assert all(url.startswith(site.web.base + PREFIX) for url in urls), urls


# --- admins -------------------------------------------------------------------------------


def _log_in(browser: Any, site: Site, name: str = ADMIN, password: str = PASSWORD) -> None:
    browser.delete_all_cookies()
    browser.get(site.base + "/admin")
    browser.find_element("name", "name").send_keys(name)
    browser.find_element("name", "password").send_keys(password)
    browser.find_element("css selector", "form.card button").click()
    _arrived(browser, "form.search")


def test_admin_logs_in_searches_releases_for_one_recipient_and_sees_the_audit(
    site: Site, browser: Any, people: People
) -> None:
    alice, bob = people.alice, people.bob
    gtube = site.hold("gtube.eml", alice, bob)
    other = site.hold("gtube.eml", bob)
    eicar = site.hold("eicar.eml", alice)
    site.use_link(gtube, alice, "release")  # alice's copy, from her notice
    site.use_link(eicar, alice, "request-release")
    browser.delete_all_cookies()
    browser.get(site.base + "/admin")
    assert browser.current_url.endswith("/quarantine/admin/login")
    _shot(browser, "admin-login")
    _log_in(browser, site)
    assert "Search" in _text(browser)
    browser.find_element("name", "recipient").send_keys(bob)
    browser.find_element("css selector", "form.search button").click()
    _arrived(browser, f"input[name=recipient][value='{bob}']")
    rows = browser.find_elements("css selector", "table.entries tbody tr")
    assert len(rows) == 2, _text(browser)  # gtube (bob still held) and other
    links = browser.find_elements("css selector", "table.entries a[href*='/admin/m/']")
    assert {a.get_attribute("href").rsplit("/", 1)[1] for a in links} == {gtube, other}
    _shot(browser, "admin-search")
    browser.find_element("css selector", f"a[href$='/admin/m/{gtube}']").click()
    _arrived(browser, "table.copies")
    assert gtube in _text(browser)
    browser.find_element("css selector", f"input[name=rcpt][value='{bob}']").click()
    _shot(browser, "admin-message")
    _click(browser, "do-release")
    assert "released" in _outcomes(browser)
    assert site.arrived(alice, bob) == [[alice], [bob]]
    assert site.states(gtube) == {alice: State.RELEASED, bob: State.RELEASED}

    browser.get(site.base + f"/admin/audit?mail_id={gtube}")
    audit = browser.find_element("id", "audit").text
    lines = [line for line in audit.splitlines() if bob in line and "released" in line]
    assert any(ADMIN in line and "web" in line for line in lines), audit
    assert any(alice in line and "link" in line for line in audit.splitlines()), audit
    _shot(browser, "admin-audit")
    browser.get(site.base + "/admin/audit")  # every message's changes, newest first
    everything = browser.find_element("id", "audit").text.splitlines()
    assert any(bob in line and "released" in line and ADMIN in line for line in everything)
    browser.get(site.base + "/admin/requests")
    assert eicar in browser.page_source
    _shot(browser, "admin-requests")


def test_admin_pages_need_a_login_and_downloads_are_never_shown(
    site: Site, browser: Any, people: People
) -> None:
    eicar, html = site.hold("eicar.eml", people.alice), site.hold(HTML_SPAM, people.carol)
    anonymous = Client(site.web.base)
    for path in ("/admin", "/admin/audit", f"/admin/m/{eicar}/download/message"):
        answer = anonymous.get(PREFIX + path)
        assert answer.status == 303 and answer.headers["location"] == f"{PREFIX}/admin/login"
    _log_in(browser, site)
    admin = Client(site.web.base)
    for cookie in browser.get_cookies():
        admin.jar.set_cookie(_cookie(cookie))
    download = admin.get(f"{PREFIX}/admin/m/{eicar}/download/message")
    assert download.status == 200
    assert download.headers["content-type"] == "application/octet-stream"
    assert download.headers["content-disposition"].startswith("attachment;")
    assert b"EICAR-STANDARD-ANTIVIRUS-TEST-FILE" in download.body
    html_spam = f"{PREFIX}/admin/m/{html}"
    parts = re.findall(r"/download/(p\d+)", admin.get(html_spam).text)
    assert len(parts) == 2  # the text and the HTML part (p001 is the message itself)
    downloads = [admin.get(f"{html_spam}/download/{part}") for part in parts]
    for attachment in downloads:
        assert attachment.status == 200
        assert attachment.headers["content-type"] == "application/octet-stream"
        assert attachment.headers["content-disposition"].startswith("attachment;")
    assert b"Claim your prize now." in downloads[0].body
    assert b"<script>" in downloads[1].body  # as it came, but never shown as a page


def _cookie(cookie: dict[str, Any]) -> Any:
    import http.cookiejar

    return http.cookiejar.Cookie(
        0,
        cookie["name"],
        cookie["value"],
        None,
        False,
        "127.0.0.1",
        False,
        False,
        cookie.get("path", "/"),
        True,
        False,
        None,
        False,
        None,
        None,
        {},
    )


def test_wrong_passwords_are_refused_and_logins_rate_limited(site: Site) -> None:
    client = Client(site.web.base, forwarded_for="192.0.2.80")
    answers = []
    for _ in range(6):
        form = client.get(PREFIX + "/admin/login").csrf()
        answer = client.post(
            PREFIX + "/admin/login", {"csrf": form, "name": ADMIN, "password": "x"}
        )
        answers.append(answer.status)
    assert answers == [403, 403, 403, 403, 403, 429]
    # the right password does not help once over the limit; another address is not affected
    form = client.get(PREFIX + "/admin/login").csrf()
    right = {"csrf": form, "name": ADMIN, "password": PASSWORD}
    assert client.post(PREFIX + "/admin/login", right).status == 429
    other = Client(site.web.base, forwarded_for="192.0.2.81")
    form = other.get(PREFIX + "/admin/login").csrf()
    right["csrf"] = form
    ok = other.post(PREFIX + "/admin/login", right)
    assert ok.status == 303 and ok.headers["location"] == PREFIX + "/admin"


def test_every_page_has_the_security_headers_and_a_strict_cookie(site: Site) -> None:
    answer = Client(site.web.base).get(PREFIX + "/admin/login")
    policy = answer.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "unsafe-inline" not in policy
    assert "script-src 'self'" in policy
    assert answer.headers["referrer-policy"] == "no-referrer"
    assert answer.headers["x-frame-options"] == "DENY"
    cookie = answer.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and f"Path={PREFIX}" in cookie
    assert "Secure" not in cookie  # web.secure_cookies: false, for this plain-HTTP test
    huge = Client(site.web.base).post(PREFIX + "/admin/login", {"name": "x" * 100_000})
    assert huge.status == 413
    # a reverse proxy that strips the prefix (`proxy_pass http://127.0.0.1:10080/;`)
    stripped = Client(site.web.base).get("/admin/login")
    assert stripped.status == 200 and f'action="{PREFIX}/admin/login"' in stripped.text


def test_the_page_works_on_a_phone_sized_screen(site: Site, browser: Any, people: People) -> None:
    site.hold("gtube.eml", people.alice)
    browser.set_window_size(390, 844)
    browser.delete_all_cookies()
    try:
        browser.get(site.web.base + site.link("", people.alice, "list"))
        assert "Test spam mail (GTUBE)" in _text(browser)
        width = browser.execute_script("return document.documentElement.scrollWidth")
        assert width <= 390
        _shot(browser, "phone-list")
    finally:
        browser.set_window_size(1280, 900)


def test_admin_bulk_delete_of_chosen_messages(site: Site, browser: Any, people: People) -> None:
    chosen = [site.hold("gtube.eml", people.alice) for _ in range(2)]
    not_chosen = site.hold("gtube.eml", people.alice)
    _log_in(browser, site)
    browser.get(site.base + f"/admin?recipient={people.alice}&state=held")
    for mail_id in chosen:
        browser.find_element("css selector", f"input[name=mail_id][value='{mail_id}']").click()
    browser.find_element("css selector", "div.bulk button[value=delete]").click()
    assert _outcomes(browser).count("deleted") == 2
    assert [site.states(mail_id) for mail_id in chosen] == [{people.alice: State.DELETED}] * 2
    assert site.states(not_chosen) == {people.alice: State.HELD}


def test_an_admin_logs_in_with_the_imap_password(site: Site, browser: Any) -> None:
    _log_in(browser, site, "boss@example.com", IMAP_USERS["boss@example.com"])
    assert "Log out boss@example.com" in _text(browser)


@pytest.mark.parametrize(
    ("name", "password"),
    [
        ("boss@example.com", "wrong"),  # the IMAP server refuses it
        ("clerk@example.com", "clerk password"),  # a right IMAP password, not an admin
        ("boss@example.com", PASSWORD),  # another account's password
    ],
)
def test_imap_logins_that_are_refused(site: Site, name: str, password: str) -> None:
    client = Client(site.web.base, forwarded_for="192.0.2.90")
    form = client.get(PREFIX + "/admin/login").csrf()
    answer = client.post(
        PREFIX + "/admin/login", {"csrf": form, "name": name, "password": password}
    )
    assert answer.status == 403 and "Wrong name or password" in answer.text


def test_the_page_works_under_memory_deny_write_execute(
    site: Site, tmp_path: Path, people: People
) -> None:
    html = site.hold(HTML_SPAM, people.carol)
    with start_web(site.config, tmp_path, wrapper=WITHOUT_WRITE_EXECUTE) as web:
        client = Client(web.base, forwarded_for="192.0.2.99")
        form = client.get(PREFIX + "/admin/login").csrf()
        login = {"csrf": form, "name": ADMIN, "password": PASSWORD}  # argon2 (cffi)
        assert client.post(PREFIX + "/admin/login", login).status == 303
        message = client.get(f"{PREFIX}/admin/m/{html}")  # nh3, the decoder
        assert message.status == 200 and "Congratulations!" in message.text
        assert "text/html" in message.text  # the part tree came from the decoder
