"""Property: for any MIME message, decode returns (never raises) and stays within its limits."""

from __future__ import annotations

import base64
import quopri

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contentfilter.mime import DecoderLimits, decode
from contentfilter.model import DecodedMessage
from tests.support import mimegen as g

LIMITS = DecoderLimits(
    max_depth=3,
    max_mime_depth=6,
    max_files=25,
    min_total_bytes=64 * 1024,
    max_total_bytes=256 * 1024,
    max_member_size=32 * 1024,
)

names = st.one_of(
    st.none(),
    st.text(min_size=1, max_size=30),
    st.sampled_from(["a.exe", "b.pdf.exe", "c.zip", "=?utf-8?B?w6kuZXhl?=", "d\u202egpj.exe"]),
)
MEMBER_NAMES = st.text(
    st.characters(min_codepoint=32, max_codepoint=0xD7FF), min_size=1, max_size=8
)
payloads = st.one_of(
    st.binary(max_size=300),
    st.just(g.tiny_pe()),
    st.builds(
        lambda m: g.zip_archive(m),
        st.dictionaries(MEMBER_NAMES, st.binary(max_size=50), max_size=3),
    ),
    st.builds(
        lambda m: g.tar_gz(m),
        st.dictionaries(
            st.text("abc.", min_size=1, max_size=8), st.binary(max_size=50), max_size=3
        ),
    ),
    st.builds(
        lambda a: g.tnef(a),
        st.lists(
            st.tuples(st.text("abcxe.", min_size=1, max_size=8), st.binary(max_size=50)), max_size=2
        ),
    ),
    st.builds(
        lambda m: g.encrypted_zip(m),
        st.dictionaries(st.sampled_from(["x.exe", "y.txt"]), st.binary(max_size=20), max_size=2),
    ),
)


def _encode(data: bytes, encoding: str) -> bytes:
    if encoding == "base64":
        return base64.encodebytes(data).replace(b"\n", b"\r\n")
    if encoding == "quoted-printable":
        return quopri.encodestring(data)
    return data


@st.composite
def leaf(draw: st.DrawFn) -> bytes:
    data = draw(payloads)
    encoding = draw(
        st.sampled_from(["base64", "quoted-printable", "8bit", "7bit", "x-uuencode", "bogus"])
    )
    name = draw(names)
    content_type = draw(
        st.sampled_from(
            [
                "application/octet-stream",
                "text/plain",
                "application/zip",
                "application/ms-tnef",
                "message/partial",
            ]
        )
    )
    headers = [f"Content-Type: {content_type}" + (f'; name="{name}"' if name else "")]
    if draw(st.booleans()) and name:
        headers.append(f"Content-Disposition: attachment; filename*=utf-8''{name.encode().hex()}")
    headers.append(f"Content-Transfer-Encoding: {encoding}")
    return g.entity(headers, _encode(data, encoding))


def containers(children: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    multipart = st.builds(
        lambda parts, subtype, close, boundary: g.multipart(
            *parts, subtype=subtype, close=close, boundary=boundary.hex
        ),
        st.lists(children, min_size=0, max_size=4),
        st.sampled_from(["mixed", "alternative", "related", "encrypted"]),
        st.booleans(),
        st.uuids(),
    )
    attached = st.builds(lambda inner: g.rfc822(g.message(inner)), children)
    return st.one_of(multipart, attached)


entities = st.recursive(leaf(), containers, max_leaves=12)


@st.composite
def messages(draw: st.DrawFn) -> bytes:
    raw = g.message(draw(entities))
    if draw(st.booleans()):  # damage: cut, or overwrite a stretch with random bytes
        cut = draw(st.integers(0, len(raw)))
        noise = draw(st.binary(max_size=20))
        raw = raw[:cut] + noise + raw[cut + len(noise) :] if draw(st.booleans()) else raw[:cut]
    return raw


def check_limits(raw: bytes, decoded: DecodedMessage) -> None:
    parts = list(decoded.walk())
    assert len(parts) <= LIMITS.max_files
    members = [p for p in parts if p.declared_type is None and len(p.level) > 1]  # not MIME parts
    assert all(p.size <= LIMITS.max_member_size for p in members)
    assert sum(p.size for p in members) <= LIMITS.quota(len(raw))
    assert max(len(p.level) for p in parts) <= LIMITS.max_mime_depth + LIMITS.max_depth
    assert all(isinstance(problem, str) and problem for problem in decoded.problems)
    assert len(decoded.problems) <= 21


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages())
def test_decode_never_raises_and_stays_within_limits(raw: bytes) -> None:
    check_limits(raw, decode(raw, LIMITS))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2000))
def test_decode_of_arbitrary_bytes(raw: bytes) -> None:
    check_limits(raw, decode(raw, LIMITS))
