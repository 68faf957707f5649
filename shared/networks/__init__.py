"""Networks shared by the bundles (torch / MONAI only)."""
