"""Committed int8 calibration ranges (data only)."""
