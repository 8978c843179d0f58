"""Placeholder decoder: replaced by the full MIME/archive decoder."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from contentfilter.model import DecodedMessage, Part


@dataclass(frozen=True)
class DecoderLimits:
    max_depth: int = 20


def decode(raw: bytes, limits: DecoderLimits) -> DecodedMessage:
    return DecodedMessage(Part("p001", (1,), size=len(raw), digest=hashlib.sha256(raw).hexdigest()))
