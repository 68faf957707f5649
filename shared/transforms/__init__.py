"""Array/dictionary transform pairs shared by the bundles."""

from shared.transforms.intensity import MaskedPercentileRescale, MaskedPercentileRescaled
from shared.transforms.validation import CheckFinite, CheckFinited

__all__ = ["MaskedPercentileRescale", "MaskedPercentileRescaled", "CheckFinite", "CheckFinited"]
