"""Input checks, splits, datasets, the demo-data cache and weights-file integrity."""
