"""`check-config --postfix`: the Postfix settings the pipe filter relies on.

`contentfilter pipe` reinjects with sendmail, so the mail comes back through
pickup; without `-o content_filter=` on pickup it is filtered again, forever
(FILTER_README). Postfix's own tool reads the settings: `postconf -h content_filter`
and `postconf -M`.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Service:
    """One master.cf service as `postconf -M` prints it (one line each)."""

    name: str
    kind: str
    command: str
    arguments: tuple[str, ...]

    @classmethod
    def parse(cls, line: str) -> Service | None:
        fields = line.split()
        if len(fields) < 8:
            return None
        return cls(fields[0], fields[1], fields[7], tuple(fields[8:]))

    def override(self, name: str) -> str | None:
        """The value of `-o name=value` on this service, None if it has none."""
        value = None
        for flag, option in zip(self.arguments, self.arguments[1:], strict=False):
            key, sep, given = option.partition("=")
            if flag == "-o" and sep and key == name:
                value = given
        return value

    @property
    def runs_pipe_filter(self) -> bool:
        """A pipe(8) service whose command is `contentfilter pipe`."""
        if self.command != "pipe":
            return False
        words = list(self.arguments)
        for index, word in enumerate(words[:-1]):
            if word.startswith("argv=") and os.path.basename(word[5:]) == "contentfilter":
                return words[index + 1] == "pipe"
        return False


def pipe_loop_problems(content_filter: str, services: Sequence[Service]) -> list[str]:
    """What would make mail reinjected by `contentfilter pipe` loop through it again."""
    filters = {s.name for s in services if s.kind == "unix" and s.runs_pipe_filter}
    settings = [("main.cf", content_filter)]
    settings += [(f"master.cf {s.name}", s.override("content_filter") or "") for s in services]
    used = [(where, value) for where, value in settings if value.partition(":")[0] in filters]
    if not used:
        return []
    pickups = [s for s in services if s.command == "pickup"]
    unguarded = [s.name for s in pickups if s.override("content_filter") != ""]
    if not unguarded:
        return []
    where, value = used[0]
    return [
        f"master.cf: {', '.join(unguarded)} has no '-o content_filter=': mail that"
        f" 'contentfilter pipe' (content_filter = {value} in {where}) reinjects with"
        " sendmail comes back through pickup and is filtered again, in a loop"
    ]


def check(config_directory: str | None) -> list[str]:
    """The problems of the Postfix configuration in `config_directory` (default: Postfix's)."""
    try:
        content_filter = _postconf(config_directory, "-h", "content_filter")
        listing = _postconf(config_directory, "-M")
    except (OSError, subprocess.CalledProcessError) as error:
        return [f"cannot read the Postfix configuration with postconf: {error}"]
    services = [s for s in map(Service.parse, listing.splitlines()) if s is not None]
    return pipe_loop_problems(content_filter.strip(), services)


def _postconf(config_directory: str | None, *arguments: str) -> str:
    command = ["postconf", *(["-c", config_directory] if config_directory else []), *arguments]
    path = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    return subprocess.run(
        command, capture_output=True, text=True, check=True, timeout=30, env={"PATH": path}
    ).stdout
