"""How much work decoding one message may take: the `decoder:` section.

The names in comments are amavisd-new's settings with the same meaning. amavisd-new
gives each message a storage quota of `size * $MAX_EXPANSION_FACTOR` bytes for
everything it decodes; we do the same and also cap it from above and below, so a
tiny message with a legitimately well-compressed attachment still gets a workable
quota and a large one cannot expand to gigabytes.
"""

from __future__ import annotations

from dataclasses import dataclass

KiB = 1024
MiB = 1024 * KiB


@dataclass(frozen=True)
class DecoderLimits:
    """Bounds on decoding one message; hitting any makes the message UNCHECKED."""

    max_depth: int = 14  # $MAXLEVELS: archives (and other encodings) within each other
    max_mime_depth: int = 40  # multiparts and attached messages within each other
    max_files: int = 3000  # $MAXFILES: MIME parts and archive members together
    max_expansion_ratio: int = 500  # $MAX_EXPANSION_FACTOR: quota = message size * ratio
    min_total_bytes: int = 10 * MiB  # the quota is never below this ($MIN_EXPANSION_QUOTA)
    max_total_bytes: int = 500 * MiB  # ... nor above this ($MAX_EXPANSION_QUOTA)
    max_member_size: int = 100 * MiB  # one decoded part or archive member
    # private directory for extracted parts ("" = /tmp/contentfilter for serve,
    # $TMPDIR for scan, pipe and spawn); see contentfilter.privileges
    temp_directory: str = ""
    workers: int = 2  # decoder processes: messages decoded at the same time
    timeout: float = 60.0  # seconds a worker may take for one message before it is killed

    def __post_init__(self) -> None:
        for name in ("max_depth", "max_mime_depth", "max_files", "max_expansion_ratio", "workers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1 (got {getattr(self, name)})")
        for name in ("min_total_bytes", "max_total_bytes", "max_member_size"):
            if getattr(self, name) < 1024:
                raise ValueError(f"{name} must be at least 1024 bytes (got {getattr(self, name)})")
        if not 0 < self.timeout <= 3600:
            raise ValueError(f"timeout must be between 0 and 3600 seconds (got {self.timeout})")
        if self.min_total_bytes > self.max_total_bytes:
            raise ValueError("min_total_bytes must not exceed max_total_bytes")

    def quota(self, message_size: int) -> int:
        """Bytes that decoding a message of this size may produce in all."""
        by_ratio = message_size * self.max_expansion_ratio
        return max(self.min_total_bytes, min(self.max_total_bytes, by_ratio))
