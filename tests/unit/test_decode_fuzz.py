"""Fuzzing the decoder: 20,000 mutated messages through the worker processes.

Deterministic (seed 1): every run decodes the same inputs. Each must come back as a
DecodedMessage (UNCHECKED or not) without the worker crashing, hanging past its
time limit or raising, and the filter's side (part tree, banned-file rules) must
handle the result. A failing input is saved; keep it in tests/unit/decoder_cases/,
which `test_decode_damaged.py` re-runs always. Longer local runs:
`python -m tests.support.fuzz --count 1000000 --seed N`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from contentfilter.decode import DecoderLimits, decode
from tests.support import fuzz
from tests.support import mimegen as g

SEED = 1
INPUTS = 20_000


@pytest.mark.parametrize("kind", sorted(fuzz.seeds()))
def test_every_seed_container_decodes_cleanly_before_mutation(kind: str) -> None:
    raw = g.with_attachments(g.attachment(fuzz.seeds()[kind], fuzz._NAMES[kind]))
    decoded = decode(raw, DecoderLimits())
    assert decoded.problems == ()
    container = next(part for part in decoded.walk() if fuzz._NAMES[kind] in part.names)
    assert container.children, f"{kind}: nothing found inside"


def test_inputs_are_a_function_of_seed_and_index() -> None:
    assert fuzz.message(SEED, 123) == fuzz.message(SEED, 123)
    assert fuzz.message(SEED, 123) != fuzz.message(SEED, 124)
    assert fuzz.message(SEED, 123) != fuzz.message(SEED + 1, 123)


async def test_mutated_messages_never_crash_hang_or_raise(tmp_path: Path) -> None:
    report, failing = await fuzz.run(SEED, 0, INPUTS)
    for index, raw in failing.items():
        (tmp_path / f"fuzz-{SEED}-{index}.eml").write_bytes(raw)
    assert report.failures == [], f"failing inputs saved in {tmp_path}"
    assert report.inputs == INPUTS
    # the mutations reach the decoders: many inputs are damaged, many still decode
    assert INPUTS // 10 < report.unchecked < INPUTS * 9 // 10
