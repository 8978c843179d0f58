"""The keys every scanner section has; each scanner's settings inherit them."""

from __future__ import annotations

from dataclasses import dataclass

from contentfilter.model import FailureAction
from contentfilter.schema import require_positive


@dataclass(frozen=True)
class ScannerSettings:
    """Keys every scanner section has."""

    enabled: bool = True
    timeout: float = 30.0  # seconds for the whole scan of one message
    on_failure: FailureAction = FailureAction.TEMPFAIL

    def __post_init__(self) -> None:
        require_positive(self, "timeout")
