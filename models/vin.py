"""Vehicle identification numbers (ISO 3779): validation, check digit, model year, region, country and maker."""

from __future__ import annotations

import csv
import datetime as dt
import functools
import re
from dataclasses import asdict, dataclass
from importlib import resources
from typing import Any

from models.errors import ModelError

VIN_ALPHABET = "ABCDEFGHJKLMNPRSTUVWXYZ0123456789"
_VALUES = {**{str(d): d for d in range(10)},
           **dict(zip("ABCDEFGH", range(1, 9), strict=True)),
           **dict(zip("JKLMN", range(1, 6), strict=True)), "P": 7, "R": 9,
           **dict(zip("STUVWXYZ", range(2, 10), strict=True))}
_WEIGHTS = (8, 7, 6, 5, 4, 3, 2, 10, 0, 9, 8, 7, 6, 5, 4, 3, 2)
YEAR_CODES = "ABCDEFGHJKLMNPRSTVWXY123456789"  # 1980..2009, then again 2010..2039
# The order of characters in ISO 3780's WMI ranges.
_RANGE_ORDER = "ABCDEFGHJKLMNPRSTUVWXYZ1234567890"

REGIONS = {**dict.fromkeys("ABCDEFGH", "Africa"), **dict.fromkeys("JKLMNPR", "Asia"),
           **dict.fromkeys("STUVWXYZ", "Europe"), **dict.fromkeys("12345", "North America"),
           **dict.fromkeys("67", "Oceania"), **dict.fromkeys("89", "South America"), "0": "South America"}

# (first character, second-character range, country), per ISO 3780 allocations.
_COUNTRY_RANGES: tuple[tuple[str, str, str, str], ...] = (
    ("A", "A", "H", "South Africa"), ("J", "A", "0", "Japan"), ("K", "A", "E", "Sri Lanka"),
    ("K", "F", "K", "Israel"), ("K", "L", "R", "South Korea"), ("K", "S", "0", "Kazakhstan"),
    ("L", "A", "0", "China"), ("M", "A", "E", "India"), ("M", "F", "K", "Indonesia"),
    ("M", "L", "R", "Thailand"), ("N", "A", "E", "Iran"), ("N", "F", "K", "Pakistan"),
    ("N", "L", "R", "Turkey"), ("P", "A", "E", "Philippines"), ("P", "F", "K", "Singapore"),
    ("P", "L", "R", "Malaysia"), ("R", "A", "E", "United Arab Emirates"), ("R", "F", "K", "Taiwan"),
    ("R", "L", "R", "Vietnam"), ("S", "A", "M", "United Kingdom"), ("S", "N", "T", "Germany"),
    ("S", "U", "Z", "Poland"), ("T", "A", "H", "Switzerland"), ("T", "J", "P", "Czech Republic"),
    ("T", "R", "V", "Hungary"), ("T", "W", "1", "Portugal"), ("V", "A", "E", "Austria"),
    ("V", "F", "R", "France"), ("V", "S", "W", "Spain"), ("V", "X", "2", "Serbia"),
    ("W", "A", "0", "Germany"), ("X", "L", "R", "Netherlands"), ("X", "S", "W", "Russia"),
    ("X", "3", "0", "Russia"), ("Y", "A", "E", "Belgium"), ("Y", "F", "K", "Finland"),
    ("Y", "S", "W", "Sweden"), ("Z", "A", "R", "Italy"), ("1", "A", "0", "United States"),
    ("2", "A", "5", "Canada"), ("3", "A", "W", "Mexico"), ("4", "A", "0", "United States"),
    ("5", "A", "0", "United States"), ("6", "A", "W", "Australia"), ("7", "A", "E", "New Zealand"),
    ("7", "F", "0", "United States"), ("8", "A", "E", "Argentina"), ("8", "F", "K", "Chile"),
    ("8", "L", "R", "Ecuador"), ("8", "S", "W", "Peru"), ("8", "X", "2", "Venezuela"),
    ("9", "A", "E", "Brazil"), ("9", "F", "J", "Colombia"), ("9", "3", "9", "Brazil"),
)


class InvalidVin(ModelError):
    """A VIN that is not 17 valid characters or fails its check digit."""

    code, title, status = "invalid_vin", "Invalid VIN", 400


@dataclass(frozen=True)
class VinInfo:
    """What a VIN says about a vehicle."""

    vin: str
    wmi: str
    region: str | None
    country: str | None
    maker: str | None
    model_year: int | None
    check_digit_applies: bool
    check_digit_valid: bool

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


def check_digit(vin: str) -> str:
    """The check digit (position 9) that the other 16 characters call for: 0-9 or X."""
    total = sum(_VALUES[c] * w for c, w in zip(vin, _WEIGHTS, strict=True))
    rem = total % 11
    return "X" if rem == 10 else str(rem)


def check_digit_applies(vin: str) -> bool:
    """The check digit is mandatory for North-American VINs (WMI starting 1-5) and Chinese ones (L)."""
    return vin[0] in "12345L"


@functools.cache
def wmi_table() -> dict[str, tuple[str, str]]:
    """The bundled WMI table: code -> (maker, country)."""
    text = resources.files("models").joinpath("data/wmi.csv").read_text(encoding="utf-8")
    return {row["wmi"]: (row["maker"], row["country"]) for row in csv.DictReader(text.splitlines())}


def country(vin: str) -> str | None:
    """The country the first two characters are allocated to, where known."""
    second = _RANGE_ORDER.find(vin[1])
    for first, lo, hi, name in _COUNTRY_RANGES:
        if vin[0] == first and _RANGE_ORDER.index(lo) <= second <= _RANGE_ORDER.index(hi):
            return name
    return None


def model_year(vin: str, today: dt.date | None = None) -> int | None:
    """The model year from position 10 (codes repeat every 30 years).

    A letter in position 7 of a North-American VIN means 2010 or later; otherwise the latest year that is not in
    the future (next model year allowed) is taken, so a 1993 car coded P reads as 2023: the code cannot tell.
    """
    code = vin[9]
    if code not in YEAR_CODES:
        return None
    base = 1980 + YEAR_CODES.index(code)
    candidates = (base, base + 30)
    if vin[0] in "12345" and vin[6].isalpha():
        return candidates[1]
    latest = (today or dt.date.today()).year + 1
    fitting = [y for y in candidates if y <= latest]
    return max(fitting) if fitting else None


def normalize(raw: str) -> str:
    """Upper-case and strip spaces and dashes."""
    return re.sub(r"[\s-]", "", str(raw)).upper()


def decode(raw: str, *, today: dt.date | None = None) -> VinInfo:
    """Validate a VIN and decode what it says; raise InvalidVin with the reason otherwise."""
    vin = normalize(raw)
    if len(vin) != 17:
        raise InvalidVin(f"A VIN has 17 characters; {raw!r} has {len(vin)}.")
    illegal = sorted({c for c in vin if c not in VIN_ALPHABET})
    if illegal:
        hint = " (I, O and Q are never used, to avoid confusion with 1 and 0)" if set(illegal) & set("IOQ") else ""
        raise InvalidVin(f"The VIN contains characters that are not allowed: {', '.join(illegal)}{hint}.")
    expected = check_digit(vin)
    applies = check_digit_applies(vin)
    if applies and vin[8] != expected:
        raise InvalidVin(f"The check digit (9th character) is {vin[8]}, but the other characters call for "
                         f"{expected}; the VIN was probably mistyped.", code="invalid_vin_check_digit")
    wmi = vin[:3]
    known = wmi_table().get(wmi)
    return VinInfo(vin=vin, wmi=wmi, region=REGIONS.get(vin[0]), country=known[1] if known else country(vin),
                   maker=known[0] if known else None, model_year=model_year(vin, today),
                   check_digit_applies=applies, check_digit_valid=vin[8] == expected)
