"""The README on a freshly bootstrapped Debian 12, as a new admin follows it.

tests/fresh_root/run builds the root (debootstrap, cached), copies this checkout to
its /opt/contentfilter, installs the packages with the network, then, offline in
private namespaces, runs the README's two commands and every command of "Checking
that it works" exactly as written (tests/fresh_root/inside). These tests read what
it left behind. Without root, debootstrap or namespaces they fail, never skip.
Inside that root the suite runs again through `scripts/test`: there this module
is skipped, so the fresh root does not build another one.
"""

from __future__ import annotations

import mailbox
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import Message
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
INSIDE_MARKER = Path("/.contentfilter-fresh-root")

if INSIDE_MARKER.exists():
    pytest.skip("this is the fresh root itself: no root inside the root", allow_module_level=True)

pytestmark = pytest.mark.fresh_root


@dataclass(frozen=True)
class Step:
    command: str
    output: str
    status: int
    seconds: int


@dataclass(frozen=True)
class FreshRoot:
    out: Path

    def step(self, name: str) -> Step:
        return Step(
            command=(self.out / f"{name}.cmd").read_text().rstrip("\n"),
            output=(self.out / f"{name}.out").read_text(errors="replace"),
            status=int((self.out / f"{name}.rc").read_text()),
            seconds=int((self.out / f"{name}.seconds").read_text()),
        )

    def steps(self, prefix: str) -> list[Step]:
        count = int((self.out / f"{prefix}.count").read_text())
        return [self.step(f"{prefix}-{n}") for n in range(1, count + 1)]

    def mailbox(self, after_block: int) -> list[Message]:
        return list(mailbox.mbox(self.out / f"mailbox-after-{after_block}", create=False))

    def text(self, name: str) -> str:
        return (self.out / name).read_text(errors="replace")


@pytest.fixture(scope="module")
def fresh_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FreshRoot]:
    out = tmp_path_factory.mktemp("fresh-root")
    run = subprocess.run(
        [str(REPO / "tests" / "fresh_root" / "run"), str(out)],
        capture_output=True,
        text=True,
        timeout=45 * 60,
    )
    assert run.returncode == 0, f"tests/fresh_root/run failed:\n{run.stdout}\n{run.stderr}"
    assert int((out / "inside.status").read_text()) == 0, (out / "inside.log").read_text()
    yield FreshRoot(out)


def readme_block(heading: str, number: int) -> list[str]:
    """The command lines of the `number`th ```sh block under `## heading`."""
    section = (REPO / "README.md").read_text().split(f"\n## {heading}\n", 1)[1]
    section = section.split("\n## ", 1)[0]
    block = section.split("```sh\n")[number].split("```", 1)[0]
    return [line for line in block.splitlines() if line.strip() and not line.startswith("#")]


def test_the_two_commands_run_as_written_and_pass(fresh_root: FreshRoot) -> None:
    steps = fresh_root.steps("two-commands")
    assert [step.command for step in steps] == readme_block("The two commands", 2)
    assert [step.command.split()[0] for step in steps] == ["scripts/setup", "scripts/test"]
    setup, test = steps
    assert setup.status == 0, setup.output
    assert test.status == 0, test.output[-5000:]
    summary = test.output.strip().splitlines()[-1]
    assert re.search(r"\d+ passed", summary) and "failed" not in summary and "error" not in summary


def test_offline_setup_detects_it_quickly_and_installs_test_signatures(
    fresh_root: FreshRoot,
) -> None:
    setup = fresh_root.step("two-commands-1")
    assert "offline: no connection to freshclam's mirror within 3 s" in setup.output
    assert "Installed TEST-ONLY signatures" in setup.output
    assert "/dev/log" not in setup.output  # spamd logs to its own file, not to syslog


def test_setup_wires_postfix_and_says_what_it_changed(fresh_root: FreshRoot) -> None:
    output = fresh_root.step("two-commands-1").output
    changes = output.split("Changed by this run:", 1)[1]
    assert "wrote a minimal /etc/postfix/main.cf" in changes
    assert (
        "/etc/postfix/master.cf changed (backup: /etc/postfix/master.cf.contentfilter-" in changes
    )
    assert "started Postfix" in changes
    assert "+content_filter = smtp-amavis:[127.0.0.1]:10024" in output
    assert "+    -o smtpd_authorized_xforward_hosts=127.0.0.0/8" in output
    assert "linked /usr/local/bin/contentfilter" in changes


def test_setup_suggests_the_readme_commands(fresh_root: FreshRoot) -> None:
    output = fresh_root.step("two-commands-1").output
    suggested = output.split("Check it (from README.md", 1)[1].splitlines()[2:]
    suggested_commands = [line.strip() for line in suggested if line.strip()[:1] not in ("", "#")]
    assert suggested_commands == readme_block("Checking that it works", 1) + readme_block(
        "Checking that it works", 2
    )


def test_port_25_mail_ends_up_where_the_readme_says(fresh_root: FreshRoot) -> None:
    sends = fresh_root.steps("check-1")
    assert [step.command for step in sends] == readme_block("Checking that it works", 1)
    for send in sends:
        assert send.status == 0, send.output
        assert re.search(r"<- {2}250 2\.0\.0 Ok: queued as \w+", send.output), send.output
    delivered = fresh_root.mailbox(after_block=1)  # in the order Postfix delivered them
    by_subject = {message["Subject"]: message for message in delivered}
    assert sorted(by_subject) == ["***SPAM*** Test spam mail (GTUBE)", "Clean test message"]
    assert len(delivered) == 2
    clean = by_subject["Clean test message"]
    gtube = by_subject["***SPAM*** Test spam mail (GTUBE)"]
    assert clean["X-Spam-Flag"] is None  # below the tag level
    assert gtube["X-Spam-Flag"] == "YES"
    assert "GTUBE=1000" in " ".join(gtube["X-Spam-Status"].split())
    assert all(message["X-Virus-Scanned"] for message in delivered)
    assert "EICAR" not in fresh_root.text("mailbox-after-1")
    assert "Mail queue is empty" in fresh_root.text("queue-after-1.out")


def test_the_readme_looks_find_what_it_promises(fresh_root: FreshRoot) -> None:
    grep, tail, queue = fresh_root.steps("check-2")
    for step in (grep, tail, queue):
        assert step.status == 0, step.output
    # one message after the other, in the order Postfix delivered them
    assert sorted(grep.output.splitlines()) == [
        "Subject: ***SPAM*** Test spam mail (GTUBE)",
        "Subject: Clean test message",
        "X-Spam-Flag: YES",
    ]
    assert "X-Spam-Flag: YES\nSubject: ***SPAM*** Test spam mail (GTUBE)" in grep.output

    def line_with(text: str) -> str:
        return next(line for line in tail.output.splitlines() if text in line)

    passed_clean = line_with("Passed CLEAN {RelayedInbound}")
    assert "<alice@example.org> -> <root@localhost>" in passed_clean
    blocked = line_with("Blocked INFECTED (Eicar-Test-Signature")
    assert "{DiscardedInbound,Quarantined}" in blocked  # kept in /var/lib/contentfilter
    assert re.search(r", quarantine: [\w-]{12}, ", blocked), blocked
    assert re.search(r"Hits: 10\d\d", line_with("Passed SPAM {RelayedTaggedInbound}"))
    assert "Hits: -0" not in tail.output
    assert queue.output.strip() == "Mail queue is empty"


def test_the_filter_alone_answers_as_the_readme_says(fresh_root: FreshRoot) -> None:
    clean, eicar, gtube = fresh_root.steps("check-3")
    assert "250 2.0.0 Ok, id=" in clean.output
    assert "from MTA([127.0.0.1]:10025): 250 2.0.0 Ok: queued as" in clean.output
    assert re.search(
        r"250 2\.7\.0 Ok, discarded, id=\S+ - INFECTED: Eicar-Test-Signature(\.UNOFFICIAL)?"
        r", quarantine: [\w-]{12}",
        eicar.output,
    )
    assert "250 2.0.0 Ok, id=" in gtube.output
    subjects = sorted(message["Subject"] for message in fresh_root.mailbox(after_block=3)[2:])
    assert subjects == ["***SPAM*** Test spam mail (GTUBE)", "Clean test message"]
    assert "Mail queue is empty" in fresh_root.text("queue-after-3.out")


def test_the_offline_commands_work_as_written(fresh_root: FreshRoot) -> None:
    scan, check_config = fresh_root.steps("check-4")
    assert scan.command.startswith("contentfilter scan ")
    assert scan.status == 0, scan.output
    assert "contents category: SPAM" in scan.output
    assert "HEADER_FROM_DIFFERENT_DOMAINS" not in scan.output
    assert check_config.command.startswith("contentfilter check-config ")
    assert check_config.status == 0, check_config.output


def test_a_second_setup_changes_nothing_and_is_quick(fresh_root: FreshRoot) -> None:
    again = fresh_root.step("setup-again")
    assert again.status == 0, again.output
    assert "Nothing changed: everything was already in place." in again.output
    assert "main.cf and master.cf already carry the filter" in again.output
    assert again.seconds < 15


def test_no_postfix_prints_the_snippets_and_leaves_postfix_alone(fresh_root: FreshRoot) -> None:
    setup = fresh_root.step("setup-no-postfix")
    assert setup.status == 0, setup.output
    assert "Postfix is NOT changed (--no-postfix)" in setup.output
    snippet = (REPO / "config" / "postfix" / "master.cf.snippet").read_text()
    assert snippet.strip() in setup.output
    assert "Nothing changed: everything was already in place." in setup.output
    assert fresh_root.text("postfix-after-no-postfix").strip() == "same"


def test_changed_signatures_restart_clamd(fresh_root: FreshRoot) -> None:
    setup = fresh_root.step("setup-new-signatures")
    assert setup.status == 0, setup.output
    assert "restarted clamd (its signatures changed)" in setup.output
    before, after = fresh_root.text("clamd-pid-before"), fresh_root.text("clamd-pid-after")
    assert before.strip().isdigit() and after.strip().isdigit() and before != after
    assert fresh_root.text("clamd-processes").strip() == "1"
    eicar = fresh_root.step("eicar-after-restart")
    assert "250 2.7.0 Ok, discarded" in eicar.output and "Eicar-Test-Signature" in eicar.output


def test_the_printed_stop_commands_stop_every_daemon(fresh_root: FreshRoot) -> None:
    stops = fresh_root.steps("stop")
    assert [step.command for step in stops] == [
        "kill $(cat /run/contentfilter.pid)",
        "kill $(cat /run/spamd.pid)",
        "kill $(cat /run/clamav/clamd.pid)",
        "postfix stop",
    ]
    for step in stops:
        assert step.status == 0, step.output
    assert fresh_root.text("lingering") == ""
