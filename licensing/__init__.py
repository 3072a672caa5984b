"""Offline licensing for Forecourt: signed license files, plans, the license state machine, metering, the usage
ledger. Free of Flask and of the vision code."""
