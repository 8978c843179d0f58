"""The message decoder's public face (kept for imports): see `contentfilter.decode`."""

from __future__ import annotations

from contentfilter.decode import DecoderLimits, decode, describe, format_tree

__all__ = ["DecoderLimits", "decode", "describe", "format_tree"]
