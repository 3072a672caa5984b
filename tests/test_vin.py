"""VIN validation and decoding: valid VINs of several makers and years, check digits, letters, lengths."""

from __future__ import annotations

import datetime as dt

import pytest

from models import vin

TODAY = dt.date(2026, 11, 22)


@pytest.mark.parametrize(("raw", "maker", "year", "country", "region"), [
    # published example VINs
    ("1HGCM82633A004352", "Honda", 2003, "United States", "North America"),
    ("1M8GDM9AXKP042788", "Motor Coach Industries", 2019, "United States", "North America"),
    ("WBA3A5C51CF256651", "BMW", 2012, "Germany", "Europe"),
    # check-digit-correct VINs built on real WMIs and model-year codes
    ("1FTFW1ET9DFC10312", "Ford", 2013, "United States", "North America"),
    ("5YJ3E1EA2KF317000", "Tesla", 2019, "United States", "North America"),
    ("2T1BURHE8JC123456", "Toyota", 2018, "Canada", "North America"),
    ("SALVA2BG1CH123456", "Land Rover", 2012, "United Kingdom", "Europe"),
    ("KMHCT4AE3GU123456", "Hyundai", 2016, "South Korea", "Asia"),
])
def test_valid_vins_decode_maker_year_and_country(raw, maker, year, country, region) -> None:
    info = vin.decode(raw, today=TODAY)
    assert (info.maker, info.model_year, info.country, info.region) == (maker, year, country, region)
    assert info.wmi == raw[:3]


def test_lower_case_spaces_and_dashes_are_normalised() -> None:
    assert vin.decode(" 1hgcm826-33a004352 ").vin == "1HGCM82633A004352"


def test_check_digit_x_is_accepted() -> None:
    assert vin.check_digit("1M8GDM9AXKP042788") == "X"
    assert vin.decode("1M8GDM9AXKP042788").check_digit_valid


def test_unknown_wmi_still_gets_country_from_iso_ranges() -> None:
    info = vin.decode("VR3UHZKXZMT000001", today=TODAY)  # VR: France; not in the bundled table
    assert info.maker is None and info.country == "France" and info.region == "Europe"
    assert info.check_digit_applies is False


def test_wrong_check_digit_is_refused_for_north_american_vins() -> None:
    with pytest.raises(vin.InvalidVin) as err:
        vin.decode("1HGCM82643A004352")
    assert err.value.code == "invalid_vin_check_digit" and err.value.status == 400
    assert "call for 3" in err.value.detail


def test_check_digit_is_informational_outside_north_america() -> None:
    info = vin.decode("WVWZZZ1JZXW000001", today=TODAY)  # European VINs carry no check digit
    assert info.check_digit_applies is False and info.check_digit_valid is False
    assert info.maker == "Volkswagen" and info.model_year == 1999


@pytest.mark.parametrize("raw", ["1HGCM82633A0O4352", "1HGCM82633A0I4352", "QHGCM82633A004352",
                                 "1HGCM82633A00435_"])
def test_illegal_letters_are_refused(raw) -> None:
    with pytest.raises(vin.InvalidVin) as err:
        vin.decode(raw)
    assert err.value.code == "invalid_vin" and "not allowed" in err.value.detail


@pytest.mark.parametrize("raw", ["", "1HGCM82633A00435", "1HGCM82633A0043521", "1HG"])
def test_wrong_lengths_are_refused(raw) -> None:
    with pytest.raises(vin.InvalidVin, match="17 characters"):
        vin.decode(raw)


def test_model_year_cycle() -> None:
    assert vin.model_year("JH4KA7561PC008269", TODAY) == 2023  # P: 1993 or 2023, the latest plausible
    assert vin.model_year("JH4KA7561PC008269", dt.date(2000, 1, 1)) == 1993
    assert vin.model_year("WVWZZZ1JZZW000001", TODAY) is None  # Z is not a year code
