"""Plans: monthly allowances per metric and a cap on stored reference images; the vendor's catalogue."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

METRICS = ("credits", "scans", "uploads", "stored_images")
MONTHLY = ("credits", "scans", "uploads")  # renewed each settlement period
CAPS = ("stored_images",)  # a ceiling on what is stored, not a monthly count
ROLLOVER_METRICS = ("credits",)
ROLLOVER_CAP = 5.0  # unused subscription credits roll over up to 5x the monthly allowance
PAYG_VALID_DAYS = 730  # pay-as-you-go packs are valid two years
PREVIEW_CREDITS, FULL_CREDITS = 0.25, 1.0


class Plan(BaseModel):
    """A package: name and allowances; None means unlimited."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    credits: float | None = Field(default=None, ge=0, description="Background-removal credits per month.")
    scans: float | None = Field(default=None, ge=0, description="Recognition scans per month.")
    uploads: float | None = Field(default=None, ge=0, description="Reference-image uploads per month.")
    stored_images: float | None = Field(default=None, ge=0, description="Most reference images stored at once.")

    def allowance(self, metric: str) -> float | None:
        """This plan's allowance for a metric (None: unlimited)."""
        return getattr(self, metric)


TRIAL = Plan(name="trial", credits=50, scans=1000, uploads=200, stored_images=500)

CATALOGUE: dict[str, Plan] = {
    p.name: p
    for p in (
        TRIAL,
        Plan(name="starter", credits=500, scans=5000, uploads=1000, stored_images=5000),
        Plan(name="standard", credits=2000, scans=20000, uploads=5000, stored_images=25000),
        Plan(name="pro", credits=10000, scans=100000, uploads=25000, stored_images=100000),
        Plan(name="enterprise", credits=50000, scans=None, uploads=None, stored_images=None),
    )
}
