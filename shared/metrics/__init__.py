"""Metric reports written as CSV / JSON tables."""
