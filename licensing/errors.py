"""Licensing's domain errors: each carries a remove.bg-style code, a title, an HTTP status and a detail."""

from __future__ import annotations

from core.errors import DomainError


class LicensingError(DomainError):
    """Base of every licensing error; the server renders it as {"errors": [{code, title, detail}]}."""

    code, title, status = "licensing_error", "Licensing error", 400


# --- refusals of a metered action -------------------------------------------------------------------------
class InsufficientCredits(LicensingError):
    code, title, status = "insufficient_credits", "Insufficient credits", 402


class LimitExhausted(LicensingError):
    code, title, status = "limit_exhausted", "Limit exhausted", 402


class LicenseExpired(LicensingError):
    code, title, status = "license_expired", "License expired", 403


class LicenseRestricted(LicensingError):
    code, title, status = "license_restricted", "License restricted", 403


class CollectionLocked(LicensingError):
    code, title, status = "collection_locked", "Collection management locked", 403


class UnknownMetric(LicensingError):
    code, title, status = "unknown_metric", "Unknown metric", 400


class ReservationNotFound(LicensingError):
    code, title, status = "reservation_not_found", "Reservation not found", 404


# --- refusals of a license file ----------------------------------------------------------------------------
class InvalidLicenseFile(LicensingError):
    code, title, status = "invalid_license_file", "Invalid license file", 400


class BadSignature(InvalidLicenseFile):
    code, title = "license_bad_signature", "License signature does not verify"


class UnknownKey(InvalidLicenseFile):
    code, title = "license_unknown_key", "License signed with an unknown key"


class WrongBox(InvalidLicenseFile):
    code, title = "license_wrong_box", "License is for another box"


class IssuedInFuture(InvalidLicenseFile):
    code, title = "license_issued_in_future", "License issued in the future"


class ReplayedPack(InvalidLicenseFile):
    code, title, status = "credit_pack_replayed", "Credit pack already installed", 409


class SupersededLicense(InvalidLicenseFile):
    code, title, status = "license_superseded", "An equal or newer license is in force", 409


class NotApplicable(InvalidLicenseFile):
    code, title, status = "license_not_applicable", "File does not apply to the license in force", 409


class LedgerTampered(LicensingError):
    code, title, status = "ledger_tampered", "Usage ledger was altered", 500


class LicenseFileExpired(InvalidLicenseFile):
    code, title = "license_expired", "License file expired"
