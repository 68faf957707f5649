"""Loss functions shared by the bundles (torch / MONAI only)."""
