"""What licensing needs from the box's configuration (the server builds this from its [licensing] section)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from licensing.seal import Seal

TRIAL_DAYS = 21
GRACE_DAYS = 7
PURGE_IMAGES_DAYS = 45
PURGE_ACCOUNTS_DAYS = 90
PURGE_NOTICE_DAYS = 7


@dataclass(frozen=True)
class LicensingOptions:
    """Folders, extra vendor keys and tolerances; the trial, grace and purge periods are policy, not settings."""

    data_dir: Path
    state_dir: Path = field(default_factory=lambda: Path("~/.local/share/forecourt").expanduser())
    public_keys: tuple[str, ...] = ()
    clock_tolerance_s: float = 3600.0
    reservation_ttl_s: float = 600.0
    notice_webhook: str = ""

    @property
    def licensing_dir(self) -> Path:
        """Licensing's files inside the data folder."""
        return self.data_dir / "licensing"

    def seal(self) -> Seal:
        """The box's sealing secret and its record outside the data folder (made once per options)."""
        cached: Seal | None = self.__dict__.get("_seal")
        if cached is None:
            from licensing.seal import Seal

            cached = Seal(self.state_dir, self.licensing_dir)
            object.__setattr__(self, "_seal", cached)
        return cached
