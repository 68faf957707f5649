"""Array / dictionary transform pairs shared by the bundles (torch / MONAI / ITK only)."""
