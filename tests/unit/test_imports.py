"""The import graph of the package, read with the stdlib ast: what may import what."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("contentfilter", "scanners")


def _modules() -> Iterator[tuple[str, Path]]:
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            yield ".".join(parts), path


MODULES = dict(_modules())


def _imported(name: str, path: Path) -> set[str]:
    """Every module `name` imports, lazily inside functions or TYPE_CHECKING included."""
    found: set[str] = set()
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from . import x, from ..y import z
                anchor = package[: len(package) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                found.add(submodule if submodule in MODULES else base)
    return found


GRAPH = {
    name: {m for m in _imported(name, path) if m in MODULES and m != name}
    for name, path in MODULES.items()
}


def reachable(start: str) -> set[str]:
    seen: set[str] = set()
    pending = [start]
    while pending:
        for module in GRAPH[pending.pop()] - seen:
            seen.add(module)
            pending.append(module)
    return seen


def _in_package(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_the_graph_is_read() -> None:
    assert "contentfilter.model" in GRAPH["contentfilter.pipeline"]
    assert "scanners.base" in GRAPH["scanners.clamav"]
    assert "contentfilter.decoder_settings" in GRAPH["contentfilter.decode.session"]


def cycles() -> list[set[str]]:
    """The strongly connected groups of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[set[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for imported in GRAPH[module]:
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            group = set()
            while True:
                member = stack.pop()
                group.add(member)
                if member == module:
                    break
            if len(group) > 1:
                found.append(group)

    for module in GRAPH:
        if module not in index:
            visit(module)
    return found


def test_no_import_cycles_at_all() -> None:
    assert cycles() == []


def test_model_imports_nothing_from_the_project() -> None:
    assert GRAPH["contentfilter.model"] == set()


def test_the_header_reader_is_a_leaf() -> None:
    assert GRAPH["contentfilter.rfc5322"] <= {"contentfilter.model"}


def test_no_cycle_between_headers_and_model() -> None:
    assert "contentfilter.headers" not in reachable("contentfilter.model")


def test_config_does_not_reach_the_scanners_or_the_decoder() -> None:
    reached = reachable("contentfilter.config")
    assert not {m for m in reached if _in_package(m, "scanners")}
    assert not {m for m in reached if _in_package(m, "contentfilter.decode")}


def test_no_cycle_between_config_and_scanners() -> None:
    assert not (
        any(_in_package(m, "scanners") for m in reachable("contentfilter.config"))
        and "contentfilter.config" in reachable("scanners")
    )


@pytest.mark.parametrize(
    "forbidden", ["scanners", "contentfilter.decode", "aiospamc", "libarchive"]
)
def test_loading_the_config_imports_no_scanner_code(forbidden: str) -> None:
    """At run time too: a fresh interpreter that loads the shipped config."""
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from contentfilter import config\n"
        f"config.load(Path({str(ROOT / 'config' / 'contentfilter.yaml')!r}))\n"
        f"print(sorted(m for m in sys.modules if m == {forbidden!r}"
        f" or m.startswith({forbidden + '.'!r})))\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "[]"


# What a one-shot process must not load before its first message: the decoder proper
# (it runs in the decoder worker process), spamd's client library and its logger, the
# metrics library (only `serve` exports metrics).
ONE_SHOT_FORBIDDEN = (
    "aiospamc",
    "loguru",
    "libarchive",
    "magic",
    "tnefparse",
    "prometheus_client",
    "contentfilter.decode.mimeparts",
    "contentfilter.decode.walker",
)


def test_pipe_and_spawn_start_without_the_heavy_modules() -> None:
    """`contentfilter pipe` and `spawn` import the CLI, load the shipped config (every
    scanner configured) and build their pipeline before the first message or the 220
    greeting; a fresh interpreter doing the same has none of the modules above."""
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from contentfilter import cli\n"
        f"config = cli.config_module.load(Path({str(ROOT / 'config' / 'contentfilter.yaml')!r}))\n"
        "pipeline = cli.build_pipeline(config, None, one_shot=True)\n"
        "assert {s.name for s in pipeline.scanners} >= {'clamav', 'spamassassin', 'banned'}\n"
        "assert pipeline.decoder is not None\n"
        f"forbidden = {ONE_SHOT_FORBIDDEN!r}\n"
        "print(sorted(m for m in sys.modules if m in forbidden"
        " or m.split('.')[0] in forbidden))\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "[]"
