"""Deterministic demo datasets in the real datasets' on-disk layouts, built from anatomy that PyPI packages ship."""
