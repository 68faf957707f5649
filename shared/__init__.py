"""Code shared by every bundle in this repository."""
